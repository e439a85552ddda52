#!/usr/bin/env bash
# Memory per idle keep-alive client connection of rondo, nginx and HAProxy, in turn, each
# with one worker in front of the same backend (an nginx answering "ok"), measured by
# bench/idle-memory.py: ROUNDS rounds of N connections (each carries one request, then stays
# open and silent), the growth of the proxy's resident memory per connection after each round.
#
#   bench/idle-memory.sh [N] [ROUNDS]      (defaults 1000 and 3)
#   PROTO=h2c bench/idle-memory.sh [N] [ROUNDS]      (also PROTO=tls, PROTO=h2)
#
# PROTO: how the clients speak, one request on each connection, then silence. http1 (the
# default); h2c, HTTP/2 with prior knowledge (nginx `listen … http2`, HAProxy `proto h2`,
# rondo on its usual port); tls, HTTP/1.1 over TLS; h2, HTTP/2 over TLS by ALPN. TLS needs
# openssl for the test certificate.
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
PROTO=${PROTO:-http1}
rondo_tls=""
case $PROTO in
  tls | h2)
    need openssl
    site_certificate
    rondo_tls=$(rondo_tls_table)
    ;;
esac
echo_proxies "$PROXY" "$BACKEND" "    keepalive_timeout 300s;" "  timeout http-keep-alive 300s" \
  "idle_timeout = \"300s\"
$rondo_tls"
# The listener as PROTO asks: nginx's `listen` and HAProxy's `bind` lines get their options.
listen_as() {
  sed -i "s|listen 127.0.0.1:$PROXY;|listen 127.0.0.1:$PROXY $1;|" "$dir/nginx/nginx.conf"
  sed -i "s|^  bind 127.0.0.1:$PROXY\$|  bind 127.0.0.1:$PROXY $2|" "$dir/haproxy.cfg"
}
client=()
nginx_cert="ssl_certificate $dir/site.pem; ssl_certificate_key $dir/site.key; ssl_protocols TLSv1.2 TLSv1.3"
case $PROTO in
  http1) ;;
  h2c) listen_as http2 "proto h2"; client=(--h2) ;;
  tls) listen_as "ssl; $nginx_cert" "ssl crt $dir/site-with-key.pem alpn http/1.1"; client=(--tls) ;;
  h2) listen_as "ssl http2; $nginx_cert" "ssl crt $dir/site-with-key.pem alpn h2,http/1.1"; client=(--tls --h2) ;;
  *) echo "PROTO: http1, h2c, tls or h2, not $PROTO" >&2; exit 2 ;;
esac
wait_port "$BACKEND"
describe_run
echo "clients: $PROTO"
for proxy in rondo nginx haproxy; do
  pid=$(start_proxy $proxy); running=$pid
  wait_port "$PROXY"
  sleep 0.5
  echo "$proxy:"
  python3 bench/idle-memory.py "$(family "$pid" | tail -1)" 127.0.0.1 "$PROXY" "$N" --rounds "$ROUNDS" "${client[@]}"
  stop_proxy "$pid"
  sleep 0.5
done
