"""A level's steady state: the window in which the load was what the level asked for, and the rates inside it.

The whole-level rates (``summary.py``) divide by ``D``, first measured send to last measured end. That span holds
the level's edges: a closed loop of ``c`` workers ends with its last requests draining, fewer than ``c`` in flight
(at ``c = 100`` with 200 requests the slowest ones finish nearly alone); an open loop's requests still finish after
the last arrival. The server was not loaded as asked in those edges, so the whole-level rate understates what it
sustains at that load. The steady window leaves them out.

In flight at time ``t``: ``n(t)`` = records of the level, warm-up included (warm-up requests occupy the server as
much as any), with ``send_ns <= t < end_ns``; a record without an end counts nowhere.

The window ``[t0, t1)`` (monotonic ns, the records' clock):

- ``floor`` = the later of the first measured send and the last warm-up request's end. The window never starts
  before it: inside the window every request in flight is measured, so the tokens counted are all the server made.
- Closed loop (``concurrency = c`` and no ``request_rate``): ``t0`` = the first instant at or after ``floor`` with
  ``n(t) >= c``; ``t1`` = the last instant with ``n(t) >= c``, i.e. the moment ``n`` falls below ``c`` for good
  (the first end after the level's last send that kept all ``c`` busy). The short dips between a request's end and
  its worker's next send stay inside. Fewer requests than ``c`` means ``n`` never reaches ``c``: no window.
- Open loop (``request_rate`` set, with or without an in-flight cap): ``t0 = floor``, ``t1`` = the last measured
  send: the arrival window. Requests still finishing after the last arrival are drain. Its start still holds the
  fill-up (about one E2E latency until ``n`` settles), unless warm-up requests filled the server before ``floor``.
  With ``--request-rate inf`` every send falls at one instant: no window.
- Neither (a level of unknown kind): no window.

Inside the window, ``W = (t1 - t0) / 1e9`` seconds; only successful measured requests count toward the rates (as
the whole-level ones), failed ones still occupy ``n(t)``:

- ``output_tokens_per_s`` = tokens arriving in ``[t0, t1)`` ``/ W``. A streaming request's tokens count at the
  arrival of the event that carried them (``metrics.event_token_counts``). A non-streaming request (or a stream
  without text events) has no timing but its end; its ``N`` tokens are spread evenly over ``[send, end]``, so it
  counts ``N x overlap / (end - send)``. (Counting them all at the end would make the rate jump with where the window
  edges fall among a closed loop's rounds, whose requests end together.)
- ``requests_per_s`` = sum over successful requests of ``overlap([send, end], window) / (end - send)`` ``/ W``: each
  request counts by the share of its life inside the window (a request with ``end == send`` counts 1 when it lies
  in the window). Counting whole completions instead would, for a closed loop in lock-step rounds, count one round
  fewer than the window holds.
- ``in_flight_mean`` = ``integral of n(t) over the window / W`` = sum over all records of ``overlap / W``: the
  time-weighted mean number in flight; ``~ c`` for a closed loop (a sanity figure), Little's ``L`` for an open one.

A window counts only when it is at least ``MIN_WINDOW_S`` long and holds at least ``MIN_WINDOW_EVENTS``
observations of successful measured requests: text-bearing stream events arriving inside it, plus one per
non-streaming request overlapping it. With fewer, one token more or less moves the rate by over 10%; under a
second, timer and scheduling granularity do. Otherwise every figure is None (not 0), as it is when no measured
request succeeded.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from .metrics import derive, event_token_counts
from .records import RequestRecord

NS_PER_S = 1e9
MIN_WINDOW_S = 1.0
MIN_WINDOW_EVENTS = 10


@dataclass(frozen=True)
class Steady:
    window_s: float | None = None
    output_tokens_per_s: float | None = None
    requests_per_s: float | None = None
    in_flight_mean: float | None = None


def in_flight_steps(records: Iterable[RequestRecord]) -> list[tuple[int, int]]:
    """``n(t)`` as steps: ``(t_ns, n from t_ns on)``, one per distinct time where a request starts or ends."""
    delta: Counter[int] = Counter()
    for r in records:
        if r.end_ns is None:
            continue
        delta[r.send_ns] += 1
        delta[r.end_ns] -= 1
    steps, n = [], 0
    for t in sorted(delta):
        n += delta[t]
        steps.append((t, n))
    return steps


def steady_window_ns(records: Iterable[RequestRecord], *, concurrency: int | None,
                     request_rate: float | None) -> tuple[int, int] | None:
    """The steady window ``(t0_ns, t1_ns)`` of one level's records (module docstring), or None."""
    records = list(records)
    measured = [r for r in records if not r.warmup]
    if not measured:
        return None
    floor = max([min(r.send_ns for r in measured)]
                + [r.end_ns for r in records if r.warmup and r.end_ns is not None])
    if request_rate is not None:
        t0, t1 = floor, max(r.send_ns for r in measured)
    elif concurrency:
        t0 = t1 = None
        steps = in_flight_steps(records)
        for (t, n), (t_next, _) in pairwise(steps):
            if n >= concurrency and t_next > floor:
                t0 = max(t, floor) if t0 is None else t0
                t1 = t_next
        if t0 is None or t1 is None:
            return None
    else:
        return None
    return (t0, t1) if t1 > t0 else None


