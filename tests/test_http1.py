"""The hot-path HTTP/1.1 client against real servers on loopback that send exactly the bytes each test scripts."""
from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
import zlib

import pytest
from conftest import free_port, run

from bench import errors
from bench.http1 import (
    ConnectionClosed,
    NoCloseNotify,
    Origin,
    Pool,
    ProtocolError,
    ProxyError,
    Response,
    request_head,
)

SSE = [b"data: {\"n\": %d}\n\n" % i for i in range(5)]


def chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


HEAD_SSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


class Scripted:
    """A loopback server: for each connection, reads one request head (and body) per step and writes the scripted
    pieces, pausing between them so each piece reaches the client as its own socket read."""

    def __init__(self, script, pause_s: float = 0.01):
        self.script = script  # async (reader, writer, server) -> None, or a list of byte pieces for each request
        self.pause_s = pause_s
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length) if length else b""
        self.requests.append(head + body)
        return head + body

    async def send(self, writer: asyncio.StreamWriter, pieces: list[bytes]) -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(self.pause_s)

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if callable(self.script):
                await self.script(reader, writer, self)
            else:
                while await self.read_request(reader) is not None:
                    await self.send(writer, self.script)
        except ConnectionError:
            pass
        finally:
            writer.close()


async def get(url: str, pool: Pool | None = None, body: bytes = b"{}", proxy: str | None = None, **kw) -> Response:
    resp = Response()
    if pool is None:
        async with Pool(**kw) as p:
            return await p.request("POST", url, {"Content-Type": "application/json"}, body, resp, proxy=proxy)
    return await pool.request("POST", url, {"Content-Type": "application/json"}, body, resp, proxy=proxy)


def test_chunked_stream_split_at_every_awkward_place_gives_one_piece_per_read():
    wire = HEAD_SSE + chunked(SSE)
    # cut inside the head, inside a size line, between data and its CRLF, inside the CRLF, inside the terminator
    cuts = [10, len(HEAD_SSE) + 1, len(HEAD_SSE) + 3 + len(SSE[0]), len(HEAD_SSE) + 3 + len(SSE[0]) + 1,
            len(HEAD_SSE) + 60, len(wire) - 3]
    pieces = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]

    async def main():
        async with Scripted(pieces) as srv:
            return await get(srv.url)
    resp = run(main())
    assert resp.exc is None and resp.complete and resp.status == 200
    assert resp.content_type == "text/event-stream"
    assert b"".join(resp.reads) == b"".join(SSE)  # framing gone, every payload byte kept in order
    assert len(resp.reads) == len(resp.reads_ns) and all(resp.reads)
    assert resp.reads_ns == sorted(resp.reads_ns)
    # each read that carried payload is its own piece: the reads came ~10 ms apart, so the stamps are too
    gaps_ms = [(b - a) / 1e6 for a, b in zip(resp.reads_ns, resp.reads_ns[1:])]
    assert len(resp.reads) >= 4 and min(gaps_ms) > 5
    assert resp.written_ns <= resp.headers_ns <= resp.reads_ns[0] <= resp.end_ns


def test_each_event_is_stamped_when_its_read_arrives_not_when_the_response_ends():
    pieces = [HEAD_SSE] + [b"%x\r\n%b\r\n" % (len(p), p) for p in SSE] + [b"0\r\n\r\n"]

    async def main():
        async with Scripted(pieces, pause_s=0.03) as srv:
            t0 = time.perf_counter_ns()
            return t0, await get(srv.url)
    t0, resp = run(main())
    assert b"".join(resp.reads) == b"".join(SSE)
    offsets_ms = [(t - t0) / 1e6 for t in resp.reads_ns]
    # the server wrote event k about 30 ms x (k + 1) after the start
    for k, off in enumerate(offsets_ms):
        assert 30 * (k + 1) - 5 < off < 30 * (k + 1) + 25, offsets_ms


