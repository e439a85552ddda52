#!/usr/bin/env bash
# Faults under load: rondo, nginx and HAProxy in turn, each with its defaults and with its best
# settings, in front of the same four backends, driven by wrk, one scenario after another.
#
#   bench/faults.sh [CONNECTIONS]          (default 64)
#   SCENARIOS="hang kill" PROXIES="rondo nginx-tuned" bench/faults.sh 64    (a subset)
#
# Scenarios (backend 1 is the one that misbehaves unless said otherwise):
#   kill      backend 1 SIGKILLed, 3 s later backend 2; both restarted at the end of the fault
#   hang      backend 1 accepts requests and never answers
#   reset     backend 1 sends the head and 1 KiB of a 64 KiB body, then resets the connection
#   stall     backend 1 sends the head and 1 KiB of a 64 KiB body, then nothing more
#   500       backend 1 answers 500 to everything
#   slow      backend 1 answers after 200 ms
#   all-down  all four SIGKILLed, restarted at the end of the fault
#   reload    the proxy reloads its unchanged configuration twice (rondo and nginx: SIGHUP;
#             HAProxy, run as master-worker: SIGUSR2)
#   sigterm   the proxy is told to stop 1 s into the fault window: SIGTERM for the defaults,
#             each peer's graceful stop for its tuned run (nginx SIGQUIT, HAProxy SIGUSR1;
#             rondo's SIGTERM is graceful already)
#
# Each run: the proxy starts, 1 s later 1 s of warm-up load (not counted), then wrk for 2 s
# before the fault, 6 s during it (4 s for sigterm, which has no after) and 4 s after it. Reported: requests and client-visible errors over the three (non-2xx answers; socket
# errors as connect / read / write / timeout), p99 during the fault only, and "back after":
# from the end of the fault (the restart, or the backend healed) to the first request the
# backend received (for kill and all-down, the later of the restarted backends; health checks
# not counted); for sigterm, the time the proxy took to exit. For sigterm the errors that
# matter are the read errors (a connection that ended without its response); wrk goes on
# reconnecting to the closed port for the rest of the window, and counts those refused
# connects as write errors.
#
# The proxies (one worker each, no access log; configurations below):
#   rondo         its defaults (checks every 30 s, response_timeout 60 s, retries for 502-504)
#   rondo-tuned   checks every 1 s (rise 2, fall 2), response_timeout 2 s, retry_on_status 5xx,
#                 breakers counting every 5xx (count_all_5xx, as HAProxy's observe layer7)
#   nginx         its defaults: a new backend connection per request, proxy_next_upstream
#                 error timeout, proxy_read_timeout 60 s, max_fails 1 fail_timeout 10 s
#   nginx-tuned   keepalive 64, proxy_next_upstream error timeout http_500 http_502 http_503
#                 http_504 with 3 tries, proxy_connect_timeout 1 s, proxy_read_timeout 2 s
#   haproxy       its defaults: no checks, no redispatch, retries 3 on connection failures
#   haproxy-tuned checks every 1 s (rise 2, fall 2) with observe layer7 (3 errors mark down),
#                 option redispatch, retries 3, retry-on all-retryable-errors, http-reuse
#                 always, timeout server 2 s
# nginx runs with its master process (as in production: reload and graceful stop need it).
#
# Backends: four target/release/examples/fault_backend (the tests' mock backend) on CPU 0
# with wrk, the proxy on CPU 1. Needs nginx, haproxy, wrk and
# `cargo build --release && cargo build --release --example fault_backend` (two commands: an
# example built with the binary turns on the dev-dependencies' features, and the binary's code
# order no longer applies; see bench/order-code.sh). About 13 minutes.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
need nginx haproxy wrk taskset python3
FAULT_BACKEND=${FAULT_BACKEND:-target/release/examples/fault_backend}
need_built "$RONDO" "cargo build --release"
need_built "$FAULT_BACKEND" "cargo build --release --example fault_backend"

CONNS=${1:-64}
SCENARIOS=${SCENARIOS:-kill hang reset stall 500 slow all-down reload sigterm}
PROXIES=${PROXIES:-rondo rondo-tuned nginx nginx-tuned haproxy haproxy-tuned}
BEFORE=2 DURING=6 AFTER=4

PORTS=()
for _ in 1 2 3 4; do PORTS+=("$(free_port)"); done
PROXY=$(free_port)
declare -A backend_pid

