"""Paths that name no service of websocketd (or an invalid name) are
answered 404; the body of a name that leads nowhere says so.

    target/test-venv/bin/python tests/py/ws_not_found.py PORT
"""

from ws_client import echo, expect, refused, ws

for path in ["/nope", "/", "/..", "/echo/../nope"]:
    r = refused(path, 404, path)
    if path == "/nope":
        # Why: no such service (not a name that breaks the rules).
        expect("/nope: body", bytes(r.body), b"404 Not Found: unknown service\n")
echo(ws("/echo"), "still there", "/echo")
print("ok")
