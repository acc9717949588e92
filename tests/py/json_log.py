"""A client of tcpd run with --log-format json, then a reader of its log:
names `pong`, has two messages echoed, closes; waits (10 s at most) for
tcpd's line about that connection's end, then checks that every line of
the log is one JSON object with a timestamp, a level, a target and a
message, and that the close line carries the client's address and service
(its span) and its traffic and reason (its fields), as the README says.

    target/test-venv/bin/python tests/py/json_log.py PORT LOGFILE
"""

import json
import socket
import sys
import time

from ipc_frames import check, frame, recv_exact, recv_frame

port, log = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
peer = "%s:%d" % s.getsockname()
s.sendall(b"pong\n")
check("answer", recv_exact(s, 2), b"ok")
for m in [b"one", b"three"]:
    s.sendall(frame(m))
    check("echo", recv_frame(s), m)
s.close()


def closed_line():
    """The object of the line saying this client's connection closed, or None."""
    with open(log) as f:
        for n, line in enumerate(f.read().splitlines(), 1):
            try:
                o = json.loads(line)
            except ValueError as e:
                sys.exit(f"line {n} is not JSON ({e}): {line!r}")
            if not isinstance(o, dict):
                sys.exit(f"line {n} is not an object: {line!r}")
            for key in ["timestamp", "level", "target", "fields"]:
                if key not in o:
                    sys.exit(f"line {n} has no {key!r}: {line!r}")
            if "message" not in o["fields"]:
                sys.exit(f"line {n} has no message: {line!r}")
            span = o.get("span", {})
            if o["fields"]["message"] == "connection closed" and span.get("peer") == peer:
                return o
    return None


deadline = time.monotonic() + 10
while (o := closed_line()) is None:
    if time.monotonic() > deadline:
        sys.exit(f"no 'connection closed' line for {peer} within 10 s")
    time.sleep(0.05)
want_span = {"peer": peer, "service": "pong", "name": "conn"}
if o["span"] != want_span:
    sys.exit(f"span {o['span']}, want {want_span}")
# Two messages each way, of 3 and 5 bytes, each with its 4-byte header.
f = o["fields"]
for key, want in [("bytes_in", 16), ("bytes_out", 16), ("messages_in", 2),
                  ("messages_out", 2), ("reason", "closed")]:
    if f.get(key) != want:
        sys.exit(f"{key}: {f.get(key)!r}, want {want!r}: {o}")
if not isinstance(f.get("duration_ms"), int):
    sys.exit(f"no duration_ms: {o}")
if o["level"] != "INFO" or o["target"] != "daemon::engine":
    sys.exit(f"level or target: {o}")
print("json log: ok")
