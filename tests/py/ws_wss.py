"""wss, with a certificate of the test CA (CA): echoes, the https origin,
and a client trusting another CA (WRONG_CA) or speaking plain ws gets no
connection.

    target/test-venv/bin/python tests/py/ws_wss.py PORT CA WRONG_CA
"""

import ssl
import sys

from ws_client import args, echo, port, refused, short, ws

ca, wrong_ca = args
ctx = ssl.create_default_context(cafile=ca)
c = ws("/echo", scheme="wss", host="localhost", ssl=ctx, origin=f"https://localhost:{port}")
for m in ["over TLS ☃", bytes(range(256)), b"\x00" * 200_000]:
    echo(c, m, f"wss: {short(m)}")
c.close()
refused("/echo", 403, "http origin on wss", scheme="wss", host="localhost", ssl=ctx,
        origin=f"http://localhost:{port}")
try:
    ws("/echo", scheme="wss", host="localhost", ssl=ssl.create_default_context(cafile=wrong_ca))
    sys.exit("a client trusting another CA connected")
except ssl.SSLCertVerificationError as e:
    print(f"other CA: {e.verify_message}")
try:
    ws("/echo")
    sys.exit("plain ws to the wss port connected")
except Exception as e:  # no connection, whatever the error
    print(f"plain ws: {e!r}")
print("ok")
