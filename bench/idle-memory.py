#!/usr/bin/env python3
"""Memory per idle keep-alive connection of a running proxy.

    bench/idle-memory.py PID HOST PORT [N]

Opens N (default 5000) client connections to HOST:PORT, sends one GET on each and reads the
response (so every connection has carried a request and is now idle in keep-alive), then
reads the proxy's resident memory (/proc/PID/status VmRSS) and prints the growth divided by
N. Connections are closed when it exits. Loopback only.
"""
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def main():
    pid, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))
    before = rss_kib(pid)
    conns = []
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("connection closed early")
            data += chunk
        conns.append(s)
    time.sleep(1)
    after = rss_kib(pid)
    print(f"connections {n}: RSS {before} KiB -> {after} KiB, "
          f"{(after - before) * 1024 / n:.0f} bytes per idle keep-alive connection")


main()
