"""A gRPC echo server (Python `grpcio`, no generated code): the unary method
/sluice.Echo/Call returns its request bytes. Plain-text HTTP/2.

Usage: grpc_echo_server.py PORT
"""

import sys
import time
from concurrent import futures

import grpc


def call(request, context):
    return request


handler = grpc.method_handlers_generic_handler(
    "sluice.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
