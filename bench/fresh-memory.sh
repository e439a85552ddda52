#!/usr/bin/env bash
# Fresh memory of `rondo serve`: one or more builds in turn (A, B, A, B…), each started with the
# benchmark's configuration (bench/proxies.sh: one worker, one listener, one upstream, health
# checks off), read one second after start and again after 5 s of `wrk -t1 -c64`. Prints VmRSS,
# the anonymous part (/proc/PID/smaps_rollup) and the resident KiB of the binary's own
# mappings (/proc/PID/smaps: code r-x, read-only data r--, writable rw-), all in KiB.
#
#   bench/fresh-memory.sh ROUNDS BINARY...
#   COLD=1 bench/fresh-memory.sh ROUNDS BINARY...
#
# By default each binary is read whole first (in the page cache, as right after a build); with
# COLD=1 it is dropped from the page cache first, so the process loads its pages itself. Needs
# nginx and wrk; everything listens on 127.0.0.1 and stops by itself.
ROUNDS=${1:?usage: bench/fresh-memory.sh ROUNDS BINARY...}
shift
BINARIES=()
for b in "$@"; do BINARIES+=("$(realpath "$b")"); done
. "$(dirname "$0")/lib.sh"
need nginx wrk taskset
for b in "${BINARIES[@]}"; do need_built "$b" "a rondo binary"; done

BACKEND=$(free_port)
PROXY=$(free_port)
nginx_backend "$BACKEND"
wait_port "$BACKEND"
{ rondo_listener web "$PROXY"; rondo_app "$BACKEND"; } | rondo_conf
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"

# binary_kb PID BINARY: resident KiB of BINARY's mappings in PID, by permissions.
binary_kb() {
  awk -v bin="$2" '
    /^[0-9a-f]+-[0-9a-f]+ / { cur = ($6 == bin) ? $2 : ""; next }
    /^Rss:/ && cur != "" { r[cur] += $2 }
    END { printf "r-x %d r-- %d rw- %d", r["r-xp"], r["r--p"], r["rw-p"] }' "/proc/$1/smaps"
}
reading() {
  echo "VmRSS $(rss_kb "$1") anonymous $(awk '/^Anonymous:/ {print $2}' "/proc/$1/smaps_rollup")" \
    "binary $(binary_kb "$1" "$2") threads $(ls "/proc/$1/task" | wc -l)"
}
for _ in $(seq "$ROUNDS"); do
  for b in "${BINARIES[@]}"; do
    if [ -n "${COLD:-}" ]; then
      python3 -c 'import os, sys; os.posix_fadvise(os.open(sys.argv[1], os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)' "$b"
    else
      cat "$b" >/dev/null
    fi
    RONDO=$b
    pid=$(start_proxy rondo)
    running=$pid
    wait_port "$PROXY"
    sleep 1
    echo "$b fresh:  $(reading "$pid" "$b")"
    taskset -c "$LOAD_CPUS" wrk -t1 -c64 -d5s "http://127.0.0.1:$PROXY/" >/dev/null
    echo "$b loaded: $(reading "$pid" "$b")"
    stop_proxy "$pid"
  done
done
