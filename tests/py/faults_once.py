"""One exchange through a daemon: connects to SERVICE, sends MESSAGE, prints
the answer, then closes and prints how the daemon answered the close.

    target/test-venv/bin/python tests/py/faults_once.py tcp|tls|ws|wss PORT CA LIMIT SERVICE MESSAGE
"""

from daemon_conns import args, connect

conn = connect(args[0])
conn.send([args[1].encode()])
print(conn.recv().decode())
print(f"closed: {conn.close()}")
print("ok")
