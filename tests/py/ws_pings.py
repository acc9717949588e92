"""websocketd with --ping-interval 1s --idle-timeout 2s: a `websockets`
client that sends nothing but answers pings stays; a raw client that
completed the upgrade but never answers is closed after a few pings.

    target/test-venv/bin/python tests/py/ws_pings.py PORT
"""

import base64
import os
import socket
import struct
import sys
import time

from ipc_frames import recv_exact
from ws_client import echo, expect, port, ws

good = ws("/echo")
echo(good, "before the silence", "good client")

key = base64.b64encode(os.urandom(16)).decode()
raw = socket.create_connection(("127.0.0.1", port), timeout=10)
raw.sendall((f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode())
head = b""
while not head.endswith(b"\r\n\r\n"):
    head += recv_exact(raw, 1)
expect("raw client's upgrade", head.split(b"\r\n")[0], b"HTTP/1.1 101 Switching Protocols")
upgraded = time.monotonic()
# It reads (so that its buffer never fills) but never answers.
frames = b""
while True:
    try:
        chunk = raw.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    frames += chunk
took = time.monotonic() - upgraded
# Server frames are unmasked; pings and a close are short (length < 126).
opcodes, close = [], None
i = 0
while i + 1 < len(frames):
    n = frames[i + 1] & 0x7F
    opcodes.append(frames[i] & 0x0F)
    if opcodes[-1] == 0x8 and n >= 2:
        close = (struct.unpack(">H", frames[i + 2:i + 4])[0], frames[i + 4:i + 2 + n])
    i += 2 + n
pings = opcodes.count(0x9)
print(f"raw client closed after {took:.2f} s, opcodes {opcodes}, close {close}")
if not 2 <= took < 6:
    sys.exit(f"the raw client was closed after {took:.2f} s, want 2 to 6 s")
if pings < 2:
    sys.exit(f"the raw client got {pings} pings before it was closed")
# Closed as a client that stopped answering (1011, as the websockets library
# does too), not as one whose service went away.
if close is None or close[0] != 1011 or b"ping" not in close[1]:
    sys.exit(f"the raw client was closed with {close}, want 1011 saying it answered no ping")

# The good client was just as quiet, for longer than --idle-timeout: still there.
echo(good, "after the silence", "good client")
good.close()
print("ok")
