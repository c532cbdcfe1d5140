#!/usr/bin/env bash
# The cost of TLS and token checks on durable submits: fuji-service-bench --only submit (16
# clients, 3 s, a fresh fujid each run) of another tree whose fujid has neither (plaintext,
# unauthenticated), of this tree as it runs (TLS, every call authenticated), and of this tree with
# --plaintext (fujid --insecure: tokens checked, no TLS), alternated round by round on the same
# machine. Prints each one's submits/s and p99 per round, their medians, and this/base per round.
# usage: bench/run_auth_bench.sh BASE_TREE [ROUNDS]   (both built with scripts/build; 5 rounds)
#   e.g. git worktree add /tmp/base 7191379 && (cd /tmp/base && scripts/build fujid fuji fuji-service-bench) &&
#        bench/run_auth_bench.sh /tmp/base
set -euo pipefail
cd "$(dirname "$0")/.."
base=$(cd "${1:?usage: bench/run_auth_bench.sh BASE_TREE [ROUNDS]}" && pwd)
rounds=${2:-5}
work=$PWD/var/bench/auth
rm -rf "$work" && mkdir -p "$work"
for i in $(seq "$rounds"); do
  "$base/build/bin/fuji-service-bench" --only submit --dir "$work/run" 2>/dev/null | sed -n 1p > "$work/base-$i.json"
  build/bin/fuji-service-bench --only submit --dir "$work/run" 2>/dev/null | sed -n 1p > "$work/tls-$i.json"
  build/bin/fuji-service-bench --only submit --dir "$work/run" --plaintext 1 2>/dev/null | sed -n 1p > "$work/plain-$i.json"
done
/usr/bin/python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
runs = {k: [json.load(open(f"{work}/{k}-{i}.json")) for i in range(1, rounds + 1)] for k in ("base", "tls", "plain")}
names = {"base": "base: plaintext, no tokens", "tls": "this: TLS + tokens", "plain": "this: plaintext + tokens"}
print(f"{rounds} alternated rounds (base, TLS, plaintext each round); durable submits, 16 clients, 3 s")
for k in ("base", "tls", "plain"):
    rates = [r["jobs_per_s"] for r in runs[k]]
    p99 = [r["p99_ms"] for r in runs[k]]
    print(f"{names[k]:28s} submits/s median {statistics.median(rates):7.0f} ({min(rates):.0f}-{max(rates):.0f}); "
          f"p99 median {statistics.median(p99):5.2f} ms ({min(p99):.2f}-{max(p99):.2f}); errors {sum(r['errors'] for r in runs[k])}")
for k in ("tls", "plain"):
    ratios = [t["jobs_per_s"] / b["jobs_per_s"] for t, b in zip(runs[k], runs["base"])]
    print(f"{names[k]} / base per round: median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
PY
