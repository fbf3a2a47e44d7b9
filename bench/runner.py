"""Drive load levels against a target and append a record for every request as it completes.

A level is either closed-loop (``concurrency`` workers, each sending its next request as soon as its previous one
ends) or open-loop (``request_rate``: sends at precomputed absolute times, optionally capped at ``concurrency`` in
flight). A level sends ``warmup + num_requests`` requests, or keeps sending until ``duration_s`` has passed.

The client watches itself: an event-loop lag probe wakes every ``LAG_PROBE_S`` and records how late it woke, and
every request keeps its scheduled and actual send time. A level whose client lagged is flagged (``client.lagged``).
"""
from __future__ import annotations

import asyncio
import gc
import itertools
import resource
from collections import deque
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Callable, Protocol

import numpy as np

from . import errors
from .apis import PromptSpec
from .client import Target, finish, send
from .http1 import Pool, Response
from .records import RecordWriter, RequestRecord
from .schedule import arrival_offsets_s
from .stats import describe
from .workload import salt_for_level

LAG_PROBE_S = 0.005
#: a level is flagged when the client's p99 event-loop lag or p99 send delay exceeds this (milliseconds)
LAG_FLAG_MS = 5.0


@dataclass(frozen=True)
class LoadLevel:
    label: str
    concurrency: int | None  # closed-loop workers, or the in-flight cap of an open-loop level (None = no cap)
    request_rate: float | None = None  # requests/s (inf = all at once); None = closed loop
    num_requests: int | None = None  # measured requests of this level (unused when the plan has a duration)
    ramp_up_s: float = 0.0  # closed loop: worker i sends its first request at i / concurrency x this


@dataclass(frozen=True)
class LoadPlan:
    levels: tuple[LoadLevel, ...]
    prompts: tuple[PromptSpec, ...]
    duration_s: float | None = None
    warmup: int = 0
    seed: int = 0
    burstiness: float = 1.0
    timeout_s: float = 600.0
    prefix_len: int = 0
    busy_poll: bool = False  # keep the client's core awake during a level (see BusyPoll)


@dataclass
class LevelResult:
    level: LoadLevel
    records: list[RequestRecord]
    start_ns: int
    end_ns: int
    loop_lag_ms: list[float]
    client: dict


class Observer(Protocol):
    def level_started(self, level: LoadLevel, total: int | None) -> None: ...
    def request_done(self, record: RequestRecord) -> None: ...
    def level_finished(self, result: LevelResult) -> None: ...
    def note(self, message: str) -> None: ...


class NullObserver:
    def level_started(self, level, total): pass
    def request_done(self, record): pass
    def level_finished(self, result): pass
    def note(self, message): pass


class RunAborted(Exception):
    """The run stopped because every request so far failed for a reason that will not go away (auth, balance...)."""

    def __init__(self, record: RequestRecord):
        self.record = record
        super().__init__(f"{errors.sentence(record.error_class)}: {record.error}")


@dataclass
class RunState:
    """Shared, read-mostly state; the telemetry thread reads ``phase`` and ``in_flight``."""

    phase: str = ""
    in_flight: int = 0
    last_lag_ms: float = 0.0
    any_success: bool = False
    stopping: bool = False  # first Ctrl-C: send nothing new, let in-flight requests finish
    abort: RequestRecord | None = None
    tasks: set = field(default_factory=set)


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-files limit to at least ``needed`` (bounded by the hard limit); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    return soft


def make_session(max_concurrency: int, timeout_s: float) -> Pool:
    """One long-lived connection pool for the whole run: no connection limit (a connection per request in flight,
    kept alive between requests), the open-files limit raised to fit them."""
    raise_fd_limit(max_concurrency * 2 + 256)
    return Pool(timeout_s=timeout_s, connect_timeout_s=min(30.0, timeout_s))


