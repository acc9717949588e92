"""tcpd clients from outside --proxy-from (or with no --proxy-protocol at
all): served as they are; a PROXY header is a bad handshake. PEER_INFO is
`peer-info` when tcpd runs with --peer-info.

    target/test-venv/bin/python tests/py/proxy_tcpd_untrusted.py PORT PEER_INFO
"""

import sys

from ipc_frames import check, frame, recv_all, recv_exact, recv_frame
from proxy_headers import addr, connect, peer_info, v1

port, peer_info_on = int(sys.argv[1]), sys.argv[2] == "peer-info"

s = connect(port)
s.sendall(v1("203.0.113.7", 40001) + b"echo\n")
answer = recv_all(s)
want = b"no: bad handshake: a PROXY protocol header from a client not trusted to send one"
if not answer.startswith(want):
    sys.exit(f"untrusted PROXY header: got {answer!r}")
s.close()

s = connect(port)
s.sendall(b"echo\n" + frame(b"direct"))
check("direct answer", recv_exact(s, 2), b"ok")
if peer_info_on:
    info = peer_info("direct", recv_frame(s), address=addr(s.getsockname()))
    if "via" in info:
        sys.exit(f"a direct client has no balancer: {info}")
check("direct echo", recv_frame(s), b"direct")
s.close()
print("untrusted: ok")
