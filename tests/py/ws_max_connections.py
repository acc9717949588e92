"""websocketd takes LIMIT clients at most: the next is answered 503
(Retry-After: 1, "too many connections"); once one leaves, a new one gets in.

    target/test-venv/bin/python tests/py/ws_max_connections.py PORT LIMIT
"""

import sys
import time

from websockets.exceptions import InvalidStatus

from ws_client import args, echo, expect, refused, ws

limit = int(args[0])
cs = [ws("/echo") for _ in range(limit)]
for i, c in enumerate(cs):
    echo(c, f"client {i}", f"client {i}")
r = refused("/echo", 503, "one client too many")
expect("Retry-After", r.headers.get("Retry-After"), "1")
expect("503 body", bytes(r.body), b"503 Service Unavailable: too many connections\n")
cs.pop().close()
deadline = time.monotonic() + 5
while True:
    try:
        c = ws("/echo")
        break
    except InvalidStatus as e:
        expect("status while the place is being freed", e.response.status_code, 503)
        if time.monotonic() > deadline:
            sys.exit("still refused 5 s after a client left")
        time.sleep(0.02)
echo(c, "admitted", "the new client")
for i, c in enumerate(cs):
    echo(c, f"client {i} still here", f"client {i}")
print("ok")
