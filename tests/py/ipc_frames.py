"""LibIPC frames over a socket, for the tests' Python clients and services.

A frame is a 4-byte big-endian length, then the payload. `frame` makes one,
`recv_exact` and `recv_frame` read them, `recv_all` reads until EOF, and
`check(what, got, want)` exits non-zero with a readable message when `got`
is not `want`. Imported by the programs beside it (tests/py/), not run alone.
"""

import struct
import sys


def frame(b):
    return struct.pack(">I", len(b)) + b


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = s.recv(min(n - len(buf), 65536))
        except OSError as e:
            sys.exit(f"{e!r} after {len(buf)} of {n} bytes")
        if not chunk:
            sys.exit(f"EOF after {len(buf)} of {n} bytes: {bytes(buf[:100])!r}")
        buf += chunk
    return bytes(buf)


def recv_frame(s):
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    return recv_exact(s, n)


def recv_all(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got[:100]!r} ({len(got)} bytes), want {want[:100]!r} ({len(want)} bytes)")


def raise_nofile(want):
    """Raises this process's soft limit on open descriptors to `want` (at most
    the hard limit), for clients that hold many connections; returns the hard
    limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return hard
