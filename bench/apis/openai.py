"""OpenAI-compatible ``/chat/completions`` and ``/completions`` (vLLM, SGLang, llama.cpp, ollama, most clouds).

Streaming chunks: ``choices[0].delta.content`` (chat) or ``choices[0].text`` (completions) carry answer text;
``delta.reasoning_content`` (DeepSeek, vLLM's reasoning parsers) or ``delta.reasoning`` (newer vLLM, OpenRouter)
carry reasoning. ``usage`` arrives in a final chunk with empty ``choices`` when ``stream_options.include_usage`` is
set, and in every chunk (cumulative) with vLLM's ``continuous_usage_stats``: then the per-chunk token counts are exact.
An ``{"error": ...}`` object may arrive mid-stream (vLLM does this when generation fails after the headers).
"""
from __future__ import annotations

from typing import Any

import orjson

from ..sse import Events
from .base import Api, ParsedResponse, PromptSpec, int_or_none, split_think_in_content


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _common(model: str, prompt: PromptSpec, stream: bool, continuous_usage: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "stream": stream}
    if prompt.output_len is not None:
        body["max_tokens"] = prompt.output_len
    if stream:
        options: dict[str, Any] = {"include_usage": True}
        if continuous_usage:
            options["continuous_usage_stats"] = True
        body["stream_options"] = options
    return body


def build_chat_body(model: str, prompt: PromptSpec, *, stream: bool, continuous_usage: bool) -> dict[str, Any]:
    body = _common(model, prompt, stream, continuous_usage)
    body["messages"] = prompt.messages if prompt.messages is not None else [{"role": "user", "content": prompt.text}]
    return body


def build_completions_body(model: str, prompt: PromptSpec, *, stream: bool, continuous_usage: bool) -> dict[str, Any]:
    body = _common(model, prompt, stream, continuous_usage)
    if prompt.text is not None:
        body["prompt"] = prompt.text
    else:  # a chat-style dataset entry sent to /completions: flatten it
        body["prompt"] = "\n".join(str(m.get("content", "")) for m in prompt.messages or [])
    return body


def _read_usage(out: ParsedResponse, usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    out.prompt_tokens = int_or_none(usage.get("prompt_tokens"))
    out.output_tokens = int_or_none(usage.get("completion_tokens"))
    details = usage.get("completion_tokens_details")
    if isinstance(details, dict):
        out.reasoning_tokens = int_or_none(details.get("reasoning_tokens"))
    return out.output_tokens


def _error_text(err: Any) -> str:
    return str(err.get("message", err)) if isinstance(err, dict) else str(err)


def parse_stream(events: Events) -> ParsedResponse:
    """Read chat or completion chunks. Written for speed: it runs once per event of every request."""
    out = ParsedResponse()
    kinds = out.kinds
    chars = out.chars
    texts: list[str | None] = []  # answer text per event, for the <think> split
    cumulative: list[int | None] = []  # cumulative completion_tokens per event (continuous usage stats)
    last_usage = None
    loads = orjson.loads
    for data in events.data:
        if data == b"[DONE]":
            kinds.append("-"); chars.append(0); texts.append(None); cumulative.append(None)
            out.complete = True
            continue
        try:
            obj = loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is not dict:
            kinds.append("x"); chars.append(0); texts.append(None); cumulative.append(None)
            out.malformed = f"undecodable stream event: {data[:120]!r}"
            continue
        choices = obj.get("choices")
        if not choices and "error" in obj:
            out.error = _error_text(obj["error"])
            kinds.append("x"); chars.append(0); texts.append(None); cumulative.append(None)
            continue
        if out.response_id is None and isinstance(obj.get("id"), str):
            out.response_id = obj["id"]
        usage = obj.get("usage")
        if type(usage) is dict:
            last_usage = usage
            cumulative.append(usage.get("completion_tokens"))
        else:
            cumulative.append(None)
        answer = reasoning = None
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta is not None:
                answer = delta.get("content")
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            else:
                answer = choice.get("text")
            finish_reason = choice.get("finish_reason")
            if finish_reason:
                out.finish_reason = finish_reason
        if reasoning:
            kinds.append("r"); chars.append(len(reasoning)); texts.append(None)
        elif answer:
            kinds.append("a"); chars.append(len(answer)); texts.append(answer)
        else:
            kinds.append("-"); chars.append(0); texts.append(None)
    if last_usage is not None:
        _read_usage(out, last_usage)
    split_think_in_content(kinds, texts)
    out.tokens = _per_event_tokens(kinds, cumulative)
    return out


def _per_event_tokens(kinds: list[str], cumulative: list[int | None]) -> list[int] | None:
    """Per-event token counts from cumulative ``completion_tokens`` in every chunk (continuous usage stats).

    Only trusted when every text-bearing event carries a cumulative count; otherwise None.
    """
    counts: list[int] = []
    prev = 0
    any_text = False
    for kind, cum in zip(kinds, cumulative):
        if type(cum) is not int:
            if kind == "a" or kind == "r":
                return None
            counts.append(0)
            continue
        if kind == "a" or kind == "r":
            any_text = True
        counts.append(cum - prev if cum > prev else 0)
        if cum > prev:
            prev = cum
    return counts if any_text else None


def parse_body(obj: Any) -> ParsedResponse:
    out = ParsedResponse()
    if not isinstance(obj, dict):
        out.malformed = "response body is not a JSON object"
        return out
    if "error" in obj and not obj.get("choices"):
        out.error = _error_text(obj["error"])
        return out
    out.response_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    _read_usage(out, obj.get("usage"))
    choices = obj.get("choices") or []
    if not choices:
        out.malformed = "response has no choices"
        return out
    choice = choices[0]
    out.finish_reason = choice.get("finish_reason")
    message = choice.get("message")
    if isinstance(message, dict):
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        answer = message.get("content")
    else:
        reasoning, answer = None, choice.get("text")
    texts: list[str | None] = []
    if reasoning:
        out.kinds.append("r"); out.chars.append(len(reasoning)); texts.append(None)
    if answer:
        out.kinds.append("a"); out.chars.append(len(answer)); texts.append(answer)
    split_think_in_content(out.kinds, texts)
    out.complete = True
    return out


OPENAI_CHAT = Api("openai-chat", "/chat/completions", build_chat_body, _headers, parse_stream, parse_body,
                  "OPENAI_API_KEY")
OPENAI_COMPLETIONS = Api("openai-completions", "/completions", build_completions_body, _headers, parse_stream,
                         parse_body, "OPENAI_API_KEY")
