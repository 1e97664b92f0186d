#!/usr/bin/env python3
"""Opens N idle TCP connections to HOST:PORT and holds them until stdin closes.

Used by scripts/bench-proxy.sh to measure a proxy's resident memory per idle
connection. Prints "ready N" once every connection is established.
"""
import socket
import sys


def main() -> None:
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conns = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=10)
        conns.append(s)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
