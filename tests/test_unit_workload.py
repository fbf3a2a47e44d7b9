"""Workloads: length specs, synthetic prompts, per-level salting and dataset files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.apis.base import PromptSpec
from bench.workload import (WORDS, DatasetError, LengthSpec, dataset_prompts, load_dataset, salt_for_level,
                            synthetic_prompts)


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- LengthSpec

def test_fixed_length():
    spec = LengthSpec.parse(" 512 ")
    assert spec == LengthSpec("fixed", 512)
    assert spec.sample(rng(), 3) == [512, 512, 512]
    assert str(spec) == "512"


def test_uniform_length_is_inclusive_and_covers_its_range():
    spec = LengthSpec.parse("uniform:10,20")
    assert spec == LengthSpec("uniform", 10.0, 20.0)
    xs = spec.sample(rng(1), 3000)
    assert min(xs) == 10 and max(xs) == 20  # 11 values, 3000 draws: both ends appear
    assert set(xs) == set(range(10, 21))
    assert str(spec) == "uniform:10,20"


def test_uniform_with_equal_bounds():
    assert LengthSpec.parse("uniform:7,7").sample(rng(), 4) == [7, 7, 7, 7]


def test_normal_length_mean_and_clipping():
    xs = LengthSpec.parse("normal:200,20").sample(rng(2), 4000)
    assert np.mean(xs) == pytest.approx(200, abs=2)  # standard error 20 / sqrt(4000) = 0.32
    assert np.std(xs) == pytest.approx(20, rel=0.08)
    clipped = LengthSpec.parse("normal:1,100").sample(rng(3), 1000)
    assert min(clipped) == 1  # about half the draws are below 1: clipped, never 0 or negative
    assert str(LengthSpec.parse("normal:200,20")) == "normal:200,20"


def test_zero_std_normal_is_constant():
    assert LengthSpec.parse("normal:64,0").sample(rng(), 3) == [64, 64, 64]


@pytest.mark.parametrize("bad", ["0", "-3", "abc", "", "1.5", "uniform:20,10", "uniform:0,5", "uniform:5",
                                 "uniform:a,b", "uniform:1,2,3", "normal:0,1", "normal:10,-1", "normal:10",
                                 "lognormal:1,2", "fixed:5"])
def test_bad_length_specs_raise_value_error(bad):
    with pytest.raises(ValueError):
        LengthSpec.parse(bad)


def test_sampling_is_reproducible_with_a_seed():
    spec = LengthSpec.parse("uniform:1,1000")
    assert spec.sample(rng(42), 50) == spec.sample(rng(42), 50)
    assert spec.sample(rng(42), 50) != spec.sample(rng(43), 50)


# ---------------------------------------------------------------- synthetic prompts

def test_vocabulary_is_unique_single_words():
    assert len(set(WORDS)) == len(WORDS)
    assert all(w and w.isalpha() for w in WORDS)


def test_synthetic_prompts_have_the_requested_word_counts_and_a_shared_prefix():
    prompts = synthetic_prompts(rng(5), 6, LengthSpec.parse("50"), LengthSpec.parse("20"), prefix_len=10)
    assert [p.index for p in prompts] == list(range(6))
    words = [p.text.split(" ") for p in prompts]
    assert all(len(w) == 50 for w in words)
    assert all(w[:10] == words[0][:10] for w in words)  # the shared prefix
    assert len({tuple(w[10:]) for w in words}) == 6  # unique parts differ
    assert all(x in WORDS for w in words for x in w)
    assert all(p.input_len == 50 and p.output_len == 20 and p.messages is None for p in prompts)


def test_synthetic_prompt_lengths_follow_a_distribution():
    prompts = synthetic_prompts(rng(6), 40, LengthSpec.parse("uniform:5,30"), None)
    for p in prompts:
        assert len(p.text.split(" ")) == p.input_len
        assert 5 <= p.input_len <= 30
        assert p.output_len is None
    assert len({p.input_len for p in prompts}) > 5


def test_prefix_longer_than_the_input_still_leaves_one_unique_word():
    (p,) = synthetic_prompts(rng(), 1, LengthSpec.parse("5"), None, prefix_len=10)
    assert len(p.text.split(" ")) == 11  # 10 shared + 1 unique
    assert p.input_len == 11  # the requested length is adjusted to what is sent


def test_synthetic_prompts_are_reproducible_with_a_seed():
    a = synthetic_prompts(rng(9), 3, LengthSpec.parse("30"), None, prefix_len=4)
    b = synthetic_prompts(rng(9), 3, LengthSpec.parse("30"), None, prefix_len=4)
    c = synthetic_prompts(rng(10), 3, LengthSpec.parse("30"), None, prefix_len=4)
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.text for p in a] != [p.text for p in c]


# ---------------------------------------------------------------- salting per level

@pytest.mark.parametrize("prefix_len", [0, 3])
def test_salting_changes_one_word_after_the_prefix_and_keeps_the_length(prefix_len):
    (p,) = synthetic_prompts(rng(11), 1, LengthSpec.parse("20"), LengthSpec.parse("8"), prefix_len=prefix_len)
    orig = p.text.split(" ")
    salted = [salt_for_level(p, level, prefix_len) for level in (1, 2, 3)]
    for s in salted:
        words = s.text.split(" ")
        assert len(words) == len(orig)
        assert words[:prefix_len] == orig[:prefix_len]  # the shared prefix stays cacheable
        assert words[prefix_len] != orig[prefix_len]  # the first unique word changed...
        assert words[prefix_len] in WORDS  # ...to another single-token word
        assert words[prefix_len + 1:] == orig[prefix_len + 1:]  # nothing else changed
        assert (s.index, s.input_len, s.output_len) == (p.index, p.input_len, p.output_len)
    assert len({s.text for s in salted}) == 3  # each level its own prompt


def test_salting_level_zero_unchanged_and_dataset_prompts_get_a_level_word_in_front():
    (p,) = synthetic_prompts(rng(), 1, LengthSpec.parse("10"), None)
    assert salt_for_level(p, 0) is p
    chat = PromptSpec(index=0, text=None, messages=[{"role": "system", "content": "be brief"},
                                                    {"role": "user", "content": "hi"}], input_len=1, output_len=None)
    assert salt_for_level(chat, 0) is chat
    salted = salt_for_level(chat, 2)
    # the first message with text gets one extra word; level 2 and level 3 differ; the original is untouched
    assert salted.messages[0]["content"].endswith(" be brief") and salted.messages[0]["content"] != "be brief"
    assert salted.messages[1]["content"] == "hi"
    assert salt_for_level(chat, 3).messages[0]["content"] != salted.messages[0]["content"]
    assert chat.messages[0]["content"] == "be brief"
    text = PromptSpec(index=0, text="Explain KV caches", messages=None, input_len=4, output_len=None)
    assert salt_for_level(text, 1).text.endswith(" Explain KV caches")
    assert len(salt_for_level(text, 1).text.split()) == 4


def test_salting_is_deterministic():
    (p,) = synthetic_prompts(rng(12), 1, LengthSpec.parse("10"), None)
    assert salt_for_level(p, 1).text == salt_for_level(p, 1).text


# ---------------------------------------------------------------- datasets

def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_with_prompt_text_input_and_messages(tmp_path):
    lines = [
        {"prompt": "p1", "max_tokens": 32},
        {"text": "t2", "output_len": 8},
        {"input": "i3"},
        {"messages": [{"role": "user", "content": "m4"}], "max_tokens": 0},  # 0 is not a usable hint
        {"prompt": "p5", "max_tokens": "10"},  # a string is not a hint
    ]
    path = write(tmp_path, "d.jsonl", "\n".join(json.dumps(x) for x in lines[:2]) + "\n\n   \n" +
                 "\n".join(json.dumps(x) for x in lines[2:]) + "\n")
    assert load_dataset(path) == [("p1", None, 32), ("t2", None, 8), ("i3", None, None),
                                  (None, [{"role": "user", "content": "m4"}], None), ("p5", None, None)]


def test_sharegpt_json_array(tmp_path):
    data = [
        {"id": "a", "conversations": [{"from": "human", "value": "Tell me a story"},
                                      {"from": "gpt", "value": "x" * 40}]},  # reply 40 chars / 4 = 10 tokens
        {"id": "b", "conversations": [{"from": "system", "value": "s"}, {"from": "user", "value": "Hi"},
                                      {"from": "assistant", "value": "abcdef"}]},  # 6 / 4 = 1.5 -> 2
        {"id": "c", "conversation": [{"from": "human", "value": "No reply"}]},
        {"id": "d", "conversations": [{"from": "human", "value": "hinted"}, {"from": "gpt", "value": "y" * 400}],
         "max_tokens": 5},
    ]
    path = write(tmp_path, "sharegpt.json", "  \n" + json.dumps(data, indent=1))
    assert load_dataset(path) == [("Tell me a story", None, 10), ("Hi", None, 2), ("No reply", None, None),
                                  ("hinted", None, 5)]


def test_sharegpt_lines_in_jsonl(tmp_path):
    obj = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "abcdefgh"}]}
    assert load_dataset(write(tmp_path, "s.jsonl", json.dumps(obj) + "\n")) == [("q", None, 2)]


def test_bad_json_line_names_the_line(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"prompt": "ok"}\n\n{"prompt": "broken"\n')
    with pytest.raises(DatasetError, match=r"line 3: not valid JSON"):
        load_dataset(path)


def test_line_without_a_prompt_field_names_the_line(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"prompt": "ok"}\n{"question": "?"}\n')
    with pytest.raises(DatasetError, match=r"line 2: no 'prompt'"):
        load_dataset(path)


def test_non_object_line(tmp_path):
    with pytest.raises(DatasetError, match=r"line 1: expected a JSON object"):
        load_dataset(write(tmp_path, "d.jsonl", '"just a string"\n'))


def test_bad_array_item_names_the_item(tmp_path):
    with pytest.raises(DatasetError, match=r"item 1: no 'prompt'"):
        load_dataset(write(tmp_path, "d.json", '[{"prompt": "a"}, {"messages": []}]'))


def test_broken_json_array(tmp_path):
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(write(tmp_path, "d.json", '[{"prompt": "a"},'))


@pytest.mark.parametrize("text", ["", "\n\n  \n", "[]"])
def test_empty_dataset(tmp_path, text):
    with pytest.raises(DatasetError, match="no prompts found"):
        load_dataset(write(tmp_path, "d.jsonl", text))


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_jsonl_string_containing_a_unicode_line_separator(tmp_path):
    path = write(tmp_path, "d.jsonl", json.dumps({"prompt": "a\u2028b"}, ensure_ascii=False) + "\n" +
                 json.dumps({"prompt": "c\x85d"}, ensure_ascii=False) + "\n")
    assert load_dataset(path) == [("a\u2028b", None, None), ("c\x85d", None, None)]


def test_dataset_prompts_cycle_shuffle_and_estimate_input_length():
    entries = [("x" * 40, None, 7),
               (None, [{"role": "system", "content": "abcd"}, {"role": "user", "content": "efghijkl"}], None)]
    prompts = dataset_prompts(entries, rng(4), 5, None)
    assert [p.index for p in prompts] == [0, 1, 2, 3, 4]
    # cycling: prompt i and i + 2 come from the same entry, and both entries are used
    assert all(prompts[i].text == prompts[i + 2].text and prompts[i].messages == prompts[i + 2].messages
               for i in range(3))
    assert {prompts[0].text, prompts[1].text} == {"x" * 40, None}
    by_kind = {("text" if p.text else "messages"): p for p in prompts}
    assert by_kind["text"].input_len == 10  # 40 chars / 4
    assert by_kind["messages"].input_len == 3  # (4 + 8) chars / 4
    assert by_kind["text"].output_len == 7  # the entry's hint
    assert by_kind["messages"].output_len is None


def test_dataset_prompts_output_len_overrides_hints():
    entries = [("abc", None, 7)]
    prompts = dataset_prompts(entries, rng(), 2, LengthSpec.parse("16"))
    assert [p.output_len for p in prompts] == [16, 16]
    assert prompts[0].input_len == 1  # round(3 / 4) = 1, at least 1


def test_dataset_prompts_are_reproducible_with_a_seed():
    entries = [(f"prompt {i}", None, None) for i in range(20)]
    a = [p.text for p in dataset_prompts(entries, rng(1), 10, None)]
    assert a == [p.text for p in dataset_prompts(entries, rng(1), 10, None)]
    assert a != [p.text for p in dataset_prompts(entries, rng(2), 10, None)]
