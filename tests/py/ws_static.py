"""Python's `http.client` against websocketd's --static-dir: files with
their content types, HEAD, nothing outside the directory; and a WebSocket
from the page's origin on the same port.

    target/test-venv/bin/python tests/py/ws_static.py PORT
"""

import http.client
import sys

from ws_client import echo, expect, port, ws

def get(method, path):
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h.request(method, path)
    r = h.getresponse()
    body = r.read()
    h.close()
    return r, body

for path, ctype, body in [
    ("/", "text/html; charset=utf-8", b"<h1>home</h1>\n"),
    ("/index.html", "text/html; charset=utf-8", b"<h1>home</h1>\n"),
    ("/js/app.js", "text/javascript; charset=utf-8", b"new WebSocket('/echo');\n"),
    ("/style.css", "text/css; charset=utf-8", b"h1 { color: red }\n"),
    ("/logo.png", "image/png", b"\x89PNG\r\n\x1a\n"),
]:
    r, got = get("GET", path)
    expect(f"GET {path}: status", r.status, 200)
    expect(f"GET {path}: Content-Type", r.getheader("Content-Type"), ctype)
    expect(f"GET {path}: body", got, body)
r, got = get("HEAD", "/js/app.js")
expect("HEAD: status", r.status, 200)
expect("HEAD: Content-Length", r.getheader("Content-Length"), "24")
expect("HEAD: body", got, b"")

for path in ["/../secret.txt", "/js/../../secret.txt", "/%2e%2e/secret.txt",
             "/%2E%2E%2Fsecret.txt", "/..%2fsecret.txt", "/missing.html", "/.hidden"]:
    r, got = get("GET", path)
    expect(f"GET {path}: status", r.status, 404)
    if b"secret" in got:
        sys.exit(f"GET {path}: {got!r}")
r, _ = get("POST", "/")
expect("POST: status", r.status, 405)

echo(ws("/echo", origin=f"http://127.0.0.1:{port}"), "from the page", "page's WebSocket")
print("ok")
