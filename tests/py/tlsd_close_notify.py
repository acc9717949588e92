"""A client of tlsd that ends its conversation with close_notify and keeps
the TCP connection open for the answer (Python's `SSLSocket.unwrap()`): the
service must see the end, and tlsd answer with its own close_notify. Then
the end of the handshake, the name, a message and close_notify in one write.

    target/test-venv/bin/python tests/py/tlsd_close_notify.py PORT CA
"""

import socket
import ssl
import sys

from ipc_frames import check, frame, recv_all, recv_exact, recv_frame
from tls_client import VERSIONS, ca, conn, context, port

for version, name in VERSIONS:
    s = conn(context(ca, version))
    s.sendall(b"pong\n" + frame(b"one") + frame(b"two"))
    check(f"{name}: answer", recv_exact(s, 2), b"ok")
    check(f"{name}: echo 1", recv_frame(s), b"one")
    check(f"{name}: echo 2", recv_frame(s), b"two")
    raw = s.unwrap()  # our close_notify, then theirs
    check(f"{name}: after close_notify", recv_all(raw), b"")
    raw.close()

# The end of the handshake (TLS 1.3: the client's Finished), the name, a
# message and close_notify, all in one write: tlsd reads the end before the
# service is even attached.
for version, name in VERSIONS:
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context(ca, version).wrap_bio(inc, out, server_hostname="localhost")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(out.read())
            chunk = sock.recv(65536)
            if not chunk:
                sys.exit(f"{name}: closed during the handshake")
            inc.write(chunk)
    obj.write(b"pong\n" + frame(b"coalesced"))
    try:
        obj.unwrap()
    except ssl.SSLWantReadError:
        pass  # close_notify written; theirs comes later
    sock.sendall(out.read())
    plain = b""
    while True:
        try:
            plain += obj.read(65536)
            continue
        except ssl.SSLZeroReturnError:
            break  # tlsd's close_notify: the service saw our end
        except ssl.SSLWantReadError:
            pass
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit(f"{name}: EOF without close_notify after {plain!r}")
        inc.write(chunk)
    check(f"{name}: coalesced", plain, b"ok" + frame(b"coalesced"))
    sock.close()
print("close-notify: ok")
