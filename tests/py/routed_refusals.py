"""A client of routed tcpd (PORT) or, given the CA of its certificate, of
tlsd: each handshake is one write, with no newline unless shown. Whatever
follows the name, the answer is the name's: `../pong` is refused as an
invalid name (not read as the name `..` and then a frame), `nope` with data
after it is an unknown service, and `pong` with data after it is `ok`, the
data judged only then. After each answer, the close.

    target/test-venv/bin/python tests/py/routed_refusals.py PORT [CA]
"""

import socket
import sys

port = int(sys.argv[1])
if len(sys.argv) > 2:
    from tls_client import ca, conn, context

    tls = context(ca)
    connect = lambda: conn(tls)
else:
    connect = lambda: socket.create_connection(("127.0.0.1", port), timeout=10)

invalid = b"no: invalid service name\n"
cases = [
    (b"../pong", invalid),
    (b"pong/x", invalid),
    (b"pong x", invalid),
    (b"pong\tx", invalid),
    (b"../x\r\n", invalid),
    (b"nope\nnot a frame", b"no: unknown service\n"),
    # `ok`, then "not " is a length prefix of 1.8 GB: the close.
    (b"pong\nnot a frame", b"ok"),
]
wrong = []
for hello, answer in cases:
    s = connect()
    # The answers come at once; a daemon still waiting is a failure.
    s.settimeout(5)
    s.sendall(hello)
    got, end = b"", "the close"
    try:
        while chunk := s.recv(4096):
            got += chunk
    except OSError as e:
        end = repr(e)
    s.close()
    if (got, end) != (answer, "the close"):
        wrong.append(f"{hello!r}: got {got!r} then {end}, want {answer!r} then the close")
# Every case is tried: one that fails does not hide the others.
if wrong:
    sys.exit("\n".join(wrong))
print("routed-refusals: ok")
