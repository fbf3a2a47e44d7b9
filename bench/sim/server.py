"""The simulated endpoint: an aiohttp server speaking the OpenAI and Anthropic APIs with controlled timing.

Per request: wait for a batch slot (``max_batch``; waiting adds to TTFT as on a real server), then the first token
``ttft_ms`` after admission and one token every ``itl_ms`` (each delay scaled by a jitter factor), grouped
``tokens_per_chunk`` to an event. Events whose time has come are written together in one socket write, and the
moment of that write is recorded as their true emission time (see ``truth.py``).

A "token" of the simulator is one word; a prompt's token count is its word count plus 4 per chat message and 3 for
the reply's preamble (OpenAI's rule of thumb), so a prompt from ``bench``'s synthetic workload of N words has
about N tokens here too.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import socket
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .config import FaultRule, SimConfig
from .emitter import Emitter, Stream
from .engine import Engine, NullTransport
from .fastpath import FastConnection
from .formats import FORMATS, Ctx
from .truth import TruthLog, TruthRecord

VOCAB = ("the", "model", "serves", "tokens", "quickly", "and", "every", "request", "gets", "its", "answer", "on",
         "time", "while", "GPU", "memory", "stays", "within", "budget", "for", "users", "who", "wait")
THINK_VOCAB = ("first", "consider", "what", "is", "asked", "then", "check", "each", "step", "so")


def count_prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if isinstance(messages, list):
        n = 3
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):  # content parts
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            n += 4 + len(str(content or "").split())
        if isinstance(body.get("system"), str):
            n += 4 + len(body["system"].split())
        return n
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(map(str, prompt))
    return len(str(prompt or "").split())


def presented_key(headers) -> str | None:
    """The API key a request presents: ``x-api-key`` (Anthropic's way), else a ``Bearer`` token."""
    got = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if got is None and auth.startswith("Bearer "):
        got = auth[len("Bearer "):]
    return got


@dataclass(frozen=True)
class Job:
    """A generation request that passed validation: what to generate for it."""

    body: dict[str, Any]
    model: str
    prompt_tokens: int
    n_out: int
    finish: str  # "length" when it runs to max_tokens, "stop" when the natural length ends it first


class _TimedRequestHandler(RequestHandler):
    """Notes when the bytes of a request first reach the server process (before HTTP parsing and before the
    handler task gets its turn), so the true TTFT starts where the server really received the request.

    A fresh connection first offers its bytes to the fast path (``fastpath.py``), which serves streaming OpenAI
    requests right here; the first request it does not take goes to aiohttp, and so does the rest of the
    connection (``fast`` becomes None), so the two never answer on one connection at once."""

    rx_ns: int | None = None
    fast: FastConnection | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        sim = getattr(self._manager, "sim", None)
        if sim is not None and sim.fast_path_ok:
            self.fast = FastConnection(sim, self, transport, self._loop)

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()
        if self.fast is None:
            self._parse(data, now)
        elif not (self._close or self._force_close):
            self.fast.feed(data, now)

    def to_aiohttp(self, data: bytes, rx_ns: int) -> None:
        """From now on aiohttp serves this connection, starting with ``data`` (first byte received at ``rx_ns``)."""
        self.fast = None
        if data:
            self._parse(data, rx_ns)

    def _parse(self, data: bytes, rx_ns: int) -> None:
        if self.rx_ns is None:
            self.rx_ns = rx_ns
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        fast, self.fast = self.fast, None
        if fast is not None:
            fast.lost()
        super().connection_lost(exc)

    # aiohttp's idle timer closes a connection whose handler task waits for the next request; while the fast path
    # streams, that task waits, so the timer must not close the connection then. It is restarted after each fast
    # response, as aiohttp restarts it after each of its own.
    def _process_keepalive(self) -> None:
        if self.fast is not None and self.fast.stream is not None:
            self._keepalive_handle = None  # the stream's end restarts it
            return
        super()._process_keepalive()

    def restart_idle_timer(self) -> None:
        if self._keepalive_timeout > 0 and not (self._close or self._force_close):
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
            if self._keepalive_handle is None:
                self._keepalive_handle = self._loop.call_at(self._next_keepalive_close_time,
                                                            self._process_keepalive)


class _TimedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _TimedRequestHandler(self, loop=self._loop, **self._kwargs)


class _TimedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, sim: SimServer, **kwargs):
        super().__init__(app, **kwargs)
        self._sim = sim

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _TimedServer  # same layout, only __call__ differs
        server.sim = self._sim  # for the fast path of its connections
        return server


