"""A client of tlsd in fixed mode: one message (MESSAGE) over TLS, verifying
tlsd against CA, and its echo.

    target/test-venv/bin/python tests/py/tls_echo.py PORT CA MESSAGE
"""

import socket
import ssl
import sys

from ipc_frames import check, frame, recv_frame
port, ca, message = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(frame(message))
        check("echo", recv_frame(s), message)
print("tls echo: ok")
