"""Messages of 64 KiB and more through tlsd, each in both directions, over
TLS 1.3 and 1.2.

    target/test-venv/bin/python tests/py/tlsd_large.py PORT CA
"""

from ipc_frames import check, frame, recv_exact, recv_frame
from tls_client import VERSIONS, ca, conn, context, payload

for version, name in VERSIONS:
    s = conn(context(ca, version))
    s.sendall(b"pong\n")
    check(f"{name}: raw answer", recv_exact(s, 2), b"ok")
    for n in [65_535, 65_536, 100_000, 1_000_000]:
        m = payload(n)
        s.sendall(frame(m))
        check(f"{name}: echo of {n} bytes", recv_frame(s), m)
    s.close()
print("python-large: ok")
