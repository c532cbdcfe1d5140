#!/usr/bin/env bash
# Loading a checkpoint at ZeRO-3: seconds and peak host memory (VmHWM) per rank, the whole-model
# load (FUJI_LOAD_WHOLE=1: every rank reads the whole model into host memory, then keeps its
# shards) against the sharded one (each rank reads only its shard of every unit), side by side.
# Makes a random fp32 checkpoint of ARCH (`fuji model init`) under build/, then RUNS rounds of:
# the whole load on RANKS ranks at once, then the sharded load; each rank is fuji-load-bench
# (parameters only, no optimizer states). Prints every run and the median (min-max) per rank and
# mode, and removes the checkpoint. The page cache is left warm after the first read (the first
# round's whole load reads the file from disk).
# usage: bench/run_load_bench.sh [ARCH] [RANKS] [RUNS] [PRECISION]   (cerebras-gpt-1.3b 2 3 bf16)
#   needs: scripts/build fuji fuji-load-bench
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-cerebras-gpt-1.3b}
ranks=${2:-2}
runs=${3:-3}
precision=${4:-bf16}
work=$PWD/build/load_bench
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
build/bin/fuji model init --arch "$arch" --out "$work/model" --seed 1 >&2
du -b "$work/model/model.safetensors" | cut -f1 > "$work/checkpoint_bytes"
for i in $(seq "$runs"); do
  for mode in whole sharded; do
    pids=()
    for r in $(seq 0 $((ranks - 1))); do
      FUJI_LOAD_WHOLE=$([ "$mode" = whole ] && echo 1 || echo 0) build/bin/fuji-load-bench "$work/model" \
        --rank "$r" --world "$ranks" --rendezvous "file:$work/store-$mode-$i" --precision "$precision" \
        > "$work/$mode-$i-$r.json" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
  done
done
/usr/bin/python3 - "$work" "$arch" "$ranks" "$runs" "$precision" <<'PY'
import json, statistics, sys
work, arch, ranks, runs, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ckpt = int(open(f"{work}/checkpoint_bytes").read())
GiB = 2 ** 30
print(f"{arch}, fp32 checkpoint {ckpt / GiB:.2f} GiB, loaded in {precision} at ZeRO-3 on {ranks} ranks "
      f"(parameters only), {runs} runs")
res = {(m, i, r): json.load(open(f"{work}/{m}-{i}-{r}.json"))
       for m in ("whole", "sharded") for i in range(1, runs + 1) for r in range(ranks)}
for i in range(1, runs + 1):
    print(f"  run {i}: " + "; ".join(
        f"{m} rank {r} {res[(m, i, r)]['seconds']:.2f} s {res[(m, i, r)]['peak_rss_bytes'] / GiB:.2f} GiB"
        for m in ("whole", "sharded") for r in range(ranks)))
def med(v, fmt):
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}-{fmt.format(max(v))})"
print(f"{'rank':>4} {'mode':8} {'seconds median (min-max)':>28} {'VmHWM GiB median (min-max)':>30} {'shard GiB':>9}")
for r in range(ranks):
    for m in ("whole", "sharded"):
        s = [res[(m, i, r)]["seconds"] for i in range(1, runs + 1)]
        h = [res[(m, i, r)]["peak_rss_bytes"] / GiB for i in range(1, runs + 1)]
        print(f"{r:>4} {m:8} {med(s, '{:.2f}'):>28} {med(h, '{:.2f}'):>30} "
              f"{res[(m, 1, r)]['params_bytes'] / GiB:>9.2f}")
PY