def test_keep_alive_reuses_one_connection_and_connection_close_does_not():
    body = b'{"ok": true}'
    plain = [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)]
    closing = [plain[0].replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)]

    async def three(script):
        async with Scripted(script) as srv, Pool() as pool:
            bodies = [(await get(srv.url, pool)).body for _ in range(3)]
            return bodies, srv.connections
    bodies, conns = run(three(plain))
    assert bodies == [body] * 3 and conns == 1
    bodies, conns = run(three(closing))
    assert bodies == [body] * 3 and conns == 3


def test_close_delimited_body_interim_100_and_gzip():
    data = b'{"x": "' + b"y" * 5000 + b'"}'
    packed = gzip.compress(data)
    pieces = [b"HTTP/1.1 100 Continue\r\n\r\n",
              b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n\r\n",
              packed[:100], packed[100:]]

    async def script(reader, writer, srv):
        await srv.read_request(reader)
        await srv.send(writer, pieces)  # then close: the body ends with the connection
    async def main():
        async with Scripted(script) as srv:
            return await get(srv.url)
    resp = run(main())
    assert resp.exc is None and resp.status == 200 and resp.complete
    assert resp.body == data


def test_request_bytes_on_the_wire():
    async def main():
        async with Scripted([b"HTTP/1.1 204 No Content\r\n\r\n"]) as srv:
            resp = Response()
            async with Pool() as pool:
                await pool.request("POST", srv.url + "?x=1", {"Authorization": "Bearer k", "X-Request-Id": "r-1"},
                                   b'{"a": 1}', resp)
            return resp, srv.requests[0]
    resp, wire = run(main())
    assert resp.status == 204 and resp.complete and resp.reads == []
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{lines[1].rsplit(':', 1)[1]}" == lines[1]
    assert "Content-Length: 8" in lines and "Accept-Encoding: identity" in lines
    assert "Authorization: Bearer k" in lines and "X-Request-Id: r-1" in lines
    assert body == b'{"a": 1}'


def test_header_injection_is_refused_before_sending():
    with pytest.raises(ValueError, match="line break"):
        request_head("POST", "/", Origin.of("http://h"), {"X-Evil": "a\r\nHost: other"}, 0)


def test_server_closing_mid_stream_keeps_what_arrived_and_says_cut():
    pieces = [HEAD_SSE, b"%x\r\n%b\r\n" % (len(SSE[0]), SSE[0]), b"%x\r\n" % 100 + b"data: {\"half"]

    async def script(reader, writer, srv):
        await srv.read_request(reader)
        await srv.send(writer, pieces)
    async def main():
        async with Scripted(script) as srv:
            return await get(srv.url)
    resp = run(main())
    assert isinstance(resp.exc, ConnectionClosed) and not resp.complete
    assert resp.reads[0] == SSE[0] and b"".join(resp.reads).endswith(b"half")
    assert errors.classify_exception(resp.exc) == errors.CONNECTION_RESET


def test_broken_chunk_framing_is_a_protocol_error():
    async def main():
        async with Scripted([HEAD_SSE, b"zz\r\nhello\r\n"]) as srv:
            return await get(srv.url)
    resp = run(main())
    assert isinstance(resp.exc, ProtocolError) and "chunk-size" in str(resp.exc)
    assert errors.classify_exception(resp.exc) == errors.MALFORMED


def test_a_request_on_a_connection_the_server_had_closed_is_sent_again_once():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def script(reader, writer, srv):
        await srv.read_request(reader)
        await srv.send(writer, [ok])
        if srv.connections == 1:
            # keep-alive was not refused, but the server drops the connection as the next request arrives (the race
            # of an idle timeout, as uvicorn's 5 s one): no byte of an answer
            await srv.read_request(reader)

    async def main():
        async with Scripted(script) as srv, Pool() as pool:
            first = await get(srv.url, pool)
            second = await get(srv.url, pool)
            third = await get(srv.url, pool)
            return first, second, third, srv.connections, len(srv.requests)
    first, second, third, conns, n_requests = run(main())
    assert first.body == b"ok" and not first.retried
    assert second.body == b"ok" and second.exc is None and second.retried
    assert third.body == b"ok" and third.exc is None  # the second connection closed after its answer: a new one
    assert conns == 3 and n_requests == 4


