#!/usr/bin/env bash
# Runs the training step benchmark of docs/performance.md side by side: fuji-train-bench (the ZeRO
# trainer at stage 0 in one process) and bench/python_train_step.py (the same step in Python PyTorch
# eager, Debian's python3-torch, with its defaults and with OMP_WAIT_POLICY=PASSIVE) on the 111M
# shape, seq 256, micro-batch 4, fp32, all cores; checks that both start from the same loss and
# prints fuji's step time over Python's. The checkpoint is made once under var/bench/.
# usage: bench/run_train_bench.sh [STEPS]   (after scripts/build; timed steps after one warmup, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
steps=${1:-5}
mkdir -p var/bench
[ -f var/bench/111m/model.safetensors ] || "$bin/fuji" model init --arch cerebras-gpt-111m --out var/bench/111m --seed 1
threads=$(nproc)
fuji=$("$bin/fuji-train-bench" var/bench/111m --seq 256 --batch 4 --steps "$steps")
echo "fuji: $fuji"
py_default=$(/usr/bin/python3 bench/python_train_step.py var/bench/111m "$threads" 256 4 "$steps")
echo "python [defaults]: $py_default"
py_passive=$(OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/python_train_step.py var/bench/111m "$threads" 256 4 "$steps")
echo "python [OMP_WAIT_POLICY=PASSIVE]: $py_passive"
/usr/bin/python3 - "$fuji" "$py_default" "$py_passive" <<'PY'
import json, sys
fuji, default, passive = (json.loads(a) for a in sys.argv[1:4])
for name, py in (("defaults", default), ("OMP_WAIT_POLICY=PASSIVE", passive)):
    rel = abs(fuji["losses"][0] - py["losses"][0]) / abs(py["losses"][0])
    if rel > 1e-4:
        sys.exit(f"first loss differs: fuji {fuji['losses'][0]} python [{name}] {py['losses'][0]} ({rel:.2e} relative)")
    print(f"first loss: fuji {fuji['losses'][0]:.6f}, python [{name}] {py['losses'][0]:.6f} ({rel:.1e} relative)")
def phases(r):
    return f"forward {r['forward_ms']:.0f}, backward {r['backward_ms']:.0f}, optimizer {r['optimizer_ms']:.0f}"
for name, r in (("fuji", fuji), ("python [defaults]", default), ("python [OMP_WAIT_POLICY=PASSIVE]", passive)):
    print(f"{name}: median step {r['step_ms']:.0f} ms ({phases(r)}), fastest step {min(r['step_ms_all']):.0f} ms,"
          f" CPU time per step {r['step_cpu_ms']:.0f} ms")
best = min(default, passive, key=lambda p: p["step_ms"])
print(f"fuji/python, median steps: {fuji['step_ms'] / default['step_ms']:.2f} (defaults), "
      f"{fuji['step_ms'] / passive['step_ms']:.2f} (OMP_WAIT_POLICY=PASSIVE); "
      f"against the best Python {fuji['step_ms'] / best['step_ms']:.2f} (target <= 0.9)")
fastest = min(min(default["step_ms_all"]), min(passive["step_ms_all"]))
print(f"fuji/python, fastest steps: {min(fuji['step_ms_all']) / fastest:.2f}; CPU time per step:"
      f" {fuji['step_cpu_ms'] / passive['step_cpu_ms']:.2f} (OMP_WAIT_POLICY=PASSIVE)")
PY
