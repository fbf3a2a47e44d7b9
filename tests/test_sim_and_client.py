"""The client against a real simulated endpoint on loopback: every API, streaming and not, ground truth, faults."""
from __future__ import annotations

import asyncio
import socket

import pytest
from conftest import run

from bench import errors
from bench.apis import APIS, PromptSpec
from bench.client import Target, send_and_finish
from bench.http1 import Pool
from bench.metrics import derive
from bench.records import RequestRecord
from bench.sim import FaultRule


def prompt(words: int = 20, out: int | None = 12) -> PromptSpec:
    return PromptSpec(index=0, text=" ".join(["word"] * words), messages=None, input_len=words, output_len=out)


def new_record(rid: str = "t-1", api: str = "openai-chat", stream: bool = True) -> RequestRecord:
    return RequestRecord(request_id=rid, phase="test", level_index=0, prompt_index=0, warmup=False, api=api,
                         stream=stream, input_len_requested=20, output_len_requested=12, scheduled_ns=None, send_ns=0)


async def one(url: str, api: str = "openai-chat", *, stream: bool = True, p: PromptSpec | None = None,
              extra_body: dict | None = None, api_key: str | None = None, model: str = "gpucap-sim",
              continuous_usage: bool = False, timeout_s: float = 30, rid: str = "t-1") -> RequestRecord:
    target = Target(url, APIS[api], model, stream=stream, api_key=api_key, extra_body=extra_body or {},
                    continuous_usage=continuous_usage)
    headers = target.headers()
    headers["X-Request-Id"] = rid
    async with Pool(timeout_s=timeout_s) as pool:
        return await send_and_finish(pool, target, target.body_bytes(p or prompt()), headers,
                                     new_record(rid, api, stream))


@pytest.mark.parametrize("api", ["openai-chat", "openai-completions", "anthropic-messages"])
@pytest.mark.parametrize("stream", [True, False])
def test_every_api_streaming_and_not_counts_tokens_from_usage(make_sim, api, stream):
    sim = make_sim(ttft_ms=30, itl_ms=5)
    rec = run(one(sim.url, api, stream=stream, p=prompt(words=20, out=12)))
    m = derive(rec)
    assert rec.error_class is None, rec.error
    assert rec.output_tokens == 12  # the server's usage, not the requested length re-reported
    assert m.tokens_estimated is False
    # chat: 20 words + 4 per message + 3 = 27 prompt tokens in the simulator's count; completions: 20 words
    assert rec.prompt_tokens == (20 if api == "openai-completions" else 27)
    if stream:
        assert rec.event_kinds.count("a") == 12
        assert m.ttft_ms is not None and m.ttft_ms >= 30
        # 11 gaps of ~5 ms after the first token
        assert len(m.itl_ms) == 11
        assert 4.0 < sum(m.itl_ms) / 11 < 12.0
        assert m.tpot_ms == pytest.approx((m.e2e_ms - m.ttft_ms) / 11)
    else:
        assert m.ttft_ms is None and m.itl_ms == ()
        # 30 ms to the first token and 11 x 5 ms after it: the whole body comes after ~85 ms (timers tick in ms)
        assert m.e2e_ms >= 83


def test_client_times_match_the_simulators_true_emission_times(make_sim):
    sim = make_sim(ttft_ms=40, itl_ms=8)
    rec = run(one(sim.url, p=prompt(out=20), rid="truth-1"))
    truth = sim.server.truth.records["truth-1"]
    text = [i for i, k in enumerate(rec.event_kinds) if k in "ar"]
    assert len(text) == len(truth.emit_ns) == 20
    for idx, emit in zip(text, truth.emit_ns):
        arrival = rec.send_ns + rec.event_offsets_ns[idx]
        assert arrival >= emit  # nothing arrives before it was sent
        assert arrival - emit < 50_000_000  # and on loopback, well within 50 ms
    m = derive(rec)
    true_ttft_ms = (truth.emit_ns[0] - truth.arrival_ns) / 1e6
    assert true_ttft_ms >= 39.5  # 40 ms configured; events due within 0.1 ms go out together
    assert abs(m.ttft_ms - true_ttft_ms) < 20


