"""A small HTTP/1.1 client for the load's hot path: every socket read is timestamped where it arrives.

Why not aiohttp here: aiohttp hands a stream to the reading task through its HTTP parser, a ``StreamReader`` and a
future per read, so each token event costs a task wake-up, and its arrival can only be timestamped when the task
runs, after every other callback of that loop turn. At 100 streams of 10 ms tokens those turns hold ~100 reads,
and the last read of a turn was stamped ~1 ms late (``bench selftest``: ITL error p99 1.2 ms); at 0 ms the wake-ups
capped one client core at ~85k events/s. Here the protocol's ``data_received`` is the hot path: it takes
``perf_counter_ns()``, strips the chunked framing and appends the payload; the requesting task sleeps until the
response has ended and is woken once. Everything else (SSE, JSON) stays off this path, in ``client.finish``.

What it supports, because the endpoints people benchmark need it: keep-alive connections reused across requests
(a pool per origin, no limit), ``Content-Length``, chunked and close-delimited bodies, 1xx responses skipped,
heads whose lines end in a bare LF, ``gzip``/``deflate`` bodies (not asked for: ``Accept-Encoding: identity``; a
stream's are decoded read by read afterwards, off the hot path), TLS (``https://``, certificates verified), HTTP
proxies (absolute-form requests for ``http://``, ``CONNECT`` tunnels for ``https://``, with ``user:password@``
credentials), a total timeout per request and a connect timeout, and one retry of a request sent
on a reused connection that the server had already closed (no byte of an answer arrived). The rest of the client
(``/v1/models`` preflight, telemetry) keeps using aiohttp, where none of this matters.

Errors never raise from :meth:`Pool.request`: they land in ``Response.exc`` as :class:`TimeoutError`, an
``OSError`` from connecting (``ConnectionRefusedError``, ``socket.gaierror``...), :class:`ConnectionClosed` (the
connection ended before the response did, or, as :class:`NoCloseNotify`, TLS ended a close-delimited body without
close_notify) or :class:`ProtocolError` (the server broke HTTP framing).
"""
from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass, field
from time import perf_counter_ns
from urllib.parse import unquote, urlsplit

from . import __version__
from .http1_body import DecodeError, decode_body, decode_reads

MAX_HEAD_BYTES = 64 * 1024  # a response head longer than this is not HTTP a client should wait on
MAX_CHUNK_LINE = 4096
HEX_DIGITS = b"0123456789abcdefABCDEF"


class ConnectionClosed(ConnectionError):
    """The connection ended before the response did."""


class PoolClosed(ConnectionClosed):
    """The client closed its pool while the request was in flight (end of a run, Ctrl-C)."""


class ProtocolError(ValueError):
    """The server's bytes are not valid HTTP/1.1."""


class NoCloseNotify(ConnectionClosed):
    """A TLS server ended a close-delimited body by closing TCP without TLS's close_notify alert first: the body may
    have been cut, and nothing in HTTP can say whether it was (RFC 9112 §9.8)."""


class ProxyError(ConnectionError):
    """The HTTP proxy refused the tunnel."""


