"""A client of tlsd written with Python's `ssl` module: both handshake forms
(the framed one with the first message in the same write), empty and big
messages (BIG bytes), TLS 1.3 and 1.2, the IP address SAN, refusals in both
forms, and a wrong host name and a wrong CA (WRONG_CA) failing verification.

    target/test-venv/bin/python tests/py/tlsd_client.py PORT CA WRONG_CA BIG
"""

import ssl
import sys

from ipc_frames import check, frame, recv_all, recv_exact, recv_frame
from tls_client import VERSIONS, ca, conn, context, payload

wrong_ca, big = sys.argv[3], int(sys.argv[4])
msgs = [b"hello from python ssl", b"", payload(big), b"last"]
for version, name in VERSIONS:
    ctx = context(ca, version)
    s = conn(ctx)
    check("version", s.version(), name)
    s.sendall(b"pong\n")
    check(f"{name}: raw answer", recv_exact(s, 2), b"ok")
    s.sendall(b"".join(frame(m) for m in msgs))
    for i, m in enumerate(msgs):
        check(f"{name}: raw, echo {i}", recv_frame(s), m)
    s.close()

    s = conn(ctx)
    s.sendall(frame(b"pong") + frame(b"first, with the name"))
    check(f"{name}: framed answer", recv_frame(s), b"ok")
    check(f"{name}: first message", recv_frame(s), b"first, with the name")
    for i, m in enumerate(msgs):
        s.sendall(frame(m))
        check(f"{name}: framed, echo {i}", recv_frame(s), m)
    s.close()

ctx = context(ca)
# The certificate's IP address SAN.
s = conn(ctx, "127.0.0.1")
s.sendall(b"pong\n")
check("by IP address: answer", recv_exact(s, 2), b"ok")
s.close()

s = conn(ctx)
s.sendall(b"nope\n")
check("raw refusal", recv_all(s), b"no: unknown service\n")
s = conn(ctx)
s.sendall(frame(b"nope"))
check("framed refusal", recv_all(s), frame(b"no: unknown service"))

for what, c, host in [("wrong host name", ctx, "not-localhost.example"),
                      ("wrong CA", context(wrong_ca), "localhost")]:
    try:
        conn(c, host).close()
        sys.exit(f"{what}: the certificate was accepted")
    except ssl.SSLCertVerificationError as e:
        print(f"{what}: refused: {e.verify_message}")
print("python-ssl: ok")
