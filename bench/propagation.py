#!/usr/bin/env python3
"""Health-change propagation: how long from an operator override (PUT to the control API)
until every shard answers the new way. Asks NAME from 16 UDP sockets (distinct source ports,
so SO_REUSEPORT spreads them over the shards) with an ECS option, pins ADDRESS down, and
times when each socket first sees a different answer; then clears the override and times
the way back. Prints one line per direction:
    down: api_ms=.. first_ms=.. all_ms=.. sockets=16
  propagation.py DNS_PORT CONTROL_ADDR ADDRESS NAME ECS_IPV4 [ECS_LEN]
"""
import http.client
import os
import socket
import struct
import sys
import threading
import time


def query(name, ecs, ecs_len):
    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    addr = socket.inet_aton(ecs)[: (ecs_len + 7) // 8]
    opt = struct.pack(">HBB", 1, ecs_len, 0) + addr
    q += b"\0" + struct.pack(">HHIH", 41, 1232, 0, 4 + len(opt)) + struct.pack(">HH", 8, len(opt)) + opt
    return qid, q


def answers(pkt):
    """The A records of the answer section, sorted (enough for this test's answers)."""
    an = struct.unpack(">H", pkt[6:8])[0]
    i = 12
    while pkt[i]:
        i += pkt[i] + 1
    i += 5
    out = []
    for _ in range(an):
        if pkt[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while pkt[i]:
                i += pkt[i] + 1
            i += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", pkt[i : i + 10])
        i += 10
        if rtype == 1:
            out.append(socket.inet_ntoa(pkt[i : i + rdlen]))
        i += rdlen
    return tuple(sorted(out))


def ask(s, name, ecs, ecs_len):
    qid, q = query(name, ecs, ecs_len)
    s.send(q)
    while True:
        pkt = s.recv(4096)
        if struct.unpack(">H", pkt[:2])[0] == qid:
            return answers(pkt)


def flip(method, control, address, body):
    host, port = control.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    token = os.environ.get("GTMD_TOKEN", "")
    c.request(method, f"/v1/addresses/{address}/override", body=body,
              headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"control API answered {r.status}")


def measure(label, socks, name, ecs, ecs_len, act):
    before = [ask(s, name, ecs, ecs_len) for s in socks]
    api = []
    t0 = time.monotonic()
    # The API call returns after the change is applied and its events are logged; the
    # shards see it earlier, so poll while the call is in flight.
    t = threading.Thread(target=lambda: (act(), api.append(time.monotonic() - t0)))
    t.start()
    seen = [None] * len(socks)
    while None in seen and time.monotonic() - t0 < 30:
        for k, s in enumerate(socks):
            if seen[k] is None and ask(s, name, ecs, ecs_len) != before[k]:
                seen[k] = time.monotonic() - t0
    t.join()
    api = api[0] if api else float("nan")
    if None in seen:
        sys.exit(f"{label}: {seen.count(None)} sockets never saw the change")
    print(f"{label}: api_ms={api * 1000:.1f} first_ms={min(seen) * 1000:.1f} "
          f"all_ms={max(seen) * 1000:.1f} sockets={len(socks)}")


def main():
    port, control, address, name, ecs = sys.argv[1:6]
    ecs_len = int(sys.argv[6]) if len(sys.argv) > 6 else 24
    socks = []
    for _ in range(16):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.connect(("127.0.0.1", int(port)))
        socks.append(s)
    measure("down", socks, name, ecs, ecs_len, lambda: flip("PUT", control, address, "down"))
    measure("up", socks, name, ecs, ecs_len, lambda: flip("DELETE", control, address, ""))


main()
