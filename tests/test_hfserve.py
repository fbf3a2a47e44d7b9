"""bench.hfserve, the OpenAI-compatible server around transformers generation, on the CPU.

The pure parts run everywhere: request validation, the SSE bytes read back by bench's own parser, the incremental
detokenizer (with a fake tokenizer), and the one sentence ``python -m bench.hfserve`` says without torch.

The server itself needs torch and transformers. Its tests run the server with this python when it has them, or with
the python named by ``GPUCAP_TORCH_PYTHON`` or ``GPUCAP_VLLM_PYTHON`` (scripts/test_vllm.sh sets the latter to the
vLLM venv, which has the CPU torch), and skip, saying so, otherwise. They build the tiny random-weight Qwen2
(tests/integration/build_tiny_model.py, ~3 M parameters), then:
- launch ``python -m bench.hfserve --device cpu`` through ``bench run --launch`` at concurrency 1 and 4 with
  ``--ignore-eos --output-len 16``, chat and completions, streaming and not: every request's usage is 16, every
  streamed token has its own chunk, and no process is left behind;
- greedy generation of a prompt is the same alone and in a batch that others join and leave mid-decode (the
  left-padded, continuously batched cache changes nothing), and 10 concurrent streams all finish;
- a random-weight model from a config.json with a tokenizer trained on the spot serves; errors are OpenAI-style.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest

from bench.apis.openai import parse_stream
from bench.hfserve.detok import IncrementalText
from bench.hfserve.protocol import CHAT, COMPLETIONS, DONE, Chunks, RequestError, parse_request, sampling_params
from bench.launch import LaunchedServer
from bench.records import read_records
from bench.sse import split_events
from conftest import free_port, kill_leftovers, processes_running

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_LEN = 16
REQUESTS_PER_LEVEL = 8
HAS_TORCH_HERE = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "tokenizers"))


def _torch_python() -> str | None:
    """A python that can run the server: this one, or one named by the environment that imports what it needs."""
    if HAS_TORCH_HERE:
        return sys.executable
    for var in ("GPUCAP_TORCH_PYTHON", "GPUCAP_VLLM_PYTHON"):
        py = os.environ.get(var)
        if py and Path(py).is_file():
            ok = subprocess.run([py, "-c", "import torch, transformers, tokenizers, aiohttp"], capture_output=True,
                                cwd=ROOT, timeout=120).returncode == 0
            if ok:
                return py
    return None


TORCH_PYTHON = _torch_python()
needs_torch = pytest.mark.skipif(
    TORCH_PYTHON is None, reason="hfserve server tests need torch and transformers: this python has neither, and "
    "neither GPUCAP_TORCH_PYTHON nor GPUCAP_VLLM_PYTHON names a python that has them (scripts/test_vllm.sh runs "
    "them with the vLLM venv's CPU torch)")


# ---- the wire format, without torch ---------------------------------------------------------------------------------

def test_parse_request_reads_what_bench_and_vllm_clients_send():
    parts = [{"type": "text", "text": "hi"}]
    req = parse_request(CHAT, {"model": "m", "messages": [{"role": "user", "content": parts}], "max_tokens": 16,
                               "stream": True, "ignore_eos": True, "min_tokens": 4,
                               "stream_options": {"include_usage": True, "continuous_usage_stats": True}}, "m")
    assert req.messages == [{"role": "user", "content": "hi"}]
    assert (req.max_tokens, req.min_tokens, req.ignore_eos) == (16, 4, True)
    assert req.stream and req.include_usage and req.continuous_usage
    assert req.temperature == 1.0 and req.top_p == 1.0  # OpenAI's defaults
    req = parse_request(COMPLETIONS, {"prompt": ["once upon"], "max_tokens": 3}, "m")  # model omitted: the served one
    assert req.prompt == "once upon" and not req.stream and not req.include_usage
    assert parse_request(COMPLETIONS, {"prompt": [1, 2, 3]}, "m").prompt == [1, 2, 3]
    assert parse_request(CHAT, {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5},
                         "m").max_tokens == 5


@pytest.mark.parametrize("api, body, status, words", [
    (CHAT, {"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
    (CHAT, {"messages": []}, 400, "messages"),
    (COMPLETIONS, {"prompt": 7}, 400, "prompt"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    (COMPLETIONS, {"prompt": "x", "n": 2}, 400, "n=1"),
    (COMPLETIONS, {"prompt": "x", "top_p": 0}, 400, "top_p"),
    (COMPLETIONS, {"prompt": "x", "stream": "yes"}, 400, "stream"),
    (COMPLETIONS, [1, 2], 400, "JSON object"),
])
def test_parse_request_refuses_with_a_reason(api, body, status, words):
    with pytest.raises(RequestError) as e:
        parse_request(api, body, "m")
    assert e.value.status == status and words in e.value.message


def test_sampling_params_fill_and_guard_the_context():
    req = parse_request(COMPLETIONS, {"prompt": "x"}, "m")
    assert sampling_params(req, prompt_tokens=90, max_model_len=100).max_tokens == 10  # 100 - 90: the rest
    req = parse_request(COMPLETIONS, {"prompt": "x", "max_tokens": 11}, "m")
    with pytest.raises(RequestError, match=r"maximum context length is 100 tokens.*101 tokens \(90 in the prompt"):
        sampling_params(req, prompt_tokens=90, max_model_len=100)
    with pytest.raises(RequestError, match="no room"):
        sampling_params(req, prompt_tokens=100, max_model_len=100)
    req = parse_request(COMPLETIONS, {"prompt": "x", "max_tokens": 3, "min_tokens": 4}, "m")
    with pytest.raises(RequestError, match="min_tokens"):
        sampling_params(req, prompt_tokens=1, max_model_len=100)


@pytest.mark.parametrize("api", [CHAT, COMPLETIONS])
def test_stream_bytes_read_back_by_bench_parser(api):
    """Three tokens, the second held back (empty text), streamed with include_usage and continuous usage."""
    chunks = Chunks(api, "id-1", "m", 0, prompt_tokens=5, continuous=True)
    body = chunks.role() + chunks.token("a", 1, None) + chunks.token("", 2, None) + chunks.token("bc", 3, "length")
    body += chunks.usage(3) + DONE
    events = split_events([1], [body])
    parsed = parse_stream(events)
    role = ["-"] if api == CHAT else []
    # role (chat), "a", held back (no text), "bc" with the finish reason, the usage-only chunk, [DONE]
    assert parsed.kinds == role + ["a", "-", "a", "-", "-"]
    assert parsed.tokens == [0] * len(role) + [1, 1, 1, 0, 0]  # cumulative usage 1, 2, 3 -> one token per chunk
    assert (parsed.prompt_tokens, parsed.output_tokens, parsed.finish_reason) == (5, 3, "length")
    assert parsed.complete and parsed.error is None and parsed.malformed is None
    first = json.loads(events.data[0])
    assert first["object"] == ("chat.completion.chunk" if api == CHAT else "text_completion")


def test_stream_without_continuous_usage_has_usage_only_at_the_end():
    chunks = Chunks(CHAT, "id-1", "m", 0, prompt_tokens=5, continuous=False)
    parsed = parse_stream(split_events([1], [chunks.role() + chunks.token("a", 1, "stop") + chunks.usage(1) + DONE]))
    assert parsed.tokens is None and parsed.output_tokens == 1 and parsed.finish_reason == "stop"


class _ByteTokenizer:
    """Token id -> bytes; id 0 is a special token (skipped)."""

    VOCAB = {0: b"", 1: b"a", 2: b"\xc3", 3: b"\xa9", 4: b" b", 5: b"\xe2\x82"}

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return b"".join(self.VOCAB[i] for i in ids).decode("utf-8", errors="replace")


def test_incremental_text_holds_back_a_split_character():
    text = IncrementalText(_ByteTokenizer())
    # "a", then "é" split over two tokens (held back, then sent whole), a special token (nothing), " b"
    assert [text.add(i) for i in (1, 2, 3, 0, 4)] == ["a", "", "é", "", " b"]
    # a sequence that ends mid-character flushes what it has: the replacement character, as decode() gives it
    assert text.add(5, last=True) == "\ufffd"


@pytest.mark.skipif(HAS_TORCH_HERE, reason="this python has torch and transformers")
def test_without_torch_one_sentence_and_exit_2():
    res = subprocess.run([sys.executable, "-m", "bench.hfserve", "--model", "x"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "needs PyTorch and transformers" in res.stderr and "gpucap[torch]" in res.stderr


# ---- the server, on the CPU -----------------------------------------------------------------------------------------





@pytest.fixture
def port():
    """A free port; at teardown, whatever still serves on it is killed (and the test has failed already)."""
    port = free_port()
    yield port
    kill_leftovers(f"--port {port}")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = Path(os.environ.get("GPUCAP_TINY_MODEL") or tmp_path_factory.mktemp("tiny-qwen2"))
    res = subprocess.run([TORCH_PYTHON, str(ROOT / "tests/integration/build_tiny_model.py"), str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def hfserve(model: Path | str, port: int, *extra: str) -> str:
    return (f"{TORCH_PYTHON} -m bench.hfserve --model {model} --device cpu --port {port} --served-model-name tiny "
            + " ".join(extra)).strip()


def bench_run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "bench", "run", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


@needs_torch
@pytest.mark.parametrize("api", ["openai-chat", "openai-completions"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_bench_run_launch_hfserve_exact_token_counts(tiny_model, port, tmp_path, api, stream):
    out = tmp_path / "run"
    res = bench_run("--launch", hfserve(tiny_model, port), "--base-url", f"http://127.0.0.1:{port}", "--api", api,
                    *([] if stream else ["--no-stream"]), "--concurrency", "1,4", "--num-requests",
                    str(REQUESTS_PER_LEVEL), "--input-len", "64", "--output-len", str(OUTPUT_LEN), "--ignore-eos",
                    "--continuous-usage", "on", "--sample-interval", "0.25", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert not processes_running(f"--port {port}"), "hfserve outlived bench run --launch"
    server = json.loads((out / "run.json").read_text())["server"]
    assert server["version"].startswith("gpucap-hfserve ") and " transformers " in server["version"]
    assert server["served_model"] == "tiny" and server["max_model_len"] == 4096
    assert not psutil.pid_exists(server["launch"]["pid"]) or \
        psutil.Process(server["launch"]["pid"]).status() == psutil.STATUS_ZOMBIE
    records = list(read_records(out / "requests.jsonl"))
    assert len(records) == 2 * REQUESTS_PER_LEVEL
    for r in records:
        assert r.status == 200 and r.error_class is None, (r.request_id, r.error)
        assert r.output_tokens == OUTPUT_LEN and r.finish_reason == "length", r.request_id  # the server's usage
        assert r.prompt_tokens is not None and r.prompt_tokens > 64  # the synthetic words take more of our tokens
        if stream:
            assert r.stream_complete
            # continuous usage: each chunk carries one more token than the last, 16 chunks with a token
            assert sum(r.event_tokens) == OUTPUT_LEN and set(r.event_tokens) <= {0, 1}, r.event_tokens
            # streamed as generated: the token chunks arrived at many different moments, not in one burst
            token_times = [t for t, n in zip(r.event_offsets_ns, r.event_tokens) if n]
            assert len(set(token_times)) >= OUTPUT_LEN // 2
    levels = json.loads((out / "summary.json").read_text())["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 4]
    for lv in levels:
        assert lv["ok"] == lv["requests"] == REQUESTS_PER_LEVEL and lv["errors"] == {}
        assert lv["telemetry"]["server_res_bytes_peak"] > 100e6  # the server (torch) was found and sampled
    log = (out / "server.log").read_text()
    assert "serving tiny" in log and "Traceback" not in log


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """One hfserve for the tests below (max batch 8), with the tiny model's architecture and tokenizer but random
    weights drawn 25 times wider than transformers' default (std 0.5): the tiny model's weights (std 0.02) give
    near-uniform attention, so greedy tokens would hardly depend on positions or on which keys a row attends to, and
    a wrong position or mask could go unseen."""
    port = free_port()
    log = tmp_path_factory.mktemp("hfserve") / "server.log"
    command = hfserve(tiny_model, port, "--max-batch 8 --random-weights --config-overrides",
                      "'{\"initializer_range\": 0.5}'")
    srv = LaunchedServer(command, f"http://127.0.0.1:{port}", log, ready_timeout_s=180)
    try:
        srv.start()
        srv.wait_ready()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        srv.stop()
        assert not processes_running(f"--port {port}"), "hfserve outlived stop()"


async def _complete(session, base: str, prompt: str, max_tokens: int, **extra) -> dict:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, **extra}
    async with session.post(f"{base}/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _stream(session, base: str, prompt: str, max_tokens: int, started: asyncio.Event | None = None) -> dict:
    """Stream a greedy chat completion; the arrival time of each token chunk, the text and the usage."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    loop = asyncio.get_running_loop()
    times, text, usage = [], "", None
    async with session.post(f"{base}/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
            if "content" in delta and "role" not in delta:  # a token's chunk (the role chunk comes first)
                times.append(loop.time())
                text += delta["content"]
                if started is not None and len(times) == 3:
                    started.set()
    return {"times": times, "text": text, "usage": usage}


@needs_torch
def test_greedy_output_is_the_same_alone_and_in_a_changing_batch(server):
    """Each of three prompts alone, then together: a long B first, then A and a short C prefilled together (C
    left-padded to A's length) and joined to B's batch mid-decode (A and C left-padded again to B's length), C
    finishing first. The cache is padded and re-cut as sequences join and leave, and no one's greedy tokens may
    change. Float32 on the CPU; greedy, so any difference is a bug, not sampling."""
    a, b, c = "the quick brown fox jumps over", "x " * 40 + "a much longer prompt than the others", "hi"

    async def main():
        async with aiohttp.ClientSession() as session:
            alone = [await _complete(session, server, a, 24), await _complete(session, server, c, 6),
                     await _stream(session, server, b, 120)]
            started = asyncio.Event()
            long_b = asyncio.create_task(_stream(session, server, b, 120, started))
            await asyncio.wait_for(started.wait(), 60)
            together = await asyncio.gather(_complete(session, server, a, 24), _complete(session, server, c, 6))
            return alone, [*together, await long_b]

    alone, together = asyncio.run(main())
    texts = [[r["choices"][0]["text"] for r in runs[:2]] + [runs[2]["text"]] for runs in (alone, together)]
    assert [r["usage"]["completion_tokens"] for r in alone + together] == [24, 6, 120] * 2
    assert texts[1] == texts[0]


@needs_torch
def test_ten_concurrent_streams_all_finish_token_by_token(server):
    """More streams than the batch (8) holds: two wait, join when others leave, and every stream gets its tokens
    one chunk at a time."""
    async def main():
        async with aiohttp.ClientSession() as session:
            return await asyncio.wait_for(asyncio.gather(*(
                _stream(session, server, "word " * (5 + 7 * i), 12 + i) for i in range(10))), 120)

    for i, r in enumerate(asyncio.run(main())):
        assert r["usage"]["completion_tokens"] == 12 + i
        assert len(r["times"]) == 12 + i  # one chunk per token
        assert len(set(r["times"])) > (12 + i) // 2  # read at many different moments: streamed as generated


@needs_torch
def test_errors_are_openai_style_and_a_dropped_stream_does_not_stall_the_server(server):
    async def main():
        async with aiohttp.ClientSession() as session:
            statuses = []
            for body in ({"model": "nope", "prompt": "x"}, {"model": "tiny", "prompt": "x", "max_tokens": 10**6}):
                async with session.post(f"{server}/completions", json=body) as resp:
                    statuses.append((resp.status, (await resp.json())["error"]["message"]))
            async with session.post(f"{server}/completions", data=b"{not json") as resp:
                statuses.append((resp.status, (await resp.json())["error"]["message"]))
            # a client that reads three chunks of a long stream and goes away
            body = {"model": "tiny", "prompt": "x", "max_tokens": 3000, "ignore_eos": True, "stream": True}
            async with session.post(f"{server}/completions", json=body) as resp:
                for _ in range(3):
                    await resp.content.readline()
            after = await asyncio.wait_for(_complete(session, server, "still there?", 5), 60)
            return statuses, after

    statuses, after = asyncio.run(main())
    assert statuses[0] == (404, "The model `nope` does not exist.")
    assert statuses[1][0] == 400 and "maximum context length is 4096 tokens" in statuses[1][1]
    assert statuses[2] == (400, "the request body is not valid JSON")
    assert after["usage"]["completion_tokens"] == 5


@needs_torch
def test_random_weights_from_a_config_json_with_a_trained_tokenizer(tmp_path, port):
    folder = tmp_path / "toy-qwen2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 9000,
        "max_position_embeddings": 512, "tie_word_embeddings": True, "use_sliding_window": False}))
    command = (f"{TORCH_PYTHON} -m bench.hfserve --model {folder / 'config.json'} --random-weights --device cpu "
               f"--port {port} --tokenizer-vocab 1024")
    with LaunchedServer(command, f"http://127.0.0.1:{port}", tmp_path / "server.log", ready_timeout_s=180):
        async def main():
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/v1/models") as resp:
                    models = await resp.json()
                async with session.get(f"http://127.0.0.1:{port}/version") as resp:
                    version = await resp.json()
                body = {"model": "toy-qwen2", "prompt": "hello", "max_tokens": 8, "ignore_eos": True}
                async with session.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as resp:
                    return models, version, await resp.json()

        models, version, completion = asyncio.run(main())
    assert not processes_running(f"--port {port}")
    assert models["data"][0]["id"] == "toy-qwen2" and models["data"][0]["max_model_len"] == 512
    assert version["version"].startswith("gpucap-hfserve ")
    assert completion["usage"]["completion_tokens"] == 8
    log = (tmp_path / "server.log").read_text()
    assert "random weights" in log and "byte-level BPE trained on local text (1024 tokens)" in log


@needs_torch
@pytest.mark.parametrize("args, words", [
    (["--model", "Qwen2ForCausalLM"], "needs --random-weights"),
    (["--model", "NoSuchForCausalLM", "--random-weights"], "not a causal-LM architecture"),
])
def test_a_model_that_cannot_be_served_is_one_sentence_and_exit_2(args, words):
    res = subprocess.run([TORCH_PYTHON, "-m", "bench.hfserve", *args, "--device", "cpu"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]
