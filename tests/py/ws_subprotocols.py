"""websocketd prefers `chat.v2`, then `chat` (--subprotocol, in that order).

    target/test-venv/bin/python tests/py/ws_subprotocols.py PORT
"""

from ws_client import echo, expect, ws

for offered, chosen in [(["chat", "chat.v2"], "chat.v2"), (["chat"], "chat"),
                        (["other", "chat"], "chat"), (["other"], None), (None, None)]:
    c = ws("/echo", subprotocols=offered)
    expect(f"offered {offered}: chosen", c.subprotocol, chosen)
    echo(c, f"with {chosen}", f"offered {offered}")
    c.close()
print("ok")
