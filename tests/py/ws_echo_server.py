"""A WebSocket server nobody here wrote (Python's `websockets`) that answers
each binary message with the same bytes, for websocketd's outbound side to
reach. Prints `port N` once it listens on 127.0.0.1 (port 0: a free one).

    target/test-venv/bin/python tests/py/ws_echo_server.py
"""

import sys

from websockets.sync.server import serve


def echo(ws):
    for message in ws:
        ws.send(message)


with serve(echo, "127.0.0.1", 0) as server:
    print(f"port {server.socket.getsockname()[1]}", flush=True)
    server.serve_forever()
