"""API adapters: request bodies/headers, and SSE events or JSON bodies read into per-event facts."""

from __future__ import annotations

import json

from bench.apis import ANTHROPIC_MESSAGES, APIS, OPENAI_CHAT, OPENAI_COMPLETIONS, PromptSpec
from bench.apis import anthropic, openai
from bench.apis.base import int_or_none, split_think_in_content
from bench.sse import Events


def events(*items, names=None) -> Events:
    """Events from dicts (JSON-encoded) or raw bytes, at t = 0, 1, 2, ..."""
    ev = Events()
    for i, item in enumerate(items):
        data = item if isinstance(item, bytes) else json.dumps(item).encode()
        ev.add(i, names[i] if names else None, data)
    return ev


def chunk(content=None, *, reasoning_content=None, reasoning=None, role=None, finish=None, usage=None, cid="c-1"):
    delta = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if reasoning_content is not None:
        delta["reasoning_content"] = reasoning_content
    if reasoning is not None:
        delta["reasoning"] = reasoning
    obj = {"id": cid, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta,
                                                                       "finish_reason": finish}]}
    if usage is not None:
        obj["usage"] = usage
    return obj


def usage(prompt, completion, reasoning=None):
    u = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if reasoning is not None:
        u["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return u


TEXT = PromptSpec(index=0, text="hello there", messages=None, input_len=2, output_len=64)
CHAT = PromptSpec(index=1, text=None, input_len=5, output_len=None,
                  messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])


# ---------------------------------------------------------------- registry, headers, request bodies

def test_registry_names_paths_and_key_variables():
    assert set(APIS) == {"openai-chat", "openai-completions", "anthropic-messages"}
    assert (OPENAI_CHAT.path, OPENAI_COMPLETIONS.path, ANTHROPIC_MESSAGES.path) == (
        "/chat/completions", "/completions", "/messages")
    assert OPENAI_CHAT.api_key_env == "OPENAI_API_KEY"
    assert ANTHROPIC_MESSAGES.api_key_env == "ANTHROPIC_API_KEY"


def test_openai_headers_bearer_key():
    h = OPENAI_CHAT.headers("sk-123")
    assert h["Authorization"] == "Bearer sk-123"
    assert h["Content-Type"] == "application/json"
    assert "x-api-key" not in h


def test_openai_headers_without_key_send_no_authorization():
    assert "Authorization" not in OPENAI_CHAT.headers(None)
    assert "Authorization" not in OPENAI_CHAT.headers("")


