# Sourced by the benchmarks that run fuji as a service: start_service BIN_DIR RUN_DIR starts a fujid
# (database and log in RUN_DIR) and a fuji-agent of BIN_DIR on loopback, waits until the agent has
# measured its node (so that no measurement shares the cores with that), and sets SERVICE_ADDRESS.
# Their pids go to the array `pids`; stop_services (an EXIT trap) stops them.
pids=()
stop_services() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
start_service() {
  local bin=$1 dir=$2 port=
  mkdir -p "$dir"
  "$bin/fujid" --db "$dir/fujid.db" --listen 127.0.0.1:0 2> "$dir/fujid.log" &
  pids+=($!)
  for _ in $(seq 100); do
    port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$dir/fujid.log" | sed -n 1p)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$dir/fujid.log" >&2; exit 1; }
  "$bin/fuji-agent" --server "127.0.0.1:$port" 2> "$dir/agent.log" &
  pids+=($!)
  for _ in $(seq 300); do
    grep -qE 'calibrated|no calibration' "$dir/agent.log" && break
    sleep 0.1
  done
  SERVICE_ADDRESS=127.0.0.1:$port
}
