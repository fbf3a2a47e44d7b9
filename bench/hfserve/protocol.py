"""The OpenAI wire format of the hfserve server, as vLLM speaks it: request validation and the bytes of responses.

No torch here, so it is tested without it. Requests: ``/v1/chat/completions`` (``messages``; ``max_tokens`` or
``max_completion_tokens``) and ``/v1/completions`` (``prompt``: a string, a list of one string, or token ids), with
``stream``, ``stream_options.include_usage`` / ``continuous_usage_stats``, ``max_tokens`` (default: the rest of the
context), ``min_tokens``, ``ignore_eos``, ``temperature`` (default 1; 0 = greedy), ``top_p`` and ``seed``; ``n`` must
be 1. A request whose prompt plus ``max_tokens`` exceeds the context is refused (400), as vLLM does.

Streaming: one chunk per generated token, as soon as it is generated. Chat sends the assistant role in a chunk of its
own, just before the first token's (as vLLM does); the last token's chunk carries ``finish_reason``; then, with
``include_usage``, a chunk with empty ``choices`` and the usage; then ``data: [DONE]``. With
``continuous_usage_stats`` every chunk also carries the usage so far (``completion_tokens`` = tokens generated up to
and including that chunk's). A token whose text is held back (an incomplete character) still gets its chunk, with
empty text.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CHAT, COMPLETIONS = "chat", "completions"
DONE = b"data: [DONE]\n\n"


class RequestError(Exception):
    def __init__(self, status: int, message: str, etype: str = "BadRequestError"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.etype = etype


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    min_tokens: int = 0          # EOS is banned until this many tokens were generated (vLLM's min_tokens)
    ignore_eos: bool = False     # EOS may be generated, but does not end the sequence
    temperature: float = 1.0     # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    api: str
    model: str
    messages: list[dict[str, str]] | None     # chat: role and text content of each message
    prompt: str | list[int] | None           # completions: text or token ids
    stream: bool
    include_usage: bool
    continuous_usage: bool
    max_tokens: int | None
    min_tokens: int
    ignore_eos: bool
    temperature: float
    top_p: float
    seed: int | None


def parse_request(api: str, body: Any, served: str) -> GenerationRequest:
    """Validate a request body; RequestError (400, or 404 for another model) says what is wrong."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    model = body.get("model", served)
    if model != served:
        raise RequestError(404, f"The model `{model}` does not exist.", "NotFoundError")
    messages = prompt = None
    if api == CHAT:
        messages = _messages(body.get("messages"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    else:
        prompt = _prompt(body.get("prompt"))
        max_tokens = body.get("max_tokens")
    if body.get("n", 1) != 1:
        raise RequestError(400, "only n=1 is supported")
    stream = _bool(body, "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(400, "stream_options must be an object")
    temperature = _number(body, "temperature", 1.0, low=0.0)
    top_p = _number(body, "top_p", 1.0, low=0.0)
    if not 0 < top_p <= 1:
        raise RequestError(400, f"top_p must be in (0, 1], got {top_p}")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError(400, f"seed must be an integer, got {seed!r}")
    return GenerationRequest(
        api=api, model=served, messages=messages, prompt=prompt, stream=stream,
        include_usage=stream and _bool(options, "include_usage"),
        continuous_usage=stream and _bool(options, "continuous_usage_stats"),
        max_tokens=_optional_int(max_tokens, "max_tokens", low=1), min_tokens=_optional_int(
            body.get("min_tokens"), "min_tokens", low=0) or 0,
        ignore_eos=_bool(body, "ignore_eos"), temperature=temperature, top_p=top_p, seed=seed)


def sampling_params(req: GenerationRequest, prompt_tokens: int, max_model_len: int) -> SamplingParams:
    """The request's sampling parameters once its prompt is tokenized; refuses what does not fit the context."""
    room = max_model_len - prompt_tokens
    if room < 1:
        raise RequestError(400, f"This model's maximum context length is {max_model_len} tokens. However, your "
                                f"prompt has {prompt_tokens} tokens, leaving no room for the completion.")
    max_tokens = req.max_tokens if req.max_tokens is not None else room
    if max_tokens > room:
        raise RequestError(400, f"This model's maximum context length is {max_model_len} tokens. However, you "
                                f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
                                f"{max_tokens} in the completion). Please reduce the prompt or max_tokens.")
    if req.min_tokens > max_tokens:
        raise RequestError(400, f"min_tokens ({req.min_tokens}) must be at most max_tokens ({max_tokens})")
    return SamplingParams(max_tokens=max_tokens, min_tokens=req.min_tokens, ignore_eos=req.ignore_eos,
                          temperature=req.temperature, top_p=req.top_p, seed=req.seed)


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RequestError(400, "messages must be a non-empty list")
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(400, "each message must be an object with a role")
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and
                              p.get("type", "text") == "text")
        out.append({"role": m["role"], "content": "" if content is None else str(content)})
    return out


def _prompt(value: Any) -> str | list[int]:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]  # a batch of one
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return value
    raise RequestError(400, "prompt must be a string, a list of one string, or a list of token ids")


def _bool(obj: dict, key: str) -> bool:
    value = obj.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(400, f"{key} must be true or false, got {value!r}")
    return value


def _number(obj: dict, key: str, default: float, low: float) -> float:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
        raise RequestError(400, f"{key} must be a number >= {low:g}, got {value!r}")
    return float(value)


def _optional_int(value: Any, key: str, low: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise RequestError(400, f"{key} must be an integer >= {low}, got {value!r}")
    return value


# ---- responses ----------------------------------------------------------------------------------------------------

def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens}


class Chunks:
    """The SSE bytes of one streamed response."""

    def __init__(self, api: str, rid: str, model: str, created: int, prompt_tokens: int, continuous: bool):
        self.api = api
        self.head = {"id": rid, "object": "chat.completion.chunk" if api == CHAT else "text_completion",
                     "created": created, "model": model}
        self.prompt_tokens = prompt_tokens
        self.continuous = continuous

    def _event(self, choices: list[dict], completion_tokens: int | None) -> bytes:
        obj = {**self.head, "choices": choices}
        if completion_tokens is not None:
            obj["usage"] = usage(self.prompt_tokens, completion_tokens)
        return b"data: " + _dumps(obj) + b"\n\n"

    def role(self) -> bytes:
        """Chat only: the assistant role, before the first token."""
        if self.api != CHAT:
            return b""
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return self._event([choice], 0 if self.continuous else None)

    def token(self, text: str, completion_tokens: int, finish_reason: str | None) -> bytes:
        if self.api == CHAT:
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._event([choice], completion_tokens if self.continuous else None)

    def usage(self, completion_tokens: int) -> bytes:
        return self._event([], completion_tokens)

    @staticmethod
    def error(status: int, message: str) -> bytes:
        return b"data: " + _dumps(error_body(status, message, "InternalServerError")) + b"\n\n"


def body(api: str, rid: str, model: str, created: int, text: str, finish_reason: str, prompt_tokens: int,
         completion_tokens: int) -> dict[str, Any]:
    """A non-streamed response."""
    if api == CHAT:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return {"id": rid, "object": "chat.completion" if api == CHAT else "text_completion", "created": created,
            "model": model, "choices": [choice], "usage": usage(prompt_tokens, completion_tokens)}


def error_body(status: int, message: str, etype: str = "BadRequestError") -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": status}}
