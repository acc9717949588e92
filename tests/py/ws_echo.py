"""One echo on websocketd's `/echo` with Python's `websockets` (wss when a
CA file is given).

    target/test-venv/bin/python tests/py/ws_echo.py PORT [CA]
"""

import ssl
import sys

from websockets.sync.client import connect

from ipc_frames import check

port = int(sys.argv[1])
ca = sys.argv[2] if len(sys.argv) > 2 else None
url = f"wss://localhost:{port}/echo" if ca else f"ws://127.0.0.1:{port}/echo"
ctx = ssl.create_default_context(cafile=ca) if ca else None
with connect(url, ssl=ctx, open_timeout=10, close_timeout=10) as c:
    c.send("still served after the flood")
    check("echo", c.recv(timeout=10), "still served after the flood")
print("ok")
