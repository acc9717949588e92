"""Paths that name no service of websocketd (or an invalid name) are
answered 404.

    target/test-venv/bin/python tests/py/ws_not_found.py PORT
"""

from ws_client import echo, refused, ws

for path in ["/nope", "/", "/..", "/echo/../nope"]:
    refused(path, 404, path)
echo(ws("/echo"), "still there", "/echo")
print("ok")
