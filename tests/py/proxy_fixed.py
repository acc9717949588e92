"""tcpd in fixed mode behind a balancer: its health checks (v2 LOCAL, then a
close or a reset) never reach the service; a client does, described.

    target/test-venv/bin/python tests/py/proxy_fixed.py PORT
"""

import socket
import struct
import sys

from ipc_frames import check, frame, recv_frame
from proxy_headers import V2_LOCAL, connect, peer_info, v1

port = int(sys.argv[1])
for how in ["close", "reset"]:
    s = connect(port)
    s.sendall(V2_LOCAL)
    if how == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
s = connect(port)
s.sendall(v1("192.0.2.99", 4242) + frame(b"fixed"))
peer_info("fixed", recv_frame(s), address="192.0.2.99:4242")
check("fixed echo", recv_frame(s), b"fixed")
s.close()
print("fixed: ok")
