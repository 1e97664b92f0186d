"""gRPC echo clients (Python `grpcio`): each thread has its own channel (one
HTTP/2 connection) and calls /sluice.Echo/Call in a loop, checking each
answer. Prints one JSON line: {"ok", "failed", "errors": [first few]}.

Usage: grpc_echo_client.py TARGET THREADS SECONDS
"""

import json
import sys
import threading
import time

import grpc

target, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
until = time.monotonic() + seconds
lock = threading.Lock()
totals = {"ok": 0, "failed": 0, "errors": []}


def run(i):
    ok, failed, errors = 0, 0, []
    # A local subchannel pool: one HTTP/2 connection per channel (the global
    # pool would share one connection between all threads).
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary("/sluice.Echo/Call")
        n = 0
        while time.monotonic() < until:
            msg = f"t{i}-{n}".encode()
            try:
                got = call(msg, timeout=10)
                if got == msg:
                    ok += 1
                else:
                    failed += 1
                    errors.append(f"sent {msg!r}, got {got!r}")
            except grpc.RpcError as e:
                failed += 1
                errors.append(f"{e.code()}: {e.details()}")
            n += 1
    with lock:
        totals["ok"] += ok
        totals["failed"] += failed
        totals["errors"].extend(errors[:5])


workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps(totals), flush=True)
