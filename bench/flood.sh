#!/usr/bin/env bash
# The descriptor flood of crates/rondo/tests/exhaustion.rs against rondo, nginx and HAProxy:
# each runs under `ulimit -n 256` (soft and hard), one worker, in front of the four backends
# of bench/peers.sh; 600 client connections are opened and held idle for HOLD seconds.
#
#   bench/flood.sh [HOLD]      (default 20 s: longer than the 5 requests below take)
#
# Reported: normal requests served while flooded (of 5, each with a 3 s limit), the proxy's
# CPU time during them (a proxy spinning on EMFILE burns the whole interval), and requests
# served at once after the flood is released (of 5). nginx runs with its default
# `worker_connections 512` (more than the descriptors allow), then with 120 (fewer: nginx then
# closes idle connections to make room, "reusing connections"); HAProxy derives its `maxconn`
# from the limit; rondo derives `max_client_connections` from it.
set -euo pipefail
cd "$(dirname "$0")/.."
HOLD=${1:-20}
# shellcheck source=bench/peers.sh
source bench/peers.sh

write_proxy_configs
sed -i 's/worker_connections 4096/worker_connections 512/' "$dir/nginx/nginx.conf"
mkdir -p "$dir/nginx120"
sed -e 's/worker_connections 512/worker_connections 120/' -e "s|$dir/nginx|$dir/nginx120|g" \
  "$dir/nginx/nginx.conf" > "$dir/nginx120/nginx.conf"
start_flooded() {
  case $1 in
    nginx120) taskset -c 1 nginx -c "$dir/nginx120/nginx.conf" -p "$dir/nginx120" >"$dir/$1.log" 2>&1 & echo $! ;;
    *) start_proxy "$1" ;;
  esac
}
for i in 1 2 3 4; do start_backend "$i"; done

# Opens $1 connections to the proxy, holds them $2 seconds, closes them.
flood() {
  python3 - "$PROXY" "$1" "$2" <<'PY'
import socket, sys, time
port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held = []
for _ in range(n):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    except OSError:
        pass
time.sleep(hold)
for s in held:
    s.close()
PY
}

# Sends 5 GETs, 0.2 s apart; prints how many got 200.
five() {
  local ok=0
  for _ in 1 2 3 4 5; do
    code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$PROXY/" || true)
    [ "$code" = 200 ] && ok=$((ok + 1))
    sleep 0.2
  done
  echo "$ok"
}

echo "| proxy | served while flooded | CPU while flooded (ms over the 5 requests) | wall time of the 5 requests (s) | served right after |"
echo "|---|---|---|---|---|"
for proxy in rondo nginx nginx120 haproxy; do
  pid=$(ulimit -n 256 && start_flooded "$proxy")
  wait_port "$PROXY"
  sleep 2.5
  flood 600 "$HOLD" &
  flooder=$!
  sleep 1
  before=$(cpu_ticks "$pid")
  t0=$(now_ms)
  during=$(five)
  t1=$(now_ms)
  after_cpu=$(cpu_ticks "$pid")
  wait "$flooder"
  after=$(five)
  cpu_ms=$(( (after_cpu - before) * 1000 / TICKS ))
  wall=$(python3 -c "print(f'{($t1-$t0)/1000:.1f}')")
  echo "| $proxy | $during of 5 | $cpu_ms | $wall | $after of 5 |"
  stop "$pid"
  sleep 0.5
done
