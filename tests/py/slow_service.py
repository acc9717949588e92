"""A slow LibIPC service listening at PATH: it expects TOTAL messages of
SIZE bytes each, numbered (8 bytes, big-endian, then the number modulo 251
in every other byte), reads one a second until the file FAST exists, then as
fast as they come; every message must be the next one, whole. At the
client's end it says how many it got.

    target/test-venv/bin/python tests/py/slow_service.py PATH TOTAL SIZE FAST
"""

import os
import socket
import struct
import sys
import time

path, total, size, fast = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
count = 0

def read_exact(s, n, end_ok=False):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            if end_ok and not buf:
                return None
            sys.exit(f"EOF after {len(buf)} of {n} bytes of message {count}")
        buf += chunk
    return bytes(buf)

srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(8)
while True:
    conn, _ = srv.accept()
    hdr = read_exact(conn, 4, end_ok=True)
    if hdr is not None:
        break
    conn.close()  # the test's readiness probe
while hdr is not None:
    (n,) = struct.unpack(">I", hdr)
    if n != size:
        sys.exit(f"message {count}: {n} bytes, want {size}")
    body = read_exact(conn, n)
    number = int.from_bytes(body[:8], "big")
    if number != count:
        sys.exit(f"message {count}: got number {number}")
    if body[8:] != bytes([number % 251]) * (size - 8):
        sys.exit(f"message {count}: corrupted")
    count += 1
    slow_until = time.monotonic() + 1
    while not os.path.exists(fast) and time.monotonic() < slow_until:
        time.sleep(0.02)
    hdr = read_exact(conn, 4, end_ok=True)
if count != total:
    sys.exit(f"{count} messages, want {total}")
print(f"received {count} messages, in order, each once", flush=True)
