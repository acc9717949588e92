"""What the faults tests' Python clients share: the protocol (argv[1]: tcp,
tls, ws or wss), the daemon's port, the CA of its certificate, a time limit
in seconds, the rest in `args`; and a connection class for each protocol,
all alike: `connect(service)`, `send([payloads])`, `recv()` (a payload, or
the exception `Ended` saying how the daemon ended the connection) and
`close()` (ends it from this side; returns how the daemon answered).

- tcp: routed, the framed name answered with a framed `ok`; the daemon's
  end is `eof` (`reset` if it closed with the client's input unread).
- tls: the same inside TLS, with ragged EOFs reported rather than taken for
  an end: `close_notify` is a clean end, `ragged eof` a TCP close without it.
- ws: the `websockets` library's protocol on a plain socket, the service in
  the URL's path; an end is `close CODE` (or `eof` with no close frame).

Imported by faults_load.py and faults_once.py, beside it.
"""

import socket
import ssl
import struct
import sys
import time

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from ipc_frames import frame, raise_nofile

mode, port, ca, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
args = sys.argv[5:]
deadline = time.monotonic() + limit

def left():
    return deadline - time.monotonic()

class Ended(Exception):
    """The daemon ended the connection; `how`: eof, reset, close_notify, ragged eof, close CODE."""
    def __init__(self, how, detail=""):
        super().__init__(how + detail)
        self.how = how

def tcp_connection():
    s = socket.create_connection(("127.0.0.1", port), timeout=max(left(), 1))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

class Framed:
    """tcpd: LibIPC frames on TCP, routed by a framed name."""
    def __init__(self, service):
        self.s = self.wrap(tcp_connection())
        self.buf = bytearray()
        self.s.sendall(frame(service.encode()))
        answer = self.recv()
        if answer != b"ok":
            raise AssertionError(f"{service}: answered {answer!r}")

    def wrap(self, raw):
        return raw

    def send(self, msgs):
        self.s.sendall(b"".join(frame(m) for m in msgs))

    def partial(self):
        return f" ({len(self.buf)} bytes of a frame before it)" if self.buf else ""

    def read(self):
        try:
            chunk = self.s.recv(65536)
        except ConnectionResetError:
            raise Ended("reset", self.partial())
        if not chunk:
            raise Ended("eof", self.partial())
        return chunk

    def recv(self):
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack_from(">I", self.buf)
                if len(self.buf) >= 4 + n:
                    m = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    return m
            self.buf += self.read()

    def close(self):
        self.s.shutdown(socket.SHUT_WR)
        return self.after_close()

    def after_close(self):
        try:
            m = self.recv()
        except Ended as e:
            return e.how
        raise AssertionError(f"a message after closing: {m[:60]!r}")

class Tls(Framed):
    """tlsd: the same inside TLS, verifying tlsd against the CA."""
    def wrap(self, raw):
        ctx = ssl.create_default_context(cafile=ca)
        # Report a TCP close without close_notify (SSLEOFError) instead of
        # taking it for the end: the two must be told apart.
        return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)

    def read(self):
        try:
            chunk = self.s.recv(65536)
        except ssl.SSLEOFError:
            raise Ended("ragged eof", self.partial())
        except ssl.SSLZeroReturnError:
            # tlsd's close_notify, after ours (see close)
            raise Ended("close_notify", self.partial())
        except ConnectionResetError:
            raise Ended("reset", self.partial())
        # b"": the peer's close_notify (a ragged EOF raised above).
        if not chunk:
            raise Ended("close_notify", self.partial())
        return chunk

    def close(self):
        # Our close_notify, then the TCP half-close (SSLSocket.shutdown would
        # drop the TLS layer), then tlsd's answer.
        self.s.setblocking(False)
        try:
            self.s.unwrap()
        except ssl.SSLWantReadError:
            pass  # sent; tlsd's close_notify is read below
        self.s.settimeout(max(left(), 1))
        socket.socket.shutdown(self.s, socket.SHUT_WR)
        return self.after_close()

class Ws:
    """websocketd: the websockets library's client protocol on a plain socket
    (wss: on TLS, verifying websocketd against the CA)."""
    def __init__(self, service):
        self.s = tcp_connection()
        if mode == "wss":
            ctx = ssl.create_default_context(cafile=ca)
            self.s = ctx.wrap_socket(self.s, server_hostname="localhost")
        self.p = ClientProtocol(parse_uri(f"{mode}://localhost:{port}/{service}"), max_size=None)
        self.p.send_request(self.p.connect())
        self.flush()
        self.events, self.parts, self.eof = [], [], False
        while self.p.state is State.CONNECTING:
            if not self.feed():
                raise AssertionError(f"{service}: closed during the handshake")
        if self.p.handshake_exc is not None:
            raise self.p.handshake_exc
        self.events = self.events[1:]  # the HTTP response

    def flush(self):
        for data in self.p.data_to_send():
            if data:
                self.s.sendall(data)
            else:
                self.s.shutdown(socket.SHUT_WR)

    def feed(self):
        """Reads once; False at the end of the stream."""
        try:
            data = self.s.recv(65536)
        except ConnectionResetError:
            data = b""
        if data:
            self.p.receive_data(data)
        else:
            self.eof = True
            self.p.receive_eof()
        try:
            self.flush()  # pongs, the reply to a close
        except OSError:
            pass
        self.events += self.p.events_received()
        return bool(data)

    def send(self, msgs):
        for m in msgs:
            self.p.send_binary(m)
        self.flush()

    def recv(self):
        while True:
            while self.events:
                ev = self.events.pop(0)
                if ev.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                    self.parts.append(ev.data)
                    if ev.fin:
                        m = b"".join(self.parts)
                        self.parts = []
                        return m
                elif ev.opcode is Opcode.CLOSE:
                    rcvd = self.p.close_rcvd
                    code = rcvd.code if rcvd else "without a code"
                    raise Ended(f"close {code}", f" {rcvd.reason!r}" if rcvd else "")
            if self.eof:
                raise Ended("eof")
            self.feed()

    def close(self):
        self.p.send_close(1000)
        self.flush()
        return self.after_close()

    after_close = Framed.after_close

connect = {"tcp": Framed, "tls": Tls, "ws": Ws, "wss": Ws}[mode]

# A descriptor a connection, and then some: raise the soft limit if need be.
raise_nofile(2048)
