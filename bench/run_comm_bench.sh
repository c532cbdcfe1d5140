#!/usr/bin/env bash
# Communication per ZeRO step beside ZeRO's arithmetic (docs/performance.md): `fuji run finetune`
# of the tiny model, or of the 111M shape with MODEL=111m (fp32, seq 32, micro-batch 1, grad-accum 1,
# no save, eval only after the last step) with 2 and 3 ranks at stages 2 and 3, their output under
# var/bench/comm/. Each run is done at two step counts and the difference
# is divided by the extra steps, so the fixed traffic (Gloo's connection setup, the evaluation and
# its two scalar all-reduces) cancels. Two measures per step and rank:
#   counter  the communicator's logical bytes_sent (the launcher's result comm.ranks[r].bytes_sent)
#   wire     TCP payload on the loopback interface of a network namespace of the gang's own, so no
#            other process's traffic is counted: (tx bytes - 66 header bytes x tx packets) / ranks
# Arithmetic: stage 2 = 2 x parameter bytes x (N-1)/N, stage 3 = 3 x parameter bytes x (N-1)/N,
# parameter bytes = 4 x parameters (the tied embedding once).
# usage: [MODEL=tiny|111m] bench/run_comm_bench.sh   (after scripts/build; as root, for unshare -n)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=$root/build/bin
work=$root/var/bench/comm
model=${MODEL:-tiny}
case "$model" in
  tiny) arch=tiny ;;
  111m) arch=cerebras-gpt-111m ;;
  *) echo "run_comm_bench.sh: MODEL must be tiny or 111m, not '$model'" >&2; exit 2 ;;
esac
few=${FEW_STEPS:-2}
many=${MANY_STEPS:-6}
mkdir -p "$work"
[ -f "var/bench/$model/model.safetensors" ] || "$bin/fuji" model init --arch "$arch" --out "var/bench/$model" --seed 1
[ -f "$work/text/english.txt" ] || sh tests/reference/make_corpora.sh "$work/text"

# One gang in a fresh network namespace; prints the launcher's JSON, then "lo TX_BYTES TX_PACKETS".
run_gang() {  # ranks zero steps
  unshare -n sh -c '
    ip link set lo up
    "$0" run finetune --model "$1" --data "$2" --cache-dir "$3" --ranks "$4" --zero "$5" --steps "$6" \
      --precision fp32 --seq-len 32 --micro-batch 1 --grad-accum 1 --threads 1 --output json
    awk "/lo:/ { print \"lo\", \$10, \$11 }" /proc/net/dev' \
    "$bin/fuji" "$root/var/bench/$model" "$work/text/english.txt" "$work/cache" "$1" "$2" "$3"
}

for ranks in 2 3; do
  for zero in 2 3; do
    run_gang "$ranks" "$zero" "$few" >"$work/run-$model-$ranks-$zero-$few.out"
    run_gang "$ranks" "$zero" "$many" >"$work/run-$model-$ranks-$zero-$many.out"
    /usr/bin/python3 - "$ranks" "$zero" "$few" "$many" "$work" "$model" <<'PY'
import json, os, sys
ranks, zero, few, many = (int(a) for a in sys.argv[1:5])
work, name = sys.argv[5], sys.argv[6]
model = os.path.join("var/bench", name)

def load(steps):
    lines = open(os.path.join(work, f"run-{name}-{ranks}-{zero}-{steps}.out")).read().splitlines()
    result = json.loads("\n".join(l for l in lines if not l.startswith("lo ")))
    _, tx_bytes, tx_packets = next(l for l in lines if l.startswith("lo ")).split()
    return result, int(tx_bytes), int(tx_packets)

sys.path.insert(0, "tests/reference")
from gpt2_reference import read_safetensors  # noqa: E402
params = sum(t.numel() for t in read_safetensors(os.path.join(model, "model.safetensors")).values())
arith = zero * 4 * params * (ranks - 1) / ranks
(r1, b1, p1), (r2, b2, p2) = load(few), load(many)
extra = many - few
counter = [(b["bytes_sent"] - a["bytes_sent"]) / extra for a, b in zip(r1["comm"]["ranks"], r2["comm"]["ranks"])]
wire = ((b2 - 66 * p2) - (b1 - 66 * p1)) / extra / ranks
reported = [c["bytes_sent_per_step"] for c in r2["comm"]["ranks"]]
print(f"{name}, ranks {ranks} zero {zero}: arithmetic {arith:,.0f} B/step/rank ({params:,} parameters); "
      f"counter {', '.join(f'{c:,.0f}' for c in counter)} (ratio {max(counter) / arith:.4f}); "
      f"wire {wire:,.0f} (ratio {wire / arith:.4f}); "
      f"launcher's bytes_sent_per_step at {many} steps {max(reported):,.0f} ({max(reported) / arith:.3f}, eval and setup included)")
PY
  done
done
