#!/usr/bin/env bash
# Gangs across nodes, side by side: a 4-rank ZeRO-3 fine-tune of the tiny shape placed 2 + 2 on two
# fuji-agents in separate network namespaces (joined by a bridge) against the same 4 ranks on one
# agent, ROUNDS rounds; prints step times (median train_step over the warm steps), their ratio, and
# the bytes node-b's ranks sent per step against ZeRO-3's arithmetic. As root.
# usage: bench/run_multinode_bench.sh [ROUNDS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build fuji fujid fuji-agent fuji-rank >/dev/null
exec python3 tests/multinode/multinode.py --bin build/bin --only bench --rounds "${1:-3}" --bench-steps "${2:-12}" \
  --work-dir build/bench_scratch/multinode
