"""The simulator's fast path: streaming OpenAI requests served by the connection's protocol, without aiohttp.

Why: in a closed-loop benchmark all streams end together and the next burst of requests arrives at once. Through
aiohttp each request costs the simulator ~140 µs of CPU (HTTP parser, Request object, a handler task, middleware,
router, ``request.read()``, ``StreamResponse.prepare``), so at 100 streams its event loop is busy for ~15 ms and
reaches the last sockets' ``data_received`` late; ``bench selftest`` counts that pickup delay as client TTFT error.
Here ``data_received`` only notes the bytes and their arrival time; a callback later in the same loop turn (after
every ready socket was read) parses the request (request line, headers, Content-Length body), validates it and
gives it to the emitter, writing the response head by hand: no task, no Request object.

What it takes: ``POST /v1/chat/completions``, ``/v1/completions`` or ``/v1/messages`` over plain HTTP/1.1 with a Content-Length JSON
body that has ``"stream": true``, on a server with nothing but timing configured (``SimServer.fast_path_ok``), the
API key right when one is set, and the same validation as the aiohttp path passed. Anything else on a connection
(another route, a non-streaming or invalid request, chunked or compressed bodies, ``Expect``, ``Upgrade``, ...)
goes to aiohttp as it arrived, and so does the rest of that connection. Pipelined requests wait for the stream
before them to end, as HTTP/1.1 requires. Truth record, counters and wire bytes are those of the aiohttp path
(``SimServer.check``, ``open_record``, ``new_format``, ``admit``, ``new_stream``, ``release`` are shared), except
that a client that disconnects ends its stream at once (aiohttp's path notices it at the stream's next event) and
``SimServer.stop`` ends fast streams in flight (recorded as disconnected) instead of waiting for them.

Measured on a 2-core VM (simulator and client each on a core), before (aiohttp path, old emitter) -> after (fast
path, and the emitter's ``TICK_BUDGET_NS``), 3 runs each of ``bench selftest --concurrency 100 --itl-ms 10``:
TTFT error mean 4.95 / 3.16 / 3.67 -> 0.72 / 0.68 / 0.66 ms, p99 7.9 / 5.2 / 8.4 -> 1.3 / 1.8 / 1.8 ms, simulator
pickup p99 16.9 / 13.3 / 12.2 -> 1.6 / 1.9 / 2.4 ms. A burst of 100 streaming chat requests already waiting in
their sockets (the simulator held with SIGSTOP while they were written): simulator CPU per request, its socket
calls included, ~140 -> ~60 µs, the burst answered (last response head) in ~14.7 -> ~6.5 ms; a bare uvloop
protocol writing a fixed head takes ~20 µs a request there, and this module's Python work alone is ~20 µs.
"""
from __future__ import annotations

import asyncio
from email.utils import formatdate
from time import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp.http import SERVER_SOFTWARE

from .emitter import Stream, disconnected, frame

if TYPE_CHECKING:
    from .server import SimServer, _TimedRequestHandler

ROUTES = {"/v1/chat/completions": "openai-chat", "/v1/completions": "openai-completions",
          "/v1/messages": "anthropic-messages"}
MAX_HEAD = 64 * 1024  # a head not complete by then is aiohttp's to judge
MAX_BODY = 4 * 1024 * 1024  # bigger bodies go to aiohttp, which streams them instead of concatenating pieces
HANDED_OVER = frozenset(("transfer-encoding", "content-encoding", "expect", "upgrade"))  # aiohttp's features
TERMINATOR = b"0\r\n\r\n"  # the chunked body's end
_SERVER = SERVER_SOFTWARE.encode()


class Head:
    """A request head the fast path can serve: its API, headers (lower-case names) and body length."""

    __slots__ = ("api", "body_len", "close", "headers")

    def __init__(self, api: str, headers: dict[str, str], body_len: int, close: bool):
        self.api, self.headers, self.body_len, self.close = api, headers, body_len, close


def parse_head(head: bytes) -> Head | None:
    """The request line and header lines (without the blank line), when they are a plain HTTP/1.1 POST to one of
    ``ROUTES`` with a Content-Length body; else None (aiohttp then answers it)."""
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")  # header values as aiohttp decodes them
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "POST" or parts[2] != "HTTP/1.1" or parts[1] not in ROUTES:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = name.lower()
        # no colon, an empty or space-padded name (or an obs-fold line), a repeated or an aiohttp-only header
        if not sep or not name or name != name.strip() or not name.isascii() or key in headers or key in HANDED_OVER:
            return None
        headers[key] = value.strip(" \t")
    length = headers.get("content-length", "")
    if not (length.isascii() and length.isdigit()):
        return None
    tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    if "upgrade" in tokens:
        return None
    return Head(ROUTES[parts[1]], headers, int(length), "close" in tokens)


_date: list[Any] = [0, b""]


