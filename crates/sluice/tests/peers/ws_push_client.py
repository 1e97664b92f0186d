"""Python `websockets` clients of ws_push_server.py: each connects to
URL/c{i}-{k} (k counts its connections), receives until the server's Close,
checks the numbers arrive in order without a gap, and reconnects, until
SECONDS are over. Prints one JSON line per connection:
{"path", "received", "code" (the server's Close), "ended" (closed by the
client at the end of the run), "errors"}.

Usage: ws_push_client.py URL CLIENTS SECONDS
"""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake


async def client(i, url, until):
    k = 0
    while time.monotonic() < until:
        path = f"/c{i}-{k}"
        k += 1
        received, code, ended, errors = 0, None, False, []
        try:
            async with connect(url + path, ping_interval=None, open_timeout=10) as ws:
                async for message in ws:
                    if message != str(received + 1):
                        errors.append(f"expected {received + 1}, got {message}")
                    received += 1
                    if time.monotonic() >= until:
                        ended = True
                        break
                # The server's Close (1000/1001 end the loop without raising).
                if not ended:
                    code = ws.close_code
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
        except (OSError, InvalidHandshake) as e:
            errors.append(f"connection failed: {e}")
        line = {"path": path, "received": received, "code": code, "ended": ended, "errors": errors}
        print(json.dumps(line), flush=True)


async def main(url, clients, seconds):
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(i, url, until) for i in range(clients)))


asyncio.run(main(sys.argv[1].rstrip("/"), int(sys.argv[2]), float(sys.argv[3])))
