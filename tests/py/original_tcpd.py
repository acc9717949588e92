"""A stand-in for the inbound side of the original LibIPC tcpd (tcpd.zig of
KaneRoot's libipc-examples), in front of a service SERVICE that greets each
client, then echoes its messages.

Like the original, it takes its first read as the raw service name (no frame,
no newline stripped), then:
- MODE `ok`: if the name is SERVICE, it answers the raw bytes `ok`, and the
  greeting frame `greetings from the original` follows in the same write (a
  service's first frame may share a read with `ok`); then it echoes LibIPC
  frames until the client leaves. Any other name is closed without an
  answer, as the original does when it cannot connect the service.
- MODE `refuse`: it answers the raw `no: no such service` (no newline), and
  closes.

It prints `listening PORT` once ready (on 127.0.0.1, a port the system
picks), and `name: REPR` (Python's repr of the bytes) for each first read.

    target/test-venv/bin/python tests/py/original_tcpd.py SERVICE ok|refuse
"""

import socket
import struct
import sys

from ipc_frames import frame

service, mode = sys.argv[1].encode(), sys.argv[2]


def recv_exact(conn, n):
    """`n` bytes, or None at the client's end."""
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def echo(conn):
    while True:
        header = recv_exact(conn, 4)
        if header is None:
            return
        payload = recv_exact(conn, struct.unpack(">I", header)[0])
        if payload is None:
            return
        conn.sendall(frame(payload))


srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(8)
print(f"listening {srv.getsockname()[1]}", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        # One read of up to 10 000 bytes: the name (tcpd.zig:128-136).
        name = conn.recv(10000)
        print(f"name: {name!r}", flush=True)
        if mode == "refuse":
            conn.sendall(b"no: no such service")
        elif name == service:
            conn.sendall(b"ok" + frame(b"greetings from the original"))
            echo(conn)
