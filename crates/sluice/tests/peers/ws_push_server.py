"""A WebSocket server (Python `websockets`) that pushes: on each connection it
sends numbered text messages ("1", "2", ...) a millisecond apart until the
connection closes, then appends one JSON line {"path", "sent"} to LOG: how
many messages it handed to the connection. The lossless eviction test
compares that with what each client received.

Usage: ws_push_server.py PORT LOG
"""

import asyncio
import json
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def push(ws, log):
    sent = 0
    try:
        while True:
            await ws.send(str(sent + 1))
            sent += 1
            await asyncio.sleep(0.001)
    except ConnectionClosed:
        pass
    finally:
        with open(log, "a") as f:
            f.write(json.dumps({"path": ws.request.path, "sent": sent}) + "\n")


async def main(port, log):
    async with serve(lambda ws: push(ws, log), "127.0.0.1", port, ping_interval=None):
        print("ready", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
