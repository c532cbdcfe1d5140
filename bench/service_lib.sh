# Sourced by the benchmarks that run fuji as a service: start_service BIN_DIR RUN_DIR starts a fujid
# (database and log in RUN_DIR) and a fuji-agent of BIN_DIR on loopback, waits until the agent has
# measured its node (so that no measurement shares the cores with that), and sets SERVICE_ADDRESS
# and SERVICE_ENV (what the CLI needs: `env $SERVICE_ENV fuji ...`). A fujid with TLS and users (one
# that writes admin.token) gets a user "bench" and an agent enrolled with a join token, allowed the
# repository's var/; an older one runs as it did. Their pids go to the array `pids`;
# stop_services (an EXIT trap) stops them. FUJID_FLAGS adds flags to fujid's (e.g. --http-listen
# 127.0.0.1:0): its HTTP API's address goes to SERVICE_HTTP_URL ("" without one).
pids=()
stop_services() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
start_service() {
  local bin=$1 dir=$2 port= roots=$PWD/var
  mkdir -p "$dir"
  local secure=
  "$bin/fujid" --help 2>/dev/null | grep -q -- --allow-read && secure=1
  if [ -n "$secure" ]; then
    # shellcheck disable=SC2086
    "$bin/fujid" --db "$dir/fujid.db" --listen 127.0.0.1:0 --allow-read "$roots" ${FUJID_FLAGS:-} 2> "$dir/fujid.log" &
  else
    "$bin/fujid" --db "$dir/fujid.db" --listen 127.0.0.1:0 2> "$dir/fujid.log" &
  fi
  pids+=($!)
  for _ in $(seq 100); do
    port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$dir/fujid.log" | sed -n 1p)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$dir/fujid.log" >&2; exit 1; }
  SERVICE_HTTP_URL=$(sed -n 's/.*HTTP API on \(http[^ ]*\).*/\1/p' "$dir/fujid.log" | sed -n 1p)
  SERVICE_ENV=
  if [ -n "$secure" ]; then
    local admin join
    admin=$(cat "$dir/admin.token")
    SERVICE_ENV="FUJI_CA=$dir/ca.crt FUJI_TOKEN=$(FUJI_CA=$dir/ca.crt FUJI_TOKEN=$admin \
      "$bin/fuji" admin user add bench --server "127.0.0.1:$port" 2>/dev/null)"
    join=$(FUJI_CA=$dir/ca.crt FUJI_TOKEN=$admin "$bin/fuji" admin agent-token --server "127.0.0.1:$port" 2>/dev/null)
    "$bin/fuji-agent" --server "127.0.0.1:$port" --ca "$dir/ca.crt" --join-token "$join" --state-dir "$dir/agent" \
      --allow-read "$roots" --allow-write "$roots" 2> "$dir/agent.log" &
  else
    "$bin/fuji-agent" --server "127.0.0.1:$port" 2> "$dir/agent.log" &
  fi
  pids+=($!)
  for _ in $(seq 300); do
    grep -qE 'calibrated|no calibration' "$dir/agent.log" && break
    sleep 0.1
  done
  SERVICE_ADDRESS=127.0.0.1:$port
}
