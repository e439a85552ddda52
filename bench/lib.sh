# Shared setup of the benchmarks (sourced by every bench/*.sh; not run on its own): tool checks,
# a temp dir removed at exit with every process started through it stopped by its PID, free
# ports, readiness waits, CPU and memory readings from /proc, wrk output parsing, the profiles'
# loads, the nginx backend answering "ok", and starting a proxy pinned to CPU 1 (the load and
# the backend run on CPU 0).
#
# The method, the same in every script: one worker thread per proxy, peers in turn within one
# run (so each round compares proxies under the same machine load), the proxy's CPU time
# (user + system, all threads, /proc/PID/stat) over exactly the measured load divided by the
# requests completed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RONDO=${RONDO:-target/release/rondo}
# RONDO_PGO (environment, optional): a second rondo binary, built by scripts/build-pgo, which
# bench/proxies.sh and bench/proxies-profiles.sh then run as one more proxy ("rondo-pgo") in
# the same rounds, with the same configuration, so both builds are compared in one run.
RONDO_PGO=${RONDO_PGO:-}
# rondo_builds: the rondo proxies a run measures ("rondo", and "rondo-pgo" with RONDO_PGO).
rondo_builds() { echo rondo${RONDO_PGO:+ rondo-pgo}; }
# The floor relays (crates/rondo/examples), each run by bench/proxies.sh and
# bench/proxies-profiles.sh as one more proxy on the HTTP/1.1 loads when its environment
# variable names its binary (cargo build --release --example EXAMPLE, then e.g.
# FLOOR=target/release/examples/floor_relay); median_summary compares them to the peers as it
# does rondo. One "name:variable:example" each:
#   floor        a client–backend pair of connections per client, bytes copied across
#                unparsed: the four system calls per request every proxy makes and nothing
#                else, so its CPU per request is the kernel's share of a proxy's cost;
#   floor-uring  the same relay on io_uring: what batched submissions leave of that share;
#   floor-http   floor plus the HTTP work no proxy can skip (heads parsed, backend
#                connections pooled): a lean HTTP/1.1 proxy.
FLOORS="floor:FLOOR:floor_relay floor-uring:FLOOR_URING:floor_relay_uring floor-http:FLOOR_HTTP:floor_http"
FLOOR=${FLOOR:-}
FLOOR_URING=${FLOOR_URING:-}
FLOOR_HTTP=${FLOOR_HTTP:-}
# floors_set: "name binary example" for each floor relay whose variable is set, a line each.
floors_set() {
  local floor name var example
  for floor in $FLOORS; do
    IFS=: read -r name var example <<<"$floor"
    [ -z "${!var}" ] || echo "$name ${!var} $example"
  done
}
# measured_proxies [http1]: the proxies a round runs, in order: the rondo builds, the floor
# relays that are set (only when the load is HTTP/1.1, the argument "http1", and only with
# WORKERS=1: a relay has one thread), nginx, HAProxy.
measured_proxies() {
  local floors=
  if [ -n "${1:-}" ] && [ "$WORKERS" = 1 ]; then
    floors=$(floors_set | awk '{printf " %s", $1}')
  fi
  echo "$(rondo_builds)$floors nginx haproxy"
}
# need_floors: exits with the build command when a floor relay's variable names a missing binary.
need_floors() {
  local name binary example
  while read -r name binary example; do
    need_built "$binary" "cargo build --release --example $example"
  done < <(floors_set)
}
# floor_binary NAME: the binary of the floor relay NAME.
floor_binary() { floors_set | awk -v n="$1" '$1 == n {print $2}'; }
TICKS=$(getconf CLK_TCK)
# WORKERS (environment, default 1): worker threads (rondo `workers`, HAProxy `nbthread`) or
# processes (nginx `worker_processes`) of each proxy and of the backend. With 1, the proxy runs
# alone on CPU 1 and the load and the backend on CPU 0; with 2, all of them share both CPUs
# (the load generator with two threads), so multi-core scaling shows.
WORKERS=${WORKERS:-1}
if [ "$WORKERS" = 1 ]; then PROXY_CPUS=1 LOAD_CPUS=0; else PROXY_CPUS=0,1 LOAD_CPUS=0,1; fi

dir=$(mktemp -d)
# Background processes to stop at exit: pids (backends, for the whole run) and running (the
# proxy under test, set by the caller after start_proxy, cleared by stop_proxy).
pids=()
running=
cleanup() {
  for p in "${pids[@]}" $running; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Exits with the apt-get line when one of the tools is missing.
need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "missing $tool: apt-get install -y nginx haproxy wrk nghttp2-client openssl" >&2
      exit 1
    }
  done
}