class Runner:
    def __init__(self, target: Target, plan: LoadPlan, writer: RecordWriter | None,
                 observer: Observer | None = None, run_id: str = "r"):
        self.target = target
        self.plan = plan
        self.writer = writer
        self.observer = observer or NullObserver()
        self.state = RunState()
        self.run_id = run_id
        self._seq = itertools.count()
        self._lags: list[float] = []
        self._headers = target.headers()
        self._stop_event = asyncio.Event()
        self.results: list[LevelResult] = []

    async def _sleep_unless_stopped(self, delay_s: float) -> None:
        try:
            await asyncio.wait_for(self._stop_event.wait(), timeout=delay_s)
        except asyncio.TimeoutError:
            pass

    @staticmethod
    async def _wait_any(events: tuple[asyncio.Event, ...], timeout_s: float) -> None:
        """Until one of ``events`` is set or ``timeout_s`` has passed."""
        if timeout_s <= 0 or any(e.is_set() for e in events):
            return
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def probe(self) -> dict:
        """Called from the telemetry thread: a snapshot of what the client is doing."""
        return {"phase": self.state.phase, "in_flight": self.state.in_flight, "loop_lag_ms": self.state.last_lag_ms}

    def request_stop(self) -> None:
        self.state.stopping = True
        self._stop_event.set()

    def cancel_in_flight(self) -> None:
        self.request_stop()
        for task in list(self.state.tasks):
            task.cancel()

    async def run(self, session: Pool,
                  next_level: Callable[[LevelResult], LoadLevel | None] | None = None) -> list[LevelResult]:
        """Run every level in turn; ``self.results`` keeps the finished ones if this raises :class:`RunAborted`.
        With ``next_level``, the plan's levels are only the first ones: after the last of them, each finished level
        is handed to ``next_level``, which returns the level to run next, or None to end (``bench capacity``)."""
        levels = list(self.plan.levels)
        index = 0
        while index < len(levels):
            if self.state.stopping:
                break
            result = await self.run_level(session, index, levels[index])
            self.results.append(result)
            if self.state.abort is not None:
                raise RunAborted(self.state.abort)
            index += 1
            if next_level is not None and index == len(levels) and not self.state.stopping:
                following = next_level(result)
                if following is not None:
                    levels.append(following)
        return self.results

    async def _lag_probe(self) -> None:
        interval_ns = int(LAG_PROBE_S * 1e9)
        while True:
            before = perf_counter_ns()
            await asyncio.sleep(LAG_PROBE_S)
            lag_ms = max(0.0, (perf_counter_ns() - before - interval_ns) / 1e6)
            self.state.last_lag_ms = lag_ms
            self._lags.append(lag_ms)

    async def run_level(self, session: Pool, index: int, level: LoadLevel) -> LevelResult:
        plan = self.plan
        prompts = [salt_for_level(p, index, plan.prefix_len) for p in plan.prompts]
        bodies = [self.target.body_bytes(p) for p in prompts]  # built before the clock starts
        total = None if plan.duration_s is not None else plan.warmup + (level.num_requests or 0)
        records: list[RequestRecord] = []
        self._lags = []
        self.state.phase = level.label
        self.observer.level_started(level, total)
        # objects alive now (prompts, bodies, earlier records) never become garbage during the level: moving them out
        # of the collector's reach keeps its full collections short, so they do not stall timestamps
        gc.collect()
        gc.freeze()
        lag_task = asyncio.create_task(self._lag_probe())
        spinner = BusyPoll() if plan.busy_poll else None
        self._finisher = Finisher(self)
        start_ns = perf_counter_ns()
        deadline_ns = start_ns + int(plan.duration_s * 1e9) if plan.duration_s is not None else None
        try:
            if level.request_rate is None:
                await self._closed_loop(session, index, level, prompts, bodies, records, total, deadline_ns)
            else:
                await self._open_loop(session, index, level, prompts, bodies, records, total, deadline_ns, start_ns)
        finally:
            end_ns = perf_counter_ns()
            if spinner is not None:
                spinner.stop()
            await self._finisher.close()
            lag_task.cancel()
        result = LevelResult(level, records, start_ns, end_ns, list(self._lags), self._client_health(records))
        self.observer.level_finished(result)
        return result

    def _client_health(self, records: list[RequestRecord]) -> dict:
        lag = describe(self._lags)
        # from when a request was due (a free worker, or its scheduled arrival) to when its bytes left
        send_delay = describe(((r.written_ns or r.send_ns) - r.scheduled_ns) / 1e6 for r in records
                              if r.scheduled_ns is not None and not r.warmup)
        reasons = []
        if lag and lag["p99"] > LAG_FLAG_MS:
            reasons.append(f"event-loop lag p99 {lag['p99']:.1f} ms > {LAG_FLAG_MS:g} ms")
        if send_delay and send_delay["p99"] > LAG_FLAG_MS:
            reasons.append(f"send delay p99 {send_delay['p99']:.1f} ms > {LAG_FLAG_MS:g} ms")
        return {"loop_lag_ms": lag, "send_delay_ms": send_delay, "lagged": bool(reasons),
                "lag_reason": "; ".join(reasons) or None}

    def _new_record(self, index: int, level: LoadLevel, prompt: PromptSpec, n: int,
                    scheduled_ns: int | None) -> RequestRecord:
        return RequestRecord(
            request_id=f"{self.run_id}-{next(self._seq)}", phase=level.label, level_index=index,
            prompt_index=prompt.index, warmup=n < self.plan.warmup, api=self.target.api.name,
            stream=self.target.stream, input_len_requested=prompt.input_len, output_len_requested=prompt.output_len,
            scheduled_ns=scheduled_ns, send_ns=0)

    async def _one(self, session, record: RequestRecord, body: bytes, records: list[RequestRecord]) -> None:
        headers = dict(self._headers)
        headers["X-Request-Id"] = record.request_id
        self.state.in_flight += 1
        try:
            raw = await send(session, self.target, body, headers, record)
        except asyncio.CancelledError:
            self._complete(record, records)  # finished as 'cancelled' with what had arrived
            raise
        finally:
            self.state.in_flight -= 1
        self._abort_if_fatal(record)  # the status code decided it: stop before any worker sends its next request
        self._finisher.put(record, raw, records)

    def _abort_if_fatal(self, record: RequestRecord) -> None:
        """Stop the run when a request failed for a reason that will not go away and nothing has succeeded yet."""
        if record.error_class in errors.FATAL and not self.state.any_success and self.state.abort is None:
            self.state.abort = record
            self.cancel_in_flight()

    def _complete(self, record: RequestRecord, records: list[RequestRecord]) -> None:
        records.append(record)
        if self.writer is not None:
            self.writer.write(record)
        self.observer.request_done(record)
        if record.error_class is None:
            self.state.any_success = True
        else:
            self._abort_if_fatal(record)  # also classes only the response body could tell

    def _more(self, n: int, total: int | None, deadline_ns: int | None) -> bool:
        if self.state.stopping:
            return False
        if deadline_ns is not None:
            return perf_counter_ns() < deadline_ns or n < self.plan.warmup
        return n < (total or 0)

    async def _closed_loop(self, session, index, level, prompts, bodies, records, total, deadline_ns) -> None:
        counter = itertools.count()

        workers = level.concurrency or 1
        start_ns = perf_counter_ns()
        ramp_ns = int(level.ramp_up_s * 1e9)
        done = asyncio.Event()  # the level has nothing more to send: workers still waiting for their turn stop waiting

        async def worker(i: int) -> None:
            first_due = None
            if ramp_ns and i:  # users arrive one by one over the ramp, not all at once
                first_due = start_ns + ramp_ns * i // workers
                wake = first_due if deadline_ns is None else min(first_due, deadline_ns)
                await self._wait_any((done, self._stop_event), (wake - perf_counter_ns()) / 1e9)
            first = True
            while True:
                scheduled = perf_counter_ns()
                n = next(counter)
                if not self._more(n, total, deadline_ns):
                    done.set()
                    return
                k = n % len(prompts)
                # a worker's first request starts the level (all at once, or at its place in the ramp): it has no
                # schedule to keep or miss, or the ramp's
                due = scheduled if not first else first_due
                first = False
                await self._one(session, self._new_record(index, level, prompts[k], n, due), bodies[k], records)

        await self._gather([worker(i) for i in range(workers)])

    async def _open_loop(self, session, index, level, prompts, bodies, records, total, deadline_ns,
                         start_ns) -> None:
        rng = np.random.default_rng(self.plan.seed + index)
        if total is not None:
            n_planned = total
        else:  # duration mode: plan generously past the deadline; sending stops at the deadline
            n_planned = self.plan.warmup + int(level.request_rate * self.plan.duration_s * 1.5) + 100
        offsets = arrival_offsets_s(rng, n_planned, level.request_rate, self.plan.burstiness)
        cap = asyncio.Semaphore(level.concurrency) if level.concurrency else None
        pending: set[asyncio.Task] = set()

        async def capped(record, body):
            try:
                await self._one(session, record, body, records)
            finally:
                cap.release()

        for n, offset in enumerate(offsets):
            scheduled = start_ns + int(offset * 1e9)
            if not self._more(n, total, deadline_ns) or (deadline_ns is not None and scheduled >= deadline_ns
                                                         and n >= self.plan.warmup):
                break
            delay = (scheduled - perf_counter_ns()) / 1e9
            if delay > 0:
                await self._sleep_unless_stopped(delay)
            if cap is not None:
                await cap.acquire()
            if self.state.stopping:
                if cap is not None:
                    cap.release()
                break
            k = n % len(prompts)
            record = self._new_record(index, level, prompts[k], n, scheduled)
            coro = capped(record, bodies[k]) if cap is not None else self._one(session, record, bodies[k], records)
            task = asyncio.create_task(coro)
            pending.add(task)
            self.state.tasks.add(task)
            task.add_done_callback(pending.discard)
            task.add_done_callback(self.state.tasks.discard)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _gather(self, coros) -> None:
        tasks = [asyncio.create_task(c) for c in coros]
        self.state.tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.state.tasks.difference_update(tasks)