def test_timeout_refused_and_unresolvable():
    async def silent(reader, writer, srv):
        await srv.read_request(reader)
        await asyncio.sleep(5)

    async def main():
        async with Scripted(silent) as srv:
            t0 = time.perf_counter()
            resp = await get(srv.url, timeout_s=0.3)
            return resp, time.perf_counter() - t0
    resp, took = run(main())
    assert isinstance(resp.exc, TimeoutError) and 0.25 < took < 2
    assert errors.classify_exception(resp.exc) == errors.TIMEOUT
    refused = run(get(f"http://127.0.0.1:{free_port()}/v1/x"))
    assert errors.classify_exception(refused.exc) == errors.CONNECTION_REFUSED and refused.status is None
    unknown = run(get("http://no-such-host.invalid/v1/x"))
    assert errors.classify_exception(unknown.exc) == errors.CONNECTION_REFUSED


def test_cancelling_a_request_closes_its_connection_and_keeps_the_partial_response():
    async def endless(reader, writer, srv):
        await srv.read_request(reader)
        writer.write(HEAD_SSE)
        for i in range(1000):
            writer.write(b"%x\r\n%b\r\n" % (len(SSE[0]), SSE[0]))
            await writer.drain()
            await asyncio.sleep(0.01)

    async def main():
        async with Scripted(endless) as srv, Pool() as pool:
            resp = Response()
            task = asyncio.create_task(pool.request("POST", srv.url, {}, b"{}", resp))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)
            return resp, pool.open_connections
    resp, open_conns = run(main())
    assert resp.reads and resp.end_ns is not None and open_conns == 0


# ---- proxies and TLS --------------------------------------------------------------------------------------------

async def _pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class Proxy:
    """A forward proxy on loopback: absolute-form requests for http://, CONNECT tunnels for https://."""

    def __init__(self, require_auth: str | None = None):
        self.require_auth = require_auth
        self.seen: list[str] = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        first = head.split(b"\r\n")[0].decode()
        self.seen.append(first)
        if self.require_auth and f"Proxy-Authorization: {self.require_auth}".encode() not in head:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        method, target, _ = first.split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_r, up_w = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            return
        from urllib.parse import urlsplit
        parts = urlsplit(target)
        up_r, up_w = await asyncio.open_connection(parts.hostname, parts.port)
        up_w.write(head.replace(target.encode(), parts.path.encode(), 1))
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))


def test_plain_http_through_a_proxy_with_credentials():
    ok = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    async def main():
        async with Scripted(ok) as srv, Proxy(require_auth="Basic dTpw") as px:  # u:p
            resp = Response()
            async with Pool() as pool:
                await pool.request("POST", srv.url, {}, b"{}", resp, proxy=f"http://u:p@127.0.0.1:{px.port}")
            denied = Response()
            async with Pool() as pool:
                await pool.request("POST", srv.url, {}, b"{}", denied, proxy=f"http://127.0.0.1:{px.port}")
            return resp, denied, px.seen
    resp, denied, seen = run(main())
    assert resp.body == b"ok" and seen[0].startswith("POST http://127.0.0.1:")
    assert denied.status == 407  # a plain-http proxy's refusal is the response itself


def test_https_through_a_connect_tunnel_verifies_the_certificate():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ok)
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            async with Proxy() as px:
                url = f"https://localhost:{port}/v1/chat/completions"
                tunnelled = Response()
                async with Pool(ssl_context=client_ctx) as pool:
                    await pool.request("POST", url, {}, b"{}", tunnelled, proxy=f"http://127.0.0.1:{px.port}")
                direct = Response()
                async with Pool(ssl_context=client_ctx) as pool:
                    await pool.request("POST", url, {}, b"{}", direct)
                untrusted = Response()
                async with Pool() as pool:  # the system's CAs do not know this test CA
                    await pool.request("POST", url, {}, b"{}", untrusted)
                return tunnelled, direct, untrusted, px.seen
        finally:
            server.close()
    tunnelled, direct, untrusted, seen = run(main())
    assert tunnelled.body == b"hello" and seen == [f"CONNECT localhost:{seen[0].split(':')[1].split()[0]} HTTP/1.1"]
    assert direct.body == b"hello"
    assert errors.classify_exception(untrusted.exc) == errors.TLS