# start_backend I FAULT: backend I (1-4) on its port, misbehaving as FAULT on SIGUSR1; what
# it prints since this start goes to $dir/bI.out.
start_backend() {
  taskset -c 0 "$FAULT_BACKEND" "127.0.0.1:${PORTS[$(($1 - 1))]}" "$2" >"$dir/b$1.out" 2>&1 &
  backend_pid[$1]=$!
  wait_port "${PORTS[$(($1 - 1))]}"
}
kill_backend() {
  [ -n "${backend_pid[$1]:-}" ] || return 0
  kill -9 "${backend_pid[$1]}" 2>/dev/null || true
  wait "${backend_pid[$1]}" 2>/dev/null || true
  unset "backend_pid[$1]"
}
# At exit, the backends still running too (lib.sh's cleanup stops the proxy).
trap 'for i in 1 2 3 4; do kill_backend "$i"; done; cleanup' EXIT
signal_backend() { kill "-$2" "${backend_pid[$1]}"; }

# back_after I SINCE: seconds from SINCE ("start" or "fault ended") to backend I's first
# request, from its last such line; "none" when it got none.
back_after() {
  awk -v since="$2" '$0 ~ ("after " since "$") { t = $3 } END { print (t == "" ? "none" : t) }' "$dir/b$1.out"
}
# later A B: the later of two back_after values ("none" wins).
later() {
  if [ "$1" = none ] || [ "$2" = none ]; then echo none; else python3 -c "print(max($1, $2))"; fi
}

# seconds VALUE: a back_after value for the table.
seconds() { if [ "$1" = none ]; then echo "none within $AFTER s"; else echo "$1 s"; fi; }

# write_config VARIANT: the configuration start_proxy reads for VARIANT.
write_config() {
  local nginx_servers="" haproxy_servers="" rondo_backends="" i=1 port
  for port in "${PORTS[@]}"; do
    nginx_servers+="server 127.0.0.1:$port; "
    haproxy_servers+="  server b$i 127.0.0.1:$port"$'\n'
    rondo_backends+="{ address = \"127.0.0.1:$port\", id = \"b$i\" }, "
    i=$((i + 1))
  done
  case $1 in
    rondo | rondo-tuned)
      local tuned=""
      [ "$1" = rondo-tuned ] && tuned='response_timeout = "2s"
retry_on_status = ["5xx"]
[upstreams.health_check]
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
[upstreams.circuit_breaker]
count_all_5xx = true'
      rondo_conf <<CONF
[[listeners]]
name = "web"
bind = "127.0.0.1:$PROXY"
upstream = "app"
[[upstreams]]
name = "app"
backends = [ $rondo_backends]
$tuned
CONF
      ;;
    nginx)
      nginx_conf <<CONF
  upstream app { $nginx_servers }
  server { listen 127.0.0.1:$PROXY; location / { proxy_pass http://app; } }
CONF
      ;;
    nginx-tuned)
      nginx_conf <<CONF
  upstream app { $nginx_servers keepalive 64; }
  server {
    listen 127.0.0.1:$PROXY;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_500 http_502 http_503 http_504;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 1s;
      proxy_read_timeout 2s;
    }
  }
CONF
      ;;
    haproxy | haproxy-tuned)
      local tuned=""
      [ "$1" = haproxy-tuned ] && tuned='  option redispatch
  retries 3
  retry-on all-retryable-errors
  http-reuse always
  timeout server 2s
  option httpchk GET /health
  default-server check inter 1s rise 2 fall 2 observe layer7 error-limit 3 on-error mark-down'
      haproxy_conf <<CONF
frontend web
  bind 127.0.0.1:$PROXY
  default_backend app
backend app
  balance roundrobin
$tuned
$haproxy_servers
CONF
      ;;
  esac
  # nginx with its master process: reload and graceful stop need it.
  [ -f "$dir/nginx/nginx.conf" ] && sed -i 's/^master_process off;/master_process on;/' "$dir/nginx/nginx.conf"
  return 0
}

# The signal that reloads, and the one that stops, VARIANT.
reload_signal() { case $1 in haproxy*) echo USR2 ;; *) echo HUP ;; esac; }
stop_signal() { case $1 in nginx-tuned) echo QUIT ;; haproxy-tuned) echo USR1 ;; *) echo TERM ;; esac; }

