"""PROXY protocol headers as balancers write them (v1 text, v2 binary), and
a check of the peer info a service receives (`peer_info`). Imported by the
proxy_*.py programs beside it.
"""

import ipaddress
import json
import socket
import struct
import sys

def v1(src, sport, dst="127.0.0.1", dport=9000):
    fam = "TCP4" if ipaddress.ip_address(src).version == 4 else "TCP6"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()

SIG = b"\r\n\r\n\x00\r\nQUIT\n"

def v2(src, sport, dst="127.0.0.1", dport=9000):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        body = s.packed + d.packed + struct.pack(">HH", sport, dport)
        return SIG + bytes([0x21, 0x11]) + struct.pack(">H", len(body)) + body
    d = ipaddress.IPv6Address(f"::ffff:{d}") if d.version == 4 else d
    body = s.packed + d.packed + struct.pack(">HH", sport, dport)
    return SIG + bytes([0x21, 0x21]) + struct.pack(">H", len(body)) + body

V2_LOCAL = SIG + bytes([0x20, 0x00, 0, 0])

def addr(a):
    host, port = a[0], a[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def peer_info(what, payload, **want):
    info = json.loads(payload)
    for k, v in want.items():
        got = info
        for part in k.split("__"):
            got = got.get(part) if isinstance(got, dict) else None
        if got != v:
            sys.exit(f"{what}: peer info {k} = {got!r}, want {v!r} (all: {info})")
    return info
