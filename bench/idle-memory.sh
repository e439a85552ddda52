#!/usr/bin/env bash
# Memory per idle keep-alive client connection of rondo, nginx and HAProxy, in turn, each
# with one worker in front of the same backend (an nginx answering "ok"), measured by
# bench/idle-memory.py: ROUNDS rounds of N connections (each carries one request, then stays
# open and silent), the growth of the proxy's resident memory per connection after each round.
#
#   bench/idle-memory.sh [N] [ROUNDS]      (defaults 1000 and 3)
#   PROTO=h2c bench/idle-memory.sh [N] [ROUNDS]
#
# PROTO=h2c: the clients speak HTTP/2 with prior knowledge (nginx `listen … http2`, HAProxy
# `proto h2`, rondo on its usual port), one request on each connection, then silence.
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
h2=()
if [ "${PROTO:-http1}" = h2c ]; then
  sed -i "s|listen 127.0.0.1:$PROXY;|listen 127.0.0.1:$PROXY http2;|" "$dir/nginx/nginx.conf"
  sed -i "s|^  bind 127.0.0.1:$PROXY\$|  bind 127.0.0.1:$PROXY proto h2|" "$dir/haproxy.cfg"
  h2=(--h2)
fi
wait_port "$BACKEND"
describe_run
echo "clients: ${PROTO:-http1}"
for proxy in rondo nginx haproxy; do
  pid=$(start_proxy $proxy); running=$pid
  wait_port "$PROXY"
  sleep 0.5
  echo "$proxy:"
  python3 bench/idle-memory.py "$(family "$pid" | tail -1)" 127.0.0.1 "$PROXY" "$N" --rounds "$ROUNDS" "${h2[@]}"
  stop_proxy "$pid"
  sleep 0.5
done
