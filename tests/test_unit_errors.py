"""Failure classes from status codes and bodies, exceptions, and Retry-After."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bench import errors
from bench.errors import classify_exception, classify_status, parse_retry_after


@pytest.mark.parametrize("status, body, cls", [
    (401, '{"error": {"message": "Incorrect API key provided"}}', "auth"),
    (403, "Forbidden", "auth"),
    (401, "", "auth"),
    (400, '{"error": "Authorization header missing"}', "auth"),  # some gateways answer 400 for a missing key
    (404, "Authorization Header Missing", "auth"),
    (402, '{"error": {"message": "Insufficient Balance"}}', "insufficient_balance"),
    (402, "", "insufficient_balance"),
    (400, "Your account balance is not enough", "insufficient_balance"),
    (429, '{"error": {"code": "insufficient_quota", "message": "You exceeded your current quota"}}',
     "insufficient_balance"),  # OpenAI's no-credit answer is a 429 that no retry will fix
    (404, '{"object": "error", "message": "The model `llama-9` does not exist.", "code": 404}', "unknown_model"),
    (404, '{"error": {"code": "model_not_found"}}', "unknown_model"),
    (400, "Model Not Found", "unknown_model"),
    (422, "invalid model id", "unknown_model"),
    (503, '{"code": 30003, "message": "the price of the model is not set"}', "unknown_model"),
    (429, "Too Many Requests", "rate_limited"),
    (429, "", "rate_limited"),
    (404, "Not Found", "client_error"),
    (400, "max_tokens must be at least 1", "client_error"),
    (413, "payload too large", "client_error"),
    (418, "", "client_error"),
    (500, "Internal Server Error", "server_error"),
    (500, "model not found", "server_error"),  # a 500 is the server's fault, whatever it says
    (502, "Bad Gateway", "server_error"),
    (503, "Service Unavailable", "server_error"),
    (504, "upstream unauthorized", "server_error"),
])
def test_classify_status(status, body, cls):
    assert classify_status(status, body) == cls


def test_fatal_classes():
    assert errors.FATAL == {"auth", "insufficient_balance", "unknown_model"}


@pytest.mark.parametrize("exc, cls", [
    (asyncio.TimeoutError(), "timeout"),
    (TimeoutError(), "timeout"),
    (aiohttp.ServerTimeoutError("read"), "timeout"),
    (asyncio.CancelledError(), "cancelled"),
    (aiohttp.ClientPayloadError("Response payload is not completed"), "stream_cut"),
    (aiohttp.ServerDisconnectedError(), "connection_reset"),
    (ConnectionResetError(104, "reset"), "connection_reset"),
    (ValueError("bad json"), "malformed_response"),
    (RuntimeError("?"), "client_error"),
])
def test_classify_exception(exc, cls):
    assert classify_exception(exc) == cls


@pytest.mark.parametrize("value, seconds", [
    ("120", 120.0), (" 3 ", 3.0), ("0.5", 0.5), ("0", 0.0), ("-5", 0.0),
    (None, None), ("", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("soon", None),
])
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value) == seconds


def test_every_class_has_a_sentence():
    classes = [v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)]
    assert len(classes) >= 13
    for cls in classes:
        assert errors.sentence(cls) != cls and errors.sentence(cls).strip()
    assert errors.sentence("something_new") == "something_new"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_retry_after_that_is_not_a_finite_number_is_unknown(value):
    assert parse_retry_after(value) is None
