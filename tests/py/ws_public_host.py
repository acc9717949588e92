"""websocketd with `--public-host ws.test`: that name and its origins work,
http or https (behind a TLS terminator); other names and origins do not.

    target/test-venv/bin/python tests/py/ws_public_host.py PORT
"""

from ws_client import dial, port, refused, served

served("ws.test", "public host", origin=f"http://ws.test:{port}")
served("WS.test.", "public host, as written otherwise")
served("127.0.0.1", "page behind a TLS terminator", origin="https://ws.test")
refused("/echo", 403, "public host, other origin", host="ws.test", sock=dial(),
        origin=f"http://evil.example:{port}")
refused("/echo", 403, "public host, other port", host="ws.test", sock=dial(),
        origin=f"http://ws.test:{port + 1}")
refused("/echo", 421, "rebinding", host="evil.example", sock=dial(),
        origin=f"http://evil.example:{port}")
print("ok")