def test_multi_token_chunks_give_k_equal_gaps_with_continuous_usage(make_sim):
    sim = make_sim(ttft_ms=10, itl_ms=4, tokens_per_chunk=3)
    rec = run(one(sim.url, p=prompt(out=12), continuous_usage=True))
    m = derive(rec)
    assert rec.event_kinds.count("a") == 4  # 12 tokens in chunks of 3
    assert [rec.event_tokens[i] for i, k in enumerate(rec.event_kinds) if k == "a"] == [3, 3, 3, 3]
    assert m.itl_estimated is False
    # chunks 2..4 carry 3 tokens each: 9 gaps, in 3 runs of 3 equal values
    assert len(m.itl_ms) == 9
    for run_start in (0, 3, 6):
        assert m.itl_ms[run_start] == m.itl_ms[run_start + 1] == m.itl_ms[run_start + 2]
    assert sum(m.itl_ms) == pytest.approx(m.e2e_ms - m.ttft_ms, abs=1e-9)


def test_multi_token_chunks_without_per_chunk_usage_are_spread_and_flagged(make_sim):
    sim = make_sim(ttft_ms=10, itl_ms=4, tokens_per_chunk=3)
    rec = run(one(sim.url, p=prompt(out=12), continuous_usage=False))
    m = derive(rec)
    assert rec.event_tokens is None
    assert rec.output_tokens == 12
    assert m.itl_estimated is True
    assert len(m.itl_ms) == 11  # N - 1 gaps when the first chunk counts as one token
    assert m.tpot_ms == pytest.approx((m.e2e_ms - m.ttft_ms) / 11)


@pytest.mark.parametrize("style", ["field", "tags"])
def test_reasoning_phase_gives_time_to_first_answer_token(make_sim, style):
    sim = make_sim(ttft_ms=20, itl_ms=5, reasoning_tokens=6, reasoning_style=style)
    rec = run(one(sim.url, p=prompt(out=16)))
    m = derive(rec)
    assert rec.event_kinds.count("r") == 6
    assert rec.event_kinds.count("a") == 10
    # six reasoning tokens come first: the first answer token is at least 6 x 5 ms after the first token
    assert m.ttfat_ms - m.ttft_ms >= 6 * 5 * 0.9


def test_anthropic_thinking_blocks(make_sim):
    sim = make_sim(ttft_ms=10, itl_ms=3, reasoning_tokens=4)
    rec = run(one(sim.url, "anthropic-messages", p=prompt(out=10)))
    assert rec.error_class is None, rec.error
    assert rec.event_kinds.count("r") == 4 and rec.event_kinds.count("a") == 6
    assert rec.output_tokens == 10
    assert rec.finish_reason == "max_tokens"
    # message_start and ping arrive before any text: TTFT must not count them
    assert rec.event_kinds.index("r") > 0


def test_natural_stop_reports_what_was_generated_not_what_was_asked(make_sim):
    sim = make_sim(ttft_ms=5, itl_ms=1, natural_len=7)
    rec = run(one(sim.url, p=prompt(out=50)))
    assert rec.output_tokens == 7  # asked for 50, got 7: the summary must say 7
    assert rec.finish_reason == "stop"
    rec2 = run(one(sim.url, p=prompt(out=50), extra_body={"ignore_eos": True}))
    assert rec2.output_tokens == 50 and rec2.finish_reason == "length"


