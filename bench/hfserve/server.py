"""The hfserve HTTP server (aiohttp) and its command line.

    python -m bench.hfserve --model DIR_OR_CONFIG [--random-weights] --port P [--device cuda|cpu]
                            [--dtype bfloat16|float16|float32] [--max-batch N] [--served-model-name NAME]

Routes: ``GET /v1/models`` (the served id and ``max_model_len``), ``GET /version`` (``gpucap-hfserve <ver>
transformers <ver> torch <ver>``), ``GET /health``, ``POST /v1/chat/completions`` and ``POST /v1/completions``
(formats in ``protocol.py``). The model is loaded and warmed up before the port opens, so a client that waits for
``/v1/models`` (``bench run --launch``) starts when the server can serve. Each request's tokens come from the
engine's worker thread through ``loop.call_soon_threadsafe`` into the request's own queue; a client that goes away
has its sequence cancelled (it leaves the batch before the next step).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from typing import Any

import torch
import transformers
from aiohttp import web

from .. import __version__
from .detok import IncrementalText
from .engine import STATS_INTERVAL_S, Emission, Engine, Sequence
from .model import Loaded, ModelError, ModelSpec, load
from .protocol import CHAT, COMPLETIONS, DONE, Chunks, RequestError, body, error_body, parse_request, sampling_params

log = logging.getLogger("bench.hfserve")
VERSION = f"gpucap-hfserve {__version__} transformers {transformers.__version__} torch {torch.__version__}"


class Server:
    def __init__(self, loaded: Loaded, served_name: str, max_batch: int, max_prefill_tokens: int):
        self.loaded = loaded
        self.name = served_name
        self.created = int(time.time())
        self.engine = Engine(loaded.model, device=loaded.device, max_batch=max_batch, eos_ids=loaded.eos_ids,
                             sample_vocab=loaded.sample_vocab, pad_id=loaded.pad_id, on_step=self._on_step,
                             max_prefill_tokens=max_prefill_tokens)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._handoff_ms: list[float] = []
        self._handoff_since = time.perf_counter()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/version", self.version)
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()
        self.engine.start()

    async def _stop(self, app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.engine.stop)

    def _on_step(self, emissions: list[Emission]) -> None:
        """Worker thread: hand the step's tokens to the event loop, one call per step."""
        self.loop.call_soon_threadsafe(self._dispatch, emissions, time.perf_counter())

    def _dispatch(self, emissions: list[Emission], emitted_s: float) -> None:
        """Event loop: each token to its request's queue. How long tokens waited for the loop (the worker holds
        the GIL between kernels) is logged every STATS_INTERVAL_S."""
        now = time.perf_counter()
        self._handoff_ms.append((now - emitted_s) * 1000)
        for em in emissions:
            if not em.seq.cancelled:
                em.seq.context.put_nowait(em)
        if now - self._handoff_since >= STATS_INTERVAL_S:
            d = sorted(self._handoff_ms)
            log.info("token hand-off to the event loop over %d steps: p50 %.2f ms, p99 %.2f ms, max %.2f ms", len(d),
                     d[len(d) // 2], d[int(len(d) * 0.99)], d[-1])
            self._handoff_ms, self._handoff_since = [], now

    # ---- routes -----------------------------------------------------------------------------------------------
    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.name, "object": "model", "created": self.created, "owned_by": "gpucap-hfserve",
                "root": self.loaded.weights if self.loaded.weights != "random" else self.name, "parent": None,
                "max_model_len": self.loaded.max_model_len}
        return web.json_response({"object": "list", "data": [card]})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, COMPLETIONS)

    # ---- generation -------------------------------------------------------------------------------------------
    async def _generate(self, request: web.Request, api: str) -> web.StreamResponse:
        try:
            try:
                raw = await request.json()
            except (ValueError, UnicodeDecodeError):
                raise RequestError(400, "the request body is not valid JSON") from None
            req = parse_request(api, raw, self.name)
            prompt_ids = self._tokenize(req)
            params = sampling_params(req, len(prompt_ids), self.loaded.max_model_len)
        except RequestError as e:
            return web.json_response(error_body(e.status, e.message, e.etype), status=e.status)
        queue: asyncio.Queue[Emission] = asyncio.Queue()
        seq = Sequence(prompt_ids=prompt_ids, params=params, context=queue)
        rid = ("chatcmpl-" if api == CHAT else "cmpl-") + uuid.uuid4().hex
        self.engine.submit(seq)
        try:
            if req.stream:
                return await self._stream(request, req, seq, queue, rid)
            return await self._whole(req, seq, queue, rid)
        finally:
            seq.cancelled = True  # finished already, or the client went away: either way it leaves the batch

    async def _stream(self, request: web.Request, req, seq: Sequence, queue: asyncio.Queue, rid: str):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        chunks = Chunks(req.api, rid, self.name, int(time.time()), len(seq.prompt_ids), req.continuous_usage)
        text = IncrementalText(self.loaded.tokenizer)
        out = chunks.role()
        count = 0
        while True:
            em = await queue.get()
            if em.error is not None:
                await resp.write(out + Chunks.error(500, em.error) + DONE)
                break
            count += 1
            out += chunks.token(text.add(em.token_id, last=em.finish_reason is not None), count, em.finish_reason)
            if em.finish_reason is not None:
                if req.include_usage:
                    out += chunks.usage(count)
                await resp.write(out + DONE)
                break
            await resp.write(out)
            out = b""
        await resp.write_eof()
        return resp

    async def _whole(self, req, seq: Sequence, queue: asyncio.Queue, rid: str) -> web.Response:
        ids: list[int] = []
        while True:
            em = await queue.get()
            if em.error is not None:
                return web.json_response(error_body(500, em.error, "InternalServerError"), status=500)
            ids.append(em.token_id)
            if em.finish_reason is not None:
                break
        text = self.loaded.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return web.json_response(body(req.api, rid, self.name, int(time.time()), text, em.finish_reason,
                                      len(seq.prompt_ids), len(ids)))

    def _tokenize(self, req) -> list[int]:
        tok = self.loaded.tokenizer
        if req.api == CHAT:
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
            else:  # no template: ChatML-like plain text
                text = "".join(f"{m['role']}: {m['content']}\n" for m in req.messages) + "assistant: "
            ids = tok.encode(text, add_special_tokens=False)
        elif isinstance(req.prompt, str):
            ids = tok.encode(req.prompt)
        else:
            ids = list(req.prompt)
            if max(ids) >= self.loaded.sample_vocab or min(ids) < 0:
                raise RequestError(400, f"token ids must be in [0, {self.loaded.sample_vocab})")
        if not ids:
            raise RequestError(400, "the prompt is empty")
        return ids


