"""Clients of tlsd with client certificates, for its allow lists. For each
client (NAME CERT KEY, or NAME - - for a client without a certificate):
connects over TLS, names the service (MODE `routed`) and sends its name in a
frame; prints `NAME: ok` when the echo comes back, and when the connection
ends before it, how: `NAME: refused (close_notify)` for tlsd's TLS close,
`NAME: refused (SSLError: REASON)` for a TLS alert (OpenSSL's reason), or
the error. A bare TCP close is an error too (`SSLEOFError`): ragged EOFs
are not taken for a close_notify.

    target/test-venv/bin/python tests/py/mtls_clients.py PORT CA routed|fixed [NAME CERT KEY]...
"""

import socket
import ssl
import sys

from ipc_frames import frame
port, ca, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
args = sys.argv[4:]
for name, cert, key in zip(args[0::3], args[1::3], args[2::3]):
    ctx = ssl.create_default_context(cafile=ca)
    if cert != "-":
        ctx.load_cert_chain(cert, key)
    want = (b"ok" if mode == "routed" else b"") + frame(name.encode())
    got = b""
    try:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                            server_hostname="localhost", suppress_ragged_eofs=False)
        s.sendall((b"pong\n" if mode == "routed" else b"") + frame(name.encode()))
        while len(got) < len(want):
            chunk = s.recv(len(want) - len(got))
            if not chunk:
                break
            got += chunk
        end = "close_notify"
    except ssl.SSLError as e:
        end = f"{type(e).__name__}: {e.reason}"
    except ConnectionError as e:
        end = type(e).__name__
    if got == want:
        print(f"{name}: ok")
    elif got == b"":
        print(f"{name}: refused ({end})")
    else:
        print(f"{name}: got {got!r}")
