#!/usr/bin/env python3
"""A paho-mqtt client the proxy tests drive.

It connects (through the proxy) with paho's own automatic reconnection
(loop_start), subscribes to a topic on every connect, and prints one line per
event on stdout, flushed at once:

    connected rc=<reason code> session_present=<0|1>
    disconnected rc=<reason code value> reason=<reason code name>
    message topic=<topic> payload=<payload>

It exits 0 after --seconds seconds (or when stdin closes, if --stdin-stop).
"""

import argparse
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def say(line):
    print(line, flush=True)


def reason_value(rc):
    value = getattr(rc, "value", rc)
    return value


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--protocol", choices=["3.1.1", "5"], default="5")
    p.add_argument("--client-id", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--persistent", action="store_true",
                   help="ask for a persistent session (v3: clean_session=False; v5: expiry 300 s)")
    p.add_argument("--stdin-stop", action="store_true",
                   help="also exit when stdin is closed (the test process died)")
    args = p.parse_args()

    v5 = args.protocol == "5"
    kwargs = {"callback_api_version": CallbackAPIVersion.VERSION2, "client_id": args.client_id,
              "protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311}
    if not v5:
        kwargs["clean_session"] = not args.persistent
    client = mqtt.Client(**kwargs)
    client.reconnect_delay_set(min_delay=1, max_delay=2)

    def on_connect(c, userdata, flags, rc, properties):
        say(f"connected rc={reason_value(rc)} session_present={int(bool(flags.session_present))}")
        c.subscribe(args.topic, qos=0)

    def on_disconnect(c, userdata, flags, rc, properties):
        say(f"disconnected rc={reason_value(rc)} reason={str(rc).replace(' ', '_')}")

    def on_message(c, userdata, msg):
        say(f"message topic={msg.topic} payload={msg.payload.decode(errors='replace')}")

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message

    connect_kwargs = {}
    if v5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300 if args.persistent else 0
        connect_kwargs["properties"] = props
        connect_kwargs["clean_start"] = not args.persistent
    client.connect_async(args.host, args.port, keepalive=30, **connect_kwargs)
    client.loop_start()

    stop = threading.Event()
    if args.stdin_stop:
        def watch():
            sys.stdin.read()
            stop.set()
        threading.Thread(target=watch, daemon=True).start()
    stop.wait(args.seconds)
    client.disconnect()
    client.loop_stop()
    say("exit")


if __name__ == "__main__":
    main()