@dataclass(eq=False)
class Response:
    """What came back, filled in as it arrives. ``reads`` holds the body as it was read: one piece per socket read
    that carried body bytes (framing removed), stamped in ``reads_ns`` when the read arrived."""

    status: int | None = None
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    written_ns: int | None = None  # the request's bytes were handed to the socket
    headers_ns: int | None = None  # the response head was complete
    end_ns: int | None = None
    reads_ns: list[int] = field(default_factory=list)
    reads: list[bytes] = field(default_factory=list)
    complete: bool = False  # the body ended as its framing said it would
    exc: BaseException | None = None
    retried: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def body(self) -> bytes:
        try:
            return decode_body(b"".join(self.reads), self._encoding)
        except DecodeError as e:
            raise ProtocolError(str(e)) from None

    def decoded_reads(self) -> tuple[list[int], list[bytes], str | None]:
        """``reads_ns`` and ``reads`` with the Content-Encoding undone read by read, for a stream (see
        :func:`bench.http1_body.decode_reads`); uncompressed (the usual case): the lists themselves, untouched."""
        return decode_reads(self.reads_ns, self.reads, self._encoding, self.complete)

    @property
    def _encoding(self) -> str:
        return self.headers.get("content-encoding", "identity").strip().lower()


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        return cls(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class Proxy:
    origin: Origin
    authorization: str | None  # the Proxy-Authorization header value, from user:password@ in the URL

    @classmethod
    def of(cls, url: str) -> Proxy:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https"):
            raise ProxyError(f"proxy {parts.scheme}://{parts.hostname}: only http:// and https:// proxies are "
                             "supported")
        auth = None
        if parts.username is not None:
            creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth = "Basic " + base64.b64encode(creds).decode()
        return cls(Origin.of(parts._replace(scheme="http" if parts.scheme != "https" else "https").geturl()), auth)


def _check_header(name: str, value: str) -> None:
    if any(c in name or c in value for c in "\r\n\0") or not name or ":" in name:
        raise ValueError(f"header {name!r} has a character HTTP does not allow (line break, NUL or ':' in the name)")


def request_head(method: str, target: str, origin: Origin, headers: dict[str, str], body_len: int,
                 proxy_auth: str | None = None) -> bytes:
    """The request line and headers. ``target`` is the path (or an absolute URL through a plain HTTP proxy)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.authority}"]
    given = {k.lower() for k in headers}
    if "user-agent" not in given:
        lines.append(f"User-Agent: gpucap/{__version__}")
    if "accept-encoding" not in given:
        lines.append("Accept-Encoding: identity")  # compression would hold tokens back in the server's encoder
    if proxy_auth is not None:
        lines.append(f"Proxy-Authorization: {proxy_auth}")
    for name, value in headers.items():
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # framing and routing are this module's business
        _check_header(name, value)
        lines.append(f"{name}: {value}")
    if method != "GET" or body_len:
        lines.append(f"Content-Length: {body_len}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def head_end(buf: bytes) -> tuple[int, int]:
    """Where a response head in ``buf`` ends (its length without the line end of its last line, and where what
    follows its empty line starts), or ``(-1, -1)`` while that empty line has not arrived. Lines may end in CRLF or
    a bare LF, even mixed, as real clients accept (RFC 9112 §2.2: a recipient may take LF as the line terminator and
    ignore a CR before it): the empty line is the first LF followed by LF or CRLF."""
    crlf = buf.find(b"\n\r\n")  # the usual "\r\n\r\n"
    lf = buf.find(b"\n\n", 0, crlf + 1 if crlf >= 0 else None)
    if lf >= 0:
        end, start = lf, lf + 2
    elif crlf >= 0:
        end, start = crlf, crlf + 3
    else:
        return -1, -1
    return (end - 1 if end and buf[end - 1] == 13 else end), start  # 13: the CR of the last line's CRLF


def parse_head(head: bytes) -> tuple[int, str, dict[str, str], str]:
    """Status, reason, headers (lower-case names; repeated ones joined with ', ') and version of a response head as
    :func:`head_end` cuts it; its lines may end in CRLF or a bare LF."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    if text.count("\n") >= len(lines):  # some line ends in a bare LF
        lines = [line[:-1] if line[-1:] == "\r" else line for line in text.split("\n")]
    parts = lines[0].split(" ", 2)
    code = parts[1] if len(parts) >= 2 else ""
    if not parts[0].startswith("HTTP/1.") or not (code.isascii() and code.isdigit()) or len(code) != 3:
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"malformed header line: {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, parts[0]


def _without_close_notify(transport: asyncio.BaseTransport | None) -> bool:
    """Whether a TLS connection's peer closed TCP without sending TLS's close_notify alert first.

    asyncio reports both ends alike: ``eof_received``, then ``connection_lost(None)`` (Python 3.11 to 3.13; 3.10
    calls ``eof_received`` only for the bare close), with no ``ssl.SSLError``: it never tells the TLS layer that TCP
    ended. The TLS object it exposes (``get_extra_info("ssl_object")``) still knows: after close_notify a read
    returns b"" (OpenSSL keeps answering "the peer has finished"); after a bare close it wants more bytes
    (``SSLWantReadError``) and takes none, since asyncio has already read every whole record. Plain TCP, or any other
    answer, counts as a clean end, as before.
    """
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    if sslobj is None:
        return False
    try:
        sslobj.read(1)
    except ssl.SSLWantReadError:
        return True
    except (ssl.SSLError, ValueError, OSError):
        return False
    return False


# states of a connection
_IDLE, _HEAD, _CHUNKED, _LENGTH, _UNTIL_CLOSE, _TUNNEL = range(6)


class _Conn(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its response read in ``data_received``."""

    def __init__(self, pool: Pool, key: tuple):
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0  # requests sent on it
        self.state = _IDLE
        self.resp: Response | None = None
        self.waiter: asyncio.Future | None = None
        self._buf = b""  # an unfinished head, chunk-size line or trailer
        self._rem = 0  # body bytes still due: of the current chunk, or of a Content-Length body
        self._crlf = False  # a chunk's data is done; its CRLF is due
        self._trailers = False  # the last chunk was seen; trailers until an empty line
        self._keep_alive = True
        self._head_request = False
        self._no_close_notify = False  # TLS ended by a bare TCP close (eof_received says it; connection_lost acts)

    # ---- asyncio.Protocol ---------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        ts = perf_counter_ns()
        state = self.state
        try:
            if state == _CHUNKED:
                self._chunked(data, ts)
            elif state == _LENGTH:
                self._length(data, ts)
            elif state == _UNTIL_CLOSE:
                self.resp.reads_ns.append(ts)
                self.resp.reads.append(data)
            elif state in (_HEAD, _TUNNEL):
                self._head(data, ts)
            else:  # bytes nobody asked for: the connection's framing is lost
                self._drop()
        except ProtocolError as e:
            self._fail(e)

    def eof_received(self) -> bool:
        if self.state == _UNTIL_CLOSE:
            self._no_close_notify = _without_close_notify(self.transport)
        return False  # close the transport; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.waiter is None or self.waiter.done():
            return
        if self.state == _UNTIL_CLOSE and exc is None and self._no_close_notify:
            self._fail(NoCloseNotify("the server closed the TLS connection without close_notify: the body, which "
                                     "ends with the connection, may have been cut"))
        elif self.state == _UNTIL_CLOSE and exc is None:
            self.resp.complete = True
            self._done()
        else:
            what = "before the response head" if self.state in (_HEAD, _TUNNEL) else "before the response ended"
            self._fail(ConnectionClosed(f"the server closed the connection {what}"
                                        + (f" ({exc})" if exc else "")))

    # ---- one request ---------------------------------------------------------------------------------------------
    def send(self, data: bytes, resp: Response, *, head_request: bool = False, tunnel: bool = False) -> asyncio.Future:
        self.resp = resp
        self.state = _TUNNEL if tunnel else _HEAD
        self._buf = b""
        self._rem = 0
        self._crlf = self._trailers = False
        self._head_request = head_request
        self.used += 1
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        if self.closed or self.transport is None or self.transport.is_closing():
            self._fail(ConnectionClosed("the server closed the connection before the request was sent"))
            return waiter
        self.transport.write(data)
        resp.written_ns = perf_counter_ns()
        return waiter

    def _head(self, data: bytes, ts: int) -> None:
        buf = self._buf + data if self._buf else data
        while True:
            end, body = head_end(buf)
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ProtocolError(f"the response head is longer than {MAX_HEAD_BYTES} bytes")
                self._buf = buf
                return
            status, reason, headers, version = parse_head(buf[:end])
            rest = buf[body:]
            if not (100 <= status < 200 and status != 101):
                break
            buf = rest  # an interim answer (100 Continue, 103 Early Hints): the real head follows
        self._buf = b""
        resp = self.resp
        resp.status, resp.reason, resp.headers, resp.headers_ns = status, reason, headers, ts
        if self.state == _TUNNEL:
            resp.complete = True
            self._done(keep=False)  # the proxy's answer to CONNECT; the connection becomes the tunnel
            return
        conn = headers.get("connection", "").lower()
        self._keep_alive = "close" not in conn and (version != "HTTP/1.0" or "keep-alive" in conn)
        te = headers.get("transfer-encoding", "").lower()
        if self._head_request or status in (204, 304):
            self._rem = 0
            self.state = _LENGTH
        elif "chunked" in te:
            self.state = _CHUNKED
        elif "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}  # "2, 2" repeats one length
            length = values.pop() if len(values) == 1 else ""
            if not (length.isascii() and length.isdigit()):
                raise ProtocolError(f"bad Content-Length {headers['content-length']!r}")
            self._rem = int(length)
            self.state = _LENGTH
        else:
            self._keep_alive = False
            self.state = _UNTIL_CLOSE
            if rest:
                resp.reads_ns.append(ts)
                resp.reads.append(rest)
            return
        if self.state == _LENGTH and self._rem == 0:
            resp.complete = True
            self._done()
            if rest:
                self._drop()
            return
        if rest:
            self.data_received_body(rest, ts)

    def data_received_body(self, data: bytes, ts: int) -> None:
        if self.state == _CHUNKED:
            self._chunked(data, ts)
        else:
            self._length(data, ts)

    def _length(self, data: bytes, ts: int) -> None:
        rem = self._rem
        n = len(data)
        piece = data if n <= rem else data[:rem]
        self._rem = rem - len(piece)
        resp = self.resp
        resp.reads_ns.append(ts)
        resp.reads.append(piece)
        if self._rem == 0:
            resp.complete = True
            self._done()
            if n > rem:
                self._drop()  # bytes beyond the body: the connection cannot be trusted again

    def _chunked(self, data: bytes, ts: int) -> None:
        """Strip chunked framing from one read; the body bytes it carried become one piece stamped ``ts``."""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos, n = 0, len(data)
        rem = self._rem
        out = []
        while pos < n:
            if rem:
                end = pos + rem
                if end >= n:
                    out.append(data[pos:] if pos else data)
                    rem = end - n
                    pos = n
                    if rem == 0:
                        self._crlf = True
                    break
                out.append(data[pos:end])
                pos = end
                rem = 0
                self._crlf = True
            elif self._crlf:
                if n - pos < 2:
                    self._buf = data[pos:]
                    break
                if data[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("a chunk's data is not followed by CRLF")
                pos += 2
                self._crlf = False
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > MAX_CHUNK_LINE:
                        raise ProtocolError("a chunk-size line is too long")
                    self._buf = data[pos:]
                    break
                line = data[pos:eol]
                pos = eol + 2
                if self._trailers:
                    if not line:  # the empty line after the last chunk (and its trailers): the body has ended
                        self._rem = 0
                        self._emit(out, ts)
                        self.resp.complete = True
                        self._done()
                        if pos < n:
                            self._drop()
                        return
                    continue
                digits = line.split(b";", 1)[0].strip(b" \t")
                if not digits or digits.strip(HEX_DIGITS):
                    raise ProtocolError(f"bad chunk-size line {line[:40]!r}")
                size = int(digits, 16)
                if size == 0:
                    self._trailers = True
                rem = size
        self._rem = rem
        self._emit(out, ts)

    def _emit(self, out: list[bytes], ts: int) -> None:
        if out:
            self.resp.reads_ns.append(ts)
            self.resp.reads.append(out[0] if len(out) == 1 else b"".join(out))

    # ---- ends ----------------------------------------------------------------------------------------------------
    def _done(self, keep: bool = True) -> None:
        """The response has ended: wake the requester, and put the connection back (or close it)."""
        self.resp.end_ns = perf_counter_ns()
        self.state = _IDLE
        waiter, self.waiter = self.waiter, None
        if keep and self._keep_alive and not self.closed:
            self.pool._release(self)
        elif keep:
            self._drop()
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        """The response in flight (if any) ends with ``exc``; the connection is closed."""
        resp = self.resp
        if self.waiter is not None and resp is not None and resp.exc is None:
            resp.exc = exc
            resp.end_ns = perf_counter_ns()
        self._drop()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drop(self) -> None:
        self.state = _IDLE
        self.closed = True
        self.pool._forget(self)
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections per origin (and proxy), without a limit: a benchmark opens as many as it has requests in
    flight. Use as an async context manager; :meth:`request` is the one call."""

    def __init__(self, timeout_s: float | None = 300.0, connect_timeout_s: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None):
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._ssl = ssl_context
        self._idle: dict[tuple, list[_Conn]] = {}
        self._all: set[_Conn] = set()
        self._closed = False

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn._fail(PoolClosed("the client closed the connection"))
        self._all.clear()
        self._idle.clear()

    @property
    def open_connections(self) -> int:
        return len(self._all)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    # ---- pool bookkeeping (called by connections) ----------------------------------------------------------------
    def _release(self, conn: _Conn) -> None:
        self._idle.setdefault(conn.key, []).append(conn)

    def _forget(self, conn: _Conn) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    # ---- requests ------------------------------------------------------------------------------------------------
    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes, resp: Response,
                      proxy: str | None = None) -> Response:
        """Send one request and read its whole response into ``resp`` (also returned). Never raises, except
        :class:`asyncio.CancelledError` (then the connection is closed and ``resp`` keeps what had arrived)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s if self.timeout_s else None
        try:
            origin = Origin.of(url)
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            px = Proxy.of(proxy) if proxy else None
            absolute = px is not None and origin.scheme == "http"
            head = request_head(method, url if absolute else path, origin, headers, len(body),
                                px.authorization if absolute else None)
        except (ValueError, ProxyError) as e:
            resp.exc = e
            return resp
        data = head + body if len(body) < 65536 else None
        for attempt in (0, 1):
            conn = None
            try:
                if self._closed:
                    raise PoolClosed("the client's connection pool is closed")
                conn = await self._connection(origin, px, deadline, fresh=attempt == 1)
                reused = conn.used > 0
                if data is not None:
                    waiter = conn.send(data, resp, head_request=method == "HEAD")
                else:  # a large body: no copy into one buffer
                    conn.transport.write(head)
                    waiter = conn.send(body, resp, head_request=method == "HEAD")
                await self._wait(waiter, deadline, conn)
            except asyncio.CancelledError:
                if conn is not None and conn.resp is resp and conn.waiter is not None:
                    conn._drop()  # still ours and in flight (a finished one may already serve another request)
                if resp.end_ns is None:
                    resp.end_ns = perf_counter_ns()
                raise
            except Exception as e:  # noqa: BLE001 - the promise: every failure becomes a value in resp
                resp.exc = e
                resp.end_ns = perf_counter_ns()
                return resp
            stale = (attempt == 0 and reused and type(resp.exc) is ConnectionClosed and resp.status is None
                     and not resp.reads and not self._closed)
            if not stale:
                return resp
            resp.exc = None  # the server had closed that idle connection as the request went out: once more
            resp.end_ns = resp.written_ns = None
            resp.retried = True
        return resp

    async def _wait(self, waiter: asyncio.Future, deadline: float | None, conn: _Conn) -> None:
        if deadline is None:
            await waiter
            return
        timer = asyncio.get_running_loop().call_at(deadline, self._timeout, conn, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    def _timeout(self, conn: _Conn, waiter: asyncio.Future) -> None:
        if not waiter.done():
            conn._fail(TimeoutError(f"no complete response within {self.timeout_s:g} s (--timeout)"))

    async def _connection(self, origin: Origin, px: Proxy | None, deadline: float | None,
                          fresh: bool = False) -> _Conn:
        key = (origin, px)
        idle = None if fresh else self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        loop = asyncio.get_running_loop()
        timeout = self.connect_timeout_s
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - loop.time()))
        try:
            return await asyncio.wait_for(self._connect(key, origin, px), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"could not connect to {origin.authority} within {timeout:g} s") from None

    async def _connect(self, key: tuple, origin: Origin, px: Proxy | None) -> _Conn:
        loop = asyncio.get_running_loop()
        tls = origin.scheme == "https"
        hop = origin if px is None else px.origin
        hop_tls = hop.scheme == "https"
        _, conn = await loop.create_connection(lambda: _Conn(self, key), hop.host, hop.port,
                                               ssl=self._ssl_context() if hop_tls else None,
                                               server_hostname=hop.host if hop_tls else None)
        self._all.add(conn)
        if px is not None and tls:
            try:
                await self._tunnel(conn, origin, px)
            except BaseException:
                conn._drop()  # a refused, failed, timed-out or cancelled tunnel leaves no socket behind
                raise
        if self._closed or conn.closed:
            conn._drop()
            raise PoolClosed("the client closed its pool") if self._closed else ConnectionClosed(
                "the server closed the connection as it was opened")
        return conn

    async def _tunnel(self, conn: _Conn, origin: Origin, px: Proxy) -> None:
        """CONNECT through the proxy, then TLS with the origin over the tunnel."""
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        lines = [f"CONNECT {host}:{origin.port} HTTP/1.1", f"Host: {host}:{origin.port}"]
        if px.authorization:
            lines.append(f"Proxy-Authorization: {px.authorization}")
        answer = Response()
        await conn.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), answer, tunnel=True)
        conn.used = 0
        if answer.exc is not None:
            raise ProxyError(f"the proxy {px.origin.authority} failed the tunnel: {answer.exc}")
        if answer.status != 200:
            conn._drop()
            raise ProxyError(f"the proxy {px.origin.authority} answered {answer.status} {answer.reason} to CONNECT")
        try:
            transport = await asyncio.get_running_loop().start_tls(conn.transport, conn, self._ssl_context(),
                                                                    server_hostname=origin.host)
        except TypeError as e:  # Python 3.10 cannot run TLS inside a TLS connection to the proxy
            raise ProxyError(f"TLS through the https:// proxy {px.origin.authority} needs Python 3.11 or later "
                             f"({e})") from None
        conn.transport = transport
