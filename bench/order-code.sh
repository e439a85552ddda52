#!/usr/bin/env bash
# Regenerates crates/rondo/symbol-order.txt, the link order of rondo's code (read by
# crates/rondo/build.rs for release builds): every function `rondo serve` executes, found by
# running a release build under valgrind's callgrind, in the order request path, start-up,
# admin API and reload, shutdown. The linker puts these functions first in `.text`, so the code
# a running balancer uses sits in its first 1.7 MB instead of being spread over all 8 MB (the
# binary also carries the load generator, the demo and the chart writer), and the kernel's
# fault-around maps far fewer of the binary's pages (docs/performance.md, "Memory").
#
#   bench/order-code.sh
#
# Needs: valgrind, nginx, wrk, curl and a release build (cargo build --release). Everything
# listens on 127.0.0.1 and stops by itself; takes about two minutes.
#
# When to rerun: after a Rust toolchain update, a dependency update (Cargo.lock), a change to
# crates/rondo/Cargo.toml (its version, dependencies or build script), or a change to what
# start-up or the request path runs (new functions there land outside the packed part until
# the file lists them). Symbol names carry a hash of the crate (its name, version and
# dependencies) and of the function's types, not of its code: many edits keep the file valid,
# but adding a module to the proxy once took 72 of its 1,465 names out. Names it lists that no
# longer exist are ignored by the linker, so a stale file costs memory, never a build. How
# stale it is: the "code order" line every benchmark prints (the share of its names the binary
# still has; `code_order` in bench/lib.sh). Build the binary this reads, and the one you
# measure, with plain `cargo build --release`: building an example in the same command
# (`--bin rondo --example …`) turns on the dev-dependencies' features (tokio "full"), which
# renames nearly every symbol (344 of 1,517 found, fresh RSS 8.5 MB instead of 5.2).
. "$(dirname "$0")/lib.sh"
need valgrind callgrind_control nginx wrk curl
need_built "$RONDO" "cargo build --release"
OUT=crates/rondo/symbol-order.txt

BACKEND=$(free_port)
PROXY=$(free_port)
PROXY2=$(free_port)
ADMIN=$(free_port)
nginx_backend "$BACKEND"
wait_port "$BACKEND"

# The benchmark's configuration (bench/proxies.sh: one worker, no access log, health checks
# off), then one closer to a production one (access log, health checks, routes, retries, two
# listeners), whose extra functions are appended.
cat >"$dir/bench.toml" <<CONF
$(rondo_head 1 false "127.0.0.1:$ADMIN")
$(rondo_listener web "$PROXY")
$(rondo_app "$BACKEND")
CONF
cat >"$dir/full.toml" <<CONF
$(rondo_head 2 true "127.0.0.1:$ADMIN")
$(rondo_listener web "$PROXY")
[[listeners.routes]]
path_prefix = "/api/"
upstream = "api"
[[listeners]]
name = "internal"
bind = "127.0.0.1:$PROXY2"
upstream = "api"
[[upstreams]]
name = "app"
backends = [{ address = "127.0.0.1:$BACKEND" }, { address = "127.0.0.1:$BACKEND", id = "b" }]
[upstreams.health_check]
path = "/"
interval = "2s"
timeout = "1s"
[[upstreams]]
name = "api"
backends = [{ address = "127.0.0.1:$BACKEND" }]
tries = 2
retry_on_status = [502, 503, 504]
[upstreams.health_check]
path = "/"
interval = "2s"
timeout = "1s"
CONF

# wait_long PID PORT: wait_port for a process slowed down by valgrind (up to 2 minutes).
wait_long() {
  for _ in $(seq 1200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$2") 2>/dev/null && return 0
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  echo "nothing listens on port $2: see $dir/$name.log" >&2
  cat "$dir/$name.log" >&2
  exit 1
}

# profile NAME CONFIG [RUST_LOG]: runs `rondo serve` under callgrind (no backtraces, the log
# level given or the default), dumping the counts after each phase: $dir/NAME.1 start-up, .2
# requests, .3 admin API and reload, the last file (no suffix) shutdown.
profile() {
  env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE -u RUST_LOG ${3:+"RUST_LOG=$3"} \
    valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$dir/$1" "$RONDO" serve --config "$2" >"$dir/$1.log" 2>&1 &
  local pid=$!
  running=$pid
  name=$1
  wait_long "$pid" "$PROXY"
  wait_long "$pid" "$ADMIN"
  sleep 2
  callgrind_control -d "$pid" >/dev/null
  local url=http://127.0.0.1:$PROXY
  {
    curl -s "$url/" "$url/a?b=c" "$url/api/x" -H 'x-test: 1'
    curl -s -X POST --data-binary @"$dir/bench.toml" "$url/"
    curl -s -X POST -H 'Transfer-Encoding: chunked' --data-binary @"$dir/bench.toml" "$url/"
    curl -s -I "$url/"
    curl -s --http1.0 "$url/"
    curl -s --http2-prior-knowledge "$url/"
    curl -s "http://127.0.0.1:$PROXY2/"
  } >/dev/null || true
  wrk -t1 -c16 -d10s "$url/" >/dev/null
  wrk -t1 -c4 -d3s -H 'Connection: close' "$url/" >/dev/null
  callgrind_control -d "$pid" >/dev/null
  local admin=http://127.0.0.1:$ADMIN
  for path in / /healthz /metrics /api/v1/stats /api/v1/reload; do
    curl -s "$admin$path" >/dev/null || true
  done
  kill -HUP "$pid"
  sleep 5
  callgrind_control -d "$pid" >/dev/null
  kill -TERM "$pid"
  wait "$pid" || true
  running=
}
# The benchmark's log level (bench/lib.sh), then the default one.
profile bench "$dir/bench.toml" warn
profile full "$dir/full.toml"

# The functions of the rondo binary with a cost in each file, each named once (in its first
# file), files in the order given.
python3 - "$RONDO" "$OUT" \
  "$dir"/bench.2 "$dir"/bench.1 "$dir"/full.2 "$dir"/full.1 \
  "$dir"/bench.3 "$dir"/full.3 "$dir"/bench "$dir"/full <<'PY'
import os, re, sys
binary, out, files = os.path.realpath(sys.argv[1]), sys.argv[2], sys.argv[3:]
seen, order = set(), []
for path in files:
    cost, obj, fn, after_call = {}, None, None, False
    with open(path) as f:
        for line in f:
            if line.startswith("ob="):
                obj = os.path.realpath(line[3:].strip())
            elif line.startswith("fn="):
                fn = re.sub(r"'\d+$", "", line[3:].strip())
                # What valgrind calls the code before `main`: the C runtime's entry point.
                fn = "_start" if fn == "(below main)" else fn
                if obj == binary and not fn.startswith("0x"):
                    cost.setdefault(fn, 0)
                else:
                    fn = None
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                elif fn is not None:
                    cost[fn] += int(line.split()[1]) if len(line.split()) > 1 else 0
    # Most executed first, by powers of two, then by name: reruns change the file little.
    new = sorted((n for n in cost if n not in seen), key=lambda n: (-cost[n].bit_length(), n))
    seen.update(new)
    order += new
    print(f"{os.path.basename(path)}: {len(cost)} functions, {len(new)} new", file=sys.stderr)
with open(out, "w") as f:
    f.write("# The link order of rondo's code: written by bench/order-code.sh, read by\n")
    f.write("# crates/rondo/build.rs (release builds). Regenerate, do not edit.\n")
    f.write("\n".join(order) + "\n")
print(f"{out}: {len(order)} functions", file=sys.stderr)
PY
