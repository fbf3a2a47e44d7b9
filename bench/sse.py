"""Server-sent events: turn timestamped raw reads into timestamped events.

The client's hot path only records ``(arrival_ns, bytes)`` for every read of the response body; this module runs
afterwards and splits those bytes into SSE events (https://html.spec.whatwg.org/multipage/server-sent-events.html).

An event's arrival time is the arrival time of the read that *completed* it (the read holding its terminating blank
line): that is the moment the client could first have acted on it.

Handled here: events split across reads (even in the middle of a ``\\r\\n``), ``\\n``, ``\\r\\n`` and ``\\r`` line
endings, multi-line ``data:`` (joined with ``\\n``), comment lines (``: keep-alive``), ``event:`` names, a single
optional space after the colon, and a final event not followed by a blank line (kept, flagged ``complete=False``).
:func:`looks_like_sse` tells an SSE stream by its first line when its content type does not say so.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate


@dataclass
class Events:
    """The events of one response, as parallel lists (cheaper than an object per event).

    ``names[i]`` is the ``event:`` field (None when absent), ``data[i]`` the joined ``data:`` lines.
    ``complete_last`` is False when the stream ended without the blank line closing its last event.
    """

    arrival_ns: list[int] = field(default_factory=list)
    names: list[str | None] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    complete_last: bool = True

    def __len__(self) -> int:
        return len(self.data)

    def add(self, arrival_ns: int, name: str | None, data: bytes) -> None:
        self.arrival_ns.append(arrival_ns)
        self.names.append(name)
        self.data.append(data)


def _parse_block(block: bytes) -> tuple[str | None, bytes] | None:
    """Parse one event block (lines without the blank terminator). Returns None for comment-only blocks."""
    if block[:6] == b"data: " and b"\n" not in block:
        return None, block[6:]  # the common case: one data line, nothing else
    event: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue  # ':' starts a comment (keep-alive)
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        # 'id' and 'retry' are irrelevant for benchmarking; unknown fields are ignored per the spec
    if not data:
        return None  # the SSE spec dispatches nothing for a block without data lines
    return event, b"\n".join(data)


_FIELD_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":")
_BOM = b"\xef\xbb\xbf"


def looks_like_sse(reads: list[bytes]) -> bool:
    """Whether a body (its raw reads) begins as an SSE stream: its first non-blank line starts with ``data:``,
    ``event:``, ``id:``, ``retry:`` or ``:`` (a comment). For a stream labelled ``text/plain``,
    ``application/octet-stream``, ``application/x-ndjson`` or not at all, as some servers and proxies send it."""
    start = b""
    for piece in reads:
        start += piece
        if len(start.removeprefix(_BOM).lstrip()) >= 6:  # as long as the longest field start, "retry:"
            break
    start = start.removeprefix(_BOM)
    text = start.lstrip(b" \t\r\n")
    blanks = start[:len(start) - len(text)]
    return blanks[-1:] not in (b" ", b"\t") and text.startswith(_FIELD_STARTS)  # " data:" is no SSE field


def split_events(reads_ns: list[int], reads: list[bytes]) -> Events:
    """The events carried by ``reads`` (raw byte chunks in arrival order, ``reads_ns`` their arrival times)."""
    buf = b"".join(reads)
    if buf[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte-order mark before the first event is ignored (SSE spec)
        reads = [reads[0][3:], *reads[1:]]
        buf = buf[3:]
    if b"\r" in buf:
        return _split_incremental(reads_ns, reads)
    out = Events()
    blocks = buf.split(b"\n\n")
    tail = blocks.pop()
    ends = list(accumulate(map(len, reads)))  # ends[i] = bytes received up to and including read i
    pos = 0
    add = out.add
    for block in blocks:
        pos += len(block) + 2  # just past this event's terminating blank line
        parsed = _parse_block(block)
        if parsed is not None:
            add(reads_ns[bisect_left(ends, pos)], parsed[0], parsed[1])
    if tail.strip(b"\n"):
        parsed = _parse_block(tail.strip(b"\n"))
        if parsed is not None:
            add(reads_ns[-1], parsed[0], parsed[1])
            out.complete_last = False
    return out


def _split_incremental(reads_ns: list[int], reads: list[bytes]) -> Events:
    """The general path, for streams using '\\r\\n' or '\\r' line endings (normalised read by read).

    A '\\r' ends a line at once (as the SSE spec says); a '\\n' that follows it, even in the next read, belongs
    to the same line ending and is dropped.
    """
    out = Events()
    pending = b""
    after_cr = False
    for arrival_ns, chunk in zip(reads_ns, reads):
        if after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        after_cr = chunk[-1:] == b"\r"
        buf = pending + chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        parts = buf.split(b"\n\n")
        pending = parts.pop()
        for block in parts:
            parsed = _parse_block(block)
            if parsed is not None:
                out.add(arrival_ns, parsed[0], parsed[1])
    tail = pending.strip(b"\n")
    if tail:
        parsed = _parse_block(tail)
        if parsed is not None:
            out.add(reads_ns[-1], parsed[0], parsed[1])
            out.complete_last = False
    return out