def test_a_proxy_refusing_the_tunnel_is_a_clear_error():
    async def main():
        async with Proxy(require_auth="Basic eDp5") as px:
            resp = Response()
            async with Pool() as pool:
                await pool.request("POST", "https://localhost:1/v1/x", {}, b"{}", resp,
                                   proxy=f"http://127.0.0.1:{px.port}")
            return resp
    resp = run(main())
    assert isinstance(resp.exc, ProxyError) and "407" in str(resp.exc)
    assert errors.classify_exception(resp.exc) == errors.CONNECTION_REFUSED
    socks = run(get("http://127.0.0.1:1/v1/x", proxy="socks5://127.0.0.1:1080"))
    assert isinstance(socks.exc, ProxyError) and "only http:// and https:// proxies" in str(socks.exc)


# ---- found in review: each of these once hung, crashed or misreported --------------------------------------------

def test_bad_compressed_bodies_are_protocol_errors_and_multi_member_gzip_is_whole():
    two = gzip.compress(b"hello ") + gzip.compress(b"world")
    assert Response(headers={"content-encoding": "gzip"}, reads=[two]).body == b"hello world"
    with pytest.raises(ProtocolError, match="does not decompress"):
        _ = Response(headers={"content-encoding": "gzip"}, reads=[b"not gzip at all"]).body


