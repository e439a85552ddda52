#!/usr/bin/env bash
# Measures the CPU each proxy spends per proxied request, and its latency, on loopback:
# rondo, nginx and HAProxy in turn (peers alternating, several rounds), one worker thread
# each, in front of the same backend (an nginx answering "ok"), driven by the same wrk run.
#
#   bench/proxies.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# Needs: nginx, haproxy, wrk (apt-get install -y nginx haproxy wrk) and a release build
# (cargo build --release). Everything listens on 127.0.0.1 and stops by itself. The proxy is
# pinned to CPU 1, wrk and the backend to CPU 0, so the proxy's own CPU time is measured
# from /proc/PID/stat (user + system, all threads) over exactly the wrk run. Shared setup in
# bench/lib.sh; gRPC in bench/proxies-grpc.sh, TLS termination in bench/proxies-tls.sh.
#
#   WORKERS=2 bench/proxies.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# runs the same table with two workers each (rondo `workers = 2`, nginx `worker_processes 2`,
# HAProxy `nbthread 2`, the backend with two too), everything sharing both CPUs and wrk with two
# threads: multi-core scaling. CPU time then includes nginx's worker processes.
#
# After the rounds: each proxy's median CPU µs per request and p99, and rondo's median ÷ the
# better peer's (median_summary in bench/lib.sh), the figures to judge a run by.
# "stolen" is the CPU time the hypervisor took from this machine during the run (/proc/stat
# steal, both CPUs): in a round with tens of milliseconds stolen every process stalled that
# long, and the p99 shows the stall, not the proxy; compare p99 on rounds with little stolen.
#
#   RONDO_PGO=target/pgo/rondo bench/proxies.sh ...
#
# also runs rondo built with profile-guided optimisation (scripts/build-pgo) as "rondo-pgo",
# in the same rounds and with the same configuration, and compares it to the peers too.
#
#   FLOOR=target/release/examples/floor_relay bench/proxies.sh ...
#
# also runs the floor relay (bench/lib.sh): what the kernel alone costs a proxy per request;
# FLOOR_URING=target/release/examples/floor_relay_uring, the same on io_uring;
# FLOOR_HTTP=target/release/examples/floor_http, a lean HTTP/1.1 proxy (heads parsed, pooling).
ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${3:-50}
. "$(dirname "$0")/lib.sh"
need nginx haproxy wrk taskset
need_built "$RONDO" "cargo build --release"
need_floors

BACKEND=$(free_port)
PROXY=$(free_port)
nginx_backend "$BACKEND"

echo_proxies "$PROXY" "$BACKEND"

wait_port "$BACKEND"
echo "| round | proxy | requests/s | CPU µs/request | of which user | p50 | p99 | RSS fresh (KiB) | backend conns closed / request | stolen (ms) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
direct() {
  wrk_stats "$(taskset -c "$LOAD_CPUS" wrk -t"$WORKERS" -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$BACKEND/")"
  echo "| $1 | direct to the backend | $rps | — | — | $p50 | $p99 | — | — | — |"
}
for round in $(seq "$ROUNDS"); do
  direct "$round"
  for proxy in $(measured_proxies http1); do
    pid=$(start_proxy $proxy); running=$pid
    wait_port "$PROXY"
    sleep 0.2
    fresh=$(rss_kb "$pid")
    # Warm-up: pools filled, caches hot.
    taskset -c "$LOAD_CPUS" wrk -t"$WORKERS" -c"$CONNS" -d1s "http://127.0.0.1:$PROXY/" >/dev/null
    cpu_mark "$pid"
    twbefore=$(tw_backend)
    out=$(taskset -c "$LOAD_CPUS" wrk -t"$WORKERS" -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$PROXY/")
    wrk_stats "$out"
    read -r cpu_us user_us < <(cpu_per "$pid" "$reqs")
    stolen=$(stolen_ms)
    twafter=$(tw_backend)
    stop_proxy "$pid"
    churn=$(churn_per "$twbefore" "$twafter" "$reqs")
    echo "| $round | $proxy | $rps | $cpu_us | $user_us | $p50 | $p99 | $fresh | $churn | $stolen |"
    note_result "$CONNS" "$proxy" "$cpu_us" "$p99"
    # Let the port leave TIME_WAIT-bound states before the next peer binds it.
    sleep 0.5
  done
done
median_summary
