"""The ends of websocketd's services: one that closes (`once`: echoes one
5-byte message, then exits) gives its client close 1000; one killed
(`alpha`, by the test once this prints `ready`) gives 1011, and its path is
then answered 503; the other service (`beta`) carries on.

    target/test-venv/bin/python tests/py/ws_service_ends.py PORT
"""

from ws_client import closed_with, echo, refused, ws

o = ws("/once")
echo(o, "hello", "once")
reason = closed_with(o, 1000, "client of a service that closed")
print(f"service closed: 1000 {reason!r}")

a, b = ws("/alpha"), ws("/beta")
echo(a, "alpha before", "alpha")
echo(b, "beta before", "beta")
print("ready", flush=True)
reason = closed_with(a, 1011, "client of the killed service")
print(f"service killed: 1011 {reason!r}")
echo(b, "beta after", "beta, after alpha died")
refused("/alpha", 503, "the killed service")
print("ok")
