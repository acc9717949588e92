"""CLIENTS clients connected when websocketd gets SIGTERM (from the test,
once this prints `ready`) get close 1001.

    target/test-venv/bin/python tests/py/ws_drain.py PORT CLIENTS
"""

from ws_client import args, closed_with, echo, ws

cs = [ws("/echo") for _ in range(int(args[0]))]
for i, c in enumerate(cs):
    echo(c, f"client {i}", f"client {i}")
print("ready", flush=True)
for i, c in enumerate(cs):
    reason = closed_with(c, 1001, f"client {i}")
print(f"going away: 1001 {reason!r}")
print("ok")
