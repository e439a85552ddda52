# Sourced by bench/soak.sh and bench/flood.sh: four killable backends and
# rondo, nginx and HAProxy configured alike in front of them, on 127.0.0.1 only.
#
# Each backend is a single-process nginx (no master, so SIGKILL kills all of it and a restart
# on the same port is one command) answering "ok" and logging `$msec $uri` of every request,
# so a script can tell when a restarted backend took traffic again.
#
# The proxies, one worker thread each, round robin over the four backends:
# - rondo with its defaults plus active checks every 1 s (rise 2, fall 2);
# - nginx with its defaults (passive only: max_fails 1, fail_timeout 10 s, next upstream on
#   error and timeout) and a keep-alive pool of 64 — open-source nginx has no active checks;
# - HAProxy with checks every 1 s (rise 2, fall 2), `option redispatch`, `retries 3` and
#   `retry-on conn-failure empty-response response-timeout`, `http-reuse always`: its best
#   settings for this test.

for tool in nginx haproxy wrk python3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y nginx haproxy wrk" >&2; exit 1; }
done
RONDO=${RONDO:-target/release/rondo}
[ -x "$RONDO" ] || { echo "missing $RONDO: cargo build --release" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
declare -A backend_pid
cleanup() {
  for p in "${pids[@]}" "${backend_pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
now_ms() { date +%s%3N; }
TICKS=$(getconf CLK_TCK)

BACKENDS=()
for i in 1 2 3 4; do BACKENDS+=("$(free_port)"); done
PROXY=$(free_port)

# Backend i (1-4): writes its config once; started again by the same call after a kill.
start_backend() {
  local i=$1 port=${BACKENDS[$(($1 - 1))]} d="$dir/b$1"
  if [ ! -f "$d/nginx.conf" ]; then
    mkdir -p "$d"
    cat > "$d/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $d/nginx.pid;
error_log $d/error.log crit;
events { worker_connections 4096; }
http {
  log_format t '\$msec \$uri';
  access_log $d/access.log t;
  keepalive_requests 1000000;
  client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
  server { listen 127.0.0.1:$port; location / { return 200 "ok"; } }
}
CONF
  fi
  taskset -c 0 nginx -c "$d/nginx.conf" -p "$d" >>"$d/out.log" 2>&1 &
  backend_pid[$i]=$!
  wait_port "$port"
}

kill_backend() { kill -9 "${backend_pid[$1]}" 2>/dev/null || true; wait "${backend_pid[$1]}" 2>/dev/null || true; }

# The first request (not a health check) backend i received after time $2 (ms since the
# epoch), as seconds after $2; "none" if it got none.
first_request_after() {
  awk -v t="$2" '$2 == "/" && $1 * 1000 > t { printf "%.2f", ($1 * 1000 - t) / 1000; found = 1; exit } END { if (!found) print "none" }' "$dir/b$1/access.log"
}

write_proxy_configs() {
  local servers_nginx="" servers_haproxy="" backends_rondo="" i=1
  for port in "${BACKENDS[@]}"; do
    servers_nginx+="server 127.0.0.1:$port; "
    servers_haproxy+="  server b$i 127.0.0.1:$port check inter 1s rise 2 fall 2"$'\n'
    backends_rondo+="{ address = \"127.0.0.1:$port\", id = \"b$i\" }, "
    i=$((i + 1))
  done
  mkdir -p "$dir/nginx"
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
  upstream app { $servers_nginx keepalive 64; }
  server {
    listen 127.0.0.1:$PROXY;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
  cat > "$dir/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  option redispatch
  retries 3
  retry-on conn-failure empty-response response-timeout
frontend web
  bind 127.0.0.1:$PROXY
  default_backend app
backend app
  balance roundrobin
  http-reuse always
  option httpchk GET /health
$servers_haproxy
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
algorithm = "round-robin"
backends = [ $backends_rondo]
[upstreams.health_check]
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
CONF
}

# Starts proxy $1 (rondo, nginx or haproxy) on CPU 1; its pid on stdout.
start_proxy() {
  case $1 in
    nginx) taskset -c 1 nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx" >"$dir/$1.log" 2>&1 & ;;
    haproxy) taskset -c 1 haproxy -f "$dir/haproxy.cfg" -db >"$dir/$1.log" 2>&1 & ;;
    rondo) RUST_LOG=warn taskset -c 1 "$RONDO" serve --config "$dir/rondo.toml" >"$dir/$1.log" 2>&1 & ;;
  esac
  echo $!
}

# Stops a proxy and waits until it is gone (it is not this shell's child: started in $(…)).
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; }

# Fields of a wrk report: requests, non-2xx, socket errors (connect+read+write+timeout), p99.
wrk_requests() { awk '/requests in/ {print $1}' "$1"; }
wrk_non2xx() { awk '/Non-2xx/ {n = $NF} END {print n + 0}' "$1"; }
wrk_socket_errors() { awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10; found = 1} END {if (!found) print 0}' "$1"; }
wrk_p99() { awk '$1 == "99%" {print $2}' "$1"; }
