"""Messages of the usual boundary sizes up to exactly websocketd's
--max-message-size (LIMIT) come back; one byte more, in one frame or in two
fragments, is closed with 1009. Each of those clients first sends a marker,
so that the test can find what its service connection received.

    target/test-venv/bin/python tests/py/ws_limit.py PORT LIMIT
"""

from websockets.exceptions import ConnectionClosed

from ws_client import args, closed_with, echo, short, ws

limit = int(args[0])

def payload(n, text):
    m = ("0123456789abcdef" * (n // 16 + 1))[:n]
    return m if text else (bytes(range(256)) * (n // 256 + 1))[:n]

c = ws("/big")
for i, n in enumerate([0, 125, 126, 65535, 65536, limit - 1, limit, limit]):
    echo(c, payload(n, i % 2 == 1), f"{n} bytes")
c.close()

def over(marker, message):
    c = ws("/big")
    echo(c, marker, "marker")
    try:
        c.send(message)
    except ConnectionClosed:
        pass  # websocketd may close before the client has sent it all
    reason = closed_with(c, 1009, f"{short(marker)}: a message of {limit + 1} bytes")
    print(f"{marker!r}: close 1009 {reason!r}")

over(b"marker: one frame", payload(limit + 1, False))
over(b"marker: two fragments", [payload(limit // 2, False), payload(limit - limit // 2 + 1, False)])
over(b"marker: text", payload(limit + 1, True))
echo(ws("/big"), "after", "a new client")
print("ok")
