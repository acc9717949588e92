"""A LibIPC service listening at PATH that answers each message with LABEL,
a colon and the message: the answer tells which instance it is. A stale
socket left by a killed instance is replaced.

    target/test-venv/bin/python tests/py/label_service.py PATH LABEL
"""

import os
import socket
import struct
import sys
import threading

from ipc_frames import frame

path, label = sys.argv[1], sys.argv[2].encode()

def serve(s):
    with s:
        while True:
            hdr = s.recv(4, socket.MSG_WAITALL)
            if len(hdr) < 4:
                return
            (n,) = struct.unpack(">I", hdr)
            m = s.recv(n, socket.MSG_WAITALL) if n else b""
            if len(m) < n:
                return
            s.sendall(frame(label + b":" + m))

if os.path.exists(path):
    os.unlink(path)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(64)
while True:
    s, _ = srv.accept()
    threading.Thread(target=serve, args=(s,), daemon=True).start()
