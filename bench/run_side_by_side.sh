#!/usr/bin/env bash
# This tree's build beside another's, alternated round by round on the same machine, for a change
# that must cost nothing (a refactor): the engine's decode (`fuji run infer`, 111M, 64 tokens), the
# service's decode and overhead (`fuji submit infer --wait` through a fujid and an agent of each
# tree), and a 2-rank fine-tuning step (`fuji run finetune`, 111M, fp32, zero 2, seq 64, the median
# of steps 2-6). Prints each tree's medians and the ratio this/base per round (median, min, max).
# usage: bench/run_side_by_side.sh BASE_TREE [ROUNDS]   (both built with scripts/build; 3 rounds)
#   e.g. git worktree add /tmp/base HEAD~5 && (cd /tmp/base && scripts/build) &&
#        bench/run_side_by_side.sh /tmp/base
set -euo pipefail
cd "$(dirname "$0")/.."
base=$(cd "${1:?usage: bench/run_side_by_side.sh BASE_TREE [ROUNDS]}" && pwd)
rounds=${2:-3}
here=$PWD
work=$here/var/bench/side_by_side
model=$here/var/bench/111m
prompt="There are famous mountain like Mt.Fuji in Japan. Please tell me highest mountain in the world."
mkdir -p var/bench
[ -f "$model/model.safetensors" ] || build/bin/fuji model init --arch cerebras-gpt-111m --out "$model" --seed 1
rm -rf "$work" && mkdir -p "$work"
sh tests/reference/make_corpora.sh "$work/text" >/dev/null

. bench/service_lib.sh
trap stop_services EXIT
start_service "$base/build/bin" "$work/base"
base_server=$SERVICE_ADDRESS base_env=$SERVICE_ENV
start_service "$here/build/bin" "$work/this"
this_server=$SERVICE_ADDRESS this_env=$SERVICE_ENV

infer=(--model "$model" --prompt "$prompt" --max-new-tokens 64 --ignore-eos --output json)
tune=(run finetune --model "$model" --data "$work/text/english.txt" --ranks 2 --zero 2 --offload none
  --precision fp32 --seq-len 64 --micro-batch 1 --grad-accum 1 --steps 6 --cache-dir "$work/cache" --output json)
for i in $(seq "$rounds"); do
  for tree in base this; do
    if [ "$tree" = base ]; then bin=$base/build/bin server=$base_server service_env=$base_env
    else bin=$here/build/bin server=$this_server service_env=$this_env; fi
    "$bin/fuji" run infer "${infer[@]}" > "$work/$tree-engine-$i.json" 2>/dev/null
    start=$(date +%s.%N)
    env $service_env FUJI_SERVER=$server "$bin/fuji" submit infer "${infer[@]}" --wait > "$work/$tree-service-$i.json"
    end=$(date +%s.%N)
    echo "$start $end" > "$work/$tree-service-$i.wall"
    "$bin/fuji" "${tune[@]}" > "$work/$tree-step-$i.json" 2>/dev/null
  done
done
/usr/bin/python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def measures(tree, i):
    engine = json.load(open(f"{work}/{tree}-engine-{i}.json"))["timings"]["decode_tokens_per_s"]
    job = json.load(open(f"{work}/{tree}-service-{i}.json"))["result"]["timings"]
    start, end = map(float, open(f"{work}/{tree}-service-{i}.wall").read().split())
    losses = json.load(open(f"{work}/{tree}-step-{i}.json"))["losses"]
    step = statistics.median(l["ms"] for l in losses if l["step"] > 1) / 1000
    return {"engine decode tok/s": engine, "service decode tok/s": job["decode_tokens_per_s"],
            "service overhead ms": (end - start) * 1000 - job["total_ms"], "2-rank step s": step}
rows = {t: [measures(t, i) for i in range(1, rounds + 1)] for t in ("base", "this")}
print(f"{rounds} alternated rounds (base, then this, each round)")
for key in rows["base"][0]:
    b = [r[key] for r in rows["base"]]
    t = [r[key] for r in rows["this"]]
    ratios = [y / x for x, y in zip(b, t)]
    print(f"{key:22s} base {statistics.median(b):8.2f}  this {statistics.median(t):8.2f}  "
          f"this/base median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
PY
