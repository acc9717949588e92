"""Many websocketd clients at once: each (half to `alpha`, half to `beta`)
connects, waits until all are connected, then exchanges messages, text and
binary in turn, checking each echo and its type.

    target/test-venv/bin/python tests/py/ws_many.py PORT CLIENTS MESSAGES
"""

import asyncio

from websockets.asyncio.client import connect as aconnect

from ws_client import args, expect, url

n, m = int(args[0]), int(args[1])
everyone_in = asyncio.Event()
connected = 0

async def client(i):
    global connected
    service = ("alpha", "beta")[i % 2]
    async with aconnect(url(f"/{service}"), open_timeout=15, max_size=None,
                        ping_interval=None) as c:
        connected += 1
        if connected == n:
            everyone_in.set()
        await everyone_in.wait()
        for k in range(m):
            msg = f"{service} client {i} message {k}. ".encode() * (1 + (i * 7 + k) % 60)
            if k % 2 == 0:
                msg = msg.decode()
            await c.send(msg)
            got = await asyncio.wait_for(c.recv(), 10)
            expect(f"client {i} ({service}), message {k}", got, msg)

async def main():
    async with asyncio.timeout(15):
        await asyncio.gather(*(client(i) for i in range(n)))

asyncio.run(main())
print(f"{n} clients connected at once, {m} echoes each")
print("ok")
