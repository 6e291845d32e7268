"""Independent MQTT publishers for adit's interop tests.

  json HOST PORT N        paho-mqtt publishes N JSON messages, QoS 1, on
                          interop/json/s{i % 4}: {"v": i * 0.25, "t": <epoch ms>},
                          each with its own millisecond; prints one line per
                          message the broker acknowledged: "acked TOPIC VALUE MS".
  sparkplug HOST PORT     a pysparkplug edge node (group interop, node py1,
                          device d1): birth, three DDATA updates of CO, then
                          the process dies without an MQTT DISCONNECT, so the
                          broker publishes the node's will (its NDEATH);
                          prints "ddata CO VALUE".

Why a death by will, not pysparkplug's clean disconnect: pysparkplug 0.6.1
arms the next connection's will right after NBIRTH, which advances its bdSeq,
and its disconnect() sends an NDEATH with that next bdSeq. A host must ignore
an NDEATH whose bdSeq is not the current birth's (Sparkplug 3.0, host
rules), and adit does (counted as stale_death). The will of the live
connection still carries the birth's bdSeq.

Versions are pinned by tests/run.sh (paho-mqtt 1.6.1, pysparkplug 0.6.1).
"""

import json
import os
import sys
import threading
import time


def publish_json(host, port, n):
    import paho.mqtt.client as mqtt

    acked = threading.Semaphore(0)
    pending = {}
    early = set()
    # paho's network thread may see the PUBACK before publish() returns and
    # the message is in `pending`; the lock is never held while calling
    # paho (its callbacks run under paho's own locks).
    lock = threading.Lock()
    client = mqtt.Client(client_id="interop-paho-json", clean_session=True)

    def report(mid):
        topic, value, ms = pending.pop(mid)
        print(f"acked {topic} {value} {ms}", flush=True)
        acked.release()

    def on_publish(_c, _u, mid):
        with lock:
            if mid in pending:
                report(mid)
            else:
                early.add(mid)

    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    base = int(time.time() * 1000)
    for i in range(n):
        topic = f"interop/json/s{i % 4}"
        value = i * 0.25
        ms = base + i
        info = client.publish(topic, json.dumps({"v": value, "t": ms}), qos=1)
        with lock:
            pending[info.mid] = (topic, value, ms)
            if info.mid in early:
                early.discard(info.mid)
                report(info.mid)
    for _ in range(n):
        if not acked.acquire(timeout=30):
            sys.exit("broker did not acknowledge every message")
    client.loop_stop()
    client.disconnect()


def publish_sparkplug(host, port):
    import pysparkplug as sp

    device = sp.Device(
        "d1",
        [sp.Metric(timestamp=sp.get_current_timestamp(), name="CO", datatype=sp.DataType.DOUBLE, value=1.5)],
    )
    node = sp.EdgeNode(
        "interop",
        "py1",
        [sp.Metric(timestamp=sp.get_current_timestamp(), name="Uptime", datatype=sp.DataType.INT64, value=7)],
    )
    node.connect(host, port=port, blocking=False)
    deadline = time.time() + 30
    while not getattr(node, "_connected", True) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    node.register(device)
    time.sleep(0.5)
    for value in (2.25, 3.5, 4.75):
        node.update_device(
            "d1",
            [sp.Metric(timestamp=sp.get_current_timestamp(), name="CO", datatype=sp.DataType.DOUBLE, value=value)],
        )
        print(f"ddata CO {value}", flush=True)
        time.sleep(0.3)
    time.sleep(0.5)
    sys.stdout.flush()
    os._exit(0)  # no DISCONNECT: the broker sends the will (NDEATH)


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "json":
        publish_json(host, port, int(sys.argv[4]))
    elif mode == "sparkplug":
        publish_sparkplug(host, port)
    else:
        sys.exit(f"unknown mode {mode}")
