"""A client of tlsd that keeps one TLS connection busy across a SIGHUP:
after its first echo it prints `started`, then exchanges numbered messages,
each checked (printing `count N` every 10), until a line comes on its stdin;
then 20 more, and it prints how many in all.

    target/test-venv/bin/python tests/py/tlsd_long_client.py PORT CA
"""

import select
import socket
import ssl
import sys

from ipc_frames import frame, recv_exact, recv_frame

port, ca = int(sys.argv[1]), sys.argv[2]

ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                    server_hostname="localhost")
s.sendall(b"pong\n")
if recv_exact(s, 2) != b"ok":
    sys.exit("no ok")

count = 0
def exchange():
    global count
    m = f"message {count} ".encode() * (1 + count % 100)
    s.sendall(frame(m))
    back = recv_frame(s)
    if back != m:
        sys.exit(f"echo {count}: got {back[:60]!r}, sent {m[:60]!r}")
    count += 1
    if count % 10 == 0:
        print(f"count {count}", flush=True)

exchange()
print("started", flush=True)
while not select.select([sys.stdin], [], [], 0.005)[0]:
    exchange()
sys.stdin.readline()
for _ in range(20):
    exchange()
print(f"exchanged {count}", flush=True)
s.close()
print("long client: ok", flush=True)
