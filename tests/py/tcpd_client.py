"""A client of tcpd written with Python's socket module: for each service
named, both handshake forms, a name with the first message in the same
write, big and empty messages; then both refusal forms.

    target/test-venv/bin/python tests/py/tcpd_client.py PORT SERVICE...
"""

import socket
import sys

from ipc_frames import check, frame, recv_all, recv_exact, recv_frame

port = int(sys.argv[1])
names = sys.argv[2:]

def conn():
    return socket.create_connection(("127.0.0.1", port), timeout=10)

msgs = [b"hello from python", b"", bytes(range(256)) * 300, b"last"]
for name in names:
    s = conn()
    s.sendall(name.encode() + b"\n")
    check(f"{name}: raw answer", recv_exact(s, 2), b"ok")
    s.sendall(b"".join(frame(m) for m in msgs))
    for i, m in enumerate(msgs):
        check(f"{name}: echo {i}", recv_frame(s), m)
    s.close()

    s = conn()
    s.sendall(frame(name.encode()) + frame(b"first, with the name"))
    check(f"{name}: framed answer", recv_frame(s), b"ok")
    check(f"{name}: first message", recv_frame(s), b"first, with the name")
    s.close()

s = conn()
s.sendall(b"nope\n")
check("raw refusal", recv_all(s), b"no: unknown service\n")
s = conn()
s.sendall(frame(b"nope"))
check("framed refusal", recv_all(s), frame(b"no: unknown service"))
print("python: ok")
