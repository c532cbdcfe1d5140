#!/usr/bin/env bash
# A 2-rank fine-tuning step of the 111M shape on this machine's CPU (`fuji run finetune`, fp32,
# zero 2, seq 64, micro-batch 1, 6 steps), alternating fuji-rank's cache of large freed blocks off
# (FUJI_HOST_CACHE_MIB=0) and on (the default), beside the planner's prediction for the step with
# the rates a fuji-rank measures here. Each run's step is the median of its steps 2-6.
# usage: bench/run_step_bench.sh [ROUNDS]   (after scripts/build; default 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=build/bin
work=var/bench/step
mkdir -p "$work" var/bench
[ -f var/bench/111m/model.safetensors ] || "$bin/fuji" model init --arch cerebras-gpt-111m --out var/bench/111m --seed 1
[ -f "$work/text/english.txt" ] || sh tests/reference/make_corpora.sh "$work/text" >/dev/null
args=(run finetune --model "$PWD/var/bench/111m" --data "$work/text/english.txt" --ranks 2 --zero 2 --offload none
  --precision fp32 --seq-len 64 --micro-batch 1 --grad-accum 1 --steps 6 --cache-dir "$work/cache" --output json)
for i in $(seq "$rounds"); do
  FUJI_HOST_CACHE_MIB=0 "$bin/fuji" "${args[@]}" > "$work/off-$i.json" 2>/dev/null
  "$bin/fuji" "${args[@]}" > "$work/on-$i.json" 2>/dev/null
done
echo '{"op": "calibrate"}' | "$bin/fuji-rank" 3>&1 >/dev/null | tail -1 > "$work/rates.json"
"$bin/fuji" plan --measure --model var/bench/111m --mode finetune --gpus 2 --device cpu --precision fp32 --seq-len 64 \
  --micro-batch 1 --output json > "$work/plan.json"
/usr/bin/python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def step(path):
    j = json.load(open(path))
    return statistics.median(l["ms"] for l in j["losses"] if l["step"] > 1) / 1000, j["memory"]["ranks"]
off, on = [], []
for i in range(1, rounds + 1):
    (a, _), (b, mem) = step(f"{work}/off-{i}.json"), step(f"{work}/on-{i}.json")
    off.append(a); on.append(b)
    print(f"round {i}: cache off {a:.2f} s, on {b:.2f} s (x{a / b:.2f}); peak RSS with it "
          + ", ".join(f"{m['peak_rss_bytes'] / 2**20:.0f} MiB" for m in mem))
print(f"median step: cache off {statistics.median(off):.2f} s, on {statistics.median(on):.2f} s "
      f"(off/on {statistics.median(off) / statistics.median(on):.2f}; runs off {min(off):.2f}-{max(off):.2f}, "
      f"on {min(on):.2f}-{max(on):.2f})")
rates = json.load(open(f"{work}/rates.json"))["result"]
print("measured rates:", {k: f"{v:.3g}" for k, v in rates.items()})
best = json.load(open(f"{work}/plan.json"))["recommended"]
print(f"planner (fuji plan --measure): zero {best['zero']}, offload {best['offload']}, {best['step_seconds']:.2f} s per step; "
      f"measured with the cache / predicted: {statistics.median(on) / best['step_seconds']:.2f}")
PY
