"""Per-request metrics, derived from a raw :class:`~bench.records.RequestRecord` in one place.

Definitions (times in milliseconds, from the client's monotonic clock; ``t_send`` is when the request's bytes were
handed to the socket (``written_ns``; ``send_ns``, just before the HTTP call, when that is unknown), ``t_i`` the
arrival of the i-th text-bearing stream event, ``N`` the output tokens):

- **TTFT** = ``t_1 - t_send``: the first event carrying any generated text, reasoning included.
- **TTFAT** (time to first answer token) = first event carrying answer text (not reasoning) ``- t_send``; equal to
  TTFT for non-reasoning models.
- **E2E** = ``t_C - t_send`` where ``t_C`` is the last text-bearing event (streaming), or the end of the body
  (non-streaming). Trailing usage chunks and ``[DONE]`` are not generation and are left out, so that
  ``E2E - TTFT == sum(ITL)`` holds exactly.
- **ITL**: an event carrying ``k`` tokens after the previous one by ``g`` contributes ``k`` gaps of ``g / k``. ``k`` is
  exact when the server reports usage per chunk; otherwise it is 1 per event, or, when the final usage says there
  were more tokens than events, the extra tokens are spread over events by their text length (``itl_estimated``).
- **TPOT** = ``(E2E - TTFT) / (N - 1)``; None when ``N < 2``.
- **Per-request output tokens/s** = ``N / E2E``; **decode tokens/s** = ``(N - 1) / (E2E - TTFT)`` = ``1000 / TPOT``.

``N`` is the server's ``usage`` when it sent one; otherwise the client's count, and ``tokens_estimated`` is True.
The requested ``max_tokens`` is never used as a measurement.
"""
from __future__ import annotations

from dataclasses import dataclass

from .records import RequestRecord

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class RequestMetrics:
    ok: bool
    error_class: str | None
    ttft_ms: float | None
    ttfat_ms: float | None
    e2e_ms: float | None
    tpot_ms: float | None
    itl_ms: tuple[float, ...]
    itl_estimated: bool
    output_tokens: int | None
    prompt_tokens: int | None
    tokens_estimated: bool
    per_request_output_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    send_ns: int
    end_ns: int | None


def _spread(extra: int, weights: list[int]) -> list[int]:
    """Split ``extra`` whole tokens over slots in proportion to ``weights`` (largest remainder; ties to the left)."""
    total = sum(weights)
    if extra <= 0 or not weights:
        return [0] * len(weights)
    if total <= 0:
        weights = [1] * len(weights)
        total = len(weights)
    exact = [extra * w / total for w in weights]
    base = [int(x) for x in exact]
    left = extra - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[:left]:
        base[i] += 1
    return base


def event_token_counts(record: RequestRecord, output_tokens: int | None) -> tuple[list[int], bool]:
    """Tokens carried by each text-bearing event, and whether that split is an estimate."""
    text_idx = [i for i, k in enumerate(record.event_kinds) if k in "ar"]
    if record.event_tokens is not None and len(record.event_tokens) == len(record.event_kinds):
        return [record.event_tokens[i] for i in text_idx], False
    counts = [1] * len(text_idx)
    if output_tokens is None or output_tokens == len(text_idx) or len(text_idx) < 2:
        return counts, output_tokens is not None and output_tokens != len(text_idx)
    if output_tokens > len(text_idx):
        extra = _spread(output_tokens - len(text_idx), [record.event_chars[i] for i in text_idx[1:]])
        counts = [1] + [1 + e for e in extra]
    return counts, True


def derive(record: RequestRecord) -> RequestMetrics:
    ok = record.error_class is None
    usage_tokens = record.output_tokens
    n_tokens = usage_tokens if usage_tokens is not None else record.output_tokens_client
    estimated = usage_tokens is None
    ttft = ttfat = e2e = tpot = None
    itl: list[float] = []
    itl_estimated = False
    if ok:
        origin = record.written_ns if record.written_ns is not None else record.send_ns
        shift = origin - record.send_ns  # event offsets are stored relative to send_ns
        offsets = [o - shift for o in record.event_offsets_ns]
        text_idx = [i for i, k in enumerate(record.event_kinds) if k in "ar"]
        if record.stream and text_idx:
            ttft = offsets[text_idx[0]] / NS_PER_MS
            answer = next((i for i in text_idx if record.event_kinds[i] == "a"), None)
            ttfat = offsets[answer] / NS_PER_MS if answer is not None else None
            e2e = offsets[text_idx[-1]] / NS_PER_MS
            counts, itl_estimated = event_token_counts(record, n_tokens)
            prev = offsets[text_idx[0]]
            for idx, k in zip(text_idx[1:], counts[1:]):
                if k <= 0:
                    continue  # text without a new token (detokenizer catching up): its gap joins the next one
                gap_ms = (offsets[idx] - prev) / NS_PER_MS / k
                itl.extend([gap_ms] * k)
                prev = offsets[idx]
            # gaps after the last counted event would break E2E - TTFT == sum(ITL): end E2E at the last counted one
            e2e = prev / NS_PER_MS
        elif record.end_ns is not None:
            e2e = (record.end_ns - origin) / NS_PER_MS
        if ttft is not None and e2e is not None and n_tokens is not None and n_tokens > 1:
            tpot = (e2e - ttft) / (n_tokens - 1)
    per_req = decode = None
    if ok and e2e and n_tokens is not None and e2e > 0:
        per_req = n_tokens / (e2e / 1000.0)
    if tpot:
        decode = 1000.0 / tpot
    return RequestMetrics(
        ok=ok, error_class=record.error_class, ttft_ms=ttft, ttfat_ms=ttfat, e2e_ms=e2e, tpot_ms=tpot,
        itl_ms=tuple(itl), itl_estimated=itl_estimated, output_tokens=n_tokens, prompt_tokens=record.prompt_tokens,
        tokens_estimated=estimated, per_request_output_tokens_per_s=per_req, decode_tokens_per_s=decode,
        send_ns=record.send_ns, end_ns=record.end_ns,
    )