class BusyPoll:
    """Keeps the event loop from sleeping: a callback that schedules itself again each turn makes the loop poll its
    sockets with a zero timeout, so the client's core never goes idle.

    Why: a core that idles between bursts of tokens must be woken when bytes arrive. On bare metal that costs a few
    microseconds; in a virtual machine the host has to reschedule the halted vCPU, which can take milliseconds. On
    this project's 2-core VM, ``bench selftest --concurrency 100 --itl-ms 10`` four times each way: event delay p99
    0.7-1.5 ms and ITL error p99 0.12-0.85 ms without; 0.23-0.43 ms and 0.03-0.15 ms with. The price is one core at
    100 %, so it is off unless asked for (``--busy-poll``).
    """

    def __init__(self) -> None:
        self._on = True
        self._loop = asyncio.get_running_loop()
        self._loop.call_soon(self._spin)

    def _spin(self) -> None:
        if self._on:
            self._loop.call_soon(self._spin)

    def stop(self) -> None:
        self._on = False


class Finisher:
    """Reads finished responses into records off the hot path, one per event-loop turn.

    Parsing a response costs a few microseconds per event. Done inline, the parses of many requests ending together
    (common in closed loops) would delay the sends and reads of all the others; queued here, at most one parse runs
    between two turns of the loop, and a worker sends its next request at once.
    """

    def __init__(self, runner: Runner):
        self.runner = runner
        self.queue: deque[tuple[RequestRecord, Response, list[RequestRecord]]] = deque()
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._loop())

    def put(self, record: RequestRecord, raw: Response, records: list[RequestRecord]) -> None:
        self.queue.append((record, raw, records))
        self.wake.set()

    def _step(self) -> None:
        record, raw, records = self.queue.popleft()
        finish(record, raw, self.runner.target.api)
        self.runner._complete(record, records)

    async def _loop(self) -> None:
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            self._step()
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Finish everything queued, then stop."""
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        while self.queue:
            self._step()
