#!/usr/bin/env bash
# Serving through fujid: one warm 111M model on a CPU agent, driven through fujid's
# OpenAI-compatible endpoint by bench/serving_client.py (streamed, greedy, 64 new tokens each,
# prompts of 20-200 tokens), in fp32 and bf16. Prints, per round and precision: time to first
# token at 1 request (p50/p99 over 20), the per-token overhead of the service against the rank's
# own decode time, tokens/s one request at a time, and a sweep of 1-32 concurrent requests
# (aggregate tokens/s, p50/p99 time to first token and per output token); then a chart of the
# sweep (SVG) in var/bench/serving/sweep.svg.
# usage: bench/run_serving_bench.sh [ROUNDS]   (after scripts/build; default 3 rounds)
#        SERVING_CLIENT_ARGS="--sweep 1,2,4 --ttft-requests 3" shortens a trial run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=build/bin
models=var/bench/serving-models
model=$models/111m
run=var/bench/serving
mkdir -p "$models"
[ -f "$model/model.safetensors" ] || "$bin/fuji" model init --arch cerebras-gpt-111m --out "$model" --seed 1 >/dev/null
rm -rf "$run" && mkdir -p "$run"
. bench/service_lib.sh
trap stop_services EXIT
FUJID_FLAGS="--http-listen 127.0.0.1:0 --models $PWD/$models" start_service "$bin" "$run"
export FUJI_SERVER=$SERVICE_ADDRESS
for setting in $SERVICE_ENV; do export "${setting?}"; done
[ -n "$SERVICE_HTTP_URL" ] || { echo "fujid serves no HTTP API" >&2; exit 1; }
for round in $(seq "$rounds"); do
  for precision in fp32 bf16; do
    python3 bench/serving_client.py --url "$SERVICE_HTTP_URL" --ca "$FUJI_CA" --token "$FUJI_TOKEN" \
      --model 111m --precision "$precision" --result-cmd "$bin/fuji result --output json" ${SERVING_CLIENT_ARGS:-} \
      > "$run/round$round-$precision.json"
  done
done
python3 - "$run" "$rounds" <<'PY'
import json, statistics, sys
run, rounds = sys.argv[1], int(sys.argv[2])
for precision in ("fp32", "bf16"):
    rs = [json.load(open(f"{run}/round{r}-{precision}.json")) for r in range(1, rounds + 1)]
    def spread(key, fmt="{:.1f}"):
        v = [r[key] for r in rs if r[key] is not None]
        if not v:
            return "-"
        return f"median {fmt.format(statistics.median(v))} (min {fmt.format(min(v))}, max {fmt.format(max(v))})"
    print(f"== {precision}, {rounds} rounds")
    print(f"time to first token at 1 request: p50 {spread('ttft_p50_ms')} ms; p99 {spread('ttft_p99_ms')} ms")
    print(f"service overhead per token (client decode / rank decode - 1): {spread('overhead_per_token_median', '{:.3f}')}")
    print(f"one at a time: {spread('sequential_tokens_per_s')} tokens/s; "
          f"16 concurrent / one at a time: {spread('ratio_16_over_sequential', '{:.2f}')}")
    print("concurrency  tokens/s (median, min-max)  ttft p50/p99 ms  per-token p50/p99 ms")
    for i, level in enumerate(rs[0]["sweep"]):
        tps = [r["sweep"][i]["tokens_per_s"] for r in rs]
        med = lambda k: statistics.median(r["sweep"][i][k] for r in rs)
        print(f"{level['concurrency']:>11}  {statistics.median(tps):8.1f} ({min(tps):.1f}-{max(tps):.1f})"
              f"         {med('ttft_p50_ms'):6.0f} / {med('ttft_p99_ms'):6.0f}   {med('tpot_p50_ms'):6.1f} / {med('tpot_p99_ms'):6.1f}")

# The sweep as a chart: aggregate tokens/s (left) and p50/p99 time per output token (right).
W, H, L, R, T, B = 720, 360, 60, 60, 30, 50
series = {}
for precision in ("fp32", "bf16"):
    rs = [json.load(open(f"{run}/round{r}-{precision}.json")) for r in range(1, rounds + 1)]
    levels = [s["concurrency"] for s in rs[0]["sweep"]]
    med = lambda i, k: statistics.median(r["sweep"][i][k] for r in rs)
    series[precision] = (levels, [med(i, "tokens_per_s") for i in range(len(levels))],
                         [med(i, "tpot_p50_ms") for i in range(len(levels))],
                         [med(i, "tpot_p99_ms") for i in range(len(levels))])
levels = series["fp32"][0]
ymax = max(max(s[1]) for s in series.values()) * 1.1
lmax = max(max(s[3]) for s in series.values()) * 1.1
x = lambda i: L + (W - L - R) * i / (len(levels) - 1)
y = lambda v, top: H - B - (H - T - B) * v / top
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="18" text-anchor="middle">fuji serving, 111M on a 2-core CPU: concurrent streamed requests (64 tokens each)</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{W-R}" y1="{T}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<text x="{W/2}" y="{H-12}" text-anchor="middle">concurrent requests</text>',
       f'<text x="14" y="{H/2}" transform="rotate(-90 14 {H/2})" text-anchor="middle">tokens/s (solid)</text>',
       f'<text x="{W-14}" y="{H/2}" transform="rotate(90 {W-14} {H/2})" text-anchor="middle">ms per token p50/p99 (dashed)</text>']
for i, n in enumerate(levels):
    svg.append(f'<text x="{x(i)}" y="{H-B+16}" text-anchor="middle">{n}</text>')
for k in range(5):
    svg.append(f'<text x="{L-6}" y="{y(ymax*k/4, ymax)+4}" text-anchor="end">{ymax*k/4:.0f}</text>')
    svg.append(f'<text x="{W-R+6}" y="{y(lmax*k/4, lmax)+4}">{lmax*k/4:.0f}</text>')
colors = {"fp32": "#1f77b4", "bf16": "#d62728"}
for p, (lv, tps, p50, p99) in series.items():
    pts = lambda vals, top: " ".join(f"{x(i):.1f},{y(v, top):.1f}" for i, v in enumerate(vals))
    svg.append(f'<polyline fill="none" stroke="{colors[p]}" stroke-width="2" points="{pts(tps, ymax)}"/>')
    svg.append(f'<polyline fill="none" stroke="{colors[p]}" stroke-dasharray="6 3" points="{pts(p50, lmax)}"/>')
    svg.append(f'<polyline fill="none" stroke="{colors[p]}" stroke-dasharray="2 3" points="{pts(p99, lmax)}"/>')
    svg.append(f'<text x="{L+10}" y="{T+16 + (0 if p == "fp32" else 16)}" fill="{colors[p]}">{p}</text>')
svg.append("</svg>")
open(f"{run}/sweep.svg", "w").write("\n".join(svg))
print(f"chart: {run}/sweep.svg")
PY
