"""Emulate a model served on a GPU deployment: continuous batching with KV-cache admission, step by step.

``bench sim --model M --gpu G [--gpus N] [--quant Q]`` takes the deployment's performance model from ``sizing``
(one decode step's time for a batch, the compute a chunk of prompt adds to a step, the KV-cache capacity) and runs
an engine like vLLM's V1 scheduler:

- a request waits ``overhead(prompt)`` after arrival (HTTP, tokenisation, scheduling: the part of sizing's TTFT that
  is not compute), then joins the waiting queue;
- each step admits waiting requests while fewer than ``max_num_seqs`` run and the KV cache has room for their
  context, fills a token budget (``max_batched_tokens``) with one token per decoding request plus chunks of
  prompts being prefilled, takes ``decode_step_s(decoding, mean context) + prefill_compute_s(prompt chunk)``,
  and then gives every decoding request, and every request whose prefill just finished, its next token;
- when the KV cache cannot hold the next step's tokens, the newest request is preempted (its cache dropped, back
  to the head of the queue, its context prefilled again when readmitted), as vLLM's recompute preemption does.

So ``bench run`` against it reproduces what ``sizing`` predicts, with the queueing a real server adds.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from .emitter import Stream, write_events


@dataclass(frozen=True)
class EngineSpec:
    """The numbers of one deployment (pure values and functions; built from a sizing plan)."""

    label: str
    kv_capacity_tokens: int
    max_num_seqs: int
    decode_step_s: Callable[[int, float], float]
    prefill_compute_s: Callable[[float, int], float]
    prefill_s: Callable[[int], float]
    max_batched_tokens: int = 8192
    max_model_len: int | None = None
    plan: dict | None = None  # sizing's JSON plan, served at /sim/plan


def spec_from_sizing(model: str, gpu: str, gpus: int | None = None, quant: str | None = None,
                     max_num_seqs: int = 256) -> EngineSpec:
    """The deployment ``sizing`` plans for ``model`` on ``gpus`` x ``gpu``. Raises sizing's SizingError."""
    from sizing.api import SizingError, plan

    p = plan(model, gpu, quant=quant, gpus=gpus)
    if not p.fits:
        raise SizingError("gpus", f"{p.reason}")
    perf = p.evaluation.perf
    info = p.to_dict()
    layout = info["layout"]
    label = (f"{info['model']} ({info['quant']}) on {info['gpus']} x {info['gpu']}, "
             f"TP{layout.get('tp', 1)} PP{layout.get('pp', 1)}, {info['engine']}")
    return EngineSpec(label=label, kv_capacity_tokens=int(p.kv_capacity_tokens),
                      max_num_seqs=max(1, min(max_num_seqs, int(p.max_concurrency) if p.max_concurrency else
                                              max_num_seqs)),
                      decode_step_s=p.decode_step_s, prefill_compute_s=perf.prefill_compute_s,
                      prefill_s=p.prefill_s, max_model_len=info.get("context_tokens"), plan=info)


@dataclass(eq=False)
class Sequence:
    stream: Stream
    prompt_tokens: int
    ready_ns: int  # arrival + overhead: not schedulable before
    context_tokens: int = 0  # tokens in the KV cache once prefilled (prompt + generated)
    prefill_left: int = 0
    generated: int = 0
    admitted: bool = False


@dataclass
class EngineStats:
    running: int = 0
    waiting: int = 0
    kv_used_tokens: int = 0
    preemptions: int = 0
    steps: int = 0


