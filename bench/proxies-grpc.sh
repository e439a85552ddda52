#!/usr/bin/env bash
# Measures the CPU each proxy spends per gRPC unary call, and the calls' latency, on loopback:
# rondo (`protocol = "h2c"`), nginx (`grpc_pass`) and HAProxy (`proto h2`) in turn, one worker
# thread each, in front of the same gRPC server (the tests' tonic echo service,
# examples/grpc_backend.rs), clients and backend both speaking h2c. The load is
# `rondo bench --grpc-unary /echo.Echo/Say` with a 7-byte request message, CONNECTIONS client
# connections with one call in flight each; a call counts when its grpc-status is 0.
#
#   bench/proxies-grpc.sh [ROUNDS] [SECONDS] [CONNECTIONS]     # default 2 5 64
#
# Needs: nginx, haproxy (apt-get install -y nginx haproxy) and two release builds, in two
# commands so that the proxy under test is not built with the tests' tokio features (one
# invocation would unify them into the binary):
#   cargo build --release && cargo build --release --example grpc_backend
# RONDO=path picks another rondo binary for the proxy under test, BENCH=path the load
# generator (default target/release/rondo for both). Method and pinning as bench/proxies.sh
# (shared in bench/lib.sh): the proxy on CPU 1, the backend and the load on CPU 0.
ROUNDS=${1:-2}
SECS=${2:-5}
CONNS=${3:-64}
. "$(dirname "$0")/lib.sh"
need nginx haproxy taskset
BENCH=${BENCH:-target/release/rondo}
GRPC_BACKEND=${GRPC_BACKEND:-target/release/examples/grpc_backend}
need_built "$BENCH" "cargo build --release"
need_built "$RONDO" "cargo build --release"
need_built "$GRPC_BACKEND" "cargo build --release --example grpc_backend"

BACKEND=$(free_port)
PROXY=$(free_port)
taskset -c 0 "$GRPC_BACKEND" g1 "127.0.0.1:$BACKEND" >"$dir/backend.log" 2>&1 &
pids+=($!)
# EchoRequest { text: "hello" }: field 1, length 5.
printf '\x0a\x05hello' > "$dir/request.bin"

nginx_conf <<CONF
  upstream grpc_app { server 127.0.0.1:$BACKEND; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$PROXY http2;
    location / { grpc_pass grpc://grpc_app; }
  }
CONF

haproxy_conf <<CONF
frontend web
  bind 127.0.0.1:$PROXY proto h2
  default_backend app
backend app
  http-reuse always
  server g1 127.0.0.1:$BACKEND proto h2
CONF

rondo_conf <<CONF
[[listeners]]
name = "web"
bind = "127.0.0.1:$PROXY"
upstream = "app"
[[upstreams]]
name = "app"
protocol = "h2c"
backends = [{ address = "127.0.0.1:$BACKEND" }]
[upstreams.health_check]
enabled = false
CONF

# load PORT SECONDS: the gRPC load against 127.0.0.1:PORT, as rondo bench's JSON report.
load() {
  taskset -c 0 "$BENCH" bench --json --threads 1 -c "$CONNS" -d "${2}s" \
    --grpc-unary /echo.Echo/Say --body-file "$dir/request.bin" "http://127.0.0.1:$1"
}
# bench_stats JSON: sets calls (grpc-status 0), other (every other outcome), cps, p50, p99.
bench_stats() {
  read -r calls other cps p50 p99 < <(echo "$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)
ok = r["grpc_status_counts"].get("0", 0)
lat = r["latency_ms"]
print(ok, r["requests"] - ok, round(r["requests_per_sec"]), "%.3fms" % lat["p50"], "%.3fms" % lat["p99"])')
}

wait_port "$BACKEND"
describe_run
echo "gRPC backend 127.0.0.1:$BACKEND, $CONNS client connections (h2c, one call in flight each), ${SECS} s per run after a 1 s warm-up"
echo
echo "| round | proxy | calls/s | CPU µs/call | of which user | p50 | p99 | calls not OK | RSS fresh (KiB) | RSS after (KiB) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  bench_stats "$(load "$BACKEND" "$SECS")"
  echo "| $round | direct to the backend | $cps | — | — | $p50 | $p99 | $other | — | — |"
  for proxy in rondo nginx haproxy; do
    pid=$(start_proxy $proxy); running=$pid
    wait_port "$PROXY"
    sleep 0.2
    fresh=$(rss_kb "$pid")
    load "$PROXY" 1 >/dev/null
    cpu_mark "$pid"
    bench_stats "$(load "$PROXY" "$SECS")"
    read -r cpu_us user_us < <(cpu_per "$pid" "$calls")
    after=$(rss_kb "$pid")
    stop_proxy "$pid"
    echo "| $round | $proxy | $cps | $cpu_us | $user_us | $p50 | $p99 | $other | $fresh | $after |"
    sleep 0.5
  done
done
