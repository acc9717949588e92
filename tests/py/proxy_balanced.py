"""Clients of HAProxy, from 127.0.0.2: FIRST of them connect and exchange
numbered messages; once all are connected they print their local ports (the
test then kills one tcpd) and go on for ROUNDS more messages each; then
LATER new clients connect. Prints one line per client: `first|later PORT
ok`, or what went wrong.

    target/test-venv/bin/python tests/py/proxy_balanced.py PORT FIRST LATER ROUNDS
"""

import socket
import struct
import sys
import threading

from ipc_frames import frame, recv_exact
port, first, later, rounds = (int(a) for a in sys.argv[1:5])

def client():
    s = socket.socket()
    s.settimeout(10)
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", port))
    s.sendall(b"echo\n")
    if recv_exact(s, 2) != b"ok":
        sys.exit("no ok")
    return s

def recv_frame_or_none(s):
    head = b""
    while len(head) < 4:
        c = s.recv(4 - len(head))
        if not c:
            return None
        head += c
    (n,) = struct.unpack(">I", head)
    return recv_exact(s, n)

def talk(s, start, n, result):
    # Numbered messages in lock step, each checked.
    try:
        for i in range(start, start + n):
            m = f"{s.getsockname()[1]}:{i}:".encode() * (1 + i % 50)
            s.sendall(frame(m))
            got = recv_frame_or_none(s)
            if got is None:
                result.append(f"closed after {i} messages")
                return
            if got != m:
                result.append(f"wrong echo of message {i}: {got[:60]!r}")
                return
    except OSError as e:
        result.append(f"error at message {i}: {e!r}")

socks = [client() for _ in range(first)]
results = [[] for _ in socks]
for s, r in zip(socks, results):
    talk(s, 0, 10, r)
print("ports " + " ".join(str(s.getsockname()[1]) for s in socks), flush=True)
threads = [threading.Thread(target=talk, args=(s, 10, rounds, r)) for s, r in zip(socks, results) if not r]
for t in threads: t.start()
for t in threads: t.join()
for s, r in zip(socks, results):
    print(f"first {s.getsockname()[1]} {r[0] if r else 'ok'}")
for _ in range(later):
    s, r = client(), []
    talk(s, 0, 20, r)
    print(f"later {s.getsockname()[1]} {r[0] if r else 'ok'}")
    s.close()
print("done", flush=True)
