"""One client on each of four websocketd, one for each --message-type: what
comes back is text or binary as the flag says.

    target/test-venv/bin/python tests/py/ws_types.py PORT MIRROR AUTO TEXT BINARY

(PORT, as every ws_*.py takes it, is the first daemon's: the mirror's.)
"""

from ws_client import args, echo, expect, short, ws

mirror, auto, text, binary = (int(a) for a in args)
utf8 = "naïve ☃".encode()
not_utf8 = bytes(range(256))

c = ws("/echo", port=mirror)
for sent in ["héllo ☃", not_utf8, utf8, "", b"", "text again", b"binary again"]:
    echo(c, sent, f"mirror: {short(sent)}")
c.close()

for port, name, cases in [
    (auto, "auto", [("text", "text"), (utf8, utf8.decode()), (not_utf8, not_utf8)]),
    (text, "text", [("text", "text"), (utf8, utf8.decode()), (not_utf8, not_utf8)]),
    (binary, "binary", [("héllo", "héllo".encode()), (not_utf8, not_utf8), (utf8, utf8)]),
]:
    c = ws("/echo", port=port)
    for sent, want in cases:
        c.send(sent)
        expect(f"{name}: {short(sent)}", c.recv(timeout=10), want)
    c.close()
print("ok")