def test_anthropic_headers_use_x_api_key_and_version():
    h = ANTHROPIC_MESSAGES.headers("sk-ant-1")
    assert h["x-api-key"] == "sk-ant-1"
    assert h["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in h
    assert "x-api-key" not in ANTHROPIC_MESSAGES.headers(None)


def test_chat_body_streaming_with_continuous_usage():
    body = OPENAI_CHAT.build_body("m", TEXT, stream=True, continuous_usage=True)
    assert body == {
        "model": "m", "stream": True, "max_tokens": 64,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "messages": [{"role": "user", "content": "hello there"}],
    }


def test_chat_body_streaming_without_continuous_usage_still_asks_for_usage():
    body = OPENAI_CHAT.build_body("m", TEXT, stream=True, continuous_usage=False)
    assert body["stream_options"] == {"include_usage": True}


def test_chat_body_non_streaming_has_no_stream_options_and_keeps_messages():
    body = OPENAI_CHAT.build_body("m?search", CHAT, stream=False, continuous_usage=True)
    assert body == {"model": "m?search", "stream": False, "messages": CHAT.messages}  # no max_tokens: None asked


def test_completions_body_uses_prompt_text():
    body = OPENAI_COMPLETIONS.build_body("m", TEXT, stream=True, continuous_usage=False)
    assert body == {"model": "m", "stream": True, "max_tokens": 64, "stream_options": {"include_usage": True},
                    "prompt": "hello there"}


def test_completions_body_flattens_chat_messages():
    body = OPENAI_COMPLETIONS.build_body("m", CHAT, stream=False, continuous_usage=False)
    assert body["prompt"] == "Be brief.\nHi"


def test_anthropic_body_moves_system_messages_out_and_sets_max_tokens():
    body = ANTHROPIC_MESSAGES.build_body("claude", CHAT, stream=True, continuous_usage=True)
    assert body == {"model": "claude", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4096,
                    "stream": True, "system": "Be brief."}


def test_anthropic_body_text_prompt_uses_requested_max_tokens_and_no_system():
    body = ANTHROPIC_MESSAGES.build_body("claude", TEXT, stream=False, continuous_usage=False)
    assert body == {"model": "claude", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 64,
                    "stream": False}


def test_anthropic_body_joins_several_system_messages():
    p = PromptSpec(index=0, text=None, input_len=None, output_len=8, messages=[
        {"role": "system", "content": "A"}, {"role": "user", "content": "q"}, {"role": "system", "content": "B"}])
    body = ANTHROPIC_MESSAGES.build_body("c", p, stream=True, continuous_usage=False)
    assert body["system"] == "A\nB"
    assert body["messages"] == [{"role": "user", "content": "q"}]


# ---------------------------------------------------------------- OpenAI streams

def test_openai_chat_stream_with_role_chunk_finish_chunk_usage_only_chunk_and_done():
    p = openai.parse_stream(events(
        chunk(role="assistant", content=""),  # role announcement, empty content: no text
        chunk("Hello"),
        chunk(" world"),
        chunk(finish="length"),  # empty delta with finish_reason
        {"id": "c-1", "choices": [], "usage": usage(7, 2)},  # include_usage: usage-only, choices empty
        b"[DONE]",
    ))
    assert p.kinds == ["-", "a", "a", "-", "-", "-"]
    assert p.chars == [0, 5, 6, 0, 0, 0]
    assert (p.prompt_tokens, p.output_tokens, p.reasoning_tokens) == (7, 2, None)
    assert p.finish_reason == "length"
    assert p.response_id == "c-1"
    assert p.complete is True
    assert p.tokens is None  # usage only at the end: no per-event counts
    assert p.error is None and p.malformed is None


def test_openai_usage_chunk_without_choices_key():
    p = openai.parse_stream(events(chunk("x"), {"id": "c-1", "usage": usage(3, 1)}, b"[DONE]"))
    assert p.kinds == ["a", "-", "-"]
    assert p.output_tokens == 1


def test_openai_stream_without_done_is_incomplete():
    p = openai.parse_stream(events(chunk("x"), chunk("y")))
    assert p.kinds == ["a", "a"]
    assert p.complete is False


def test_openai_completions_stream_reads_text():
    p = openai.parse_stream(events(
        {"id": "cmpl-1", "choices": [{"index": 0, "text": "Once", "finish_reason": None}]},
        {"id": "cmpl-1", "choices": [{"index": 0, "text": "", "finish_reason": None}]},
        {"id": "cmpl-1", "choices": [{"index": 0, "text": " upon", "finish_reason": "stop"}]},
        b"[DONE]"))
    assert p.kinds == ["a", "-", "a", "-"]
    assert p.chars == [4, 0, 5, 0]
    assert p.finish_reason == "stop"
    assert p.response_id == "cmpl-1"


def test_openai_reasoning_content_and_reasoning_fields():
    p = openai.parse_stream(events(
        chunk(role="assistant", content=""),
        chunk(reasoning_content="Let me"),  # DeepSeek / vLLM reasoning parser
        chunk(reasoning=" think"),  # newer vLLM / OpenRouter
        chunk(content=None, reasoning_content=None),
        chunk("42"),
        {"choices": [], "usage": usage(10, 30, reasoning=25)},
        b"[DONE]"))
    assert p.kinds == ["-", "r", "r", "-", "a", "-", "-"]
    assert p.chars == [0, 6, 6, 0, 2, 0, 0]
    assert (p.output_tokens, p.reasoning_tokens) == (30, 25)


def test_openai_null_reasoning_field_with_content_is_answer():
    # vLLM sends "reasoning_content": null alongside content once reasoning is over
    obj = {"choices": [{"delta": {"content": "Hi", "reasoning_content": None}}]}
    p = openai.parse_stream(events(obj, b"[DONE]"))
    assert p.kinds == ["a", "-"]


def _kinds_for(*contents):
    return openai.parse_stream(events(*[chunk(c) for c in contents], b"[DONE]")).kinds


def test_think_tags_in_content_with_opening_tag():
    assert _kinds_for("<think>", "hmm", "</think>", "Answer") == ["r", "r", "r", "a", "-"]


def test_think_tags_in_content_without_opening_tag():
    # the chat template already emitted '<think>': only the closing tag shows in the stream
    assert _kinds_for("hmm", " more", "</think>", "Answer", " two") == ["r", "r", "r", "a", "a", "-"]


def test_answer_starting_in_the_same_chunk_as_the_closing_tag():
    assert _kinds_for("<think>hmm", "</think>The answer", " is") == ["r", "a", "a", "-"]


def test_blank_text_after_the_closing_tag_is_not_an_answer():
    assert _kinds_for("<think>hmm", "</think>\n\n", "Answer") == ["r", "r", "a", "-"]


def test_opening_tag_without_close_is_all_reasoning():
    # a reasoning model cut off by max_tokens before '</think>'
    assert _kinds_for("  <think>", "still", "thinking") == ["r", "r", "r", "-"]


def test_no_think_tags_means_all_answer():
    assert _kinds_for("I", " think", " so") == ["a", "a", "a", "-"]


def test_think_tags_split_across_chunks():
    assert _kinds_for("<", "think", ">", "hmm", "</", "think", ">", "Answer") == ["r"] * 7 + ["a", "-"]


def test_split_think_in_content_handles_a_tag_split_across_events():
    kinds = ["a", "a", "a", "a", "-"]
    texts = ["hmm", "</thi", "nk>", "Answer", None]
    split_think_in_content(kinds, texts)
    assert kinds == ["r", "r", "r", "a", "-"]


def test_split_think_in_content_leaves_reasoning_and_other_events_alone():
    kinds = ["-", "r", "a", "-", "a"]
    split_think_in_content(kinds, [None, None, "x</think>", None, "y"])
    assert kinds == ["-", "r", "r", "-", "a"]


def test_continuous_usage_stats_give_per_event_token_counts():
    p = openai.parse_stream(events(
        chunk(role="assistant", content="", usage=usage(5, 0)),
        chunk("Hello", usage=usage(5, 1)),  # 1 - 0 = 1 token
        chunk(" big world", usage=usage(5, 3)),  # 3 - 1 = 2 tokens in one chunk
        chunk("!", usage=usage(5, 4)),  # 4 - 3 = 1
        chunk(finish="stop", usage=usage(5, 4)),  # no new token
        {"choices": [], "usage": usage(5, 4)},
        b"[DONE]"))
    assert p.kinds == ["-", "a", "a", "a", "-", "-", "-"]
    assert p.tokens == [0, 1, 2, 1, 0, 0, 0]
    assert p.output_tokens == 4


def test_continuous_usage_first_chunk_carrying_several_tokens():
    p = openai.parse_stream(events(chunk("abc", usage=usage(5, 3)), chunk("d", usage=usage(5, 4)), b"[DONE]"))
    assert p.tokens == [3, 1, 0]


def test_per_event_counts_are_dropped_when_a_text_chunk_lacks_usage():
    p = openai.parse_stream(events(chunk("a", usage=usage(5, 1)), chunk("b"), chunk("c", usage=usage(5, 3)),
                                   b"[DONE]"))
    assert p.tokens is None
    assert p.output_tokens == 3


def test_error_object_mid_stream():
    p = openai.parse_stream(events(
        chunk("Hi"),
        {"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}}))
    assert p.kinds == ["a", "x"]
    assert p.error == "CUDA out of memory"
    assert p.complete is False


def test_error_as_plain_string():
    p = openai.parse_stream(events({"error": "boom"}))
    assert p.kinds == ["x"]
    assert p.error == "boom"


def test_malformed_json_event():
    p = openai.parse_stream(events(chunk("a"), b'{"choices": [', b"[DONE]"))
    assert p.kinds == ["a", "x", "-"]
    assert p.malformed is not None and "undecodable" in p.malformed
    assert p.error is None


def test_json_that_is_not_an_object_is_malformed():
    p = openai.parse_stream(events(b"42"))
    assert p.kinds == ["x"]
    assert p.malformed is not None


def test_empty_stream():
    p = openai.parse_stream(Events())
    assert p.kinds == [] and p.complete is False and p.tokens is None


# ---------------------------------------------------------------- OpenAI bodies

def test_openai_chat_body_with_reasoning_and_answer():
    p = openai.parse_body({
        "id": "chatcmpl-9",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hi there", "reasoning_content": "think"}}],
        "usage": usage(12, 20, reasoning=15)})
    assert p.kinds == ["r", "a"]
    assert p.chars == [5, 8]
    assert (p.prompt_tokens, p.output_tokens, p.reasoning_tokens) == (12, 20, 15)
    assert p.finish_reason == "stop"
    assert p.response_id == "chatcmpl-9"
    assert p.complete is True


def test_openai_completions_body():
    p = openai.parse_body({"id": "cmpl-1", "choices": [{"text": "abc", "finish_reason": "length"}],
                           "usage": usage(1, 3)})
    assert p.kinds == ["a"] and p.chars == [3]
    assert p.output_tokens == 3 and p.finish_reason == "length"


def test_openai_body_with_think_tags_only():
    p = openai.parse_body({"choices": [{"message": {"content": "<think>long thought"}}]})
    assert p.kinds == ["r"]


def test_openai_body_error_and_malformed():
    assert openai.parse_body({"error": {"message": "bad model"}}).error == "bad model"
    assert openai.parse_body([1, 2]).malformed is not None
    empty = openai.parse_body({"id": "x", "choices": []})
    assert empty.malformed is not None and empty.complete is False


# ---------------------------------------------------------------- Anthropic

ANTHROPIC_STREAM = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude",
        "stop_reason": None, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "thinking", "thinking": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "thinking_delta", "thinking": "Let me think"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1,
                             "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "text_delta", "text": "Hello"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "text_delta", "text": "!"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 15}}),
    ("message_stop", {"type": "message_stop"}),
]


def test_anthropic_full_stream_with_thinking():
    p = anthropic.parse_stream(events(*[d for _, d in ANTHROPIC_STREAM], names=[n for n, _ in ANTHROPIC_STREAM]))
    assert "".join(p.kinds) == "---r---aa---"
    assert p.chars == [0, 0, 0, 12, 0, 0, 0, 5, 1, 0, 0, 0]
    assert p.prompt_tokens == 25
    assert p.output_tokens == 15  # message_delta's cumulative count replaces message_start's 1
    assert p.finish_reason == "end_turn"
    assert p.response_id == "msg_1"
    assert p.complete is True
    assert p.error is None and p.malformed is None


def test_anthropic_stream_without_event_names_uses_the_type_field():
    p = anthropic.parse_stream(events(*[d for _, d in ANTHROPIC_STREAM]))
    assert "".join(p.kinds) == "---r---aa---"
    assert p.complete is True


def test_anthropic_stream_without_message_stop_is_incomplete():
    items = ANTHROPIC_STREAM[:-1]
    p = anthropic.parse_stream(events(*[d for _, d in items], names=[n for n, _ in items]))
    assert p.complete is False


def test_anthropic_empty_text_delta_carries_no_text():
    p = anthropic.parse_stream(events({"type": "content_block_delta", "delta": {"type": "text_delta", "text": ""}},
                                      names=["content_block_delta"]))
    assert p.kinds == ["-"]


def test_anthropic_error_event():
    p = anthropic.parse_stream(events(
        ANTHROPIC_STREAM[0][1],
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        names=["message_start", "error"]))
    assert p.kinds == ["-", "x"]
    assert p.error == "overloaded_error: Overloaded"
    assert p.complete is False


def test_anthropic_malformed_event():
    p = anthropic.parse_stream(events(b"{not json", names=["content_block_delta"]))
    assert p.kinds == ["x"]
    assert p.malformed is not None


def test_anthropic_body_with_thinking_and_text():
    p = anthropic.parse_body({
        "id": "msg_2", "type": "message", "role": "assistant", "stop_reason": "max_tokens",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "text", "text": "Hello"}],
        "usage": {"input_tokens": 10, "output_tokens": 20}})
    assert p.kinds == ["r", "a"] and p.chars == [3, 5]
    assert (p.prompt_tokens, p.output_tokens) == (10, 20)
    assert p.finish_reason == "max_tokens" and p.response_id == "msg_2" and p.complete is True


def test_anthropic_error_body_and_non_object():
    p = anthropic.parse_body({"type": "error", "error": {"type": "authentication_error",
                                                         "message": "invalid x-api-key"}})
    assert p.error == "authentication_error: invalid x-api-key"
    assert p.complete is False
    assert anthropic.parse_body("nope").malformed is not None


def test_int_or_none_rejects_bools_and_strings():
    assert int_or_none(3) == 3
    assert int_or_none(0) == 0
    assert int_or_none(True) is None
    assert int_or_none("3") is None
    assert int_or_none(3.0) is None
