"""Per-API differences, as data: how to build a request and how to read its response.

The client has one streaming loop (``bench.client``); an :class:`Api` tells it the path, the headers, the JSON body,
and how to turn the SSE events (or the JSON body when not streaming) into a :class:`ParsedResponse`.
"""
from __future__ import annotations

from .base import Api, ParsedResponse, PromptSpec
from .anthropic import ANTHROPIC_MESSAGES
from .openai import OPENAI_CHAT, OPENAI_COMPLETIONS

APIS: dict[str, Api] = {api.name: api for api in (OPENAI_CHAT, OPENAI_COMPLETIONS, ANTHROPIC_MESSAGES)}

__all__ = ["APIS", "Api", "ParsedResponse", "PromptSpec", "OPENAI_CHAT", "OPENAI_COMPLETIONS", "ANTHROPIC_MESSAGES"]
