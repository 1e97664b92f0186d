"""Python `websockets` echo clients for the WebSocket evacuation test.

Each client sends numbered messages one at a time and waits for each echo.
When the connection is closed it records the close code, reconnects and sends
the unanswered message again. It checks that every echo is the message it
waits for (nothing lost, duplicated or reordered). At the end it prints one
JSON line per client: {"id", "echoed", "closes": [codes], "errors": [..]}.

Usage: ws_echo_client.py URL CLIENTS SECONDS
"""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def client(i, url, until):
    echoed, closes, errors = 0, [], []
    n = 0
    while time.monotonic() < until:
        try:
            async with connect(url, ping_interval=None, open_timeout=10) as ws:
                while time.monotonic() < until:
                    msg = f"c{i}-{n}"
                    await ws.send(msg)
                    got = await ws.recv()
                    if got != msg:
                        errors.append(f"sent {msg}, got {got}")
                        return
                    echoed += 1
                    n += 1
                    await asyncio.sleep(0.005)
                await ws.close()
        except ConnectionClosed as e:
            closes.append(e.rcvd.code if e.rcvd else None)
        except OSError as e:
            errors.append(f"socket error: {e}")
            await asyncio.sleep(0.1)
    print(json.dumps({"id": i, "echoed": echoed, "closes": closes, "errors": errors}), flush=True)


async def main(url, clients, seconds):
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(i, url, until) for i in range(clients)))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
