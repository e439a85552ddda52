#!/usr/bin/env bash
# Memory per idle keep-alive client connection of rondo, nginx and HAProxy, in turn, each
# with one worker in front of the same backend (an nginx answering "ok"), measured by
# bench/idle-memory.py: ROUNDS rounds of N connections (each carries one request, then stays
# open and silent), the growth of the proxy's resident memory per connection after each round.
#
#   bench/idle-memory.sh [N] [ROUNDS]      (defaults 1000 and 3)
#
# Needs nginx and haproxy (apt-get install -y nginx haproxy) and a release build. The first
# round from a fresh process carries the heap grown at the burst's peak; later rounds show
# what each more idle connection costs. Loopback only; everything stops by itself.
N=${1:-1000}
ROUNDS=${2:-3}
. "$(dirname "$0")/lib.sh"
need nginx haproxy taskset
need_built "$RONDO" "cargo build --release"

BACKEND=$(free_port)
PROXY=$(free_port)
nginx_backend "$BACKEND"
echo_proxies "$PROXY" "$BACKEND" "    keepalive_timeout 300s;" "  timeout http-keep-alive 300s" \
  'idle_timeout = "300s"'
wait_port "$BACKEND"
describe_run
for proxy in rondo nginx haproxy; do
  pid=$(start_proxy $proxy); running=$pid
  wait_port "$PROXY"
  sleep 0.5
  echo "$proxy:"
  python3 bench/idle-memory.py "$(family "$pid" | tail -1)" 127.0.0.1 "$PROXY" "$N" --rounds "$ROUNDS"
  stop_proxy "$pid"
  sleep 0.5
done
