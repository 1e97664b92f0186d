#!/usr/bin/env python3
"""Yardstick for `sluice bench conn`: the same work done by a fleet of real
third-party clients (paho-mqtt 2.x), so the generator's figures have
something to be compared with.

COUNT paho clients connect to HOST:PORT one after the other in a single
process and thread (paho's own select-style loop: connect, loop_write,
loop_read), as fast as paho lets them, then hold for --hold seconds.
Prints one JSON line: clients, connected, seconds to connect them all,
connections per second, and resident memory per client (peak RSS growth).

    .venv/bin/python scripts/yardstick_paho_fleet.py -p 1883 -c 10000
"""

import argparse
import json
import resource
import selectors
import sys
import time

import paho.mqtt
import paho.mqtt.client as mqtt


def rss_kib():
    """Peak resident memory of this process, KiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=1883)
    ap.add_argument("-c", "--count", type=int, default=1000)
    ap.add_argument("-V", "--mqtt-version", type=int, choices=(3, 5), default=5)
    ap.add_argument("--hold", type=float, default=1.0, help="seconds to hold after all connected")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    protocol = mqtt.MQTTv5 if args.mqtt_version == 5 else mqtt.MQTTv311
    sel = selectors.DefaultSelector()
    state = {"connected": 0}

    def on_connect(client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            state["connected"] += 1

    def service(timeout):
        for key, _ in sel.select(timeout):
            key.data.loop_read()

    baseline = rss_kib()
    clients = []
    start = time.monotonic()
    for i in range(args.count):
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"paho_fleet_{i + 1}",
            protocol=protocol,
        )
        c.on_connect = on_connect
        c.connect(args.host, args.port, keepalive=30)
        c.loop_write()
        sel.register(c.socket(), selectors.EVENT_READ, c)
        clients.append(c)
        service(0)
    deadline = start + args.timeout
    while state["connected"] < args.count and time.monotonic() < deadline:
        service(0.05)
    elapsed = time.monotonic() - start
    hold_until = time.monotonic() + args.hold
    while time.monotonic() < hold_until:
        service(0.05)
        for c in clients:
            c.loop_misc()
    peak = rss_kib()
    for c in clients:
        c.disconnect()
        c.loop_write()
    print(
        json.dumps(
            {
                "client": f"paho-mqtt {getattr(paho.mqtt, '__version__', '?')}",
                "clients": args.count,
                "connected": state["connected"],
                "secs": round(elapsed, 3),
                "connectionsPerSec": round(state["connected"] / elapsed) if elapsed > 0 else None,
                "rssPeakBytes": peak * 1024,
                "bytesPerClient": round((peak - baseline) * 1024 / max(args.count, 1)),
            }
        )
    )
    return 0 if state["connected"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
