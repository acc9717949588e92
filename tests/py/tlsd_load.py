"""A load client of tlsd across a SIGHUP: CONNS connections busy at once, one
thread each, all verifying tlsd's certificate against the old CA. Each sends
numbered messages (30 bytes to 20 KiB), four in a write, and checks every
echo, in order. Once each has had a few echoes it prints `busy: ...`; then a
line on its stdin says the reload is done: a new connection must then
verify against the new CA and no longer against the old one, and each old
connection must have AFTER more echoes, checked as before. Bounded: LIMIT
seconds in all, and a cap on echoes before the reload.

    target/test-venv/bin/python tests/py/tlsd_load.py PORT OLD_CA NEW_CA CONNS AFTER LIMIT
"""

import resource
import select
import socket
import ssl
import sys
import threading
import time

from ipc_frames import check, frame, raise_nofile, recv_frame

port, old_ca, new_ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
conns, after, limit = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
WINDOW = 4
MAX_BEFORE = 400_000
deadline = time.monotonic() + limit

def left():
    return deadline - time.monotonic()

# A descriptor a connection, and then some: raise the soft limit if need be.
want = conns + 64
hard = raise_nofile(want)
if hard != resource.RLIM_INFINITY and hard < want:
    sys.exit(f"RLIMIT_NOFILE: hard limit {hard}, {want} descriptors needed")
threading.stack_size(256 * 1024)

def connect(ca):
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=max(left(), 1))
    return ctx.wrap_socket(raw, server_hostname="localhost")

def message(c, n):
    # 30 bytes to 1 KiB; one in 50 about 20 KiB, more than a TLS record holds.
    times = 700 if (c + n) % 50 == 0 else 1 + (c + n) % 40
    return f"connection {c} message {n};".encode() * times

reloaded = threading.Event()
failures = []
done = [0] * conns          # echoes checked, in order, per connection
at_reload = [None] * conns  # how many when it learnt of the reload

def client(c):
    try:
        s = connect(old_ca)
        n = 0
        while at_reload[c] is None or n < at_reload[c] + after:
            if left() < 0:
                raise TimeoutError(f"time ran out after {n} echoes")
            if n >= MAX_BEFORE:
                raise RuntimeError(f"no reload after {n} echoes")
            batch = [message(c, n + k) for k in range(WINDOW)]
            s.sendall(b"".join(frame(m) for m in batch))
            for m in batch:
                back = recv_frame(s)
                if back != m:
                    raise AssertionError(f"echo {n}: got {back[:60]!r}, sent {m[:60]!r}")
                n += 1
            done[c] = n
            if at_reload[c] is None and reloaded.is_set():
                at_reload[c] = n
        s.close()
    except BaseException as e:
        failures.append(f"connection {c}: {e!r}")

started = time.monotonic()
threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(conns)]
for t in threads:
    t.start()
while min(done) < 2 * WINDOW and not failures and left() > 0:
    time.sleep(0.01)
if failures:
    sys.exit(f"{len(failures)} connections failed: " + "; ".join(failures[:10]))
if min(done) < 2 * WINDOW:
    sys.exit(f"only {sum(1 for d in done if d)} of {conns} connections echoing in time")
print(f"busy: {conns} connections, {sum(done)} echoes, "
      f"{time.monotonic() - started:.1f} s", flush=True)

# The test replaces the certificate, sends SIGHUP and, once tlsd has logged
# the reload, writes a line.
if not select.select([sys.stdin], [], [], max(left(), 0))[0]:
    sys.exit("no word of the reload in time")
sys.stdin.readline()
before = sum(done)
reloaded.set()
print(f"reloaded after {before} echoes", flush=True)

# A new connection meanwhile gets the new certificate.
s = connect(new_ca)
s.sendall(frame(b"a new connection"))
check("echo on a new connection", recv_frame(s), b"a new connection")
s.close()
try:
    connect(old_ca).close()
    sys.exit("a new connection verified tlsd against the old CA")
except ssl.SSLCertVerificationError as e:
    print(f"old CA, new connection: refused: {e.verify_message}", flush=True)

for t in threads:
    t.join(max(left(), 0))
if failures:
    sys.exit(f"{len(failures)} connections failed: " + "; ".join(failures[:10]))
late = [c for c, t in enumerate(threads) if t.is_alive()]
if late:
    sys.exit(f"{len(late)} connections not done in time, e.g. {late[:10]}")
least = min(d - r for d, r in zip(done, at_reload))
print(f"echoes: {sum(done)} in all, {sum(done) - before} after the reload, "
      f"at least {least} on each connection; {time.monotonic() - started:.1f} s", flush=True)
print("load client: ok", flush=True)
