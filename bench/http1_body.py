"""Content-Encoding for :mod:`bench.http1`'s responses, off the hot path: a whole body (``gzip``, ``deflate`` with
or without its zlib wrapper), or a stream read by read, each decoded piece keeping the arrival time of the read that
carried its bytes."""
from __future__ import annotations

import gzip
import zlib

IDENTITY = ("identity", "")


class DecodeError(ValueError):
    """The body does not decode (bad compressed data, or an encoding this client does not support)."""


def decode_body(data: bytes, encoding: str) -> bytes:
    try:
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(data)  # every member, not only the first
        if encoding == "deflate":
            try:
                return zlib.decompress(data)
            except zlib.error:
                return zlib.decompress(data, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
    except (zlib.error, OSError, EOFError) as e:
        raise DecodeError(f"the {encoding} body does not decompress: {e}") from None
    if encoding not in IDENTITY:
        raise DecodeError(f"the server sent a body in Content-Encoding {encoding!r}, which is not supported")
    return data


def decode_reads(reads_ns: list[int], reads: list[bytes], encoding: str,
                 complete: bool) -> tuple[list[int], list[bytes], str | None]:
    """The reads with the encoding undone read by read: the bytes a read lets the decompressor produce carry that
    read's arrival time, and a read that produces none is left out. The third value says why decoding stopped short
    (a bad or unsupported compressed stream, or a ``complete`` body that ended before its compressed stream did),
    else None. Uncompressed: the lists themselves, untouched."""
    if encoding in IDENTITY:
        return reads_ns, reads, None
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return [], [], f"the server sent a body in Content-Encoding {encoding!r}, which is not supported"
    inflater = _Inflater(gzip=encoding != "deflate")
    out_ns: list[int] = []
    out: list[bytes] = []
    try:
        for ts, piece in zip(reads_ns, reads):
            decoded = inflater.feed(piece)
            if decoded:
                out_ns.append(ts)
                out.append(decoded)
    except zlib.error as e:
        return out_ns, out, f"the {encoding} body does not decompress: {e}"
    if complete and not inflater.ended:
        return out_ns, out, f"the {encoding} body ended before its compressed stream did"
    return out_ns, out, None


class _Inflater:
    """Undoes gzip or deflate a piece at a time (``zlib.decompressobj``) as :func:`decode_body` does for a whole
    body: every gzip member (NUL padding between them skipped, as ``gzip.decompress`` does), and deflate with its
    zlib wrapper or raw, as some servers send it: raw when the first two bytes are not a valid zlib header."""

    def __init__(self, gzip: bool):
        self.gzip = gzip
        self.obj = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        self.fed = False
        self.head = None if gzip else b""  # deflate: the first bytes, until they prove a zlib header or not

    @property
    def ended(self) -> bool:
        return self.obj.eof or not self.fed  # no bytes at all: nothing to decode (gzip.decompress(b"") is b"")

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        self.fed = True
        if self.head is not None:  # deflate, its first two bytes not yet seen
            self.head += data
            try:
                out = self.obj.decompress(data)
            except zlib.error:
                self.obj = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate: start over with every byte so far
                out = self.obj.decompress(self.head)
            if len(self.head) >= 2:
                self.head = None
            return out
        if not self.gzip:
            return b"" if self.obj.eof else self.obj.decompress(data)  # bytes after the stream are ignored
        out = []
        while data:
            if self.obj.eof:  # a member has ended: padding, or the next member
                data = data.lstrip(b"\0")
                if not data:
                    break
                self.obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out.append(self.obj.decompress(data))
            data = self.obj.unused_data if self.obj.eof else b""
        return b"".join(out)
