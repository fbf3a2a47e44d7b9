"""The one request loop: send a request, timestamp every read of the response, then read it into a record.

The hot path does nothing but ``perf_counter_ns()`` and a list append per read; SSE splitting, JSON decoding and
bookkeeping happen after the response has ended (``finish_record``), so they cannot delay the timestamps of the
request they belong to.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any

import aiohttp
import orjson
from aiohttp.payload import BytesPayload

from . import errors
from .apis import Api, ParsedResponse
from .records import RequestRecord
from .sse import Events, split_events

#: the largest error body kept in a record (a provider's HTML error page can be megabytes)
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Target:
    """Where and how to send: the resolved endpoint URL and the fixed parts of every request."""

    base_url: str  # normalised API base, e.g. http://127.0.0.1:8000/v1
    api: Api
    model: str
    stream: bool = True
    api_key: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    extra_body: dict[str, Any] = field(default_factory=dict)
    continuous_usage: bool = False
    proxy: str | None = None  # resolved once from the environment (HTTPS_PROXY...), not per request

    @property
    def url(self) -> str:
        return self.base_url + self.api.path

    def headers(self) -> dict[str, str]:
        headers = self.api.headers(self.api_key)
        for key, value in self.extra_headers:
            headers[key] = value
        return headers

    def body_bytes(self, prompt) -> bytes:
        body = self.api.build_body(self.model, prompt, stream=self.stream, continuous_usage=self.continuous_usage)
        body.update(self.extra_body)
        return orjson.dumps(body)


class TimedBody(BytesPayload):
    """A request body that notes when it was handed to the socket.

    aiohttp buffers the request headers and writes them together with the body; on Python < 3.12 it writes the
    body from a task that only runs on the event loop's next turn. The moment the body is written is when the
    server can start working, so latencies are measured from there (``written_ns``), and the gap from
    ``send_ns`` is reported as the client's own send delay.
    """

    written_ns: int | None = None

    async def write(self, writer) -> None:
        await super().write(writer)
        self.written_ns = perf_counter_ns()

    async def write_with_length(self, writer, content_length) -> None:
        await super().write_with_length(writer, content_length)
        self.written_ns = perf_counter_ns()


@dataclass
class RawResponse:
    """What the hot path captured: the timestamped reads of a stream, or a whole body, or the exception."""

    reads_ns: list[int] = field(default_factory=list)
    reads: list[bytes] = field(default_factory=list)
    body: bytes | None = None
    exc: BaseException | None = None


async def send(session: aiohttp.ClientSession, target: Target, body: bytes, headers: dict[str, str],
               record: RequestRecord) -> RawResponse:
    """Send one request; fill ``record``'s times and status; return the raw response for :func:`finish`.

    Never raises except on cancellation (then ``record`` is finished as ``cancelled`` with what had arrived).
    """
    raw = RawResponse()
    reads_ns = raw.reads_ns
    reads = raw.reads
    payload = TimedBody(body, content_type="application/json")
    record.send_ns = perf_counter_ns()
    try:
        async with session.post(target.url, data=payload, headers=headers, proxy=target.proxy) as resp:
            record.written_ns = payload.written_ns
            record.headers_ns = perf_counter_ns()
            record.status = resp.status
            if resp.status != 200:
                text = await resp.text(errors="replace")
                record.end_ns = perf_counter_ns()
                record.error_class = errors.classify_status(resp.status, text)
                record.error = f"HTTP {resp.status}: {' '.join(text.split())[:MAX_ERROR_CHARS]}"
                if resp.status == 429:
                    record.retry_after_s = errors.parse_retry_after(resp.headers.get("Retry-After"))
                return raw
            if target.stream and resp.content_type == "text/event-stream":
                content = resp.content
                try:
                    while True:
                        chunk = await content.readany()
                        if not chunk:
                            break
                        reads_ns.append(perf_counter_ns())
                        reads.append(chunk)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - a cut stream: keep what arrived before the cut
                    raw.exc = e
            else:
                raw.body = await resp.read()
    except asyncio.CancelledError:
        record.end_ns = perf_counter_ns()
        record.written_ns = payload.written_ns
        finish(record, raw, target.api)
        record.error_class = errors.CANCELLED
        record.error = errors.sentence(errors.CANCELLED)
        raise
    except Exception as e:  # noqa: BLE001 - every failure becomes a value in the record
        raw.exc = e
        record.written_ns = payload.written_ns
    record.end_ns = perf_counter_ns()
    return raw


def finish(record: RequestRecord, raw: RawResponse, api: Api) -> RequestRecord:
    """Read the raw response into ``record`` (events, usage, error class). Runs off the hot path."""
    if record.error_class is not None:  # decided from the status code already
        return record
    if raw.body is not None:
        _fill_body(record, raw.body, api)
    elif raw.reads_ns or raw.exc is None:
        _fill_stream(record, raw.reads_ns, raw.reads, api)
    exc = raw.exc
    if exc is not None and (record.error_class is None or record.error_class == errors.STREAM_CUT):
        cls = errors.classify_exception(exc)
        if raw.reads_ns and cls in (errors.CONNECTION_RESET, errors.STREAM_CUT):
            cls = errors.STREAM_CUT  # the connection died mid-stream: the stream was cut
        record.error_class = cls
        record.error = f"{type(exc).__name__}: {str(exc)[:MAX_ERROR_CHARS]}".rstrip(": ")
    return record


async def send_and_finish(session: aiohttp.ClientSession, target: Target, body: bytes, headers: dict[str, str],
                          record: RequestRecord) -> RequestRecord:
    return finish(record, await send(session, target, body, headers, record), target.api)


def _apply(record: RequestRecord, parsed: ParsedResponse) -> None:
    record.event_kinds = "".join(parsed.kinds)
    record.event_chars = parsed.chars
    record.event_tokens = parsed.tokens
    record.prompt_tokens = parsed.prompt_tokens
    record.output_tokens = parsed.output_tokens
    record.reasoning_tokens = parsed.reasoning_tokens
    record.finish_reason = parsed.finish_reason
    record.response_id = parsed.response_id
    record.stream_complete = parsed.complete
    if parsed.error is not None:
        record.error_class = errors.STREAM_ERROR
        record.error = parsed.error[:MAX_ERROR_CHARS]
    elif parsed.malformed is not None:
        record.error_class = errors.MALFORMED
        record.error = parsed.malformed[:MAX_ERROR_CHARS]
    elif not parsed.complete:
        record.error_class = errors.STREAM_CUT
        record.error = errors.sentence(errors.STREAM_CUT)


def _fill_stream(record: RequestRecord, reads_ns: list[int], reads: list[bytes], api: Api) -> None:
    events = split_events(reads_ns, reads) if reads else Events()
    parsed = api.parse_stream(events)
    send_ns = record.send_ns
    record.event_offsets_ns = [t - send_ns for t in events.arrival_ns]
    # the client's own count: one token per text-bearing event (exact for servers that send a chunk per token)
    record.output_tokens_client = sum(1 for k in parsed.kinds if k in "ar")
    _apply(record, parsed)


def _fill_body(record: RequestRecord, raw: bytes, api: Api) -> None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        record.error_class = errors.MALFORMED
        record.error = f"response body is not JSON: {raw[:120]!r}"
        return
    parsed = api.parse_body(obj)
    record.stream = False  # the server answered with one JSON body (asked or not): no per-token timing exists
    # non-streaming: the only event is the whole body, arriving when the response ended
    record.event_offsets_ns = [record.end_ns - record.send_ns] * len(parsed.kinds)
    # ~4 characters per token is the usual rule of thumb for English BPE vocabularies; labelled as an estimate
    record.output_tokens_client = round(sum(parsed.chars) / 4) if parsed.chars else 0
    _apply(record, parsed)
