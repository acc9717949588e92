"""Fragmented messages (text and binary, and a big one in 16 frames) come
back whole from websocketd: the service got one message for each, not one
per fragment.

    target/test-venv/bin/python tests/py/ws_fragments.py PORT
"""

from ws_client import echo, expect, ws

c = ws("/echo")
parts = ["first fragment, ", "", "second, ", "ünïcödé third ☃"]
c.send(parts)
expect("fragmented text", c.recv(timeout=10), "".join(parts))
parts = [bytes(range(256)) * 100, b"", b"\x00\xff" * 5000]
c.send(parts)
expect("fragmented binary", c.recv(timeout=10), b"".join(parts))
parts = [bytes([k]) * 60000 for k in range(16)]
c.send(parts)
expect("960000 bytes in 16 fragments", c.recv(timeout=10), b"".join(parts))
# Nothing else came back: the next message is the echo of the next message.
echo(c, "after the fragments", "next message")
c.close()
print("ok")
