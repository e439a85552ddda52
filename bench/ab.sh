#!/usr/bin/env bash
# Before and after: two rondo builds in turn (A, B, A, B…) on one request profile, so a change
# to the request path is measured against its parent on the same machine in the same minutes.
# Prints, per round and build, requests/s, CPU µs per request (user + system) and of it user
# space, p99 and errors, with the same method as bench/proxies.sh (rondo on CPU 1, wrk and the
# nginx backend on CPU 0, one worker thread, a one-second warm-up before each measurement).
#
#   bench/ab.sh OLD_BINARY NEW_BINARY [PATH] [ROUNDS] [SECONDS] [CONNECTIONS]
#
# PATH: / (the backend answers "ok"; the default), /1k, /16k or /256k (response bodies of that
# size), browser (a browser-sized request head on /, as in bench/proxies-profiles.sh) or h2c
# (HTTP/2 clients, prior knowledge, on /: `rondo bench --http2` from build B). Defaults: 3
# rounds of 4 s at 64 connections. Build the two binaries from the two
# commits (cargo build --release, then copy target/release/rondo aside).
A=${1:?usage: bench/ab.sh OLD_BINARY NEW_BINARY [PATH] [ROUNDS] [SECONDS] [CONNECTIONS]}
B=${2:?usage: bench/ab.sh OLD_BINARY NEW_BINARY [PATH] [ROUNDS] [SECONDS] [CONNECTIONS]}
URLPATH=${3:-/}
ROUNDS=${4:-3}
SECS=${5:-4}
CONNS=${6:-64}
# lib.sh works from the repository's root: resolve the binaries first.
A=$(realpath "$A")
B=$(realpath "$B")
. "$(dirname "$0")/lib.sh"
need nginx wrk taskset
need_built "$A" "a rondo binary"
need_built "$B" "a rondo binary"

rondo_alone

RONDO=$B describe_run
echo "bench/ab.sh A=$A B=$B path $URLPATH, $ROUNDS rounds × ${SECS}s, $CONNS connections"
echo
echo "| round | build | requests/s | CPU µs/request | of which user | p99 | errors | stolen (ms) |"
echo "|---|---|---|---|---|---|---|---|"
# load SECONDS: the profile's load for that long (HTTP/2 clients from build B); sets reqs,
# rps, p99 and errs.
load() { H2C_CLIENT=$B load_profile "$URLPATH" "$1" "http://127.0.0.1:$PROXY"; }
for round in $(seq "$ROUNDS"); do
  for build in A B; do
    if [ "$build" = A ]; then RONDO=$A; else RONDO=$B; fi
    pid=$(start_proxy rondo); running=$pid
    wait_port "$PROXY"
    load 1
    cpu_mark "$pid"
    load "$SECS"
    read -r cpu_us user_us < <(cpu_per "$pid" "$reqs")
    stolen=$(stolen_ms)
    stop_proxy "$pid"
    echo "| $round | $build | $rps | $cpu_us | $user_us | $p99 | $errs | $stolen |"
    note_result "$URLPATH" "$build" "$cpu_us" "$p99"
  done
done
median_summary B
