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
# from /proc/PID/stat (user + system, all threads) over exactly the wrk run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${3:-50}
RONDO=${RONDO:-target/release/rondo}
for tool in nginx haproxy wrk taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y nginx haproxy wrk" >&2; exit 1; }
done
[ -x "$RONDO" ] || { echo "missing $RONDO: cargo build --release" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
BACKEND=$(free_port)
PROXY=$(free_port)
TICKS=$(getconf CLK_TCK)

# The backend: nginx answering 2 bytes, keep-alive, no logs.
mkdir -p "$dir/backend" "$dir/nginx"
cat > "$dir/backend/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/backend/nginx.pid;
error_log $dir/backend/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/backend; proxy_temp_path $dir/backend; fastcgi_temp_path $dir/backend;
  uwsgi_temp_path $dir/backend; scgi_temp_path $dir/backend;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok"; } }
}
CONF
taskset -c 0 nginx -c "$dir/backend/nginx.conf" -p "$dir/backend" >"$dir/backend.log" 2>&1 &
pids+=($!)

cat > "$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx; fastcgi_temp_path $dir/nginx;
  uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
  upstream app { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$PROXY;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF

cat > "$dir/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend web
  bind 127.0.0.1:$PROXY
  default_backend app
backend app
  http-reuse always
  server s1 127.0.0.1:$BACKEND
CONF

cat > "$dir/rondo.toml" <<CONF
workers = 1
access_log = false
[admin]
listen = "127.0.0.1:0"
[[listeners]]
name = "web"
bind = "127.0.0.1:$PROXY"
upstream = "app"
[[upstreams]]
name = "app"
backends = [{ address = "127.0.0.1:$BACKEND" }]
[upstreams.health_check]
enabled = false
CONF

start_proxy() {
  case $1 in
    nginx) taskset -c 1 nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx" >"$dir/$1.log" 2>&1 & ;;
    haproxy) taskset -c 1 haproxy -f "$dir/haproxy.cfg" -db >"$dir/$1.log" 2>&1 & ;;
    rondo) RUST_LOG=warn taskset -c 1 "$RONDO" serve --config "$dir/rondo.toml" >"$dir/$1.log" 2>&1 & ;;
  esac
  echo $!
}

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Connections to the backend closed by the proxy (TIME_WAIT on the proxy's side): churn.
tw_backend() { ss -Htn state time-wait "( dport = :$BACKEND )" | wc -l; }

wait_port "$BACKEND"
echo "| round | proxy | requests/s | CPU µs/request | of which user | p50 | p99 | RSS fresh (KiB) | backend conns closed / request |"
echo "|---|---|---|---|---|---|---|---|---|"
direct() {
  out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$BACKEND/")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  echo "| $1 | direct to the backend | $rps | — | — | $p50 | $p99 | — | — |"
}
for round in $(seq "$ROUNDS"); do
  direct "$round"
  for proxy in rondo nginx haproxy; do
    pid=$(start_proxy $proxy)
    wait_port "$PROXY"
    sleep 0.2
    fresh=$(rss_kb "$pid")
    # Warm-up: pools filled, caches hot.
    taskset -c 0 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$PROXY/" >/dev/null
    before=$(cpu_ticks "$pid")
    ubefore=$(user_ticks "$pid")
    twbefore=$(tw_backend)
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$PROXY/")
    after=$(cpu_ticks "$pid")
    uafter=$(user_ticks "$pid")
    twafter=$(tw_backend)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    cpu_us=$(python3 -c "print(f'{($after-$before)/$TICKS*1e6/$reqs:.2f}')")
    user_us=$(python3 -c "print(f'{($uafter-$ubefore)/$TICKS*1e6/$reqs:.2f}')")
    churn=$(python3 -c "print(f'{max($twafter-$twbefore,0)/$reqs:.4f}')")
    echo "| $round | $proxy | $rps | $cpu_us | $user_us | $p50 | $p99 | $fresh | $churn |"
    # Let the port leave TIME_WAIT-bound states before the next peer binds it.
    sleep 0.5
  done
done
