"""One timer for every open stream: wake at the earliest due event, write every event that is due, sleep again.

A task per stream sleeping between tokens costs a timer, a task switch and aiohttp's writer per token; at
hundreds of streams that makes the simulator itself the slowest part of a client benchmark. Here a due event costs
one formatted chunk and one ``transport.write``. Events due within ``BATCH_NS`` of each other go out in the same
turn (each still timestamped at its own write). A tick that has been writing for ``TICK_BUDGET_NS`` leaves the
streams still due to a timer of 0 s, so the event loop reads its sockets in between: when many streams end at once
(each end records its truth), requests arriving meanwhile are not left unread for the whole of it.

HTTP framing: the response headers were sent by aiohttp (``prepare``) or by the fast path (``fastpath.py``); data
chunks are framed here (``<hex length>\\r\\n<data>\\r\\n``) and whoever sent the headers writes the final
``0\\r\\n\\r\\n`` once ``done`` resolves.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Callable, Sequence

from .truth import TruthRecord

BATCH_NS = 100_000  # 0.1 ms
TICK_BUDGET_NS = 1_000_000  # a tick writes for about this long, then lets the loop read its sockets before going on


@dataclass(eq=False)
class Stream:
    fmt: Any
    events: Sequence[tuple[str, str, int]]  # (kind, text, tokens) per event
    truth: TruthRecord
    transport: asyncio.Transport
    step_ns: Callable[[], int]  # time from one event to the next, asked at each event
    finish_reason: str
    due_ns: int
    fault_kind: str | None = None
    fault_at_tokens: int | None = None
    start: bytes = b""  # written with the first token (the start events of a format that sends them late)
    on_end: Callable[[Stream], None] | None = None  # called the moment the stream ends, before ``done``'s callbacks
    index: int = 0
    sent_tokens: int = 0
    outcome: str = "ok"  # ok | cut | malformed | stream_error | disconnected
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Emitter:
    def __init__(self, on_tokens: Callable[[int], None] | None = None):
        self._heap: list[tuple[int, int, Stream]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0
        self._on_tokens = on_tokens

    def add(self, stream: Stream) -> None:
        heapq.heappush(self._heap, (stream.due_ns, next(self._seq), stream))
        self._arm()

    def _arm(self) -> None:
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None:
            if self._timer_due <= due:
                return
            self._timer.cancel()
        # event-loop timers tick in whole milliseconds (uvloop rounds, so a short timer can fire early): round the
        # delay up, so a wake-up is never early (and so never a busy loop), at most 1 ms late
        delay_s = max(0.0, math.ceil((due - perf_counter_ns()) / 1e6) / 1e3)
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        heap = self._heap
        now = perf_counter_ns()
        horizon = now + BATCH_NS
        give_way = now + TICK_BUDGET_NS
        while heap and heap[0][0] <= horizon:
            _, _, stream = heapq.heappop(heap)
            t = perf_counter_ns()
            if self._emit(stream, t):
                heapq.heappush(heap, (stream.due_ns, next(self._seq), stream))
            if t > give_way:
                break  # the rest in the next turn, after the loop has read its sockets
        self._arm()

    def _emit(self, s: Stream, now: int) -> bool:
        """Write every event of ``s`` that is due; True while the stream has more to send."""
        horizon = now + BATCH_NS

        def due(stream: Stream) -> bool:
            if stream.due_ns > horizon:
                return False
            stream.due_ns += stream.step_ns()
            return True

        return write_events(s, due, self._on_tokens)


def write_events(s: Stream, take: Callable[[Stream], bool], on_tokens: Callable[[int], None] | None) -> bool:
    """Write the next events of ``s`` in one socket write, while ``take(s)`` says so; then the stream's end, or its
    injected fault, when it is reached. Returns True while the stream has more to send."""
    if s.transport is None or s.transport.is_closing():
        disconnected(s)
        return False
    parts = [s.start] if s.start else []
    s.start = b""
    first = s.index
    events = s.events
    fault_at = s.fault_at_tokens
    while s.index < len(events) and take(s):
        kind, text, n = events[s.index]
        s.sent_tokens += n
        parts.append(s.fmt.token(text, kind, s.sent_tokens))
        s.index += 1
        if fault_at is not None and s.sent_tokens >= fault_at:
            break
    emitted = s.index - first
    faulted = fault_at is not None and s.sent_tokens >= fault_at
    out = frame(b"".join(parts)) if emitted else b""
    finished = not faulted and s.index >= len(events)
    if finished:  # the end goes out in the same write as the last tokens
        out += frame(s.fmt.end(s.finish_reason, s.sent_tokens))
    if out:
        emit = perf_counter_ns()
        s.transport.write(out)
        if emitted:
            s.truth.emit_ns.extend([emit] * emitted)
            counts = [events[j][2] for j in range(first, s.index)]
            s.truth.tokens.extend(counts)
            if on_tokens is not None:
                on_tokens(sum(counts))
    if faulted:
        _fault(s)
        return False
    if finished:
        s.truth.output_tokens = s.sent_tokens
        _resolve(s)
        return False
    return True


def disconnected(s: Stream) -> None:
    """End ``s`` because its client is gone: what was sent is what it got."""
    s.outcome = "disconnected"
    s.truth.output_tokens = s.sent_tokens
    _resolve(s)


def _fault(s: Stream) -> None:
    s.truth.output_tokens = s.sent_tokens
    s.outcome = s.fault_kind or "ok"
    if s.fault_kind == "cut":
        # close without the chunked terminator: the client sees the stream end early
        s.transport.close()
    elif s.fault_kind == "malformed":
        s.transport.write(frame(b'data: {"id": "broken", "choices": [{"delta": {"content": "x"\n\n'))
    elif s.fault_kind == "stream_error":
        s.transport.write(frame(s.fmt.stream_error("simulated failure during generation")))
    _resolve(s)


def _resolve(s: Stream) -> None:
    if not s.done.done():
        s.done.set_result(s.outcome)
        if s.on_end is not None:
            s.on_end(s)
