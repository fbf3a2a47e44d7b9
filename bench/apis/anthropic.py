"""Anthropic Messages API (``/v1/messages``), streaming and not.

Stream events (https://docs.anthropic.com/en/api/messages-streaming): ``message_start`` (``message.usage.
input_tokens``), ``content_block_start``, ``content_block_delta`` with ``text_delta`` (answer) or ``thinking_delta``
(reasoning; ``signature_delta`` carries no text), ``content_block_stop``, ``message_delta`` (``usage.output_tokens``,
cumulative, and ``stop_reason``), ``message_stop`` (the end), ``ping`` and ``error``.
"""
from __future__ import annotations

from typing import Any

import orjson

from ..sse import Events
from .base import Api, ParsedResponse, PromptSpec, int_or_none

ANTHROPIC_VERSION = "2023-06-01"


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION,
               "Accept": "text/event-stream, application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


def build_body(model: str, prompt: PromptSpec, *, stream: bool, continuous_usage: bool) -> dict[str, Any]:
    messages = prompt.messages if prompt.messages is not None else [{"role": "user", "content": prompt.text}]
    system = [m for m in messages if m.get("role") == "system"]
    body: dict[str, Any] = {
        "model": model,
        "messages": [m for m in messages if m.get("role") != "system"],
        # max_tokens is mandatory in this API; 4096 is what a caller that did not choose would typically send
        "max_tokens": prompt.output_len if prompt.output_len is not None else 4096,
        "stream": stream,
    }
    if system:
        body["system"] = "\n".join(str(m.get("content", "")) for m in system)
    return body


def _usage(out: ParsedResponse, usage: Any) -> None:
    if isinstance(usage, dict):
        if int_or_none(usage.get("input_tokens")) is not None:
            out.prompt_tokens = usage["input_tokens"]
        if int_or_none(usage.get("output_tokens")) is not None:
            out.output_tokens = usage["output_tokens"]


def _error_text(err: dict) -> str:
    kind, message = err.get("type", "error"), err.get("message")
    return f"{kind}: {message}" if message else str(kind)


def parse_stream(events: Events) -> ParsedResponse:
    out = ParsedResponse()
    for name, data in zip(events.names, events.data):
        try:
            obj = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            out.kinds.append("x"); out.chars.append(0)
            out.malformed = f"undecodable stream event: {data[:120]!r}"
            continue
        etype = name or obj.get("type")
        kind, chars = "-", 0
        if etype == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                kind, chars = "a", len(delta["text"])
            elif delta.get("type") == "thinking_delta" and delta.get("thinking"):
                kind, chars = "r", len(delta["thinking"])
        elif etype == "message_start":
            message = obj.get("message") or {}
            out.response_id = message.get("id")
            _usage(out, message.get("usage"))
        elif etype == "message_delta":
            _usage(out, obj.get("usage"))
            stop = (obj.get("delta") or {}).get("stop_reason")
            if stop:
                out.finish_reason = stop
        elif etype == "message_stop":
            out.complete = True
        elif etype == "error":
            err = obj.get("error") or {}
            out.error = _error_text(err)
            kind = "x"
        out.kinds.append(kind)
        out.chars.append(chars)
    return out


def parse_body(obj: Any) -> ParsedResponse:
    out = ParsedResponse()
    if not isinstance(obj, dict):
        out.malformed = "response body is not a JSON object"
        return out
    if obj.get("type") == "error":
        out.error = _error_text(obj.get("error") or {})
        return out
    out.response_id = obj.get("id")
    _usage(out, obj.get("usage"))
    out.finish_reason = obj.get("stop_reason")
    for block in obj.get("content") or []:
        if block.get("type") == "thinking" and block.get("thinking"):
            out.kinds.append("r"); out.chars.append(len(block["thinking"]))
        elif block.get("type") == "text" and block.get("text"):
            out.kinds.append("a"); out.chars.append(len(block["text"]))
    out.complete = True
    return out


ANTHROPIC_MESSAGES = Api("anthropic-messages", "/messages", build_body, _headers, parse_stream, parse_body,
                         "ANTHROPIC_API_KEY")
