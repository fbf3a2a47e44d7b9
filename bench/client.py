"""The one request loop: send a request, timestamp every read of the response, then read it into a record.

The hot path is ``bench.http1``'s ``data_received``: a ``perf_counter_ns()``, the chunked framing stripped and a list
append per socket read; the requesting task sleeps until the response has ended. SSE splitting, JSON decoding and
bookkeeping happen afterwards (:func:`finish`, run by the runner's finisher one response per loop turn), so they
cannot delay the timestamps of any request.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any

import orjson

from . import errors
from .apis import Api, ParsedResponse
from .http1 import NoCloseNotify, Pool, ProtocolError, Response
from .records import RequestRecord
from .sse import Events, looks_like_sse, split_events

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


async def send(pool: Pool, target: Target, body: bytes, headers: dict[str, str], record: RequestRecord) -> Response:
    """Send one request; fill ``record``'s times and status; return the raw response for :func:`finish`.

    Latencies count from ``written_ns``, the moment the request's bytes were handed to the socket (when the server
    can start working); every read of the answer was stamped as it arrived (``bench.http1``). Never raises except
    on cancellation (then ``record`` is finished as ``cancelled`` with what had arrived).
    """
    raw = Response()
    record.send_ns = perf_counter_ns()
    try:
        await pool.request("POST", target.url, headers, body, raw, proxy=target.proxy)
    except asyncio.CancelledError:
        _times(record, raw)
        finish(record, raw, target.api)
        record.error_class = errors.CANCELLED
        record.error = errors.sentence(errors.CANCELLED)
        raise
    _times(record, raw)
    status = raw.status
    if status is not None and not 200 <= status < 300:  # decided by the status, even when the body was cut short
        text = _text(raw)
        record.error_class = errors.classify_status(status, text)
        record.error = f"HTTP {status}: {' '.join(text.split())[:MAX_ERROR_CHARS]}"
        if status == 429:
            record.retry_after_s = errors.parse_retry_after(raw.headers.get("retry-after"))
    return raw


def _times(record: RequestRecord, raw: Response) -> None:
    record.written_ns = raw.written_ns
    record.headers_ns = raw.headers_ns
    record.status = raw.status
    record.end_ns = raw.end_ns if raw.end_ns is not None else perf_counter_ns()


def _text(raw: Response) -> str:
    try:
        return raw.body.decode("utf-8", errors="replace")
    except ProtocolError:  # an undecodable compressed body
        return b"".join(raw.reads).decode("utf-8", errors="replace")


def finish(record: RequestRecord, raw: Response, api: Api) -> RequestRecord:
    """Read the raw response into ``record`` (events, usage, error class). Runs off the hot path."""
    if record.error_class is not None:  # decided from the status code already
        return record
    exc = raw.exc
    if raw.status is None:
        pass  # nothing came back: the exception below says why
    elif record.stream and (stream := _sse_reads(raw)) is not None:
        reads_ns, reads, undecodable = stream
        _fill_stream(record, reads_ns, reads, api)
        if undecodable is not None and record.error_class in (None, errors.STREAM_CUT):
            record.error_class = errors.MALFORMED  # the events before the bad bytes are kept
            record.error = undecodable[:MAX_ERROR_CHARS]
    elif raw.complete or exc is None:
        try:
            body = raw.body
        except ProtocolError as e:  # a compressed body that does not decompress
            record.error_class = errors.MALFORMED
            record.error = str(e)[:MAX_ERROR_CHARS]
            return record
        _fill_body(record, body, api)
    if isinstance(exc, NoCloseNotify) and record.stream_complete and record.error_class is None:
        exc = None  # the stream's own end marker shows nothing was cut (RFC 9112 §9.8: complete when verifiable)
    if exc is not None and (record.error_class is None or record.error_class == errors.STREAM_CUT):
        cls = errors.classify_exception(exc)
        if raw.reads_ns and cls in (errors.CONNECTION_RESET, errors.STREAM_CUT):
            cls = errors.STREAM_CUT  # the connection died mid-stream: the stream was cut
        record.error_class = cls
        record.error = f"{type(exc).__name__}: {str(exc)[:MAX_ERROR_CHARS]}".rstrip(": ")
    return record


async def send_and_finish(pool: Pool, target: Target, body: bytes, headers: dict[str, str],
                          record: RequestRecord) -> RequestRecord:
    return finish(record, await send(pool, target, body, headers, record), target.api)


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


def _sse_reads(raw: Response) -> tuple[list[int], list[bytes], str | None] | None:
    """The body's reads, decompressed (:meth:`Response.decoded_reads`), when it is an SSE stream: labelled
    ``text/event-stream``, or a 2xx body that begins as one whatever its label. None otherwise: a JSON document (a
    server that ignored ``stream: true``) is read as a non-streaming answer, anything else fails as malformed."""
    decoded = raw.decoded_reads()
    if raw.content_type == "text/event-stream" or (200 <= raw.status < 300 and looks_like_sse(decoded[1])):
        return decoded
    return None


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
