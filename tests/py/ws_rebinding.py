"""The default websocketd, with a static directory: a DNS rebinding page
gets 421, for a WebSocket or a file; the daemon's own names and origins work.

    target/test-venv/bin/python tests/py/ws_rebinding.py PORT
"""

import http.client

from ws_client import dial, expect, port, refused, served

# The attack: a page of evil.example, whose name now resolves to 127.0.0.1.
r = refused("/echo", 421, "rebinding", host="evil.example", sock=dial(),
            origin=f"http://evil.example:{port}")
print(f"rebinding: {r.status_code} {r.body.decode().strip()}")
refused("/echo", 421, "unknown Host, no Origin", host="evil.example", sock=dial())
refused("/echo", 421, "a name not given with --public-host", host="ws.test", sock=dial(),
        origin=f"http://ws.test:{port}")
# The daemon's own names, and its own origins.
served("127.0.0.1", "by address", origin=f"http://127.0.0.1:{port}")
served("localhost", "by localhost", origin=f"http://localhost:{port}")
served("127.0.0.1", "page from localhost", origin=f"http://localhost:{port}")
served("127.0.0.1", "no Origin: not a browser")
served("localhost", "no Origin, localhost")
refused("/echo", 403, "own Host, other origin", sock=dial(), origin=f"http://evil.example:{port}")

# Static files: the same Host check.
def get(host):
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h.request("GET", "/", headers={"Host": host})
    r = h.getresponse()
    body = r.read()
    h.close()
    return r.status, body
expect("static file, rebinding: status", get(f"evil.example:{port}")[0], 421)
expect("static file, own host", get(f"127.0.0.1:{port}"), (200, b"<h1>home</h1>\n"))
print("ok")
