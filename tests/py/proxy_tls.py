"""A TLS client of tlsd behind a balancer, with a client certificate; MODE
`fixed`: tlsd in fixed mode (no name to send), `routed` otherwise.

    target/test-venv/bin/python tests/py/proxy_tls.py PORT CA CERT KEY MODE
"""

import ssl
import sys

from ipc_frames import check, frame, recv_exact, recv_frame
from proxy_headers import addr, connect, peer_info, v2
port, ca, cert, key, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["ipc"])
raw = connect(int(port))
raw.sendall(v2("198.51.100.9", 50123))
s = ctx.wrap_socket(raw, server_hostname="localhost")
if mode == "routed":
    s.sendall(b"echo\n")
    check("answer", recv_exact(s, 2), b"ok")
s.sendall(frame(b"over tls"))
peer_info("tls", recv_frame(s), address="198.51.100.9:50123", via=addr(s.getsockname()),
          tls__version="TLSv1_3", tls__server_name="localhost", tls__alpn="ipc",
          tls__identity='CN=["alice"] SAN=["dns:alice.example"]')
check("echo", recv_frame(s), b"over tls")
s.close()
print("tls: ok")
