"""A WebSocket client (the `websockets` library) of websocketd on a socket
that has sent a PROXY header first, as a balancer in front of it would.

    target/test-venv/bin/python tests/py/proxy_ws.py PORT
"""

import sys

from websockets.sync.client import connect as ws_connect

from ipc_frames import check
from proxy_headers import connect, peer_info, v1
port = int(sys.argv[1])
raw = connect(port)
raw.sendall(v1("192.0.2.44", 61000))
with ws_connect(f"ws://127.0.0.1:{port}/echo?room=7", sock=raw,
                origin="https://app.example.org", subprotocols=["chat"]) as ws:
    ws.send("hello")
    peer_info("ws", ws.recv(timeout=10), address="192.0.2.44:61000",
              websocket__path="/echo?room=7", websocket__origin="https://app.example.org",
              websocket__subprotocol="chat")
    check("echo", ws.recv(timeout=10), "hello")
print("ws: ok")
