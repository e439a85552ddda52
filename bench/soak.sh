#!/usr/bin/env bash
# A steady run: rondo, nginx and HAProxy in turn in front of the same four backends (see
# bench/peers.sh), wrk at a fixed number of connections for SECONDS, the proxy's resident
# memory and open descriptors sampled every second.
#
#   bench/soak.sh [SECONDS] [CONNECTIONS]      (default: 10 s at 64 connections)
#
# Reported per proxy: requests/s, errors (non-2xx and socket errors, expected 0), p99, RSS at
# the start and its range during the run, descriptors' range, CPU µs per request. A leak shows
# as RSS or descriptors climbing with the length of the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
# shellcheck source=bench/peers.sh
source bench/peers.sh

write_proxy_configs
echo "| proxy | seconds | requests/s | errors | p99 | RSS fresh (KiB) | RSS during (KiB) | descriptors during | CPU µs/request |"
echo "|---|---|---|---|---|---|---|---|---|"
for i in 1 2 3 4; do start_backend "$i"; done
for proxy in rondo nginx haproxy; do
  pid=$(start_proxy "$proxy")
  wait_port "$PROXY"
  sleep 2.5
  fresh=$(rss_kb "$pid")
  before=$(cpu_ticks "$pid")
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$PROXY/" >"$dir/wrk.txt" &
  load=$!
  : >"$dir/samples"
  while kill -0 "$load" 2>/dev/null; do
    echo "$(rss_kb "$pid") $(fds "$pid")" >>"$dir/samples"
    sleep 1
  done
  wait "$load"
  after=$(cpu_ticks "$pid")
  reqs=$(wrk_requests "$dir/wrk.txt")
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
  errors=$(( $(wrk_non2xx "$dir/wrk.txt") + $(wrk_socket_errors "$dir/wrk.txt") ))
  range() { sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "–" hi}'; }
  rss=$(awk '{print $1}' "$dir/samples" | range)
  fd=$(awk '{print $2}' "$dir/samples" | range)
  cpu=$(python3 -c "print(f'{($after-$before)/$TICKS*1e6/$reqs:.2f}')")
  echo "| $proxy | $SECS | $rps | $errors | $(wrk_p99 "$dir/wrk.txt") | $fresh | $rss | $fd | $cpu |"
  stop "$pid"
  sleep 0.5
done
