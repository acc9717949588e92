"""What the websocketd tests' Python clients share: the port of websocketd
(argv[1]) and the rest of the arguments (`args`), the `websockets` sync
client with the tests' defaults (`ws`), and checks that exit non-zero
saying what went wrong (`expect`, `echo`, `closed_with`, `refused`).

`dial` and `served` are for the DNS rebinding clients: each request is
dialled to 127.0.0.1 whatever host its URL names (`sock=`), as by a browser
whose DNS answered that name with 127.0.0.1; the `websockets` client then
sends that name as Host, and the page's Origin.

Imported by the ws_*.py programs beside it, which websocketd.rs runs.
"""

import socket
import sys

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

port = int(sys.argv[1])
args = sys.argv[2:]

def url(path, port=port, scheme="ws", host="127.0.0.1"):
    return f"{scheme}://{host}:{port}{path}"

def ws(path, port=port, scheme="ws", host="127.0.0.1", **kw):
    """A connection to websocketd: no size limit of the client's own, no pings
    of its own (so that a quiet client is quiet), and returned directly
    (`legacy`), not as a context manager."""
    for k, v in [("open_timeout", 10), ("close_timeout", 10), ("max_size", None),
                 ("ping_interval", None), ("legacy", True)]:
        kw.setdefault(k, v)
    return connect(url(path, port, scheme, host), **kw)

def short(v):
    if isinstance(v, (bytes, str)):
        return f"{type(v).__name__} of length {len(v)} {v[:60]!r}"
    return repr(v)

def expect(what, got, want):
    """got must equal want, and be of the same type (a str is not bytes)."""
    if type(got) is not type(want) or got != want:
        sys.exit(f"{what}: got {short(got)}, want {short(want)}")

def echo(c, m, what):
    c.send(m)
    expect(what, c.recv(timeout=10), m)

def closed_with(c, code, what):
    """The next thing from websocketd is a close frame with `code`; returns its reason."""
    try:
        m = c.recv(timeout=10)
    except ConnectionClosed as e:
        if e.rcvd is None or e.rcvd.code != code:
            sys.exit(f"{what}: closed, received close frame {e.rcvd} (sent {e.sent}), "
                     f"want close code {code}")
        return e.rcvd.reason
    sys.exit(f"{what}: got a message, {short(m)}, want close code {code}")

def refused(path, status, what, **kw):
    """Opening `path` is answered with HTTP `status`; returns the response."""
    try:
        c = ws(path, **kw)
    except InvalidStatus as e:
        expect(f"{what}: HTTP status", e.response.status_code, status)
        return e.response
    c.close()
    sys.exit(f"{what}: connected, want HTTP {status}")

def dial(p=port):
    return socket.create_connection(("127.0.0.1", p), timeout=10)

def served(host, what, p=port, **kw):
    c = ws("/echo", port=p, host=host, sock=dial(p), **kw)
    echo(c, what, what)
    c.close()
