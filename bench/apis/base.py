"""What every API adapter returns, and the reasoning/answer split shared by all of them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..sse import Events

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class PromptSpec:
    """One prompt of the workload: either a plain text or chat messages, and the output length to ask for."""

    index: int
    text: str | None
    messages: list[dict[str, Any]] | None
    input_len: int | None  # requested/estimated input tokens (the server's usage is the measurement)
    output_len: int | None  # sent as max_tokens; None = let the server decide


@dataclass
class ParsedResponse:
    """The response of one request, read into per-event facts (see ``bench.records`` for ``kinds``)."""

    kinds: list[str] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)
    tokens: list[int] | None = None  # per-event token counts when the server reported them per chunk
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None
    response_id: str | None = None
    complete: bool = False  # saw the API's end marker ([DONE], message_stop, or a whole JSON body)
    error: str | None = None  # an error reported inside a 200 response
    malformed: str | None = None  # an event we could not decode


@dataclass(frozen=True)
class Api:
    name: str
    path: str  # appended to the API base, e.g. "/chat/completions"
    build_body: Callable[..., dict[str, Any]]
    headers: Callable[[str | None], dict[str, str]]
    parse_stream: Callable[[Events], ParsedResponse]
    parse_body: Callable[[Any], ParsedResponse]
    api_key_env: str


def split_think_in_content(kinds: list[str], texts: list[str | None]) -> None:
    """Relabel answer events as reasoning when the answer text carries R1-style ``<think>...</think>``.

    Some servers put the reasoning inside ``content`` (with or without the opening ``<think>``, which the chat
    template may already have emitted), and a tag may be split over several chunks. Every answer event up to the one
    that completes ``</think>`` is reasoning; that event is an answer event only if it carries non-blank text after
    the tag. Without a closing tag, an explicit opening tag marks the whole answer as (unfinished) reasoning.
    """
    answer_idx = [i for i, k in enumerate(kinds) if k == "a"]
    if not answer_idx:
        return
    joined = "".join(texts[i] or "" for i in answer_idx)
    close = joined.find(THINK_CLOSE)
    if close < 0:
        if joined.lstrip().startswith(THINK_OPEN):
            for j in answer_idx:
                kinds[j] = "r"
        return
    end = close + len(THINK_CLOSE)  # the tag is complete once this many answer characters have arrived
    seen = 0
    for pos, i in enumerate(answer_idx):
        seen += len(texts[i] or "")
        if seen >= end:
            for j in answer_idx[:pos]:
                kinds[j] = "r"
            kinds[i] = "a" if joined[end:seen].strip() else "r"
            return


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
