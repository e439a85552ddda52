#!/usr/bin/env bash
# Measures what TLS termination costs each proxy, on loopback: rondo (rustls), nginx and
# HAProxy (OpenSSL) in turn, one worker thread each, the same certificate (ECDSA P-256, made
# with openssl in the temp dir at start), TLS 1.2 and 1.3 enabled with each one's default
# suites (wrk's OpenSSL client then negotiates TLS 1.3), in front of the same nginx backend
# answering "ok" over plain keep-alive HTTP/1.1. Four loads per proxy, each after a 1 s warm-up:
#
#   https new conn     wrk -c 32 sending "Connection: close": every request is a new TCP
#                      connection with a full TLS handshake (wrk resumes no session)
#   http new conn      the same over plain HTTP, so the difference between the two is the
#                      TLS handshake alone
#   https keep-alive   wrk -c 64 and -c 256 over HTTPS: CPU per request, p50/p99. wrk opens
#                      its connections anew for the measured run, so its CPU includes 64 or
#                      256 handshakes; the last column says how much of the figure that is
#                      (connections x the proxy's CPU per new HTTPS connection / requests)
#   h2 keep-alive      HTTP/2 clients over TLS (h2 by ALPN), 64 connections, one stream in
#                      flight on each: `rondo bench --http2 -k` from $RONDO, the same client
#                      for the three proxies (wrk offers no ALPN, so its loads stay HTTP/1.1)
#
#   bench/proxies-tls.sh [ROUNDS] [SECONDS]     # default 2 5
#
# Needs: nginx, haproxy, wrk, openssl (apt-get install -y nginx haproxy wrk openssl) and a
# release build (cargo build --release). Method and pinning as bench/proxies.sh (shared in
# bench/lib.sh): the proxy on CPU 1, wrk and the backend on CPU 0.
ROUNDS=${1:-2}
SECS=${2:-5}
. "$(dirname "$0")/lib.sh"
need nginx haproxy wrk openssl taskset
need_built "$RONDO" "cargo build --release"

BACKEND=$(free_port)
TLS=$(free_port)
PLAIN=$(free_port)
nginx_backend "$BACKEND"

site_certificate

nginx_conf <<CONF
  upstream app { server 127.0.0.1:$BACKEND; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$TLS ssl http2;
    listen 127.0.0.1:$PLAIN;
    # nginx 1.22's default leaves TLS 1.3 out (it is in from 1.23.4).
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $dir/site.pem;
    ssl_certificate_key $dir/site.key;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
CONF

haproxy_conf <<CONF
frontend web
  bind 127.0.0.1:$TLS ssl crt $dir/site-with-key.pem alpn h2,http/1.1
  bind 127.0.0.1:$PLAIN
  default_backend app
backend app
  http-reuse always
  server s1 127.0.0.1:$BACKEND
CONF

rondo_conf <<CONF
$(rondo_listener tls "$TLS")
$(rondo_tls_table)
$(rondo_listener plain "$PLAIN")
$(rondo_app "$BACKEND")
CONF

# What the proxy negotiates with OpenSSL's client: protocol, suite, key exchange group.
negotiated() {
  openssl s_client -connect "127.0.0.1:$TLS" -servername localhost </dev/null 2>/dev/null |
    awk '/^New, / {sub(/^New, /, ""); p = $0} /Server Temp Key/ {sub(/.*Key: /, ""); k = $0} END {print p ", key exchange " k}'
}

# load CONNECTIONS SECONDS URL [wrk options]: wrk on CPU 0, or with H2=1 HTTP/2 clients over
# TLS (`rondo bench --http2 -k`); sets reqs, rps, p50, p99 and errs.
load() {
  local conns=$1 secs=$2 url=$3
  shift 3
  if [ -n "${H2:-}" ]; then
    h2c_stats "$(taskset -c 0 "$RONDO" bench --http2 -k --json -c "$conns" -d "${secs}s" "$url")"
  else
    wrk_stats "$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "$url")"
  fi
}

# run_load NAME CONNECTIONS URL [wrk options]: one measured load against the running proxy,
# after a 1 s warm-up; sets cpu_us (CPU µs per request) and prints the row, with the share of
# the connections' setup at the run's start when new_conn_us (CPU µs per new HTTPS
# connection) is set.
run_load() {
  local name=$1 conns=$2 url=$3 setup=—
  shift 3
  load "$conns" 1 "$url" "$@"
  cpu_mark "$pid"
  load "$conns" "$SECS" "$url" "$@"
  read -r cpu_us user_us < <(cpu_per "$pid" "$reqs")
  [ -z "$new_conn_us" ] || setup=$(python3 -c "print(f'{$conns*$new_conn_us/max($reqs,1):.2f}')")
  echo "| $round | $proxy | $name | $rps | $cpu_us | $user_us | $p50 | $p99 | $errs | $setup |"
}

wait_port "$BACKEND"
describe_run
echo "certificate ECDSA P-256 (self-signed), ${SECS} s per load after a 1 s warm-up"
echo
echo "| round | proxy | load | requests/s | CPU µs/request | of which user | p50 | p99 | errors | of which connection setup |"
echo "|---|---|---|---|---|---|---|---|---|---|"
declare -A seen
for round in $(seq "$ROUNDS"); do
  for proxy in rondo nginx haproxy; do
    pid=$(start_proxy $proxy); running=$pid
    wait_port "$TLS"
    wait_port "$PLAIN"
    sleep 0.2
    [ -n "${seen[$proxy]:-}" ] || seen[$proxy]="$(negotiated)"
    new_conn_us=
    run_load "https new conn per request, 32 conns" 32 "https://127.0.0.1:$TLS/" -H "Connection: close"
    new_conn_us=$cpu_us
    new_conn_us= run_load "http new conn per request, 32 conns" 32 "http://127.0.0.1:$PLAIN/" -H "Connection: close"
    run_load "https keep-alive, 64 conns" 64 "https://127.0.0.1:$TLS/"
    run_load "https keep-alive, 256 conns" 256 "https://127.0.0.1:$TLS/"
    H2=1 run_load "h2 keep-alive, 64 conns" 64 "https://127.0.0.1:$TLS/"
    stop_proxy "$pid"
    sleep 0.5
  done
done
echo
for proxy in rondo nginx haproxy; do echo "$proxy negotiated: ${seen[$proxy]}"; done