# Exits when the release build of rondo (or another file the script needs built) is missing.
need_built() {
  [ -x "$1" ] || { echo "missing $1: $2" >&2; exit 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# A proxy's processes: its PID and its children (nginx's workers under its master).
family() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() { for p in $(family "$1"); do cat "/proc/$p/stat"; done | awk '{t += $14 + $15} END {print t}'; }
user_ticks() { for p in $(family "$1"); do cat "/proc/$p/stat"; done | awk '{t += $14} END {print t}'; }
rss_kb() { for p in $(family "$1"); do cat "/proc/$p/status"; done | awk '/VmRSS/ {t += $2} END {print t}'; }

# cpu_mark PID: starts counting PID's CPU time; cpu_per PID N then prints the CPU µs and the
# user-space µs spent since, per unit of N (requests, calls, handshakes): "12.34 2.10".
cpu_mark() { mark_cpu=$(cpu_ticks "$1"); mark_user=$(user_ticks "$1"); mark_steal=$(steal_ticks); }
cpu_per() {
  local cpu user
  cpu=$(cpu_ticks "$1")
  user=$(user_ticks "$1")
  python3 -c "n=max($2,1); print(f'{($cpu-$mark_cpu)/$TICKS*1e6/n:.2f} {($user-$mark_user)/$TICKS*1e6/n:.2f}')"
}

# steal_ticks: CPU time the hypervisor gave to other guests while this machine's CPUs had work
# (the "steal" column of /proc/stat, all CPUs). stolen_ms prints it in milliseconds since
# cpu_mark: a run with tens of milliseconds stolen had its processes stopped for that long,
# whichever proxy ran, and its p99 shows the stall rather than the proxy.
steal_ticks() { awk '$1 == "cpu" {print $9}' /proc/stat; }
stolen_ms() { echo $((($(steal_ticks) - mark_steal) * 1000 / TICKS)); }

# browser_lua FILE: writes a wrk script sending a browser's request head (Chrome's navigation
# headers, ~700 bytes in all, 15 headers).
browser_lua() {
  cat > "$1" <<'LUA'
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"
wrk.headers["Accept-Language"] = "en-GB,en-US;q=0.9,en;q=0.8"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"
wrk.headers["Cache-Control"] = "max-age=0"
wrk.headers["Sec-Ch-Ua"] = "\"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\""
wrk.headers["Sec-Ch-Ua-Mobile"] = "?0"
wrk.headers["Sec-Ch-Ua-Platform"] = "\"Linux\""
wrk.headers["Sec-Fetch-Dest"] = "document"
wrk.headers["Sec-Fetch-Mode"] = "navigate"
wrk.headers["Sec-Fetch-Site"] = "same-origin"
wrk.headers["Upgrade-Insecure-Requests"] = "1"
wrk.headers["Referer"] = "http://127.0.0.1/catalogue/shoes?colour=blue&size=42"
wrk.headers["Cookie"] = "session=9f2c4e1a7b3d5f60; theme=dark; consent=analytics%3Dno%26ads%3Dno"
LUA
}

# h2c_stats JSON: sets reqs, rps, p50, p99 and errs from `rondo bench --json` output.
h2c_stats() {
  read -r reqs rps p50 p99 errs < <(echo "$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)
lat = r["latency_ms"]
print(r["responses"], round(r["requests_per_sec"]), "%.2fms" % lat["p50"], "%.2fms" % lat["p99"], r["errors"]["total"])')
}

# note_result GROUP PROXY CPU_US P99: keeps one round's figures (GROUP: the profile, or the
# connection count) for median_summary.
note_result() { echo "$1 $2 $3 $4" >> "$dir/results"; }

# median_summary [SUBJECT]: after the rounds, each proxy's median CPU µs per request and median
# p99 per group, and SUBJECT's median ÷ the better other's: single rounds swing with the
# machine (stolen CPU, a stalled round), medians over three or more rounds do not. Without
# SUBJECT, every rondo build measured (rondo, rondo-pgo) and the floor relays against the peers
# that are neither.
median_summary() {
  [ -s "$dir/results" ] || return 0
  python3 - "$dir/results" "${1:-rondo}" <<'PY'
import statistics, sys
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
rows = {}
for line in open(sys.argv[1]):
    group, proxy, cpu, p99 = line.split()
    rows.setdefault(group, {}).setdefault(proxy, []).append((float(cpu), ms(p99)))
print()
print("| group | proxy | rounds | median CPU µs/request | median p99 |")
print("|---|---|---|---|---|")
subject = sys.argv[2]
# The floor relays are measured like rondo, never peers to beat.
is_subject = (lambda p: p.startswith(("rondo", "floor"))) if subject == "rondo" else (lambda p: p == subject)
verdicts = []
for group, proxies in rows.items():
    med = {}
    for proxy, runs in proxies.items():
        med[proxy] = (statistics.median(c for c, _ in runs), statistics.median(p for _, p in runs))
        print(f"| {group} | {proxy} | {len(runs)} | {med[proxy][0]:.2f} | {med[proxy][1]:.2f}ms |")
    peers = [p for p in med if not is_subject(p)]
    for me in (p for p in med if is_subject(p)):
        if not peers:
            break
        best = min(peers, key=lambda p: med[p][0])
        low = min(med[p][1] for p in peers)
        verdicts.append(f"{group}: {me} ÷ the better of the others ({best}) {med[me][0] / med[best][0]:.2f} ×, "
                        f"median p99 {med[me][1]:.2f} ms against their lowest {low:.2f} ms")
print()
for v in verdicts:
    print(v)
PY
}

# wrk_stats OUTPUT: sets reqs, rps, p50, p99 and errs (socket errors + non-2xx/3xx) from wrk's
# --latency output.
wrk_stats() {
  reqs=$(echo "$1" | awk '/requests in/ {print $1}')
  rps=$(echo "$1" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$1" | awk '$1=="50%" {print $2}')
  p99=$(echo "$1" | awk '$1=="99%" {print $2}')
  errs=$(echo "$1" | awk '/Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} /Non-2xx/ {n += $5} END {print n + 0}')
}

# tw_backend: connections to $BACKEND closed by the proxy (TIME_WAIT on the proxy's side), to
# count churn: the difference over a run, divided by its requests (churn_per).
tw_backend() { ss -Htn state time-wait "( dport = :$BACKEND )" | wc -l; }

# churn_per BEFORE AFTER REQUESTS: backend connections closed per request between two
# tw_backend counts ("—" when no request completed).
churn_per() {
  awk -v b="$1" -v a="$2" -v r="$3" 'BEGIN { d = a - b; if (d < 0) d = 0; if (r > 0) printf "%.4f\n", d / r; else print "—" }'
}

# load_profile PROFILE SECONDS URL: one run of a profile's load, CONNS connections for SECONDS
# against URL (scheme, host and port, no path), pinned to CPU 0 (LOAD_PIN=0 leaves it
# unpinned); sets reqs, rps, p50, p99 and errs. PROFILE is one of:
#   /PATH, or 1k, 16k, 256k   wrk on that path (the nginx backend's body files)
#   browser                   wrk sending a browser's request head on / (browser_lua "$dir/browser.lua" first)
#   newconn                   wrk on /, a new connection for every request
#   h2c                       HTTP/2 clients with prior knowledge on /: `$H2C_CLIENT bench --http2`
#                             (H2C_CLIENT defaults to $RONDO)
#   h2c-1k, h2c-16k, h2c-256k the same HTTP/2 clients on that body file
load_profile() {
  local profile=$1 secs=$2 url=$3 pin=()
  [ "${LOAD_PIN:-1}" = 0 ] || pin=(taskset -c 0)
  local wrk=("${pin[@]}" wrk -t1 -c"$CONNS" -d"${secs}s" --latency)
  case $profile in
    browser) wrk_stats "$("${wrk[@]}" -s "$dir/browser.lua" "$url/")" ;;
    newconn) wrk_stats "$("${wrk[@]}" -H "Connection: close" "$url/")" ;;
    h2c) h2c_stats "$("${pin[@]}" "${H2C_CLIENT:-$RONDO}" bench --http2 --json -c "$CONNS" -d "${secs}s" "$url/")" ;;
    h2c-*) h2c_stats "$("${pin[@]}" "${H2C_CLIENT:-$RONDO}" bench --http2 --json -c "$CONNS" -d "${secs}s" "$url/${profile#h2c-}")" ;;
    /*) wrk_stats "$("${wrk[@]}" "$url$profile")" ;;
    *) wrk_stats "$("${wrk[@]}" "$url/$profile")" ;;
  esac
}

# body_files DIR: writes the response bodies the profiles ask for, DIR/1k, DIR/16k and
# DIR/256k, readable by the backend's unprivileged worker.
body_files() {
  mkdir -p "$1"
  chmod 755 "$dir" "$1"
  for size in 1 16 256; do head -c $((size * 1024)) /dev/zero | tr '\0' 'x' > "$1/${size}k"; done
}

# nginx_backend PORT [ROOT]: starts the backend (an nginx answering "ok" on /, keep-alive, no
# logs) on CPU 0; with ROOT, it also serves the files under ROOT (other paths).
nginx_backend() {
  mkdir -p "$dir/backend"
  local locations='location / { return 200 "ok"; }'
  [ -n "${2:-}" ] && locations="location = / { return 200 \"ok\"; } location / { root $2; }"
  cat > "$dir/backend/nginx.conf" <<CONF
worker_processes $WORKERS;
daemon off;
pid $dir/backend/nginx.pid;
error_log $dir/backend/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/backend; proxy_temp_path $dir/backend; fastcgi_temp_path $dir/backend;
  uwsgi_temp_path $dir/backend; scgi_temp_path $dir/backend;
  server { listen 127.0.0.1:$1; $locations }
}
CONF
  taskset -c "$LOAD_CPUS" nginx -c "$dir/backend/nginx.conf" -p "$dir/backend" >"$dir/backend.log" 2>&1 &
  pids+=($!)
}

# The configurations of the three proxies under test, all with one worker thread and no
# access log; each function takes what differs between the scripts (listeners, upstreams).

# nginx_conf <<CONF ... CONF: writes $dir/nginx/nginx.conf with its standard input inside the
# http {} block.
nginx_conf() {
  mkdir -p "$dir/nginx"
  cat > "$dir/nginx/nginx.conf" <<CONF
worker_processes $WORKERS;
daemon off;
master_process $([ "$WORKERS" = 1 ] && echo off || echo on);
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx; fastcgi_temp_path $dir/nginx;
  uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
$(cat)
}
CONF
}

# haproxy_conf <<CONF ... CONF: writes $dir/haproxy.cfg, one thread, HTTP mode, then its
# standard input (frontend and backend).
haproxy_conf() {
  cat > "$dir/haproxy.cfg" <<CONF
global
  nbthread $WORKERS
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
$(cat)
CONF
}

# rondo_conf <<CONF ... CONF: writes $dir/rondo.toml, $WORKERS workers, access log off, admin API on a free port,
# then its standard input (listeners and upstreams).
rondo_conf() {
  { rondo_head "$WORKERS" false 127.0.0.1:0; cat; } > "$dir/rondo.toml"
}

# rondo_alone: the setup of the scripts that run rondo builds alone (bench/ab.sh,
# bench/instructions.sh): sets BACKEND and PROXY, writes the response bodies and the browser
# script, starts the nginx backend and writes rondo's configuration in front of it.
rondo_alone() {
  BACKEND=$(free_port)
  PROXY=$(free_port)
  body_files "$dir/www"
  browser_lua "$dir/browser.lua"
  nginx_backend "$BACKEND" "$dir/www"
  { rondo_listener web "$PROXY"; rondo_app "$BACKEND"; } | rondo_conf
  wait_port "$BACKEND"
}

# rondo_head WORKERS ACCESS_LOG ADMIN: the top of a rondo configuration (worker threads, the
# access log on or off, the admin API's address).
rondo_head() {
  printf 'workers = %s\naccess_log = %s\n[admin]\nlisten = "%s"\n' "$1" "$2" "$3"
}

# rondo_listener NAME PORT: a plain listener for rondo_conf, in front of the upstream `app`.
rondo_listener() {
  printf '[[listeners]]\nname = "%s"\nbind = "127.0.0.1:%s"\nupstream = "app"\n' "$1" "$2"
}

# rondo_app BACKEND_PORT: the upstream `app` for rondo_conf, one backend, health checks off
# (as the peers' configurations have none).
rondo_app() {
  printf '[[upstreams]]\nname = "app"\nbackends = [{ address = "127.0.0.1:%s" }]\n[upstreams.health_check]\nenabled = false\n' "$1"
}

# site_certificate: a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1, valid two
# days, in $dir/site.pem and its key in $dir/site.key, both also in $dir/site-with-key.pem (the
# form HAProxy reads).
site_certificate() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/site.key" -out "$dir/site.pem" 2>/dev/null
  cat "$dir/site.pem" "$dir/site.key" > "$dir/site-with-key.pem"
}
# rondo_tls_table: the TOML table that puts site_certificate's certificate on the listener before it.
rondo_tls_table() {
  printf '[listeners.tls]\ncertificates = [{ cert = "%s", key = "%s" }]\n' "$dir/site.pem" "$dir/site.key"
}

# echo_proxies PROXY_PORT BACKEND_PORT [NGINX_EXTRA] [HAPROXY_EXTRA] [RONDO_EXTRA]: the three
# proxies' configurations of the echo comparison, each listening on PROXY_PORT in front of the
# one backend: nginx with `keepalive 64`, HAProxy with `http-reuse always`, rondo with its
# defaults. The extras are lines added to nginx's `server`, HAProxy's `frontend` and rondo's
# listener (e.g. longer idle timeouts).
echo_proxies() {
  nginx_conf <<CONF
  upstream app { server 127.0.0.1:$2; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
${3:-}
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
CONF
  haproxy_conf <<CONF
frontend web
  bind 127.0.0.1:$1
${4:-}
  default_backend app
backend app
  http-reuse always
  server s1 127.0.0.1:$2
CONF
  { rondo_listener web "$1"; [ -n "${5:-}" ] && echo "$5"; rondo_app "$2"; } | rondo_conf
}

# start_proxy NAME: starts rondo ($dir/rondo.toml), nginx ($dir/nginx/nginx.conf), HAProxy
# ($dir/haproxy.cfg, with $HAPROXY_ARGS added: -W for master-worker) or a floor relay (FLOORS:
# $PROXY in front of $BACKEND) on CPU 1 (both CPUs with WORKERS=2) and prints its PID. Call it
# as `pid=$(start_proxy NAME); running=$pid` (so an interrupted run stops it too); stop it with
# stop_proxy PID.
# shellcheck disable=SC2086 # HAPROXY_ARGS: extra arguments, split on purpose
start_proxy() {
  case $1 in
    nginx) taskset -c "$PROXY_CPUS" nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx" >"$dir/$1.log" 2>&1 & ;;
    haproxy) taskset -c "$PROXY_CPUS" haproxy -f "$dir/haproxy.cfg" -db ${HAPROXY_ARGS:-} >"$dir/$1.log" 2>&1 & ;;
    rondo) RUST_LOG=warn taskset -c "$PROXY_CPUS" "$RONDO" serve --config "$dir/rondo.toml" >"$dir/$1.log" 2>&1 & ;;
    rondo-pgo) RUST_LOG=warn taskset -c "$PROXY_CPUS" "$RONDO_PGO" serve --config "$dir/rondo.toml" >"$dir/$1.log" 2>&1 & ;;
    floor*) taskset -c "$PROXY_CPUS" "$(floor_binary "$1")" "127.0.0.1:$PROXY" "127.0.0.1:$BACKEND" >"$dir/$1.log" 2>&1 & ;;
  esac
  echo $!
}
stop_proxy() {
  kill "$1"
  # Not a child of this shell (started in a command substitution): wait for it to be gone.
  while kill -0 "$1" 2>/dev/null; do sleep 0.05; done
  running=
}

# What ran, for the record: date, load average, kernel, versions.
describe_run() {
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, Linux $(uname -r)"
  echo "rondo $("$RONDO" --version 2>&1 | awk '{print $2}') ($RONDO), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print "HAProxy " $3}')"
  [ -z "$RONDO_PGO" ] || echo "rondo-pgo: $RONDO_PGO (scripts/build-pgo)"
  floors_set | awk '{print $1 ": " $2 " (crates/rondo/examples/" $3 ".rs)"}'
  code_order
}

# code_order: how many of the functions crates/rondo/symbol-order.txt lists the binary has. A
# dependency or toolchain change renames them all (their names carry a hash), the file then
# orders nothing and fresh RSS grows by ~2.5 MB without any error: rerun bench/order-code.sh.
code_order() {
  local order=crates/rondo/symbol-order.txt
  command -v nm >/dev/null && [ -f "$order" ] || return 0
  local found
  found=$(comm -12 <(sort -u "$order") <(nm "$RONDO" 2>/dev/null | awk '{print $NF}' | sort -u) | wc -l)
  echo "code order: $found of $(sort -u "$order" | wc -l) functions of $order found in the binary"
}
