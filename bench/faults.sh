#!/usr/bin/env bash
# Backends killed under load: rondo, nginx and HAProxy in turn, each in front of the same four
# backends (see bench/peers.sh for how each is configured), driven by wrk.
#
#   bench/faults.sh [SECONDS] [CONNECTIONS...]      (default: 20 s, at 16 and 256 connections)
#
# During each run: at 4 s backend 1 is SIGKILLed, at 7 s backend 2, at 11 s both restart on
# their ports. Reported: requests, client-visible errors (non-2xx answers and socket errors),
# p99 over the run, and how long after the restart each restarted backend received its first
# request (health checks not counted). Needs nginx, haproxy, wrk and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
shift || true
CONNS=("${@:-16 256}")
# shellcheck source=bench/peers.sh
source bench/peers.sh

write_proxy_configs
echo "| connections | proxy | requests | non-2xx | socket errors | p99 | backend 1 back after | backend 2 back after |"
echo "|---|---|---|---|---|---|---|---|"
for conns in ${CONNS[*]}; do
  for proxy in rondo nginx haproxy; do
    for i in 1 2 3 4; do start_backend "$i"; done
    pid=$(start_proxy "$proxy")
    wait_port "$PROXY"
    sleep 2.5 # health checks pass (rise 2 at 1 s)
    taskset -c 0 wrk -t1 -c"$conns" -d1s "http://127.0.0.1:$PROXY/" >/dev/null
    taskset -c 0 wrk -t1 -c"$conns" -d"${SECS}s" --latency "http://127.0.0.1:$PROXY/" >"$dir/wrk.txt" &
    load=$!
    sleep 4; kill_backend 1
    sleep 3; kill_backend 2
    sleep 4
    restarted=$(now_ms)
    start_backend 1; start_backend 2
    wait "$load"
    echo "| $conns | $proxy | $(wrk_requests "$dir/wrk.txt") | $(wrk_non2xx "$dir/wrk.txt") | $(wrk_socket_errors "$dir/wrk.txt") | $(wrk_p99 "$dir/wrk.txt") | $(first_request_after 1 "$restarted") s | $(first_request_after 2 "$restarted") s |"
    stop "$pid"
    for i in 1 2 3 4; do kill_backend "$i"; rm -f "$dir/b$i/access.log"; done
    sleep 0.5
  done
done
