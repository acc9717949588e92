"""Against three websocketd: the default same-origin policy,
`--origin http://app.example`, `--allow-any-origin`.

    target/test-venv/bin/python tests/py/ws_origins.py PORT SAME LISTED ANY

(PORT, as every ws_*.py takes it, is the first daemon's: SAME.)
"""

from ws_client import args, echo, refused, ws

same, listed, anyone = (int(a) for a in args)

echo(ws("/echo", port=same, origin=f"http://127.0.0.1:{same}"), "same origin", "same origin")
echo(ws("/echo", port=same), "no Origin: not a browser", "no Origin")
refused("/echo", 403, "another site", port=same, origin="http://evil.example")
refused("/echo", 403, "same host, other port", port=same, origin=f"http://127.0.0.1:{listed}")
refused("/echo", 403, "https page for a ws listener", port=same, origin=f"https://127.0.0.1:{same}")

echo(ws("/echo", port=listed, origin="http://app.example"), "listed", "listed origin")
refused("/echo", 403, "own origin, not listed", port=listed, origin=f"http://127.0.0.1:{listed}")
refused("/echo", 403, "another site", port=listed, origin="http://evil.example")

echo(ws("/echo", port=anyone, origin="http://evil.example"), "any", "any origin")
print("ok")
