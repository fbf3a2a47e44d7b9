"""Failure classes: every failed request gets exactly one, and a plain sentence for the console.

A class is decided from what the client saw (status code, body text, exception). Provider wording varies, so the
body is searched for a few well-known phrases (e.g. some Chinese cloud providers answer an unknown model with
503 "the price of the model is not set", others with 404 or 400 "model ... does not exist").
"""
from __future__ import annotations

import asyncio
import math
import socket
import ssl

import aiohttp

from .http1 import ProtocolError, ProxyError

AUTH = "auth"
BALANCE = "insufficient_balance"
UNKNOWN_MODEL = "unknown_model"
RATE_LIMITED = "rate_limited"
CLIENT_ERROR = "client_error"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION_REFUSED = "connection_refused"
CONNECTION_RESET = "connection_reset"
TLS = "tls_error"
STREAM_CUT = "stream_cut"
MALFORMED = "malformed_response"
STREAM_ERROR = "stream_error"
CANCELLED = "cancelled"

#: classes that mean "every further request will fail the same way": the run stops before hammering the provider
FATAL = frozenset({AUTH, BALANCE, UNKNOWN_MODEL})

SENTENCES = {
    AUTH: "the server rejected the credentials (check --api-key or the API key environment variable)",
    BALANCE: "the account has insufficient balance (HTTP 402)",
    UNKNOWN_MODEL: "the server does not know this model (check --model against GET /v1/models)",
    RATE_LIMITED: "the server rate-limited the client (HTTP 429); lower --concurrency or --request-rate",
    CLIENT_ERROR: "the server rejected the request (HTTP 4xx)",
    SERVER_ERROR: "the server failed (HTTP 5xx)",
    TIMEOUT: "the request timed out (see --timeout)",
    CONNECTION_REFUSED: "the connection was refused: nothing listens at that address, the host name does not resolve, "
                        "or the proxy refused the tunnel",
    TLS: "the TLS handshake failed (the certificate is not trusted or not for this host name)",
    CONNECTION_RESET: "the connection was reset or closed by the server",
    STREAM_CUT: "the response stream ended before its end marker",
    MALFORMED: "the response could not be decoded (malformed SSE event or JSON)",
    STREAM_ERROR: "the server reported an error inside the stream",
    CANCELLED: "the request was cancelled (Ctrl-C)",
}

_AUTH_PHRASES = ("authorization header", "api key", "api_key", "apikey", "unauthorized", "authentication",
                 "invalid token", "access denied")
_BALANCE_PHRASES = ("insufficient balance", "insufficient_balance", "insufficient quota", "insufficient_quota",
                    "balance is not enough", "arrearage", "余额不足", "payment required")
_MODEL_PHRASES = ("model not found", "does not exist", "model_not_found", "unknown model", "no such model",
                  "price of the model is not set", "invalid model", "model is not supported", "not a valid model",
                  "model not exist")


def classify_status(status: int, body: str) -> str:
    """Class of a non-2xx response."""
    text = body.lower()
    if status in (401, 403):
        return AUTH
    if status == 402 or any(p in text for p in _BALANCE_PHRASES):
        return BALANCE
    if status == 429:
        return RATE_LIMITED
    if status in (400, 404, 422, 503) and any(p in text for p in _MODEL_PHRASES):
        return UNKNOWN_MODEL
    if any(p in text for p in _AUTH_PHRASES) and status < 500:
        return AUTH
    if 400 <= status < 500:
        return CLIENT_ERROR
    return SERVER_ERROR


def classify_exception(exc: BaseException) -> str:
    """Class of an exception raised while sending a request or reading its response."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError, TimeoutError)):
        return TIMEOUT
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED
    if isinstance(exc, ssl.SSLError) or isinstance(getattr(exc, "os_error", None), ssl.SSLError):
        return TLS
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror, ProxyError)):
        return CONNECTION_REFUSED
    if isinstance(exc, aiohttp.ClientConnectorError):
        inner = getattr(exc, "os_error", None)
        if isinstance(inner, ConnectionRefusedError) or "refused" in str(exc).lower():
            return CONNECTION_REFUSED
        return CONNECTION_RESET
    if isinstance(exc, aiohttp.ClientPayloadError):
        return STREAM_CUT
    if isinstance(exc, (aiohttp.ServerDisconnectedError, OSError)):  # OSError: resets, http1.ConnectionClosed
        return CONNECTION_RESET
    if isinstance(exc, (ProtocolError, aiohttp.ClientResponseError, aiohttp.ContentTypeError, ValueError)):
        return MALFORMED
    return CLIENT_ERROR


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; an HTTP date gives None rather than a guess)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def sentence(error_class: str) -> str:
    return SENTENCES.get(error_class, error_class)