class Engine:
    def __init__(self, spec: EngineSpec, on_tokens: Callable[[int], None] | None = None,
                 clock_ns: Callable[[], int] | None = None):
        from time import perf_counter_ns

        self.spec = spec
        self.clock_ns = clock_ns or perf_counter_ns
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.stats = EngineStats()
        self._on_tokens = on_tokens
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._overhead_s = lru_cache(maxsize=4096)(self._overhead)

    def _overhead(self, prompt_tokens: int) -> float:
        """The non-compute part of sizing's TTFT for this prompt: prefill_s minus one step that prefills it."""
        step = self.spec.decode_step_s(1, float(prompt_tokens)) + self.spec.prefill_compute_s(prompt_tokens,
                                                                                            prompt_tokens)
        return max(0.0, self.spec.prefill_s(prompt_tokens) - step)

    def submit(self, stream: Stream, prompt_tokens: int) -> None:
        ready = self.clock_ns() + int(self._overhead_s(prompt_tokens) * 1e9)
        self.waiting.append(Sequence(stream, prompt_tokens, ready, context_tokens=prompt_tokens))
        self.stats.waiting = len(self.waiting)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())
        self._wake.set()

    async def _loop(self) -> None:
        step_end_ns = self.clock_ns()
        while self.waiting or self.running:
            step_s, emit = self._plan_step()
            if step_s is None:  # nothing schedulable yet: wait for the first waiting request to become ready
                wait_ns = min(s.ready_ns for s in self.waiting) - self.clock_ns() if self.waiting else None
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(wait_ns or 0, 1_000_000) / 1e9)
                except asyncio.TimeoutError:
                    pass
                step_end_ns = self.clock_ns()
                continue
            # steps follow each other on absolute time, so timer rounding does not add up over a long output
            step_end_ns = max(step_end_ns, self.clock_ns() - 1_000_000) + int(step_s * 1e9)
            delay_s = (step_end_ns - self.clock_ns()) / 1e9
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            self._finish_step(emit)

    def _plan_step(self) -> tuple[float | None, list[Sequence]]:
        spec, stats = self.spec, self.stats
        now = self.clock_ns()
        self._drop_disconnected()
        # admit in arrival order while there is a seat and KV room for the whole context
        while (self.waiting and len(self.running) < spec.max_num_seqs and self.waiting[0].ready_ns <= now
               and stats.kv_used_tokens + self.waiting[0].context_tokens + 1 <= spec.kv_capacity_tokens):
            seq = self.waiting.popleft()
            seq.admitted = True
            seq.prefill_left = seq.context_tokens
            stats.kv_used_tokens += seq.context_tokens
            self.running.append(seq)
        decoding = [s for s in self.running if s.prefill_left == 0]
        # the next step adds one token per decoding sequence: preempt the newest until that fits
        while decoding and stats.kv_used_tokens + len(decoding) > spec.kv_capacity_tokens and len(self.running) > 1:
            victim = self.running.pop()
            stats.kv_used_tokens -= victim.context_tokens  # its whole context was counted at admission
            victim.prefill_left = 0
            victim.admitted = False
            stats.preemptions += 1
            self.waiting.appendleft(victim)
            decoding = [s for s in self.running if s.prefill_left == 0]
        budget = spec.max_batched_tokens - len(decoding)
        prefill_tokens = 0
        prompt_len = 0
        finishing: list[Sequence] = []
        for s in self.running:
            if s.prefill_left == 0 or budget <= 0:
                continue
            take = min(s.prefill_left, budget)
            s.prefill_left -= take
            budget -= take
            prefill_tokens += take
            prompt_len = max(prompt_len, s.context_tokens)
            if s.prefill_left == 0:
                finishing.append(s)
        stats.running, stats.waiting = len(self.running), len(self.waiting)
        if not decoding and not prefill_tokens:
            return None, []
        mean_ctx = (sum(s.context_tokens for s in decoding) / len(decoding)) if decoding else float(prompt_len)
        step = spec.decode_step_s(max(len(decoding), 1), mean_ctx)
        if prefill_tokens:
            step += spec.prefill_compute_s(float(prefill_tokens), prompt_len)
        return step, decoding + finishing

    def _finish_step(self, emit: list[Sequence]) -> None:
        self.stats.steps += 1
        for seq in emit:
            if seq not in self.running:
                continue  # preempted meanwhile
            one = [True]

            def take_one(_stream: Stream) -> bool:
                if one[0]:
                    one[0] = False
                    return True
                return False

            more = write_events(seq.stream, take_one, self._on_tokens)
            seq.generated += 1
            seq.context_tokens += 1
            self.stats.kv_used_tokens += 1
            if not more:
                self._release(seq)
        self.stats.running, self.stats.waiting = len(self.running), len(self.waiting)

    def _release(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
            self.stats.kv_used_tokens -= seq.context_tokens

    def _drop_disconnected(self) -> None:
        for seq in [s for s in self.running if s.stream.done.done()]:
            self._release(seq)
        if any(s.stream.done.done() for s in self.waiting):
            self.waiting = deque(s for s in self.waiting if not s.stream.done.done())


@dataclass
class NullTransport:
    """Where a non-streaming request's tokens go while the engine generates them: nowhere."""

    closed: bool = False
    written: list = field(default_factory=list)

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True
