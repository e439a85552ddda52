#!/usr/bin/env bash
# CPU per request where users feel it: the same comparison as bench/proxies.sh (rondo, nginx
# and HAProxy in turn, one worker thread each, proxy on CPU 1, load and backend on CPU 0), on
# profiles heavier than the 2-byte echo:
#
#   browser  a browser-sized request head (~700 bytes, 15 headers), "ok" answered
#   1k       a 1 KiB response body
#   16k      a 16 KiB response body
#   256k     a 256 KiB response body
#   h2c      HTTP/2 clients (prior knowledge), one stream in flight per connection, "ok" answered
#   h2c-16k  the same HTTP/2 clients, a 16 KiB response body (h2c-1k, h2c-256k likewise)
#   newconn  a new client connection per request (Connection: close), "ok" answered
#
#   bench/proxies-profiles.sh [ROUNDS] [SECONDS] [CONNECTIONS] [PROFILE...]
#
# Defaults: 2 rounds, 5 s, 64 connections, every profile. Needs nginx, haproxy, wrk and a
# release build (cargo build --release; the h2c load is `rondo bench --http2`, the same for
# the three proxies). Peers: nginx `keepalive 64` to the backend (HTTP/2 to clients on the
# h2c listener), HAProxy `http-reuse always` (`proto h2` on the h2c listener), rondo with its
# defaults. Each proxy is configured as shipped otherwise: nginx buffers large responses
# (`proxy_buffering on`, to a temp file past its buffers), HAProxy and rondo stream them.
# rondo's listeners defer accepting until the client's first bytes (TCP_DEFER_ACCEPT), which
# the peers have but leave off; PEERS_DEFER=1 turns it on for them too (nginx `listen …
# deferred`, HAProxy `defer-accept`), which matters for newconn.
# After the rounds: each proxy's median CPU µs per request and p99, and rondo's median ÷ the
# better peer's (median_summary in bench/lib.sh), the figures to judge a run by.
# "stolen" and "backend conns closed / request" (churn) as in bench/proxies.sh.
#
#   RONDO_PGO=target/pgo/rondo bench/proxies-profiles.sh ...
#
# also runs rondo built with profile-guided optimisation (scripts/build-pgo) as "rondo-pgo",
# in the same rounds and with the same configuration, and compares it to the peers too.
#
#   FLOOR=target/release/examples/floor_relay bench/proxies-profiles.sh ...
#
# also runs the floor relay (bench/lib.sh) on the HTTP/1.1 profiles: the kernel's share alone;
# FLOOR_URING=target/release/examples/floor_relay_uring, the same on io_uring;
# FLOOR_HTTP=target/release/examples/floor_http, a lean HTTP/1.1 proxy (heads parsed, pooling).
ROUNDS=${1:-2}
SECS=${2:-5}
CONNS=${3:-64}
shift $(($# < 3 ? $# : 3))
PROFILES=${*:-browser 1k 16k 256k h2c newconn}
. "$(dirname "$0")/lib.sh"
need nginx haproxy wrk taskset
need_built "$RONDO" "cargo build --release"
need_floors

BACKEND=$(free_port)
PROXY=$(free_port)
H2PROXY=$(free_port)

# The backend: nginx answering "ok" on /, and files of 1, 16 and 256 KiB.
body_files "$dir/www"
nginx_backend "$BACKEND" "$dir/www"

nginx_conf <<CONF
  upstream app { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$PROXY${PEERS_DEFER:+ deferred};
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$H2PROXY http2;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
CONF

haproxy_conf <<CONF
frontend web
  bind 127.0.0.1:$PROXY${PEERS_DEFER:+ defer-accept}
  default_backend app
frontend web2
  bind 127.0.0.1:$H2PROXY proto h2
  default_backend app
backend app
  http-reuse always
  server s1 127.0.0.1:$BACKEND
CONF

{ rondo_listener web "$PROXY"; rondo_listener web2 "$H2PROXY"; rondo_app "$BACKEND"; } | rondo_conf

browser_lua "$dir/browser.lua"

# load PROFILE PORT: runs the profile's load against PORT for SECS seconds and sets reqs, rps,
# p50 and p99 (and errs).
load() { load_profile "$1" "$SECS" "http://127.0.0.1:$2"; }

port_of() { case $1 in h2c*) echo "$H2PROXY" ;; *) echo "$PROXY" ;; esac; }
# proxies_for PROFILE: the proxies a round of PROFILE runs (the floor relays on HTTP/1.1 loads only).
proxies_for() { case $1 in h2c*) measured_proxies ;; *) measured_proxies http1 ;; esac; }

wait_port "$BACKEND"
describe_run
echo "rounds $ROUNDS × ${SECS}s, $CONNS connections, profiles: $PROFILES"
echo
echo "| profile | round | proxy | requests/s | CPU µs/request | of which user | p50 | p99 | errors | RSS after (KiB) | backend conns closed / request | stolen (ms) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for profile in $PROFILES; do
  port=$(port_of "$profile")
  for round in $(seq "$ROUNDS"); do
    for proxy in $(proxies_for "$profile"); do
      pid=$(start_proxy $proxy); running=$pid
      wait_port "$port"
      sleep 0.2
      # Warm-up: pools filled, caches hot (a shorter run of the same load).
      SECS=1 load "$profile" "$port" >/dev/null
      cpu_mark "$pid"
      twbefore=$(tw_backend)
      load "$profile" "$port"
      read -r cpu_us user_us < <(cpu_per "$pid" "$reqs")
      stolen=$(stolen_ms)
      twafter=$(tw_backend)
      rss=$(rss_kb "$pid")
      stop_proxy "$pid"
      churn=$(churn_per "$twbefore" "$twafter" "$reqs")
      echo "| $profile | $round | $proxy | $rps | $cpu_us | $user_us | $p50 | $p99 | $errs | $rss | $churn | $stolen |"
      note_result "$profile" "$proxy" "$cpu_us" "$p99"
      sleep 0.5
    done
  done
done
median_summary
