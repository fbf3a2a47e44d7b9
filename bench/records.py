"""The raw request record: what one request did, as observed by the client, before any metric is derived.

``send_ns`` is when the client started the request, ``written_ns`` when its bytes were handed to the socket (the
server cannot start before; latencies count from here, and ``written_ns - send_ns`` is the client's own delay).

Every time is an integer from ``time.perf_counter_ns()`` (CLOCK_MONOTONIC on Linux, shared by every process on the
host, so the simulated endpoint's recorded emission times are directly comparable). Stream event times are stored as
offsets from ``send_ns`` to keep ``requests.jsonl`` small.

``event_kinds`` has one character per SSE event, in arrival order:

- ``a``: carries answer text (OpenAI ``content``/``text``, Anthropic ``text_delta``);
- ``r``: carries reasoning text (``reasoning_content``/``reasoning``, text inside ``<think>...</think>``, Anthropic
  ``thinking_delta``);
- ``-``: carries no generated text (role announcement, usage-only chunk, ``[DONE]``, ``ping``, ``message_start``...);
- ``x``: an error event inside the stream.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Iterator

import orjson


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    phase: str
    level_index: int
    prompt_index: int
    warmup: bool
    api: str
    stream: bool
    input_len_requested: int | None
    output_len_requested: int | None
    scheduled_ns: int | None
    send_ns: int
    written_ns: int | None = None
    headers_ns: int | None = None
    end_ns: int | None = None
    status: int | None = None
    error_class: str | None = None
    error: str | None = None
    retry_after_s: float | None = None
    event_offsets_ns: list[int] = field(default_factory=list)
    event_kinds: str = ""
    event_tokens: list[int] | None = None
    event_chars: list[int] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    output_tokens_client: int | None = None
    finish_reason: str | None = None
    response_id: str | None = None
    stream_complete: bool | None = None

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RequestRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class RecordWriter:
    """Appends records to ``requests.jsonl`` one line at a time, flushed at once, so a crash loses nothing."""

    def __init__(self, path: Path):
        self.path = path
        self._fh: IO[bytes] = open(path, "ab")

    def write(self, record: RequestRecord) -> None:
        self._fh.write(record.to_json_bytes() + b"\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_records(path: Path) -> Iterator[RequestRecord]:
    """Read ``requests.jsonl``; a torn last line (the process died mid-write) is skipped, not fatal."""
    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield RequestRecord.from_dict(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
