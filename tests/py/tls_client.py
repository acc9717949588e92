"""What the tlsd tests' Python clients share: tlsd's port (argv[1]) and the
CA of its certificate (argv[2]); a context that verifies the certificate
(against a CA) and the host name, a connection, and payloads. Imported by
the tlsd_*.py programs beside it.
"""

import socket
import ssl
import sys

port = int(sys.argv[1])
ca = sys.argv[2]

def context(cafile, version=None):
    ctx = ssl.create_default_context(cafile=cafile)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx

def conn(ctx, hostname="localhost"):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=hostname)

def payload(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]

VERSIONS = [(None, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")]
