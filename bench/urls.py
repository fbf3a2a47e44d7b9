"""Normalise the URLs people paste into the API base the client appends paths to.

``https://host``                        -> ``https://host/v1``
``https://host/chat/completions``       -> ``https://host`` (providers without /v1: the pasted endpoint is kept)
``https://host/v1`` or ``.../v1/``      -> ``https://host/v1``
``https://host/v1/chat/completions``    -> ``https://host/v1`` (and the API is implied: openai-chat)
``https://host/compatible-mode/v1``     -> kept (path prefixes of cloud providers are part of the base)
``https://ark.example.com/api/v3``      -> kept (a version segment other than v1 is respected)
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

#: endpoint suffixes and the API each implies
SUFFIXES = (
    ("/chat/completions", "openai-chat"),
    ("/completions", "openai-completions"),
    ("/messages", "anthropic-messages"),
    ("/models", None),
)


class UrlError(ValueError):
    pass


@dataclass(frozen=True)
class NormalizedUrl:
    base: str  # e.g. https://host/v1
    implied_api: str | None  # the API named by a pasted endpoint path, if any

    @property
    def server_root(self) -> str:
        """scheme://host:port, where engines serve /version, /health and /metrics."""
        parts = urlsplit(self.base)
        return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def normalize(url: str) -> NormalizedUrl:
    text = url.strip()
    if "://" not in text:
        raise UrlError(f"{url!r} has no scheme; valid forms: http://host:port, https://host/v1, "
                       "https://host/v1/chat/completions")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise UrlError(f"scheme {parts.scheme!r} is not supported; use http:// or https://")
    if not parts.hostname:
        raise UrlError(f"{url!r} has no host name")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UrlError(f"{url!r} has an invalid port") from None
    path = parts.path.rstrip("/")
    implied = None
    for suffix, api in SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            implied = api
            break
    path = path.rstrip("/")
    if not path and implied is None:
        path = "/v1"  # a bare host: the usual API root (a pasted full endpoint keeps exactly its own prefix)
    # query strings and fragments are not part of an API base
    return NormalizedUrl(urlunsplit((parts.scheme, parts.netloc, path, "", "")), implied)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def env_proxy_for(url: str) -> str | None:
    """The proxy the environment (HTTP_PROXY / HTTPS_PROXY / NO_PROXY) asks for this URL, resolved once per run.

    aiohttp's ``trust_env`` would resolve it again for every request (reading the environment and ~/.netrc), which
    costs the client milliseconds per request at high concurrency.
    """
    import urllib.request

    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
