#!/usr/bin/env bash
# Compares `rondo bench` with wrk against the same nginx on loopback.
#
# Usage: bench/bench-vs-wrk.sh [ROUNDS] [DURATION_S] [CONNECTIONS]
#
# Starts nginx (worker_processes 1, `return 200 "ok"`) on a free port in a temporary
# directory, then runs, alternating, for each round:
#   wrk -t1 -cC -dDs URL        rondo bench -cC -dDs --threads 1 URL
#   wrk -t2 -cC -dDs URL        rondo bench -cC -dDs --threads 2 URL
# and prints requests/s of every run, rondo/wrk for each adjacent pair, and medians. On a
# shared machine the pairs matter more than the columns: neighbours come and go between
# rounds, and a pair runs back to back. Needs wrk, nginx and a release build
# (cargo build --release).
set -euo pipefail

rounds=${1:-5}
secs=${2:-5}
conns=${3:-50}
root=$(cd "$(dirname "$0")/.." && pwd)
rondo=${RONDO:-$root/target/release/rondo}
[ -x "$rondo" ] || { echo "build first: cargo build --release" >&2; exit 1; }

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$dir/logs"
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 "ok"; }
    }
}
CONF
nginx -p "$dir" -c "$dir/nginx.conf" &
nginx_pid=$!
trap 'kill "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null; rm -rf "$dir"' EXIT
url=http://127.0.0.1:$port/
for _ in $(seq 50); do curl -fs "$url" >/dev/null 2>&1 && break; sleep 0.1; done

wrk_rps() { wrk "$@" | awk '/Requests\/sec/ {printf "%.0f", $2}'; }
rondo_rps() { "$rondo" bench --json "$@" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["requests_per_sec"]))'; }

echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), $(nproc) cores, $rounds rounds of ${secs}s, $conns connections, $url"
printf '%-6s %10s %10s %7s %10s %10s %7s\n' round wrk-t1 rondo-t1 ratio wrk-t2 rondo-t2 ratio
declare -a w1 r1 w2 r2 q1 q2
ratio() { python3 -c "print(f'{$2 / $1:.2f}')"; }
for i in $(seq "$rounds"); do
    w1+=("$(wrk_rps -t1 -c"$conns" -d"${secs}s" "$url")")
    r1+=("$(rondo_rps -c"$conns" -d"${secs}s" --threads 1 "$url")")
    w2+=("$(wrk_rps -t2 -c"$conns" -d"${secs}s" "$url")")
    r2+=("$(rondo_rps -c"$conns" -d"${secs}s" --threads 2 "$url")")
    q1+=("$(ratio "${w1[-1]}" "${r1[-1]}")")
    q2+=("$(ratio "${w2[-1]}" "${r2[-1]}")")
    printf '%-6s %10s %10s %7s %10s %10s %7s\n' "$i" "${w1[-1]}" "${r1[-1]}" "${q1[-1]}" "${w2[-1]}" "${r2[-1]}" "${q2[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '%-6s %10s %10s %7s %10s %10s %7s\n' median "$(median "${w1[@]}")" "$(median "${r1[@]}")" "$(median "${q1[@]}")" "$(median "${w2[@]}")" "$(median "${r2[@]}")" "$(median "${q2[@]}")"
