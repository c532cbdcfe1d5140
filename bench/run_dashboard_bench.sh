#!/usr/bin/env bash
# The dashboard's jobs page with 100,000 jobs in fujid's database: fujid (TLS, --http-listen) over
# a database of one submitted job copied 100,000 times (mixed kinds, terminal states, owners
# alice and bob), then, per run, the first page of /ui/ timed by curl (the server's time to the
# first byte and the whole answer) as the admin (everyone's jobs), as alice (her own: the owner
# index) and as the admin filtered (state=FAILED&kind=finetune), and by headless chromium
# (tests/dashboard/cdp.mjs: the navigation's timing, from the request to the load event, with the
# page's CSS and script). Prints medians and 95th percentiles per run.
# usage: bench/run_dashboard_bench.sh [RUNS] [LOADS_PER_RUN]   (3 runs of 30 loads; scripts/build
#        fujid fuji first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
loads=${2:-30}
jobs=100000
work=$PWD/var/bench/dashboard
rm -rf "$work" && mkdir -p "$work"
state=$work/fujid
fujid_pid=""
cleanup() { [ -n "$fujid_pid" ] && kill "$fujid_pid" 2>/dev/null && wait "$fujid_pid" 2>/dev/null; true; }
trap cleanup EXIT

start_fujid() {
  build/bin/fujid --db "$state/fujid.db" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --allow-read "$work" \
    > "$work/fujid.log" 2>&1 &
  fujid_pid=$!
  for _ in $(seq 500); do
    grep -q "dashboard on" "$work/fujid.log" && break
    sleep 0.02
  done
  grpc_port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$work/fujid.log" | head -1)
  http_port=$(sed -n 's|.*dashboard on https://127.0.0.1:\([0-9]*\)/ui/.*|\1|p' "$work/fujid.log" | head -1)
}
stop_fujid() { kill "$fujid_pid"; wait "$fujid_pid" 2>/dev/null || true; fujid_pid=""; }

# ---- A database of 100,000 jobs: one real submit, copied ----
start_fujid
export FUJI_CA=$state/ca.crt
admin=$(cat "$state/admin.token")
alice=$(FUJI_TOKEN=$admin build/bin/fuji admin user add alice --server "127.0.0.1:$grpc_port")
build/bin/fuji model init --arch tiny --out "$work/tiny" > /dev/null
FUJI_TOKEN=$alice build/bin/fuji submit infer --model "$work/tiny" --prompt "Mt. Fuji is" --server "127.0.0.1:$grpc_port" > /dev/null
stop_fujid
sqlite3 "$state/fujid.db" <<SQL
WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < $jobs + 1)
INSERT INTO jobs (id, kind, state, priority, spec, devices, attempts, max_attempts, timeout_ms, reason, worker_id,
                  submitted_at_ms, started_at_ms, finished_at_ms, updated_at_ms, owner)
SELECT i, CASE WHEN i % 10 = 0 THEN 'finetune' ELSE 'infer' END,
       CASE WHEN i % 7 = 0 THEN 'FAILED' WHEN i % 11 = 0 THEN 'CANCELLED' ELSE 'SUCCEEDED' END,
       0, j.spec, 1, 0, 3, 0, CASE WHEN i % 7 = 0 THEN 'rank 0 exited with status 1' ELSE '' END, 'node-a',
       j.submitted_at_ms + i * 1000, j.submitted_at_ms + i * 1000 + 200, j.submitted_at_ms + i * 1000 + 900,
       j.submitted_at_ms + i * 1000 + 900, CASE WHEN i % 3 = 0 THEN 'bob' ELSE 'alice' END
FROM n, (SELECT spec, submitted_at_ms FROM jobs WHERE id = 1) AS j;
DELETE FROM jobs WHERE id = 1;
SQL
echo "jobs in the database: $(sqlite3 "$state/fujid.db" 'SELECT count(*) FROM jobs')"
start_fujid
url=https://127.0.0.1:$http_port/ui/
spki=$(openssl x509 -in "$state/server.crt" -pubkey -noout | openssl pkey -pubin -outform der |
       openssl dgst -sha256 -binary | base64 -w0)

# One curl's seconds to the first byte and in all, for `url` with `token` as the cookie.
timed() { curl -sS -o /dev/null --cacert "$FUJI_CA" -b "fuji_token=$1" -w '%{time_starttransfer} %{time_total}\n' "$2"; }
for run in $(seq "$runs"); do
  for i in $(seq "$loads"); do timed "$admin" "$url"; done > "$work/admin-$run.txt"
  for i in $(seq "$loads"); do timed "$alice" "$url"; done > "$work/alice-$run.txt"
  for i in $(seq "$loads"); do timed "$admin" "$url?state=FAILED&kind=finetune"; done > "$work/filtered-$run.txt"
  /usr/bin/python3 -c "import json,sys; json.dump({'chromium': '/usr/bin/chromium', 'base': 'https://127.0.0.1:$http_port',
    'spki': '$spki', 'token': '$admin', 'screenshots': '$work', 'bench': $loads}, open('$work/browser.json', 'w'))"
  node --experimental-websocket --no-warnings tests/dashboard/cdp.mjs "$work/browser.json" "$work/browser-$run.json"
done
echo "rows on the first page: $(curl -sS --cacert "$FUJI_CA" -b "fuji_token=$admin" "$url" | grep -o '<tr data-id' | wc -l)," \
     "bytes: $(curl -sS --cacert "$FUJI_CA" -b "fuji_token=$admin" "$url" | wc -c)"
/usr/bin/python3 - "$work" "$runs" <<'PY'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
def p95(v):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
for run in range(1, runs + 1):
    print(f"run {run}:")
    for name, what in (("admin", "admin, every user's jobs"), ("alice", "alice, her own"),
                       ("filtered", "admin, state=FAILED&kind=finetune")):
        rows = [list(map(float, l.split())) for l in open(f"{work}/{name}-{run}.txt") if l.strip()]
        first = [r[0] * 1000 for r in rows]
        total = [r[1] * 1000 for r in rows]
        print(f"  curl {what:36s} first byte median {statistics.median(first):6.1f} ms (p95 {p95(first):6.1f}), "
              f"whole page median {statistics.median(total):6.1f} ms (p95 {p95(total):6.1f}), TLS handshake included")
    b = json.load(open(f"{work}/browser-{run}.json"))
    nav = b["bench"]
    response = [n["response_end"] - n["request_start"] for n in nav]
    dcl = [n["dom_content_loaded"] for n in nav]
    load = [n["load"] for n in nav]
    print(f"  chromium (admin): request to last byte median {statistics.median(response):6.1f} ms (p95 {p95(response):6.1f}); "
          f"navigation start to DOMContentLoaded median {statistics.median(dcl):6.1f} ms (p95 {p95(dcl):6.1f}); "
          f"to load median {statistics.median(load):6.1f} ms (p95 {p95(load):6.1f}); rows {b['bench_rows']}")
PY