# load SECONDS OUTPUT: wrk at CONNS connections on CPU 0.
load() { taskset -c 0 wrk -t1 -c"$CONNS" -d"${1}s" --timeout 10s --latency "http://127.0.0.1:$PROXY/" >"$2" 2>&1; }

# errors_of FILES...: "non-2xx | connect / read / write / timeout" summed over wrk outputs.
errors_of() {
  awk '/Non-2xx/ {n += $NF}
       /Socket errors/ {gsub(",", ""); c += $4; r += $6; w += $8; t += $10}
       END {printf "%d | %d / %d / %d / %d", n, c, r, w, t}' "$@"
}
requests_of() { awk '/requests in/ {n += $1} END {print n + 0}' "$@"; }
p99_of() { awk '$1 == "99%" {p = $2} END {print (p == "" ? "-" : p)}' "$1"; }

# run SCENARIO VARIANT: one run; prints its table row.
run() {
  local scenario=$1 variant=$2 proxy=${2%-tuned} fault=none back="-" pid i t0 wrk_pid
  case $scenario in
    hang | slow) fault=$scenario ;;
    reset) fault=reset-mid-body ;;
    stall) fault=stall-mid-body ;;
    500) fault=status-500 ;;
  esac
  rm -f "$dir"/*.txt
  for i in 1 2 3 4; do start_backend "$i" "$([ "$i" = 1 ] && echo "$fault" || echo none)"; done
  write_config "$variant"
  pid=$(HAPROXY_ARGS=-W start_proxy "$proxy")
  running=$pid
  wait_port "$PROXY"
  sleep 1
  load 1 "$dir/warm.txt"
  load "$BEFORE" "$dir/before.txt"
  local during=$DURING
  [ "$scenario" = sigterm ] && during=4
  load "$during" "$dir/during.txt" &
  wrk_pid=$!
  case $scenario in
    kill) kill_backend 1; sleep 3; kill_backend 2; sleep $((during - 3)) ;;
    all-down) for i in 1 2 3 4; do kill_backend "$i"; done; sleep "$during" ;;
    reload) sleep 1; kill "-$(reload_signal "$variant")" "$pid"; sleep 2; kill "-$(reload_signal "$variant")" "$pid"; sleep $((during - 3)) ;;
    sigterm)
      sleep 1
      t0=$(now_ms)
      kill "-$(stop_signal "$variant")" "$pid"
      while kill -0 "$pid" 2>/dev/null && [ $(($(now_ms) - t0)) -lt 20000 ]; do sleep 0.01; done
      back="exit $(python3 -c "print(f'{($(now_ms) - $t0) / 1000:.2f}')") s"
      kill -9 "$pid" 2>/dev/null || true
      ;;
    *) signal_backend 1 USR1; sleep "$during" ;;
  esac
  wait "$wrk_pid"
  case $scenario in
    kill) start_backend 1 none; start_backend 2 none ;;
    all-down) for i in 1 2 3 4; do start_backend "$i" none; done ;;
    reload | sigterm) ;;
    *) signal_backend 1 USR2 ;;
  esac
  local files=("$dir/before.txt" "$dir/during.txt")
  if [ "$scenario" != sigterm ]; then
    load "$AFTER" "$dir/after.txt"
    files+=("$dir/after.txt")
  fi
  case $scenario in
    kill) back=$(seconds "$(later "$(back_after 1 start)" "$(back_after 2 start)")") ;;
    all-down) back=$(seconds "$(later "$(later "$(back_after 1 start)" "$(back_after 2 start)")" "$(later "$(back_after 3 start)" "$(back_after 4 start)")")") ;;
    reload | sigterm) ;;
    *) back=$(seconds "$(back_after 1 "fault ended")") ;;
  esac
  echo "| $scenario | $variant | $(requests_of "${files[@]}") | $(errors_of "${files[@]}") | $(p99_of "$dir/during.txt") | $back |"
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  running=
  for i in 1 2 3 4; do kill_backend "$i"; done
  sleep 0.3
}

now_ms() { date +%s%3N; }

describe_run
echo "bench/faults.sh $CONNS, connections $CONNS, scenarios: $SCENARIOS"
echo
echo "| scenario | proxy | requests | non-2xx | socket errors (connect / read / write / timeout) | p99 during the fault | back after |"
echo "|---|---|---|---|---|---|---|"
for scenario in $SCENARIOS; do
  for variant in $PROXIES; do
    run "$scenario" "$variant"
  done
done
