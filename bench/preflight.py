"""Before any load: ask the server what it serves (``GET /v1/models``) and what it is (``GET /version``).

An unknown model fails here, listing the closest names, instead of failing every request of the run. Model ids may
carry provider suffixes such as ``deepseek-r1?search``: the part before ``?`` is checked, the id is sent as given.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import aiohttp

from . import errors


@dataclass
class ServerInfo:
    models: list[str] | None = None  # None: the server did not list its models
    owned_by: dict[str, str] = field(default_factory=dict)
    max_model_len: dict[str, int] = field(default_factory=dict)
    version: str | None = None
    models_error: str | None = None
    auth_failed: str | None = None


class PreflightError(Exception):
    """The run cannot start; the message says why and what to do."""


async def fetch_server_info(session: aiohttp.ClientSession, base_url: str, server_root: str,
                            headers: dict[str, str], timeout_s: float = 15.0, proxy: str | None = None) -> ServerInfo:
    info = ServerInfo()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.get(base_url + "/models", headers=headers, timeout=timeout, proxy=proxy) as resp:
            text = await resp.text(errors="replace")
            if resp.status in (401, 403):
                info.auth_failed = f"GET /models answered HTTP {resp.status}: {' '.join(text.split())[:200]}"
            elif resp.status == 200:
                try:
                    data = await resp.json(content_type=None)
                    items = data.get("data") if isinstance(data, dict) else data
                    info.models = [m["id"] for m in items if isinstance(m, dict) and "id" in m]
                    for m in items:
                        if isinstance(m, dict) and "id" in m:
                            if m.get("owned_by"):
                                info.owned_by[m["id"]] = str(m["owned_by"])
                            if isinstance(m.get("max_model_len"), int):
                                info.max_model_len[m["id"]] = m["max_model_len"]
                except (ValueError, TypeError, KeyError):
                    info.models_error = "GET /models returned something other than a model list"
            else:
                info.models_error = f"GET /models answered HTTP {resp.status}"
    except aiohttp.ClientConnectorError as e:
        cls = errors.classify_exception(e)
        raise PreflightError(f"cannot connect to {base_url}: {errors.sentence(cls)} ({e.os_error or e})") from None
    except (aiohttp.ClientError, TimeoutError) as e:
        info.models_error = f"GET /models failed: {type(e).__name__} {e}".strip()
    try:
        async with session.get(server_root + "/version", headers=headers, timeout=timeout, proxy=proxy) as resp:
            if resp.status == 200:
                data = await resp.json(content_type=None)
                if isinstance(data, dict) and data.get("version"):
                    info.version = str(data["version"])
    except (aiohttp.ClientError, TimeoutError, ValueError):
        pass
    return info


def closest_models(wanted: str, available: list[str], n: int = 5) -> list[str]:
    """The available ids closest to ``wanted``: fuzzy matches first, then ones containing it (case-insensitive)."""
    lower = {m.lower(): m for m in available}
    close = [lower[m] for m in difflib.get_close_matches(wanted.lower(), list(lower), n=n, cutoff=0.4)]
    contains = [m for m in available if wanted.lower() in m.lower() or m.lower() in wanted.lower()]
    out = list(dict.fromkeys(close + contains))
    return out[:n]


def check_model(model: str | None, info: ServerInfo) -> str:
    """The model id to send. Raises PreflightError for a model the server says it does not have."""
    if model is None:
        if info.models:
            return info.models[0]
        raise PreflightError("--model is required: the server did not list its models (GET /v1/models"
                             + (f": {info.models_error})" if info.models_error else ")"))
    if not info.models:
        return model
    base = model.split("?", 1)[0]
    if base in info.models or model in info.models:
        return model
    near = closest_models(base, info.models)
    listing = ", ".join(near) if near else ", ".join(info.models[:10])
    raise PreflightError(f"--model {model!r} is not served here; "
                         f"{'closest' if near else 'available'}: {listing}")