# ---- command line -------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.hfserve",
                                description="Serve a transformers causal LM behind an OpenAI-compatible API "
                                            "(for benchmarks where vLLM is not available).")
    p.add_argument("--model", required=True,
                   help="model folder, a config.json (with --random-weights), or an architecture name / model type "
                        "such as Qwen2ForCausalLM or qwen2 (with --random-weights)")
    p.add_argument("--random-weights", action="store_true", help="build the model from its config with random "
                   "weights (seeded) instead of loading weights")
    p.add_argument("--config-overrides", type=_json_object, default={}, metavar="JSON",
                   help='config values to change first, e.g. \'{"num_hidden_layers": 2}\' (random weights only)')
    p.add_argument("--served-model-name", help="model id to serve (default: the folder's or config's name)")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model folder's; none there: train one)")
    p.add_argument("--tokenizer-vocab", type=int, default=8192,
                   help="vocabulary of a trained tokenizer (default 8192)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--dtype", choices=("auto", "bfloat16", "float16", "float32"), default="auto",
                   help="auto = bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--max-batch", type=int, default=64, help="most sequences decoded together (default 64)")
    p.add_argument("--max-prefill-tokens", type=int, default=16384,
                   help="most padded prompt tokens prefilled in one step (default 16384)")
    p.add_argument("--max-model-len", type=int, help="context limit (default: the config's)")
    p.add_argument("--attn-implementation", help="sdpa, eager, flash_attention_2 ... (default: transformers')")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and of sampling")
    return p


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    spec = ModelSpec(model=args.model, device=args.device, dtype=None if args.dtype == "auto" else args.dtype,
                     random_weights=args.random_weights, config_overrides=args.config_overrides,
                     tokenizer=args.tokenizer, tokenizer_vocab=args.tokenizer_vocab, max_model_len=args.max_model_len,
                     attn_implementation=args.attn_implementation, seed=args.seed)
    try:
        loaded = load(spec)
    except ModelError as e:
        print(f"bench.hfserve: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    # The worker thread holds the GIL while it launches kernels (a decode step of a small model on a GPU is mostly
    # Python); the event loop, which writes the tokens, gets it at the next switch: every 1 ms instead of 5.
    sys.setswitchinterval(0.001)
    name = args.served_model_name or loaded.name
    log.info("%s: serving %s (%s parameters, %s weights, %s on %s, max_model_len %d, max batch %d); "
             "tokenizer: %s; ready in %.1f s", VERSION, name, f"{loaded.parameters / 1e6:,.1f} M", loaded.weights,
             str(loaded.dtype).removeprefix("torch."), loaded.device, loaded.max_model_len, args.max_batch,
             loaded.tokenizer_source, loaded.load_s)
    server = Server(loaded, name, args.max_batch, args.max_prefill_tokens)
    web.run_app(server.app(), host=args.host, port=args.port, access_log=None, shutdown_timeout=5,
                print=lambda text: log.info("listening on http://%s:%d", args.host, args.port))
    return 0
