#!/usr/bin/env python3
"""Idle memory per client of a running `pollchat serve`, in clear or over TLS.

`pollchat bench` speaks no TLS yet; this stands in for its `--idle` scenario on the TLS doors:
it connects N clients one after another to 127.0.0.1:PORT (over TLS with --tls, trusting any
certificate), reads each greeting up to its NAMES line, keeps them all open and idle, and
prints the server's memory from /proc/PID/status: RSS before, once all are connected, and 8 s
later (the loop hands freed memory back after 5 s of quiet), with the peak (VmHWM), per
client; and the server's CPU time (utime + stime) spent while they connected.

    pollchat serve -q --tls-cert C --tls-key K --max-connects-per-ip 0 &
    ulimit -n 20000
    python3 benches/tls_idle.py $(pidof pollchat) 9224 10000 --tls
    python3 benches/tls_idle.py $(pidof pollchat) 9223 10000        # the same in clear

Serve the line protocol on PORT; start a fresh server for each run (RSS only grows back
down so far).
"""
import os
import socket
import ssl
import sys
import time


def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def main():
    pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    tls = "--tls" in sys.argv
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    before, cpu_before = status(pid), cpu_secs(pid)
    clients = []
    started = time.time()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        got = b""
        while b"NAMES" not in got:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit(f"closed by the server after {len(clients)} clients: {got!r}")
            got += chunk
        clients.append(s)
    connect = time.time() - started
    cpu = cpu_secs(pid) - cpu_before
    time.sleep(8)
    settled = status(pid)

    def per_client(kib):
        return (kib - before["VmRSS"]) * 1024 / n

    print(
        f"{'tls' if tls else 'plain'}: {n} clients connected in {connect:.1f} s "
        f"(server CPU {cpu:.2f} s, {cpu / n * 1e6:.0f} us a client); "
        f"RSS {before['VmRSS']} KiB before, {settled['VmRSS']} KiB settled, "
        f"peak {settled['VmHWM']} KiB; per client: {per_client(settled['VmRSS']):.0f} bytes "
        f"settled, {per_client(settled['VmHWM']):.0f} at the peak"
    )


if __name__ == "__main__":
    main()
