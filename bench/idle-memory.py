#!/usr/bin/env python3
"""Memory per idle keep-alive connection, or per busy connection, of a running proxy.

    bench/idle-memory.py PID HOST PORT [N] [--rounds R] [--settle SECONDS]
    bench/idle-memory.py PID HOST PORT [N] --busy BACKEND_PORT
    bench/idle-memory.py PID HOST PORT [N] --h2 [--rounds R]
    bench/idle-memory.py PID HOST PORT [N] --tls [--h2] [--rounds R]

Idle (the default): opens N (default 5000) client connections to HOST:PORT, sends one GET on
each and reads the response (so every connection has carried a request and is now idle in
keep-alive), waits --settle seconds (default 3: rondo parks a keep-alive connection silent
for 100 ms and takes its socket out of tokio's reactor 1.1-2.1 s later, see
crates/rondo/src/proxy/parked.rs; 0 measures connections still in their task), then reads
the proxy's resident memory (/proc/PID/status VmRSS) and prints the growth divided by N.
With --rounds R, N more connections are opened each round while the earlier ones stay open,
and each round's growth is printed: the first round from a fresh process includes the heap
the allocator grew to at the burst's peak and keeps (it is reused, not returned), the later
rounds show what each more idle connection costs once it has.

--busy: the script itself is the backend, listening on 127.0.0.1:BACKEND_PORT (start the
proxy first with its only backend at that address and health checks off): it reads each
request and holds it unanswered. The N connections each send one GET and get no answer, so
each holds a request in flight through the proxy (its client connection, the request's state
and buffers, and a backend connection) while memory is read. Keep the proxy's
response_timeout (default 60 s) longer than the run.

--h2: each connection speaks HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1: the
preface and SETTINGS, one GET on stream 1, the server's SETTINGS acknowledged, then silence.

--tls: each connection is TLS (the server's certificate is not checked), HTTP/1.1 by ALPN, or
HTTP/2 by ALPN with --h2.

Connections are closed when it exits. Loopback only.
"""
import argparse
import resource
import socket
import ssl
import threading
import time


def rss_kib(pid, field="VmRSS"):
    """Resident memory in KiB: VmRSS (all), or RssAnon (without the program's code pages)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field}")


def hold_requests(listener, held, arrived):
    """Accepts backend connections, reads each request head and keeps the socket unanswered."""
    while True:
        conn, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        held.append(conn)
        arrived.release()


def h2_frame(kind, flags, stream, payload=b""):
    """One HTTP/2 frame (RFC 9113 section 4.1)."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_request(host):
    """The client preface, empty SETTINGS and `GET /` on stream 1 (HPACK: static-table
    indexes for :method GET, :scheme http and :path /, a literal :authority)."""
    block = b"\x82\x86\x84\x41" + bytes([len(host)]) + host.encode()
    return (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0)
            + h2_frame(1, 0x5, 1, block))


def h2_read_response(s):
    """Reads frames until stream 1 ends, acknowledging the server's SETTINGS."""
    data = b""
    while True:
        while len(data) < 9 or len(data) < 9 + int.from_bytes(data[:3], "big"):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed early")
            data += chunk
        length = int.from_bytes(data[:3], "big")
        kind, flags = data[3], data[4]
        stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        data = data[9 + length:]
        if kind == 4 and not flags & 1:
            s.sendall(h2_frame(4, 1, 0))
        if stream == 1 and kind in (0, 1) and flags & 1:
            return


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pid", type=int)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("n", type=int, nargs="?", default=5000)
    parser.add_argument("--busy", type=int, metavar="BACKEND_PORT")
    parser.add_argument("--settle", type=float, default=3.0, metavar="SECONDS")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--h2", action="store_true")
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    n = args.n
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * n * args.rounds + 100), hard))
    arrived = threading.Semaphore(0)
    held = []
    if args.busy:
        listener = socket.create_server(("127.0.0.1", args.busy), backlog=4096)
        threading.Thread(
            target=hold_requests, args=(listener, held, arrived), daemon=True
        ).start()
    conns = []
    if args.h2:
        request = h2_request(args.host)
    else:
        request = f"GET / HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode()
    kind = "busy connection (request held at the backend)" if args.busy else \
        "idle HTTP/2 connection" if args.h2 else "idle keep-alive connection"
    tls = None
    if args.tls:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["h2"] if args.h2 else ["http/1.1"])
        kind += " over TLS"
    for round in range(1, args.rounds + 1):
        before, anon_before = rss_kib(args.pid), rss_kib(args.pid, "RssAnon")
        for _ in range(n):
            s = socket.create_connection((args.host, args.port))
            if tls:
                s = tls.wrap_socket(s, server_hostname="localhost")
            s.sendall(request)
            if args.busy:
                if not arrived.acquire(timeout=10):
                    raise SystemExit("a request did not reach the backend")
            elif args.h2:
                h2_read_response(s)
            else:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise SystemExit("connection closed early")
                    data += chunk
            conns.append(s)
        time.sleep(args.settle)
        after, anon_after = rss_kib(args.pid), rss_kib(args.pid, "RssAnon")
        label = f"round {round}, " if args.rounds > 1 else ""
        print(f"{label}connections {n}: RSS {before} KiB -> {after} KiB, "
              f"{(after - before) * 1024 / n:.0f} bytes per {kind} "
              f"(anonymous: {(anon_after - anon_before) * 1024 / n:.0f}; the rest is code "
              "run for the first time)")

main()
