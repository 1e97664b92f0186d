"""A WebSocket echo server that never answers a Close: the app the lossless
WebSocket eviction falls back on (the proxy's masked Close to it goes
unanswered, so the proxy closes the client itself after its grace). Written
on asyncio streams with the handshake of RFC 6455 §4.2.2; echoes text and
binary messages (unfragmented and under 64 KiB, as the test clients send
them).

Usage: ws_deaf_server.py PORT
"""

import asyncio
import base64
import hashlib
import sys

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def handle(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        while True:
            b0, b1 = await reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8), "big")
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = bytes(
                c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(length))
            )
            if b0 & 0x0F in (1, 2):
                header = bytes([b0, length]) if length < 126 else (
                    bytes([b0, 126]) + length.to_bytes(2, "big")
                )
                writer.write(header + data)
            # A Close (8) is ignored: this app never answers it.
    except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        print("ready", flush=True)
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