def _share(r: RequestRecord, t0: int, t1: int) -> float:
    """The part of ``[send, end]`` inside ``[t0, t1)``, as a fraction of the request's duration."""
    if r.end_ns is None:
        return 0.0
    if r.end_ns == r.send_ns:
        return 1.0 if t0 <= r.send_ns < t1 else 0.0
    overlap = min(r.end_ns, t1) - max(r.send_ns, t0)
    return max(overlap, 0) / (r.end_ns - r.send_ns)


def window_rates(records: Iterable[RequestRecord], t0_ns: int, t1_ns: int) -> tuple[Steady, int]:
    """The figures inside ``[t0_ns, t1_ns)`` with no minimum applied, and the number of observations inside.

    Tokens and requests come from successful measured records; the in-flight mean from every record."""
    records = list(records)
    window_s = (t1_ns - t0_ns) / NS_PER_S
    tokens = requests = in_flight_s = 0.0
    events = 0
    any_ok = False
    for r in records:
        if r.end_ns is not None:
            in_flight_s += max(min(r.end_ns, t1_ns) - max(r.send_ns, t0_ns), 0) / NS_PER_S
        if r.warmup or r.error_class is not None:
            continue
        any_ok = True
        share = _share(r, t0_ns, t1_ns)
        requests += share
        n_tokens = derive(r).output_tokens
        text_idx = [i for i, k in enumerate(r.event_kinds) if k in "ar"]
        if r.stream and text_idx:
            counts, _ = event_token_counts(r, n_tokens)
            for i, k in zip(text_idx, counts):
                if t0_ns <= r.send_ns + r.event_offsets_ns[i] < t1_ns:
                    tokens += k
                    events += 1
        else:
            tokens += (n_tokens or 0) * share
            if share > 0:
                events += 1  # one observation: the request's one timing is its end
    if not any_ok or window_s <= 0:
        return Steady(), events
    return Steady(window_s=window_s, output_tokens_per_s=tokens / window_s, requests_per_s=requests / window_s,
                  in_flight_mean=in_flight_s / window_s), events


def steady_state(records: Iterable[RequestRecord], *, concurrency: int | None,
                 request_rate: float | None) -> Steady:
    """The level's steady window and the rates inside it; all None when there is no usable window."""
    records = list(records)
    window = steady_window_ns(records, concurrency=concurrency, request_rate=request_rate)
    if window is None or (window[1] - window[0]) / NS_PER_S < MIN_WINDOW_S:
        return Steady()
    steady, events = window_rates(records, *window)
    return steady if events >= MIN_WINDOW_EVENTS else Steady()