def http_date() -> bytes:
    """The Date header's value, formatted once a second."""
    now = int(time())
    if now != _date[0]:
        _date[:] = [now, formatdate(now, usegmt=True).encode()]
    return _date[1]


def response_head(close: bool) -> bytes:
    """The head aiohttp's ``StreamResponse.prepare`` sends for the simulator's event streams."""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nDate: " + http_date() + b"\r\nServer: " + _SERVER
            + (b"\r\nConnection: close\r\n\r\n" if close else b"\r\n\r\n"))


class FastConnection:
    """One connection's fast path: buffers bytes until a whole request is there, serves it when it may, and hands
    the connection to aiohttp at the first request it may not serve. At most one stream at a time."""

    __slots__ = ("call_soon", "close_after", "handler", "last_ns", "pending", "rx_ns", "scheduled", "sim", "stream",
                 "transport")

    def __init__(self, sim: SimServer, handler: _TimedRequestHandler, transport, loop: asyncio.AbstractEventLoop):
        self.sim = sim
        self.call_soon = loop.call_soon
        self.handler = handler
        self.transport = transport
        self.pending = b""  # received, not yet served
        self.rx_ns = 0  # when the first byte of ``pending`` arrived
        self.last_ns = 0  # when the latest bytes arrived
        self.stream: Stream | None = None
        self.close_after = False
        self.scheduled = False  # a _serve() is due on the event loop

    def feed(self, data: bytes, now: int) -> None:
        """Bytes from ``data_received`` (at ``now``). They are only noted here: the request is served in a later
        callback of this loop turn, so that every socket with a request waiting is read, and its arrival time taken,
        before any of them is served (as aiohttp's parser does before its handler tasks run)."""
        if self.pending:
            self.pending += data
        else:
            self.pending = data
            self.rx_ns = now
        self.last_ns = now
        if self.stream is None:
            if not self.scheduled:
                self.scheduled = True
                self.call_soon(self._serve)
        elif len(self.pending) > MAX_HEAD + MAX_BODY:  # pipelining far ahead: read on when the stream is over
            self.transport.pause_reading()

    def _serve(self) -> None:
        """Serve the request at the start of ``pending`` if it is complete (or hand it over)."""
        self.scheduled = False
        if self.stream is not None or self.transport.is_closing() or self.handler.fast is not self:
            return
        buf = self.pending
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._hand_over()
            return
        head = parse_head(buf[:end])
        if head is None or head.body_len > MAX_BODY:
            self._hand_over()
            return
        stop = end + 4 + head.body_len
        if len(buf) < stop:
            return
        if not self._start(head, buf[end + 4:stop]):
            self._hand_over()
            return
        self.pending = buf[stop:]
        self.rx_ns = self.last_ns  # a pipelined request after it: its bytes came with the latest ones

    def _hand_over(self) -> None:
        data, self.pending = self.pending, b""
        self.handler.to_aiohttp(data, self.rx_ns)

    def _start(self, head: Head, body: bytes) -> bool:
        """Start streaming the response as the aiohttp path would; False when this request is not ours to serve."""
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        sim = self.sim
        if type(obj) is not dict or obj.get("stream") is not True or not sim.key_ok(head.headers):
            return False
        job = sim.check(obj, head.api)
        if isinstance(job, tuple):  # an error to answer: aiohttp's path words it
            return False
        truth, _ = sim.open_record(head.api, self.rx_ns, head.headers.get("x-request-id"), job)
        fmt = sim.new_format(head.api, truth, job)
        sim.admit(truth)
        start = fmt.start()
        early = frame(start) if start and fmt.start_early else b""
        stream = sim.new_stream(fmt, truth, job, self.transport, start=b"" if early else start)
        stream.on_end = self._end
        self.transport.write(response_head(head.close) + early)
        self.stream = stream
        self.close_after = head.close
        sim.add_stream(stream)
        return True

    def _end(self, stream: Stream) -> None:
        """The stream is over: called by the emitter in the same step as the write of its end. Its truth is recorded
        first and the chunked terminator written after, so a client holding the whole response finds the truth
        there (and a cut or lost stream gets no terminator)."""
        self.stream = None
        self.sim.release(stream.truth)
        transport = self.transport
        if transport.is_closing():
            return
        if stream.outcome not in ("cut", "disconnected"):
            transport.write(TERMINATOR)
        if self.close_after:
            transport.close()
            return
        self.handler.restart_idle_timer()
        if self.pending:
            if len(self.pending) > MAX_HEAD + MAX_BODY:
                transport.resume_reading()
            if not self.scheduled:  # a pipelined request: served in its own callback, not inside the emitter's
                self.scheduled = True
                self.call_soon(self._serve)

    def lost(self) -> None:
        """The connection is gone: a stream still going ends now as disconnected, as the emitter would end it."""
        if self.stream is not None:
            disconnected(self.stream)

    def abort(self) -> None:
        """Server shutdown: end a stream in flight now (recorded as disconnected) and close the connection."""
        self.close_after = True
        self.transport.close()
        self.lost()
