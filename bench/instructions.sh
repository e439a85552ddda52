#!/usr/bin/env bash
# User-space instructions per request: rondo under valgrind's callgrind, proxying a fixed
# profile for a few seconds, its instruction count (all threads, libc included, the kernel not)
# divided by the requests wrk completed. This machine's virtual CPUs have no hardware counters
# and its CPU time swings by 20 % between rounds with stolen time, so a change to the request
# path's own code is compared here: the count moves by well under 1 % between runs of one
# build. It sees no cache misses, system calls or waits; bench/ab.sh measures those.
#
#   bench/instructions.sh BINARY... [-- PATH [CONNECTIONS [SECONDS]]]
#
# PATH: / (the default; the backend answers "ok"), /1k, /16k, /256k, browser (a browser's
# request head on /, as in bench/proxies-profiles.sh) or h2c (HTTP/2 clients with prior
# knowledge on /, driven by `rondo bench --http2` from the first binary, as in bench/ab.sh).
# Defaults: 16 connections, 6 s after a 3 s warm-up that is not counted. With TOP=N in the
# environment, also prints the N functions with the most instructions per request. Needs
# valgrind, nginx and wrk; everything listens on 127.0.0.1 and stops by itself.
bins=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do bins+=("$(realpath "$1")"); shift; done
[ "${1:-}" = -- ] && shift
[ ${#bins[@]} -gt 0 ] || { echo "usage: bench/instructions.sh BINARY... [-- PATH [CONNECTIONS [SECONDS]]]" >&2; exit 2; }
URLPATH=${1:-/}
CONNS=${2:-16}
SECS=${3:-6}
. "$(dirname "$0")/lib.sh"
need valgrind callgrind_control nginx wrk

rondo_alone
# load SECONDS: the profile's load for that long, unpinned (valgrind runs on one CPU at a
# time anyway), HTTP/2 clients from the first binary; sets reqs.
load() { LOAD_PIN=0 H2C_CLIENT=${bins[0]} load_profile "$URLPATH" "$1" "http://127.0.0.1:$PROXY"; }

echo "| build | path | requests | instructions per request |"
echo "|---|---|---|---|"
for bin in "${bins[@]}"; do
  need_built "$bin" "a rondo binary"
  env -u RUST_BACKTRACE RUST_LOG=warn valgrind --tool=callgrind --compress-strings=no \
    --compress-pos=no --callgrind-out-file="$dir/cg" "$bin" serve --config "$dir/rondo.toml" \
    >"$dir/valgrind.log" 2>&1 &
  running=$!
  for _ in $(seq 1200); do (exec 3<>/dev/tcp/127.0.0.1/"$PROXY") 2>/dev/null && break; sleep 0.1; done
  load 3
  callgrind_control -z "$running" >/dev/null 2>&1
  load "$SECS"
  callgrind_control -d "$running" >/dev/null 2>&1
  stop_proxy "$running"
  running=
  counts=$(ls -t "$dir"/cg.* | head -1)
  total=$(awk '/^summary:/ {print $2; exit}' "$counts")
  echo "| $(basename "$bin") | $URLPATH | $reqs | $((total / reqs)) |"
  if [ -n "${TOP:-}" ]; then
    # Each function's own instructions (not those of what it calls), per request.
    python3 - "$counts" "$reqs" "$TOP" <<'PY'
import collections, sys
path, reqs, top = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
own, fn, after_call = collections.Counter(), None, False
for line in open(path):
    if line.startswith("fn="):
        fn = line[3:].strip()
    elif line.startswith("calls="):
        after_call = True
    elif line[:1].isdigit():
        if after_call:
            after_call = False
        elif fn:
            own[fn] += int(line.split()[1])
for name, n in own.most_common(top):
    print(f"    {n / reqs:7.0f}  {name[:110]}")
PY
  fi
  rm -f "$dir"/cg*
done
