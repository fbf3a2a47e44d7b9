"""Wire formats of the simulated endpoint: the bytes vLLM / the OpenAI API / the Anthropic API would send.

Token events are built from pre-encoded prefixes and suffixes so that emitting one costs a few byte concatenations.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Ctx:
    rid: str
    model: str
    prompt_tokens: int
    include_usage: bool
    continuous_usage: bool
    reasoning_style: str
    created: int = 0

    def __post_init__(self):
        self.created = int(time.time())


def _usage_openai(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion}


class OpenAIChat:
    name = "openai-chat"
    id_prefix = "chatcmpl-"
    chunk_object = "chat.completion.chunk"
    final_choice = b'"delta":{},"logprobs":null,"finish_reason":'  # the choice of the chunk that ends generation
    token_open, token_close = b'"delta":{', b'},"logprobs":null,"finish_reason":null}]'  # around a token's JSON
    start_early = False  # like vLLM: the role chunk goes out with the first token

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        head = {"id": self.id_prefix + ctx.rid, "object": self.chunk_object, "created": ctx.created,
                "model": ctx.model}
        self._head = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,' + self.token_open
        self._tail = self.token_close

    def _chunk(self, delta: bytes, usage_tokens: int | None) -> bytes:
        usage = b""
        if usage_tokens is not None and self.ctx.continuous_usage:
            usage = b',"usage":' + orjson.dumps(_usage_openai(self.ctx.prompt_tokens, usage_tokens))
        return self._head + delta + self._tail + usage + b"}\n\n"

    def start(self) -> bytes:
        return self._chunk(b'"role":"assistant","content":""', 0)

    def token(self, text: str, kind: str, cum_tokens: int) -> bytes:
        key = b'"reasoning_content":' if kind == "r" else b'"content":'
        return self._chunk(key + orjson.dumps(text), cum_tokens)

    def end(self, finish_reason: str, completion_tokens: int) -> bytes:
        """The chunk with finish_reason, the usage-only chunk when asked for, and [DONE]."""
        head = self._head[:self._head.rindex(b'"choices":[{"index":0,')] + b'"choices":[{"index":0,'
        out = head + self.final_choice + orjson.dumps(finish_reason) + b"}]"
        if self.ctx.continuous_usage:
            out += b',"usage":' + orjson.dumps(_usage_openai(self.ctx.prompt_tokens, completion_tokens))
        out += b"}\n\n"
        if self.ctx.include_usage:
            final = {"id": self.id_prefix + self.ctx.rid, "object": self.chunk_object, "created": self.ctx.created,
                     "model": self.ctx.model, "choices": [],
                     "usage": _usage_openai(self.ctx.prompt_tokens, completion_tokens)}
            out += b"data: " + orjson.dumps(final) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def body(self, reasoning: str, answer: str, finish_reason: str, completion_tokens: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        if reasoning:
            message["reasoning_content"] = reasoning
        return {"id": self.id_prefix + self.ctx.rid, "object": "chat.completion", "created": self.ctx.created,
                "model": self.ctx.model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
                "usage": _usage_openai(self.ctx.prompt_tokens, completion_tokens)}

    @staticmethod
    def error(status: int, message: str, etype: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": etype, "param": None, "code": status}}

    @staticmethod
    def stream_error(message: str) -> bytes:
        return b"data: " + orjson.dumps({"error": {"message": message, "type": "InternalServerError",
                                                   "code": 500}}) + b"\n\n"


class OpenAICompletions(OpenAIChat):
    name = "openai-completions"
    id_prefix = "cmpl-"
    chunk_object = "text_completion"
    final_choice = b'"text":"","logprobs":null,"finish_reason":'
    token_open, token_close = b'"text":', b',"logprobs":null,"finish_reason":null}]'

    def start(self) -> bytes:
        return b""

    def token(self, text: str, kind: str, cum_tokens: int) -> bytes:
        return self._chunk(orjson.dumps(text), cum_tokens)

    def body(self, reasoning: str, answer: str, finish_reason: str, completion_tokens: int) -> dict[str, Any]:
        return {"id": self.id_prefix + self.ctx.rid, "object": "text_completion", "created": self.ctx.created,
                "model": self.ctx.model,
                "choices": [{"index": 0, "text": reasoning + answer, "logprobs": None,
                             "finish_reason": finish_reason}],
                "usage": _usage_openai(self.ctx.prompt_tokens, completion_tokens)}


def _sse(event: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class AnthropicMessages:
    name = "anthropic-messages"
    start_early = True  # like Anthropic's API: message_start and a ping before the first token

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self._block = -1
        self._block_kind: str | None = None
        self._text_prefix = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'

    def start(self) -> bytes:
        msg = {"id": "msg_" + self.ctx.rid, "type": "message", "role": "assistant", "content": [],
               "model": self.ctx.model, "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": self.ctx.prompt_tokens, "output_tokens": 1}}
        return _sse("message_start", {"type": "message_start", "message": msg}) + _sse("ping", {"type": "ping"})

    def _switch(self, kind: str) -> bytes:
        out = b""
        if self._block_kind is not None:
            out += _sse("content_block_stop", {"type": "content_block_stop", "index": self._block})
        self._block += 1
        self._block_kind = kind
        block = {"type": "thinking", "thinking": ""} if kind == "r" else {"type": "text", "text": ""}
        return out + _sse("content_block_start", {"type": "content_block_start", "index": self._block,
                                                  "content_block": block})

    def token(self, text: str, kind: str, cum_tokens: int) -> bytes:
        out = self._switch(kind) if kind != self._block_kind else b""
        delta = (b'{"type":"thinking_delta","thinking":' if kind == "r" else b'{"type":"text_delta","text":')
        return out + self._text_prefix + str(self._block).encode() + b',"delta":' + delta + orjson.dumps(text) \
            + b"}}\n\n"

    def end(self, finish_reason: str, completion_tokens: int) -> bytes:
        out = b""
        if self._block_kind is not None:
            out += _sse("content_block_stop", {"type": "content_block_stop", "index": self._block})
        stop = "max_tokens" if finish_reason == "length" else "end_turn"
        out += _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": completion_tokens}})
        return out + _sse("message_stop", {"type": "message_stop"})

    def body(self, reasoning: str, answer: str, finish_reason: str, completion_tokens: int) -> dict[str, Any]:
        content = []
        if reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": "sim"})
        content.append({"type": "text", "text": answer})
        return {"id": "msg_" + self.ctx.rid, "type": "message", "role": "assistant", "model": self.ctx.model,
                "content": content, "stop_reason": "max_tokens" if finish_reason == "length" else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": self.ctx.prompt_tokens, "output_tokens": completion_tokens}}

    @staticmethod
    def error(status: int, message: str, etype: str) -> dict[str, Any]:
        anthropic_type = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                          429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        if status == 400:
            anthropic_type = "invalid_request_error"
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}

    @staticmethod
    def stream_error(message: str) -> bytes:
        return _sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": message}})


FORMATS = {f.name: f for f in (OpenAIChat, OpenAICompletions, AnthropicMessages)}
