"""URL normalisation: every form people paste becomes the API base the client appends paths to."""

from __future__ import annotations

import pytest

from bench.urls import NormalizedUrl, UrlError, env_proxy_for, is_loopback, normalize


@pytest.mark.parametrize("pasted, base, api", [
    ("https://host", "https://host/v1", None),
    ("https://host/", "https://host/v1", None),
    ("https://host/v1", "https://host/v1", None),
    ("https://host/v1/", "https://host/v1", None),
    ("https://host/v1/chat/completions", "https://host/v1", "openai-chat"),
    ("https://host/v1/chat/completions/", "https://host/v1", "openai-chat"),
    ("https://host/v1/completions", "https://host/v1", "openai-completions"),
    ("https://api.anthropic.com/v1/messages", "https://api.anthropic.com/v1", "anthropic-messages"),
    ("https://host/v1/models", "https://host/v1", None),
    ("  http://127.0.0.1:8000/v1  ", "http://127.0.0.1:8000/v1", None),
    ("http://localhost:8000", "http://localhost:8000/v1", None),
    ("http://10.0.0.5:30000/v1/chat/completions", "http://10.0.0.5:30000/v1", "openai-chat"),
    ("http://[::1]:8080/v1", "http://[::1]:8080/v1", None),
    # provider path prefixes are part of the base
    ("https://dashscope.aliyuncs.com/compatible-mode/v1", "https://dashscope.aliyuncs.com/compatible-mode/v1", None),
    ("https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions",
     "https://dashscope.aliyuncs.com/compatible-mode/v1", "openai-chat"),
    ("https://ark.cn-beijing.volces.com/api/v3", "https://ark.cn-beijing.volces.com/api/v3", None),
    ("https://ark.cn-beijing.volces.com/api/v3/chat/completions", "https://ark.cn-beijing.volces.com/api/v3",
     "openai-chat"),
    ("https://openrouter.ai/api/v1/", "https://openrouter.ai/api/v1", None),
    # a pasted full endpoint without /v1 (Perplexity-style): its own prefix, nothing appended
    ("https://api.perplexity.ai/chat/completions", "https://api.perplexity.ai", "openai-chat"),
    # a query string or fragment is not part of a base
    ("https://host/v1/chat/completions?api-version=2024-01-01#x", "https://host/v1", "openai-chat"),
])
def test_normalize(pasted, base, api):
    assert normalize(pasted) == NormalizedUrl(base, api)


def test_server_root_keeps_scheme_host_and_port():
    assert normalize("https://host:8443/api/v3/chat/completions").server_root == "https://host:8443"
    assert normalize("http://localhost").server_root == "http://localhost"


@pytest.mark.parametrize("bad, words", [
    ("host:8000/v1", "no scheme"),
    ("localhost", "no scheme"),
    ("", "no scheme"),
    ("ftp://host/v1", "not supported"),
    ("ws://host/v1", "not supported"),
    ("http://", "no host"),
    ("http:///v1", "no host"),
    ("http://host:port/v1", "invalid port"),
    ("http://host:70000", "invalid port"),
])
def test_bad_urls_raise_url_error_with_a_reason(bad, words):
    with pytest.raises(UrlError, match=words):
        normalize(bad)


def test_url_error_is_a_value_error():
    assert issubclass(UrlError, ValueError)


@pytest.mark.parametrize("url, loop", [
    ("http://127.0.0.1:8000/v1", True), ("http://127.1.2.3", True), ("http://localhost:1", True),
    ("http://[::1]:80/v1", True), ("https://api.openai.com/v1", False), ("http://10.0.0.1", False),
    ("http://localhost.example.com", False),
])
def test_is_loopback(url, loop):
    assert is_loopback(url) is loop


_PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy",
               "ALL_PROXY", "REQUEST_METHOD")


def test_env_proxy_for(monkeypatch):
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    assert env_proxy_for("https://api.example.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert env_proxy_for("https://api.example.com/v1") == "http://proxy:3128"
    assert env_proxy_for("http://api.example.com/v1") is None  # only https is proxied
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert env_proxy_for("https://api.example.com/v1") is None