def test_batch_limit_makes_later_requests_wait(make_sim):
    sim = make_sim(ttft_ms=20, itl_ms=10, max_batch=2)

    async def four():
        return await asyncio.gather(*(one(sim.url, p=prompt(out=10), rid=f"b-{i}") for i in range(4)))

    ttfts = sorted(derive(r).ttft_ms for r in run(four()))
    # two are served at once (~20 ms); the other two wait for a slot (~20 + 9 x 10 = 110 ms) first
    assert ttfts[1] < 80
    assert ttfts[2] > 100


# ---- failures: each class from a real server -------------------------------------------------------------

@pytest.mark.parametrize("status, expected", [
    (401, errors.AUTH), (403, errors.AUTH), (402, errors.BALANCE), (429, errors.RATE_LIMITED),
    (503, errors.UNKNOWN_MODEL),  # the simulator words a 503 like providers that say "price of the model is not set"
    (500, errors.SERVER_ERROR), (418, errors.CLIENT_ERROR),
])
def test_status_faults_are_classified(make_sim, status, expected):
    sim = make_sim(faults=(FaultRule("status", status=status, retry_after_s=7),))
    rec = run(one(sim.url))
    assert rec.status == status
    assert rec.error_class == expected
    assert f"HTTP {status}" in rec.error
    if status == 429:
        assert rec.retry_after_s == 7.0
    m = derive(rec)
    assert m.ttft_ms is None and m.e2e_ms is None  # failures stay out of latency statistics


def test_unknown_model_from_a_real_404(make_sim):
    sim = make_sim()
    rec = run(one(sim.url, model="no-such-model"))
    assert rec.status == 404 and rec.error_class == errors.UNKNOWN_MODEL


def test_missing_and_wrong_api_key(make_sim):
    sim = make_sim(api_key="sk-right")
    missing = run(one(sim.url))
    assert missing.error_class == errors.AUTH and "Authorization header missing" in missing.error
    wrong = run(one(sim.url, api_key="sk-wrong"))
    assert wrong.error_class == errors.AUTH
    right = run(one(sim.url, api_key="sk-right"))
    assert right.error_class is None
    anthropic = run(one(sim.url, "anthropic-messages", api_key="sk-right"))  # sent as x-api-key
    assert anthropic.error_class is None


@pytest.mark.parametrize("kind, expected", [
    ("cut", errors.STREAM_CUT), ("malformed", errors.MALFORMED), ("stream_error", errors.STREAM_ERROR),
])
def test_stream_faults_keep_the_tokens_that_arrived(make_sim, kind, expected):
    sim = make_sim(ttft_ms=5, itl_ms=2, faults=(FaultRule(kind, after_tokens=4),))
    rec = run(one(sim.url, p=prompt(out=20)))
    assert rec.error_class == expected, rec.error
    assert rec.event_kinds.count("a") == 4  # what arrived before the fault is kept in the record


def test_timeout(make_sim):
    sim = make_sim(faults=(FaultRule("hang"),))
    rec = run(one(sim.url, timeout_s=0.5))
    assert rec.error_class == errors.TIMEOUT


def test_connection_refused():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    rec = run(one(f"http://127.0.0.1:{port}/v1"))
    assert rec.error_class == errors.CONNECTION_REFUSED


def test_connection_reset_before_any_response():
    async def main():
        async def handle(reader, writer):
            await reader.read(100)
            writer.transport.abort()  # RST, no response at all

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await one(f"http://127.0.0.1:{port}/v1")

    rec = run(main())
    assert rec.error_class == errors.CONNECTION_RESET


def test_stream_cut_without_done_marker_from_a_hand_written_server():
    """A server that ends the HTTP response cleanly but never sends [DONE]: the stream is incomplete."""
    async def main():
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            body = (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
                    b'data: {"choices":[{"delta":{"content":" there"}}]}\n\n')
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await one(f"http://127.0.0.1:{port}/v1")

    rec = run(main())
    assert rec.error_class == errors.STREAM_CUT
    assert rec.event_kinds == "aa"
    assert rec.output_tokens is None and rec.output_tokens_client == 2
