"""A WebSocket echo server (Python `websockets`), the upstream of the
WebSocket evacuation test: echoes every message back as it came.

Usage: ws_echo_server.py PORT
"""

import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        # The client left (an evicted client's last message may be echoed
        # after its Close): nothing to do.
        pass


async def main(port):
    async with serve(echo, "127.0.0.1", port, ping_interval=None):
        print("ready", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main(int(sys.argv[1])))
