"""Clients of tlsd that name their service, send part of a big message and
reset the connection (SO_LINGER 0), while the daemon is attaching the service.

    target/test-venv/bin/python tests/py/tlsd_resets.py PORT CA
"""

import socket
import struct

from ipc_frames import frame
from tls_client import ca, conn, context

for i in range(100):
    s = conn(context(ca))
    s.sendall(frame(b"pong") + struct.pack(">I", 200_000) + b"x" * 100_000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
print("resets: ok")
