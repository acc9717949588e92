"""Many busy connections at once through a daemon, a thread each. GROUPS
lists `service:connections:role`, comma-separated. Each connection sends
numbered messages (30 bytes to 28 KiB), four in a write, and checks every
echo, in order. Once every connection has had a few echoes it prints
`busy: ...`, and waits for a line on its stdin (the test acts meanwhile:
kills a service, sends SIGTERM); then

- a `steady` connection has AFTER more echoes, then closes; the daemon must
  answer its close cleanly (tcp: EOF, tls: close_notify, ws: close 1000),
  and nothing may go wrong before;
- an `ended` connection goes on until the daemon ends it, which must be as
  END says (`eof`, `close_notify`, `close 1011`, ...; `|` between choices);
- a `drained` one too; it prints `drained PORT ECHOES` (its local port, the
  echoes it got before the end) so that the test can check them against
  what the daemon took from it.

Bounded: the time limit, and a cap on echoes before the word to go.

    target/test-venv/bin/python tests/py/faults_load.py tcp|tls|ws|wss PORT CA LIMIT GROUPS AFTER END
"""

import select
import sys
import threading
import time

from daemon_conns import Ended, args, connect, left, mode

groups, after, end = args[0], int(args[1]), args[2]
WINDOW = 4
MAX_BEFORE = 100_000
CLEAN = {"tcp": "eof", "tls": "close_notify", "ws": "close 1000", "wss": "close 1000"}[mode]

plan = []
for g in groups.split(","):
    service, count, role = g.split(":")
    plan += [(service, role)] * int(count)
threading.stack_size(256 * 1024)

go = threading.Event()
failures = []
done = [0] * len(plan)          # echoes checked, in order
ends = [None] * len(plan)       # how each connection ended
unanswered = [0] * len(plan)    # messages sent, not echoed, when it ended
ports = [None] * len(plan)      # local ports, for the daemon's log lines

def message(c, n):
    times = 1000 if (c + n) % 50 == 0 else 1 + (c + n) % 40
    return f"connection {c} message {n};".encode() * times

def client(c, service, role):
    try:
        conn = connect(service)
        ports[c] = conn.s.getsockname()[1]
        n, at_go = 0, None
        while True:
            if go.is_set() and role == "steady":
                at_go = n if at_go is None else at_go
                if n >= at_go + after:
                    break
            if left() < 0:
                raise TimeoutError(f"time ran out after {n} echoes")
            if n >= MAX_BEFORE and not go.is_set():
                raise RuntimeError(f"no word to go after {n} echoes")
            first = n
            batch = [message(c, first + k) for k in range(WINDOW)]
            try:
                conn.send(batch)
                send_error = None
            except Exception as e:  # the end is read below
                send_error = e
            try:
                for m in batch:
                    back = conn.recv()
                    if back != m:
                        raise AssertionError(f"echo {n}: got {back[:60]!r} ({len(back)} bytes), "
                                             f"sent {m[:60]!r} ({len(m)} bytes)")
                    n += 1
                    done[c] = n
            except Ended as e:
                if role == "steady":
                    raise
                ends[c] = e
                # A batch that could not be sent was not sent (the end came first).
                unanswered[c] = 0 if send_error else first + WINDOW - n
                return
            if send_error is not None:
                raise AssertionError(f"sending failed ({send_error!r}), yet the echoes came")
        ends[c] = Ended(conn.close())
    except BaseException as e:
        failures.append(f"connection {c} ({service}, {role}): {e!r}")

def fail(why):
    sys.exit(f"{why}; {len(failures)} connections failed: " + "; ".join(failures[:10]))

started = time.monotonic()
threads = [threading.Thread(target=client, args=(c, s, r), daemon=True)
           for c, (s, r) in enumerate(plan)]
for t in threads:
    t.start()
while min(done) < 2 * WINDOW and not failures and left() > 0:
    time.sleep(0.01)
if failures or min(done) < 2 * WINDOW:
    fail(f"{sum(1 for d in done if d >= 2 * WINDOW)} of {len(plan)} connections busy in time")
print(f"busy: {len(plan)} connections, {sum(done)} echoes, "
      f"{time.monotonic() - started:.1f} s", flush=True)

if not select.select([sys.stdin], [], [], max(left(), 0))[0]:
    sys.exit("no word to go in time")
sys.stdin.readline()
before = sum(done)
go.set()
for t in threads:
    t.join(max(left(), 0))
if failures:
    fail("connections failed")
late = [c for c, t in enumerate(threads) if t.is_alive()]
if late:
    sys.exit(f"{len(late)} connections not done in time, e.g. {late[:10]}")

wrong = []
for c, (service, role) in enumerate(plan):
    want = CLEAN if role == "steady" else end
    if ends[c].how not in want.split("|"):
        wrong.append(f"connection {c} ({service}, {role}) ended with {ends[c]}, want {want}")
    elif role == "drained":
        print(f"drained {ports[c]} {done[c]} (and {unanswered[c]} in flight)")
if wrong:
    sys.exit(f"{len(wrong)} connections ended wrong:\n" + "\n".join(wrong[:20]))
for service, role in sorted(set(plan)):
    cs = [c for c, p in enumerate(plan) if p == (service, role)]
    hows = sorted(set(str(ends[c]) for c in cs))
    print(f"{service} ({role}): {len(cs)} connections, {sum(done[c] for c in cs)} echoes "
          f"(at least {min(done[c] for c in cs)} each), ended: {'; '.join(hows[:5])}")
print(f"{sum(done)} echoes in all, {sum(done) - before} after the word to go; "
      f"{time.monotonic() - started:.1f} s", flush=True)
print("ok")
