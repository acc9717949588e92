"""A ping flooder of websocketd: upgrades on `/echo` (wss when a CA file is
given), prints `flooding`, then writes masked pings with 125-byte payloads
(the most a control frame may carry) until SECONDS or CAP bytes are reached,
never reading; prints what it sent, and `ok`.

    target/test-venv/bin/python tests/py/ws_ping_flood.py PORT SECONDS CAP [CA]
"""

import base64
import os
import socket
import ssl
import sys
import time

from ipc_frames import check

port, seconds, cap = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
ca = sys.argv[4] if len(sys.argv) > 4 else None
host = "localhost" if ca else "127.0.0.1"
s = socket.create_connection(("127.0.0.1", port), timeout=10)
if ca:
    s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(f"GET /echo HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
          f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit(f"closed during the upgrade: {head!r}")
    head += chunk
check("upgrade answer", head[:13], b"HTTP/1.1 101 ")

mask = os.urandom(4)
ping = bytes([0x89, 0x80 | 125]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"p" * 125))
batch = ping * 512
print("flooding", flush=True)
# Short timeouts so that a flood that cannot get through still ends on time;
# a write that timed out is retried with the same bytes (whole frames only,
# and what OpenSSL wants for a retried write).
s.settimeout(0.2)
sent, off, end = 0, 0, time.monotonic() + seconds
while time.monotonic() < end and sent < cap:
    try:
        n = s.send(batch[off:])
    except (socket.timeout, ssl.SSLWantWriteError):
        continue
    except OSError as e:
        print(f"closed by websocketd: {e!r}")
        break
    sent += n
    off = (off + n) % len(batch)
print(f"sent {sent} bytes of pings ({sent // len(ping)} pings)")
print("ok")