def test_a_cut_error_response_is_classified_by_its_status_and_a_bad_gzip_is_malformed():
    from bench.apis import APIS
    from bench.client import Target, finish, send
    from bench.records import RequestRecord

    def record():
        return RequestRecord(request_id="r", phase="p", level_index=0, prompt_index=0, warmup=False,
                             api="openai-chat", stream=True, input_len_requested=1, output_len_requested=1,
                             scheduled_ns=None, send_ns=0)
    cut_401 = [b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 100\r\n\r\n", b'{"error": "invalid api key"']
    bad_gzip = [(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                 b"Content-Length: 8\r\n\r\nnotgzip!")]

    async def one(pieces):
        async def script(reader, writer, srv):
            await srv.read_request(reader)
            await srv.send(writer, pieces)
        async with Scripted(script) as srv, Pool() as pool:
            target = Target(srv.url.rsplit("/chat/completions", 1)[0], APIS["openai-chat"], "m")
            rec = record()
            return finish(rec, await send(pool, target, b"{}", {}, rec), target.api)
    auth = run(one(cut_401))
    assert auth.error_class == errors.AUTH and auth.status == 401  # fatal: the run stops, as a 401 should
    assert run(one(bad_gzip)).error_class == errors.MALFORMED


def test_a_server_closing_each_new_connection_fails_fast_not_at_the_timeout():
    async def slam(reader, writer, srv):
        writer.transport.abort()

    async def main():
        async with Scripted(slam) as srv, Pool(timeout_s=20) as pool:
            t0 = time.perf_counter()
            resps = await asyncio.gather(*(get(srv.url, pool) for _ in range(30)))
            return resps, time.perf_counter() - t0, pool.open_connections
    resps, took, left = run(main())
    assert took < 5 and left == 0
    assert all(isinstance(r.exc, (ConnectionClosed, ConnectionResetError)) for r in resps), {type(r.exc) for r in resps}


def test_a_reset_in_a_close_delimited_body_is_not_complete():
    async def script(reader, writer, srv):
        await srv.read_request(reader)
        await srv.send(writer, [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", b'{"partial": '])
        linger_0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close sends RST, not FIN
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_0)
        writer.transport.abort()

    async def main():
        async with Scripted(script) as srv:
            return await get(srv.url)
    resp = run(main())
    assert not resp.complete and resp.exc is not None


def test_closing_the_pool_ends_requests_without_retrying_them():
    async def slow(reader, writer, srv):
        while await srv.read_request(reader) is not None:
            await srv.send(writer, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"])
            await asyncio.sleep(0.3)
            await srv.send(writer, [b"ok"])

    async def main():
        async with Scripted(slow) as srv:
            pool = Pool()
            await get(srv.url, pool)  # leaves one idle connection to reuse
            task = asyncio.create_task(get(srv.url, pool))
            await asyncio.sleep(0.1)
            await pool.close()
            resp = await task
            return resp, pool.open_connections, srv.connections
    resp, left, conns = run(main())
    assert not resp.retried and isinstance(resp.exc, ConnectionClosed) and left == 0 and conns == 1


def test_bad_lengths_and_status_codes_are_protocol_errors():
    for head in (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n",
                 "HTTP/1.1 2²2 OK\r\nContent-Length: 0\r\n\r\n".encode(),
                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n"):
        async def main(h=head):
            async with Scripted([h]) as srv:
                return await get(srv.url, timeout_s=3)
        resp = run(main())
        assert isinstance(resp.exc, ProtocolError), (head, resp.exc)
    many_1xx = b"HTTP/1.1 100 Continue\r\n\r\n" * 2000 + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def flood():
        async with Scripted([many_1xx]) as srv:
            return await get(srv.url)
    assert run(flood()).body == b"ok"


# ---- found in review, second round: heads with bare LF, compressed streams, mislabelled streams, TLS without
# close_notify ------------------------------------------------------------------------------------------------------

def chat_sse(*texts: str) -> list[bytes]:
    """An OpenAI chat stream: one event per text, then [DONE]."""
    return [b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % t.encode() for t in texts] + [b"data: [DONE]\n\n"]


def finished(pieces: list[bytes], pause_s: float = 0.01, tls: tuple | None = None):
    """The record a streaming chat request gets from a loopback server that writes ``pieces`` (then closes, or with
    ``tls=(server_ctx, client_ctx, end)``: serves TLS and ends with ``end(writer)``), through ``client.send`` and
    ``client.finish`` as a run does."""
    from bench.apis import APIS
    from bench.client import Target, finish, send
    from bench.records import RequestRecord

    async def handle(reader, writer):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)  # the b"{}" body
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause_s)
        if tls:
            await tls[2](writer)
        else:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls[0] if tls else None)
        port = server.sockets[0].getsockname()[1]
        try:
            async with Pool(timeout_s=3, ssl_context=tls[1] if tls else None) as pool:
                scheme, host = ("https", "localhost") if tls else ("http", "127.0.0.1")
                target = Target(f"{scheme}://{host}:{port}/v1", APIS["openai-chat"], "m")
                rec = RequestRecord(request_id="r", phase="p", level_index=0, prompt_index=0, warmup=False,
                                    api="openai-chat", stream=True, input_len_requested=1, output_len_requested=1,
                                    scheduled_ns=None, send_ns=time.perf_counter_ns())
                return finish(rec, await send(pool, target, b"{}", {}, rec), target.api)
        finally:
            server.close()
    return run(main())


def test_response_heads_whose_lines_end_in_a_bare_lf_are_read():
    cases = {  # wire pieces -> the body the client must read
        "LF only": ([b"HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 2\n\nok"], b"ok"),
        "CRLF lines, LF empty line": ([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok"], b"ok"),
        "LF lines, CRLF empty line": ([b"HTTP/1.1 200 OK\nContent-Length: 2\n\r\nok"], b"ok"),
        # the head ends at its first empty line, not at a CRLF CRLF in the body after it
        "LF head, CRLF CRLF in the body": ([b"HTTP/1.1 200 OK\nContent-Length: 6\n\nab\r\n\r\n"], b"ab\r\n\r\n"),
        "split at the empty line": ([b"HTTP/1.1 200 OK\nContent-Length: 2\n", b"\n", b"ok"], b"ok"),
        "LF 100 Continue first": ([b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok"], b"ok"),
        "LF head, chunked body": ([b"HTTP/1.1 200 OK\nContent-Type: text/event-stream\nTransfer-Encoding: chunked\n\n",
                                   chunked(SSE)], b"".join(SSE)),
    }
    for name, (pieces, body) in cases.items():
        async def main(p=pieces):
            async with Scripted(p) as srv:
                return await get(srv.url, timeout_s=3)
        resp = run(main())
        assert resp.exc is None and resp.status == 200 and resp.complete, (name, resp.exc)
        assert resp.body == body and resp.reason == "OK", name
        assert "\r" not in "".join(resp.headers.values()) + resp.reason, name


def _compressed_pieces(events: list[bytes], encoding: str) -> list[bytes]:
    """Each event compressed and flushed on its own (Z_SYNC_FLUSH, as a streaming server's encoder must), the
    stream's end with the last: one piece per event."""
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "raw deflate": -zlib.MAX_WBITS}[encoding]
    enc = zlib.compressobj(wbits=wbits)
    pieces = [enc.compress(e) + enc.flush(zlib.Z_SYNC_FLUSH) for e in events]
    pieces[-1] += enc.flush()
    return pieces


def test_decoded_reads_undo_the_encoding_read_by_read_wherever_the_reads_split():
    data = b"".join(b'data: {"n": %d}\n\n' % i for i in range(200))
    streams = {"gzip": gzip.compress(data), "x-gzip": gzip.compress(data[:900]) + b"\0\0" + gzip.compress(data[900:]),
               "deflate": zlib.compress(data), "raw deflate": zlib.compress(data)[2:-4]}
    for name, packed in streams.items():
        for size in (1, 2, 3, 7, 100, len(packed)):
            reads = [packed[i:i + size] for i in range(0, len(packed), size)]
            resp = Response(headers={"content-encoding": name.split()[-1]}, reads=reads,
                            reads_ns=list(range(len(reads))), complete=True)
            ns, pieces, problem = resp.decoded_reads()
            assert problem is None and b"".join(pieces) == data == resp.body, (name, size, problem)
            # a decoded piece keeps the stamp of the read that produced it; reads producing nothing are left out
            assert len(ns) == len(pieces) and ns == sorted(set(ns)) and all(pieces)
    plain = Response(reads=[b"a", b"b"], reads_ns=[1, 2])
    assert plain.decoded_reads() == ([1, 2], [b"a", b"b"], None)
    assert "not supported" in Response(headers={"content-encoding": "br"}, reads=[b"x"], reads_ns=[1]).decoded_reads()[2]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw deflate"])
def test_a_compressed_stream_is_decoded_read_by_read_and_keeps_each_reads_time(encoding):
    events = chat_sse("a", "b", "c", "d")
    label = encoding.split()[-1].encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: %b\r\n" \
           b"Transfer-Encoding: chunked\r\n\r\n" % label
    pieces = [head] + [b"%x\r\n%b\r\n" % (len(p), p) for p in _compressed_pieces(events, encoding)] + [b"0\r\n\r\n"]
    rec = finished(pieces, pause_s=0.03)
    assert rec.error_class is None, rec.error
    assert rec.event_kinds == "aaaa-" and rec.stream_complete
    # the server wrote one event per 30 ms: each decoded event carries the time its compressed read arrived, not
    # the response's end (4 gaps of ~30 ms between the 5 events)
    gaps_ms = [(b - a) / 1e6 for a, b in zip(rec.event_offsets_ns, rec.event_offsets_ns[1:])]
    assert min(gaps_ms) > 10 and 100 < sum(gaps_ms) < 250, gaps_ms


def test_a_bad_compressed_stream_is_malformed_and_keeps_the_events_before_it():
    good = _compressed_pieces(chat_sse("a", "b"), "gzip")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n\r\n"
    rec = finished([head, good[0], b"\xff" * 40])  # close-delimited; then bytes no deflate stream holds
    assert rec.error_class == errors.MALFORMED and "does not decompress" in rec.error
    assert rec.event_kinds == "a"
    # a gzip stream that the body ends in the middle of: malformed too, not a crash
    cut = gzip.compress(b"".join(chat_sse("a", "b")))[:-6]
    rec = finished([b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(cut) + cut])
    assert rec.error_class == errors.MALFORMED and "ended before" in rec.error and rec.event_kinds == "aa-"


@pytest.mark.parametrize("content_type", [b"text/plain; charset=utf-8", b"application/octet-stream",
                                          b"application/x-ndjson", None])
def test_a_2xx_stream_that_begins_as_sse_is_read_as_sse_whatever_its_content_type(content_type):
    label = b"Content-Type: %b\r\n" % content_type if content_type else b""
    body = b": keep-alive\n\n" + b"".join(chat_sse("x", "y"))
    rec = finished([b"HTTP/1.1 200 OK\r\n%bContent-Length: %d\r\n\r\n" % (label, len(body)) + body])
    assert rec.error_class is None, rec.error
    assert rec.stream and rec.event_kinds == "aa-" and rec.output_tokens_client == 2


def test_a_streaming_request_answered_with_json_or_with_neither_is_read_as_before():
    # a server that ignored "stream": true: its one JSON document is a non-streaming answer, not an error
    doc = (b'{"id": "c1", "choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}],'
           b' "usage": {"prompt_tokens": 3, "completion_tokens": 1}}')
    rec = finished([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(doc)
                    + doc])
    assert rec.error_class is None and rec.stream is False and rec.output_tokens == 1 and rec.event_kinds == "a"
    # neither SSE nor JSON, and not labelled SSE: malformed
    rec = finished([b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"])
    assert rec.error_class == errors.MALFORMED and "not JSON" in rec.error


def _tls_contexts():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def _close_notify_then_close(writer):
    writer.close()  # asyncio's TLS transport sends close_notify before its FIN
    await asyncio.sleep(0.05)


async def _bare_tcp_close(writer):
    writer.get_extra_info("socket").shutdown(socket.SHUT_WR)  # a FIN with no close_notify before it
    await asyncio.sleep(0.2)
    writer.transport.abort()


def test_a_tls_close_delimited_body_ended_without_close_notify_is_cut():
    server_ctx, client_ctx = _tls_contexts()
    doc = b'{"choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}]}'
    head_json = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"  # no length: the body ends with TLS

    async def raw(end):
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head_json + doc)
            await writer.drain()
            await asyncio.sleep(0.05)
            await end(writer)
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        try:
            return await get(f"https://localhost:{server.sockets[0].getsockname()[1]}/v1/x", ssl_context=client_ctx,
                             timeout_s=3)
        finally:
            server.close()
    clean = run(raw(_close_notify_then_close))
    assert clean.exc is None and clean.complete and clean.body == doc
    bare = run(raw(_bare_tcp_close))
    assert isinstance(bare.exc, NoCloseNotify) and not bare.complete and b"".join(bare.reads) == doc
    assert errors.classify_exception(bare.exc) == errors.CONNECTION_RESET

    # through the client: a JSON body so ended counts as cut, as a reset one does
    rec = finished([head_json, doc], tls=(server_ctx, client_ctx, _bare_tcp_close))
    assert rec.error_class == errors.STREAM_CUT and "close_notify" in rec.error
    assert finished([head_json, doc], tls=(server_ctx, client_ctx, _close_notify_then_close)).error_class is None
    # an SSE stream whose end marker arrived shows by itself that nothing was cut (RFC 9112 §9.8); one without it
    # is cut either way
    head_sse = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    whole = finished([head_sse, *chat_sse("a", "b")], tls=(server_ctx, client_ctx, _bare_tcp_close))
    assert whole.error_class is None and whole.event_kinds == "aa-"
    cut = finished([head_sse, *chat_sse("a", "b")[:-1]], tls=(server_ctx, client_ctx, _bare_tcp_close))
    assert cut.error_class == errors.STREAM_CUT and cut.event_kinds == "aa"
