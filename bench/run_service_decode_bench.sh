#!/usr/bin/env bash
# The service costs the engine nothing: decode tokens/s of an inference submitted to fujid with
# `fuji submit infer`'s default flags (placed on a local fuji-agent) beside `fuji run infer` of the
# same model and prompt, alternated in one run; and the service's overhead: the time from
# `submit --wait` to its result, less the rank's own total_ms.
# usage: bench/run_service_decode_bench.sh [ROUNDS]   (after scripts/build; default 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bin=build/bin
model=var/bench/111m
run=var/bench/service
prompt="There are famous mountain like Mt.Fuji in Japan. Please tell me highest mountain in the world."
mkdir -p var/bench
[ -f "$model/model.safetensors" ] || "$bin/fuji" model init --arch cerebras-gpt-111m --out "$model" --seed 1
rm -rf "$run" && mkdir -p "$run"
. bench/service_lib.sh
trap stop_services EXIT
start_service "$bin" "$run"
export FUJI_SERVER=$SERVICE_ADDRESS
for setting in $SERVICE_ENV; do export "${setting?}"; done

args=(--model "$PWD/$model" --prompt "$prompt" --max-new-tokens 64 --ignore-eos --output json)
for i in $(seq "$rounds"); do
  "$bin/fuji" run infer "${args[@]}" > "$run/direct-$i.json" 2>/dev/null
  start=$(date +%s.%N)
  "$bin/fuji" submit infer "${args[@]}" --wait > "$run/service-$i.json"
  end=$(date +%s.%N)
  echo "$start $end" > "$run/service-$i.wall"
done
python3 - "$run" "$rounds" <<'PY'
import json, statistics, sys
run, rounds = sys.argv[1], int(sys.argv[2])
rows = []
for i in range(1, rounds + 1):
    d = json.load(open(f"{run}/direct-{i}.json"))["timings"]
    job = json.load(open(f"{run}/service-{i}.json"))
    s = job["result"]["timings"]
    start, end = map(float, open(f"{run}/service-{i}.wall").read().split())
    wall_ms = (end - start) * 1000
    rows.append((d["decode_tokens_per_s"], s["decode_tokens_per_s"], wall_ms - s["total_ms"], s["total_ms"],
                 job["result"].get("offload", "?")))
    print(f"round {i}: direct {rows[-1][0]:.1f} tok/s, service {rows[-1][1]:.1f} tok/s "
          f"(ratio {rows[-1][1] / rows[-1][0]:.2f}, plan offload {rows[-1][4]}); "
          f"submit --wait {wall_ms:.0f} ms = rank total {s['total_ms']:.0f} ms + overhead {rows[-1][2]:.0f} ms")
ratios = [r[1] / r[0] for r in rows]
print(f"decode ratio service/direct: median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, "
      f"max {max(ratios):.2f} over {rounds} alternated rounds")
print(f"direct median {statistics.median(r[0] for r in rows):.1f} tok/s, "
      f"service median {statistics.median(r[1] for r in rows):.1f} tok/s")
ov = [r[2] for r in rows]
print(f"service overhead (submit --wait wall time - rank total_ms): median {statistics.median(ov):.0f} ms, "
      f"min {min(ov):.0f}, max {max(ov):.0f}")
PY