def _arrival_ns(request: web.Request) -> int:
    """When the request's first bytes arrived in this process."""
    rx = getattr(request.protocol, "rx_ns", None)
    return rx if rx is not None else perf_counter_ns()


@web.middleware
async def _reset_arrival(request: web.Request, handler):
    """After a response, forget the arrival time, so the next request on this keep-alive connection notes its own
    (a body read after the handler started must not leave a stale time behind)."""
    try:
        return await handler(request)
    finally:
        if isinstance(request.protocol, _TimedRequestHandler):
            request.protocol.rx_ns = None


class SimServer:
    def __init__(self, config: SimConfig):
        self.config = config
        self.truth = TruthLog(config.truth_path, config.keep_truth)
        self._rng = random.Random(config.seed)
        self._slots = asyncio.Semaphore(config.max_batch) if config.max_batch else None
        self._seq = itertools.count(1)
        self._plans: dict[int, tuple[tuple[str, str, int], ...]] = {}  # _plan_events by output length
        self._runner: web.AppRunner | None = None
        self.running = 0
        self.waiting = 0
        self.requests_total = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.port: int | None = None
        self._emitter = Emitter(on_tokens=self._count_tokens)
        self.engine = Engine(config.engine, on_tokens=self._count_tokens) if config.engine is not None else None

    def _count_tokens(self, n: int) -> None:
        self.generation_tokens_total += n

    # ---- app ------------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_reset_arrival])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/version", self._version)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/sim/plan", self._plan)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start listening; returns the API base URL (``http://host:port/v1``)."""
        self._runner = _TimedAppRunner(self.app(), self, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, backlog=4096)
        await site.start()
        return f"http://{host}:{self.port}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            for conn in self._runner.server.connections if self._runner.server is not None else ():
                if isinstance(conn, _TimedRequestHandler) and conn.fast is not None and conn.fast.stream is not None:
                    conn.fast.abort()  # aiohttp would wait for its handlers; a fast stream has none to wait for
            await self._runner.cleanup()
            self._runner = None
        self.truth.close()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "openai-chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "openai-completions")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "anthropic-messages")

    # ---- small endpoints ------------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request, "openai-chat")) is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "gpucap-sim",
                 "max_model_len": self.config.max_model_len} for m in self.config.models]
        return web.json_response({"object": "list", "data": data})

    async def _version(self, request: web.Request) -> web.Response:
        from bench import __version__
        return web.json_response({"version": f"gpucap-sim {__version__}"})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _plan(self, request: web.Request) -> web.Response:
        """The sizing plan an engine-emulating simulator follows (404 in plain mode)."""
        if self.engine is None:
            return web.json_response({"error": "not emulating a deployment (start with --gpu)"}, status=404)
        return web.json_response({"label": self.engine.spec.label, "plan": self.engine.spec.plan})

    async def _metrics(self, request: web.Request) -> web.Response:
        """A few of vLLM's Prometheus metrics, with the simulator's real counts (names as vLLM exports them)."""
        model = self.config.models[0]
        lbl = f'{{model_name="{model}"}}'
        running, waiting = self.running, self.waiting
        if self.engine is not None:
            running, waiting = self.engine.stats.running, self.engine.stats.waiting
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{lbl} {running}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{lbl} {waiting}",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter", f"vllm:prompt_tokens_total{lbl} {self.prompt_tokens_total}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{lbl} {self.generation_tokens_total}",
        ]
        if self.engine is not None:
            stats = self.engine.stats
            usage = stats.kv_used_tokens / max(self.engine.spec.kv_capacity_tokens, 1)
            lines += ["# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
                      "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{lbl} {usage}",
                      "# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.",
                      "# TYPE vllm:num_preemptions_total counter",
                      f"vllm:num_preemptions_total{lbl} {stats.preemptions}"]
        elif self.config.max_batch:
            usage = self.running / self.config.max_batch
            lines += ["# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
                      "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{lbl} {usage}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    # ---- helpers --------------------------------------------------------------------------------------------
    def _auth(self, request: web.Request, api: str) -> web.Response | None:
        if self.key_ok(request.headers):
            return None
        msg = "Authorization header missing" if presented_key(request.headers) is None else "Invalid API key"
        return web.json_response(FORMATS[api].error(401, msg, "authentication_error"), status=401)

    def _pick_fault(self, n: int) -> FaultRule | None:
        for rule in self.config.faults:
            if rule.first_n is not None and n > rule.first_n:
                continue
            if rule.probability >= 1.0 or self._rng.random() < rule.probability:
                return rule
        return None

    def _factor(self) -> float:
        j = self.config.jitter
        return 1.0 + self._rng.uniform(-j, j) if j else 1.0

    def _plan_events(self, n_out: int) -> tuple[tuple[str, str, int], ...]:
        """(kind, text, tokens) of every stream event: ``tokens_per_chunk`` tokens each, never mixing kinds. The
        same for every request of that length, so planned once (building 100 events costs ~20 µs a request)."""
        plan = self._plans.get(n_out)
        if plan is None:
            if len(self._plans) >= 64:
                self._plans.clear()
            plan = self._plans[n_out] = tuple(self._new_plan(n_out))
        return plan

    def _new_plan(self, n_out: int) -> list[tuple[str, str, int]]:
        per = self.config.tokens_per_chunk
        tokens = self._plan_tokens(n_out)
        if per == 1:
            return [(k, t, 1) for k, t in tokens]
        events = []
        for kind, group in itertools.groupby(tokens, key=lambda kt: kt[0]):
            texts = [t for _, t in group]
            events += [(kind, "".join(texts[i:i + per]), len(texts[i:i + per])) for i in range(0, len(texts), per)]
        return events

    def _plan_tokens(self, n_out: int) -> list[tuple[str, str]]:
        """(kind, text) of every output token: reasoning first, then answer."""
        cfg = self.config
        n_think = min(cfg.reasoning_tokens, n_out)
        tokens: list[tuple[str, str]] = []
        if n_think:
            if cfg.reasoning_style == "tags":
                words = ["<think>"] + [" " + THINK_VOCAB[i % len(THINK_VOCAB)] for i in range(max(n_think - 2, 0))]
                words += ["</think>"] if n_think >= 2 else []
                tokens += [("a", w) for w in words[:n_think]]  # all in `content`: the client must split them
            else:
                tokens += [("r", " " + THINK_VOCAB[i % len(THINK_VOCAB)]) for i in range(n_think)]
        tokens += [("a", " " + VOCAB[i % len(VOCAB)]) for i in range(n_out - n_think)]
        return tokens

    # ---- generation: the steps both request paths (aiohttp's, and fastpath.py's) share ----------------------
    @property
    def fast_path_ok(self) -> bool:
        """Whether fastpath.py may serve this server's streaming OpenAI requests: only when nothing but plain
        timing is configured (faults, the engine and the batch queue need the aiohttp path's task)."""
        return not self.config.faults and self.engine is None and self._slots is None

    def key_ok(self, headers) -> bool:
        """Whether ``headers`` (case-insensitive, or with lower-case names) carry the API key, when one is set."""
        return self.config.api_key is None or presented_key(headers) == self.config.api_key

    def check(self, body: Any, api: str) -> Job | tuple[int, dict[str, Any]]:
        """Validate a parsed request body: what to generate, or the (status, error body) to answer instead."""
        fmt_cls = FORMATS[api]
        if not isinstance(body, dict):
            return 400, fmt_cls.error(400, "request body is not a JSON object", "BadRequestError")
        model = body.get("model")
        # providers accept routing suffixes on model ids (e.g. "deepseek-r1?search"); so does the simulator
        if not isinstance(model, str) or model.split("?", 1)[0] not in self.config.models:
            return 404, fmt_cls.error(404, f"The model `{model}` does not exist.", "NotFoundError")
        prompt_tokens = count_prompt_tokens(body)
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = self.config.default_max_tokens
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return 400, fmt_cls.error(400, "max_tokens must be a positive integer", "BadRequestError")
        if prompt_tokens + max_tokens > self.config.max_model_len:
            msg = (f"This model's maximum context length is {self.config.max_model_len} tokens. However, you "
                   f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} "
                   f"in the completion).")
            return 400, fmt_cls.error(400, msg, "BadRequestError")
        n_out = max_tokens
        if self.config.natural_len is not None and not body.get("ignore_eos"):
            n_out = min(n_out, max(self.config.natural_len, int(body.get("min_tokens") or 0)))
        return Job(body, model, prompt_tokens, n_out, "length" if n_out == max_tokens else "stop")

    def open_record(self, api: str, arrival_ns: int, request_id: str | None, job: Job) -> tuple[TruthRecord, int]:
        """Number the request and start its truth record (``request_id``: the client's ``X-Request-Id``)."""
        n = next(self._seq)
        truth = TruthRecord(request_id=request_id or f"sim-{n}", api=api, arrival_ns=arrival_ns, model=job.model,
                            prompt_tokens=job.prompt_tokens)
        self.requests_total += 1
        return truth, n

    def new_format(self, api: str, truth: TruthRecord, job: Job):
        """The wire format that writes this request's events."""
        options = job.body.get("stream_options") or {}
        ctx = Ctx(rid=truth.request_id.replace(" ", "-")[:64], model=job.model, prompt_tokens=job.prompt_tokens,
                  include_usage=bool(options.get("include_usage")),
                  continuous_usage=bool(options.get("continuous_usage_stats")),
                  reasoning_style=self.config.reasoning_style)
        return FORMATS[api](ctx)

    def admit(self, truth: TruthRecord) -> None:
        """The request leaves the queue and runs (its batch slot, if any, is already held)."""
        self.running += 1
        self.prompt_tokens_total += truth.prompt_tokens
        truth.admitted_ns = perf_counter_ns()

    def release(self, truth: TruthRecord) -> None:
        """The request is over (whatever its outcome): it stops running and its truth is recorded."""
        self.running -= 1
        if self._slots is not None:
            self._slots.release()
        self.truth.add(truth)

    def new_stream(self, fmt, truth: TruthRecord, job: Job, transport, fault: FaultRule | None = None,
                   start: bytes = b"") -> Stream:
        """The emitter's stream of this request's events, its first due ``ttft_ms`` after admission."""
        return Stream(fmt=fmt, events=self._plan_events(job.n_out), truth=truth, transport=transport,
                      step_ns=self._step_ns, finish_reason=job.finish, due_ns=self._first_due_ns(truth.admitted_ns),
                      fault_kind=fault.kind if fault is not None else None,
                      fault_at_tokens=fault.after_tokens if fault is not None else None, start=start)

    def add_stream(self, stream: Stream) -> None:
        self._emitter.add(stream)

    async def _generate(self, request: web.Request, api: str) -> web.StreamResponse:
        arrival = _arrival_ns(request)
        if (denied := self._auth(request, api)) is not None:
            return denied
        try:
            body = orjson.loads(await request.read())
        except ValueError:
            body = None
        job = self.check(body, api)
        if not isinstance(job, Job):
            status, payload = job
            return web.json_response(payload, status=status)
        truth, n = self.open_record(api, arrival, request.headers.get("X-Request-Id"), job)
        fault = self._pick_fault(n)
        if fault is not None:
            truth.fault = fault.kind
            if fault.kind == "status":
                self.truth.add(truth)
                return self._fault_response(FORMATS[api], fault)
            if fault.kind == "hang":
                await asyncio.sleep(3600)
        fmt = self.new_format(api, truth, job)
        if self.engine is not None:
            self.prompt_tokens_total += job.prompt_tokens
            try:
                return await self._engine_request(request, fmt, truth, job.n_out, job.finish, fault,
                                                  job.body.get("stream"))
            finally:
                self.truth.add(truth)
        self.waiting += 1
        if self._slots is not None:
            await self._slots.acquire()
        self.waiting -= 1
        self.admit(truth)
        released = False
        try:
            if not job.body.get("stream"):
                return await self._whole(fmt, truth, job.n_out, job.finish)
            resp, start = await self._open_stream(request, fmt)
            stream = self.new_stream(fmt, truth, job, request.transport, fault, start)
            self.add_stream(stream)
            outcome = await stream.done
            released = True
            self.release(truth)  # before the response's last bytes: a client holding all of it finds the truth
            return await self._close_stream(resp, outcome)
        finally:
            if not released:
                self.release(truth)

    def _fault_response(self, fmt_cls, fault: FaultRule) -> web.Response:
        messages = {401: "Authorization header missing", 402: "Insufficient Balance",
                    403: "Access denied", 404: "The model does not exist.", 429: "Rate limit reached for requests",
                    503: "The price of the model is not set", 500: "Internal server error"}
        headers = {}
        if fault.status == 429:
            headers["Retry-After"] = f"{fault.retry_after_s if fault.retry_after_s is not None else 1:g}"
        return web.json_response(fmt_cls.error(fault.status, messages.get(fault.status, "Simulated failure"),
                                               "SimulatedError"), status=fault.status, headers=headers)

    def _first_due_ns(self, admitted_ns: int) -> int:
        return admitted_ns + int(self.config.ttft_ms * 1e6 * self._factor())

    def _step_ns(self) -> int:
        """Time from one event to the next: every token of the chunk takes an inter-token delay, which grows with
        the number of requests running at that moment (``itl_per_running_ms``)."""
        cfg = self.config
        itl_ms = cfg.itl_ms + cfg.itl_per_running_ms * self.running
        return int(itl_ms * 1e6 * cfg.tokens_per_chunk * self._factor())

    async def _engine_request(self, request: web.Request, fmt, truth: TruthRecord, n_out: int, finish: str,
                              fault: FaultRule | None, stream: bool) -> web.StreamResponse:
        """Generate through the emulated engine: its steps decide when each token exists."""
        resp = None
        transport = NullTransport()
        start = b""
        if stream:
            resp, start = await self._open_stream(request, fmt)
            transport = request.transport
        s = Stream(fmt=fmt, events=self._plan_events(n_out), truth=truth, transport=transport,
                   step_ns=lambda: 0, finish_reason=finish, due_ns=0,
                   fault_kind=fault.kind if fault is not None else None,
                   fault_at_tokens=fault.after_tokens if fault is not None else None, start=start)
        truth.admitted_ns = perf_counter_ns()
        self.engine.submit(s, truth.prompt_tokens)
        try:
            outcome = await s.done
        except asyncio.CancelledError:
            transport.close() if isinstance(transport, NullTransport) else None
            raise
        if not stream:
            payload = self._body_bytes(fmt, n_out, finish)
            truth.emit_ns = [perf_counter_ns()]
            truth.tokens = [n_out]
            return web.Response(body=payload, content_type="application/json")
        return await self._close_stream(resp, outcome)

    def _body_bytes(self, fmt, n_out: int, finish: str) -> bytes:
        """A whole (non-streaming) response of ``n_out`` tokens."""
        tokens = self._plan_tokens(n_out)
        reasoning = "".join(t for k, t in tokens if k == "r")
        answer = "".join(t for k, t in tokens if k == "a")
        return orjson.dumps(fmt.body(reasoning, answer, finish, n_out))

    @staticmethod
    async def _open_stream(request: web.Request, fmt) -> tuple[web.StreamResponse, bytes]:
        """Send the headers (and the start events the API sends before any token); returns the response and the
        start events still to go out with the first token."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                       "Cache-Control": "no-cache"})
        await resp.prepare(request)  # sends the headers; the emitter or the engine writes the chunks
        start = fmt.start()
        if start and fmt.start_early:
            await resp.write(start)
            start = b""
        return resp, start

    @staticmethod
    async def _close_stream(resp: web.StreamResponse, outcome: str) -> web.StreamResponse:
        if outcome in ("cut", "disconnected"):
            return resp  # the connection is gone: no chunked terminator
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def _whole(self, fmt, truth: TruthRecord, n_out: int, finish: str) -> web.Response:
        n_events = max(1, -(-n_out // self.config.tokens_per_chunk))
        done = self._first_due_ns(truth.admitted_ns) + sum(self._step_ns() for _ in range(n_events - 1))
        delay = (done - perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        payload = self._body_bytes(fmt, n_out, finish)
        truth.emit_ns.append(perf_counter_ns())
        truth.tokens.append(n_out)
        truth.output_tokens = n_out
        self.generation_tokens_total += n_out
        return web.Response(body=payload, content_type="application/json")
