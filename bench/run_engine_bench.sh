#!/usr/bin/env bash
# Runs the engine benchmarks of docs/performance.md side by side and prints their rows:
# decode at batch 1 on the 111M and 1.3B shapes (fp32, bf16; fused and per-op) beside the
# memory-read bound (two measures of the bandwidth, which the bench compares), the same decode
# in a Python PyTorch eager loop (Debian's python3-torch) on the same weights, and the load of a
# 1.3B-shaped checkpoint beside memcpy, and continuous batching at 1..32 concurrent requests.
# Checkpoints are made once under var/bench/.
# usage: bench/run_engine_bench.sh   (after scripts/build)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
mkdir -p var/bench
for arch in 111m 1.3b; do
  [ -f "var/bench/$arch/model.safetensors" ] || "$bin/fuji" model init --arch "cerebras-gpt-$arch" --out "var/bench/$arch" --seed 1
done
ids=1858,389,5863,8598,588,18632,13  # "There are famous mountain like Mt.Fuji in Japan." in GPT-2 ids
threads=$(nproc)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# One summary line per decode run: both bandwidth measures, the bound, tokens/s and the fraction.
summary() {
  /usr/bin/python3 -c '
import json, sys
j = json.loads(sys.stdin.readline())
print("read %.1f GB/s (kernels %s), OpenMP sum %.1f GB/s (%.2fx%s), bound %.1f tokens/s, decode %.1f tokens/s, %.0f%% of the bound" % (
    j["read_bandwidth_gb_s"], " ".join("%s %.1f" % kv for kv in sorted(j["read_kernels_gb_s"].items())),
    j["omp_sum_gb_s"], j["omp_sum_over_read_bandwidth"], ", DISAGREE" if j["bandwidth_measures_disagree"] else "",
    j["bound_tokens_per_s"], j["decode_tokens_per_s"], 100 * j["fraction_of_bound"]))'
}
# Each decode runs twice in a row: the fused step (one parallel region per token, the default)
# and FUJI_DECODE_UNFUSED=1 (Forward's ATen ops, a fork and join per matrix): the same logits.
for run in "111m 64 fp32" "111m 64 bf16" "1.3b 16 fp32" "1.3b 16 bf16"; do
  set -- $run
  for path in fused unfused; do
    flag=""
    [ "$path" = fused ] || flag="FUJI_DECODE_UNFUSED=1"
    echo "decode $1 $3 $path: $(env $flag "$bin/fuji-engine-bench" decode "var/bench/$1" --tokens "$2" --precision "$3" | summary)" \
         "[load $(cut -d' ' -f1 /proc/loadavg)]"
  done
done
for env in "" "OMP_WAIT_POLICY=PASSIVE" "OPENBLAS_NUM_THREADS=1"; do
  echo "python fp32 [${env:-defaults}]: $(env $env /usr/bin/python3 bench/python_decode.py var/bench/111m $ids 64 "$threads" fp32 | cut -d, -f1-3)}"
done
echo "load average after decode: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load 1.3b: $("$bin/fuji-engine-bench" load var/bench/1.3b)"
# Continuous batching: aggregate tokens/s at 1..32 concurrent requests, and 16 at once against
# the same 16 one after another.
echo "batch fp32: $("$bin/fuji-engine-bench" batch var/bench/111m --tokens 64 --precision fp32 2>/dev/null)"
echo "batch bf16: $("$bin/fuji-engine-bench" batch var/bench/111m --tokens 64 --precision bf16 2>/dev/null)"
