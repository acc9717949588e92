"""tcpd clients behind a trusted balancer: v1 and v2 headers (whole, and v2
byte by byte), a health check (v2 LOCAL), a trusted balancer that sends no
header or a broken one.

    target/test-venv/bin/python tests/py/proxy_tcpd_trusted.py PORT
"""

import sys

from ipc_frames import check, frame, recv_all, recv_exact, recv_frame
from proxy_headers import SIG, V2_LOCAL, addr, connect, peer_info, v1, v2

port = int(sys.argv[1])

# v1 and the raw name in one write: the service hears about 203.0.113.7 first.
s = connect(port)
s.sendall(v1("203.0.113.7", 40001) + b"echo\n" + frame(b"hello"))
check("v1 answer", recv_exact(s, 2), b"ok")
peer_info("v1", recv_frame(s), address="203.0.113.7:40001", via=addr(s.getsockname()))
check("v1 echo", recv_frame(s), b"hello")
s.close()

# v2 with IPv6 addresses, one byte per write, then a framed name.
s = connect(port)
for b in v2("2001:db8::7", 40002):
    s.sendall(bytes([b]))
s.sendall(frame(b"echo"))
check("v2 answer", recv_frame(s), b"ok")
s.sendall(frame(b"x" * 70000))
peer_info("v2", recv_frame(s), address="[2001:db8::7]:40002")
check("v2 echo", recv_frame(s), b"x" * 70000)
s.close()

# A health check (v2 LOCAL) is the balancer itself.
s = connect(port)
s.sendall(V2_LOCAL + b"echo\n")
check("LOCAL answer", recv_exact(s, 2), b"ok")
peer_info("LOCAL", recv_frame(s), address=addr(s.getsockname()), via=addr(s.getsockname()))
s.close()

# A trusted peer must send a header: no answer, the connection closed.
for what, data in [("no header", b"echo\n"), ("broken v1", b"PROXY TCP4 1.2.3.4\r\necho\n"),
                   ("v2 for UDP", SIG + bytes([0x21, 0x12, 0, 12]) + bytes(12) + b"echo\n")]:
    s = connect(port)
    s.sendall(data)
    check(what, recv_all(s), b"")
    s.close()
print("trusted: ok")
