#!/usr/bin/env python3
"""bench-hop.py SEND_PORT RECV_PORT [N]: the latency of a message between two line clients.

A line client on SEND_PORT says N messages one at a time in #lobby; a line client on RECV_PORT
times each from send to receipt. Prints p50/p99 in microseconds. Two ports of two clustered
nodes measure the hop through Redis; the same port twice, a message within one node (see
BENCHMARKS.md, "Cluster"). Start the nodes with --flood-rate 0 (flood control paces a sender)."""
import socket, sys, time
def connect(port):
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(10)
    return s, s.makefile("rb")
def until(f, pred):
    while True:
        line = f.readline()
        if not line: raise SystemExit("closed")
        line = line.decode(errors="replace").rstrip("\r\n")
        if pred(line): return line
sp, rp = int(sys.argv[1]), int(sys.argv[2]); n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
a, af = connect(sp); b, bf = connect(rp)
tag = str(time.time_ns() % 100000)
a.sendall(f"/nick hs{tag}\n".encode()); until(af, lambda l: f"hs{tag}" in l)
b.sendall(f"/nick hr{tag}\n".encode()); until(bf, lambda l: f"hr{tag}" in l)
# warm up: until b hears a
for i in range(100):
    a.sendall(f"w{i}\n".encode())
    try:
        until(bf, lambda l: l.endswith(f"> w{i}")); break
    except socket.timeout:
        continue
lat = []
for i in range(n):
    t = time.perf_counter_ns()
    a.sendall(f"m{i}\n".encode())
    until(bf, lambda l: l.endswith(f"> m{i}"))
    lat.append((time.perf_counter_ns() - t) / 1000)
lat.sort()
print(f"n={n} p50={lat[n//2]:.0f}us p99={lat[int(n*0.99)]:.0f}us")
