"""The simulator's fast path (bench/sim/fastpath.py), byte by byte over raw loopback sockets.

Each test runs a SimServer on the test's own event loop. What the fast path sends is compared with what the
aiohttp path sends for the same request (a second server with the fast path switched off), so the expected bytes
come from the path the fast one replaces, not from this file.
"""
from __future__ import annotations

import asyncio
import re
import time
from contextlib import asynccontextmanager

import orjson
import pytest

from bench.sim import FaultRule, SimConfig, SimServer
from bench.sim.fastpath import FastConnection
from conftest import run

CHAT = "/v1/chat/completions"


@pytest.fixture
def fast_starts(monkeypatch):
    """What FastConnection._start answered, request by request (True: served on the fast path)."""
    seen: list[bool] = []
    original = FastConnection._start

    def spy(self, head, body):
        took = original(self, head, body)
        seen.append(took)
        return took

    monkeypatch.setattr(FastConnection, "_start", spy)
    return seen


class AiohttpOnly(SimServer):
    """The simulator with its fast path off: every request through aiohttp, the reference for the bytes."""

    fast_path_ok = False


@asynccontextmanager
async def serving(fast: bool = True, **fields):
    server = (SimServer if fast else AiohttpOnly)(SimConfig(keep_truth=True, **{"ttft_ms": 5, "itl_ms": 1, **fields}))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def request(path: str = CHAT, body: dict | None = None, *, method: str = "POST", rid: str | None = None,
            headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if rid:
        lines.append(f"X-Request-Id: {rid}")
    payload = b""
    if body is not None:
        payload = orjson.dumps(body)
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def chat(max_tokens: int = 4, stream: bool = True, model: str = "gpucap-sim", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "say something short"}],
            "max_tokens": max_tokens, "stream": stream, **extra}


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, headers (lower-case names), body; a chunked body is decoded strictly (each
    size line, each chunk's CRLF, the zero chunk and its blank line)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")[:-2]
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
            assert re.fullmatch(rb"[0-9a-f]+\r\n", size_line), size_line
            size = int(size_line, 16)
            data = await reader.readexactly(size + 2)
            assert data[-2:] == b"\r\n", data[-10:]
            if size == 0:
                return status, headers, body
            body += data[:-2]
    return status, headers, await reader.readexactly(int(headers["content-length"]))


async def exchange(port: int, *requests: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Send each request on one keep-alive connection, reading each response before the next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        out = []
        for req in requests:
            writer.write(req)
            out.append(await read_response(reader))
        return out
    finally:
        writer.close()


def sse_data(body: bytes) -> list[bytes]:
    """The data of each SSE event, with the second-resolution ``created`` stamp blanked out."""
    assert body.endswith(b"\n\n")
    events = body[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") for e in events), events
    return [re.sub(rb'"created":\d+', b'"created":0', e[len(b"data: "):]) for e in events]


def comparable(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "date"}


async def wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# ---- the hot case ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [CHAT, "/v1/completions"])
def test_streaming_request_is_served_on_the_fast_path_with_the_aiohttp_paths_bytes(fast_starts, path):
    body = chat(max_tokens=5, stream_options={"include_usage": True, "continuous_usage_stats": True})
    if path != CHAT:
        body = {"model": "gpucap-sim", "prompt": "one two three", "max_tokens": 5, "stream": True,
                "stream_options": {"include_usage": True}}

    async def main():
        async with serving() as fast, serving(fast=False) as slow:
            [(status, headers, data)] = await exchange(fast.port, request(path, body, rid="fp-1"))
            [(ref_status, ref_headers, ref_data)] = await exchange(slow.port, request(path, body, rid="fp-1"))
            return (status, headers, data, fast.truth.records["fp-1"], fast.generation_tokens_total,
                    ref_status, ref_headers, ref_data, slow.truth.records["fp-1"])

    status, headers, data, truth, gen_total, ref_status, ref_headers, ref_data, ref_truth = run(main())
    assert fast_starts == [True]  # the reference server never offered it to the fast path
    assert status == ref_status == 200
    assert comparable(headers) == comparable(ref_headers)
    assert headers["content-type"] == "text/event-stream" and headers["transfer-encoding"] == "chunked"
    events = sse_data(data)
    assert events == sse_data(ref_data)
    assert events[-1] == b"[DONE]"
    assert orjson.loads(events[-2])["usage"]["completion_tokens"] == 5
    # the same truth bookkeeping as the aiohttp path
    assert (truth.output_tokens, truth.tokens, truth.prompt_tokens, truth.model) == \
        (ref_truth.output_tokens, ref_truth.tokens, ref_truth.prompt_tokens, ref_truth.model)
    assert len(truth.emit_ns) == 5 and gen_total == 5
    assert truth.arrival_ns <= truth.admitted_ns < truth.emit_ns[0]


def test_anthropic_messages_stream_on_the_fast_path_with_the_aiohttp_paths_bytes(fast_starts):
    body = {"model": "gpucap-sim", "max_tokens": 4, "stream": True,
            "messages": [{"role": "user", "content": "say something short"}]}
    headers = ("anthropic-version: 2023-06-01", "x-api-key: k")

    async def main():
        async with serving(api_key="k") as fast, serving(fast=False, api_key="k") as slow:
            [got] = await exchange(fast.port, request("/v1/messages", body, rid="m-1", headers=headers))
            [ref] = await exchange(slow.port, request("/v1/messages", body, rid="m-1", headers=headers))
            [denied] = await exchange(fast.port, request("/v1/messages", body, rid="m-2",
                                                         headers=("x-api-key: wrong",)))
            return got, ref, denied, fast.truth.records["m-1"]

    (status, hdrs, data), (ref_status, ref_hdrs, ref_data), denied, truth = run(main())
    assert fast_starts == [True, False]  # the wrong key went to aiohttp, which words the 401
    assert status == ref_status == 200 and comparable(hdrs) == comparable(ref_hdrs)
    assert data == ref_data  # event: lines, message_start ... message_stop, byte for byte
    assert b"event: message_start" in data and b"event: message_stop" in data
    assert truth.output_tokens == 4 and len(truth.emit_ns) == 4
    assert denied[0] == 401


def test_keep_alive_connection_serves_requests_in_a_row_and_pipelined(fast_starts):
    async def main():
        async with serving() as server:
            in_a_row = await exchange(server.port, request(body=chat(3), rid="a"), request(body=chat(2), rid="b"))
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request(body=chat(2), rid="c") + request(body=chat(4), rid="d"))  # one write, two requests
            pipelined = [await read_response(reader), await read_response(reader)]
            writer.close()
            await wait_for(lambda: server.running == 0)
            return in_a_row + pipelined, server.truth.records, server.requests_total

    responses, truth, total = run(main())
    assert fast_starts == [True, True, True, True]
    counts = [sum(b'"content"' in e for e in sse_data(body)) - 1 for _, _, body in responses]  # minus the role
    assert counts == [3, 2, 2, 4]
    assert [truth[r].output_tokens for r in "abcd"] == [3, 2, 2, 4]
    assert total == 4


def test_request_split_across_writes_is_served_from_its_first_bytes(fast_starts):
    req = request(body=chat(3), rid="split")
    head_end = req.index(b"\r\n\r\n") + 4
    middle = head_end + (len(req) - head_end) // 2

    async def main():
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(req[:head_end])
            await asyncio.sleep(0.02)
            before_body = time.perf_counter_ns()
            writer.write(req[head_end:middle])
            await asyncio.sleep(0.02)
            writer.write(req[middle:])
            response = await read_response(reader)
            writer.close()
            return response, server.truth.records["split"], before_body

    (status, _, body), truth, before_body = run(main())
    assert fast_starts == [True]
    assert status == 200 and sse_data(body)[-1] == b"[DONE]"
    assert truth.output_tokens == 3
    assert truth.arrival_ns < before_body  # the arrival is that of the head, not of the body's last piece


def test_other_requests_on_a_fast_connection_go_to_aiohttp_for_good(fast_starts):
    async def main():
        async with serving() as server:
            responses = await exchange(server.port, request(body=chat(2)), request(body=chat(3, stream=False)),
                                       request("/v1/models", method="GET"), request(body=chat(2)))
            return responses, server.truth.records

    responses, truth = run(main())
    # the stream; then the whole-body request, which the fast path declines and hands over with the connection;
    # the models list and the last stream never reach the fast path again
    assert fast_starts == [True, False]
    (s1, _, _), (s2, h2, whole), (s3, _, models), (s4, _, last) = responses
    assert (s1, s2, s3, s4) == (200, 200, 200, 200)
    assert h2["content-type"].startswith("application/json")
    assert orjson.loads(whole)["usage"]["completion_tokens"] == 3
    assert [m["id"] for m in orjson.loads(models)["data"]] == ["gpucap-sim"]
    assert sse_data(last)[-1] == b"[DONE]"
    assert len(truth) == 3


@pytest.mark.parametrize("bad", [{"model": "no-such-model"}, {"max_tokens": 0}, {"max_tokens": 40000}])
def test_invalid_requests_get_the_aiohttp_paths_error(fast_starts, bad):
    body = {**chat(), **bad}

    async def main():
        async with serving() as fast, serving(fast=False) as slow:
            fast_answer = (await exchange(fast.port, request(body=body)))[0]
            return fast_answer, (await exchange(slow.port, request(body=body)))[0]

    (status, headers, data), (ref_status, ref_headers, ref_data) = run(main())
    assert fast_starts == [False]
    assert status == ref_status and status in (400, 404)
    assert comparable(headers) == comparable(ref_headers)
    assert data == ref_data and orjson.loads(data)["error"]["code"] == status


def test_api_key_checked_as_aiohttp_checks_it(fast_starts):
    async def main():
        async with serving(api_key="sk-right") as server:
            return await exchange(server.port, request(body=chat(2), headers=("Authorization: Bearer sk-right",)),
                                  request(body=chat(2), headers=("Authorization: Bearer sk-wrong",)))

    (ok, _, _), (denied, _, body) = run(main())
    assert fast_starts == [True, False]
    assert (ok, denied) == (200, 401)
    assert orjson.loads(body)["error"]["message"] == "Invalid API key"


def test_configured_faults_keep_every_request_on_aiohttp(fast_starts):
    async def main():
        async with serving(faults=(FaultRule("status", status=429),)) as server:
            return await exchange(server.port, request(body=chat(2)))

    [(status, _, _)] = run(main())
    assert status == 429
    assert fast_starts == []


# ---- the end of a connection ----------------------------------------------------------------------------

def test_client_gone_mid_stream_leaves_nothing_running_and_truth_says_disconnected(fast_starts):
    async def main():
        async with serving(ttft_ms=5, itl_ms=5) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request(body=chat(200), rid="gone"))
            await reader.readuntil(b"\r\n\r\n")
            await reader.readuntil(b'"content":" the"')  # the first token arrived
            assert server.running == 1
            writer.transport.abort()
            await wait_for(lambda: server.running == 0, 2.0)
            return server.truth.records["gone"], server.generation_tokens_total

    truth, generated = run(main())
    assert fast_starts == [True]
    assert 1 <= truth.output_tokens < 200
    assert truth.output_tokens == sum(truth.tokens) == len(truth.emit_ns) == generated


def test_connection_close_is_honoured_after_the_stream(fast_starts):
    async def main():
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request(body=chat(3), headers=("Connection: close",)))
            response = await read_response(reader)
            rest = await asyncio.wait_for(reader.read(), 5)  # EOF: the server closed the connection
            writer.close()
            return response, rest

    (status, headers, body), rest = run(main())
    assert fast_starts == [True]
    assert status == 200 and headers["connection"] == "close"
    assert sse_data(body)[-1] == b"[DONE]"
    assert rest == b""


def test_stop_with_fast_streams_in_flight_ends_them(fast_starts):
    async def main():
        server = SimServer(SimConfig(keep_truth=True, ttft_ms=5, itl_ms=20))
        await server.start()
        conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        for i, (reader, writer) in enumerate(conns):
            writer.write(request(body=chat(500), rid=f"s-{i}"))
        for reader, _ in conns:
            await reader.readuntil(b'"content":" the"')
        t0 = time.monotonic()
        await asyncio.wait_for(server.stop(), 5)
        stop_s = time.monotonic() - t0
        ends = [await asyncio.wait_for(reader.read(), 5) for reader, _ in conns]
        for _, writer in conns:
            writer.close()
        return server, stop_s, ends

    server, stop_s, ends = run(main())
    assert fast_starts == [True, True, True]
    assert stop_s < 2.0
    assert server.running == 0
    assert [server.truth.records[f"s-{i}"].output_tokens < 500 for i in range(3)] == [True] * 3
    assert not any(end.endswith(b"0\r\n\r\n") for end in ends)  # cut, not ended as if complete
