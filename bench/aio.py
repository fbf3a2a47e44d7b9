"""Event loop choice: uvloop when installed (same asyncio API, a faster loop in C), else asyncio's own."""
from __future__ import annotations

import asyncio
from typing import Any, Coroutine


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
