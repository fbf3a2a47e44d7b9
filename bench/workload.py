"""Workloads: synthetic prompts of a controlled length, or prompts from a dataset file. Pure; the RNG is a parameter.

Synthetic prompts are made of common English words that are single tokens, with their leading space, in the
byte-level BPE vocabularies of GPT, Llama 3, Qwen and DeepSeek, so ``--input-len N`` gives a prompt of about ``N``
tokens (the chat template adds a few more). The requested length is a target, not a measurement: the server's
``usage.prompt_tokens`` is what the summary reports.

Each load level sends the same prompts, but the first word of each prompt's unique part is changed per level so a
server's prefix cache cannot make a later level look faster than an earlier one. ``--prefix-len P`` puts the same
``P`` words in front of every prompt of every level, for measuring prefix caching on purpose.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .apis.base import PromptSpec

WORDS = tuple("""
the of and to in is was for that with as on by at from his her are be this which or had it not but were an have
they their one all has been more can there who when she would will if so out about up no into than them time only
other some its like then two could over new most first after our also years year these many where may between
such way well any work used through life just each much world because three before those people state while
same both under city part last great long high must did school during day four over good own around place back
year since end against even man found did think water small take number people without being again area every
often home public family name set house power school right side large still order book story point group best
early best field land line music fact game play show light next case party best word close half sea river west
south north east open real form river city rock food body tree road head hand plan hope sign girl boy king gold
blue green red white black dark fire wind rain snow star moon sun ship car train plane horse bird fish dog cat
bank shop farm town park hill lake wall door room window table chair bed floor glass paper wood stone iron steel
""".split())
WORDS = tuple(dict.fromkeys(WORDS))  # unique, order kept (so a seed gives the same prompts on every machine)


@dataclass(frozen=True)
class LengthSpec:
    """A token length: fixed (``512``), ``uniform:LO,HI`` or ``normal:MEAN,STD`` (clipped at 1)."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "LengthSpec":
        text = text.strip()
        kind, sep, args = text.partition(":")
        if not sep:
            value = int(text)
            if value < 1:
                raise ValueError("must be at least 1")
            return cls("fixed", value)
        parts = [float(p) for p in args.split(",")]
        if kind == "uniform" and len(parts) == 2 and 1 <= parts[0] <= parts[1]:
            return cls("uniform", parts[0], parts[1])
        if kind == "normal" and len(parts) == 2 and parts[0] >= 1 and parts[1] >= 0:
            return cls("normal", parts[0], parts[1])
        raise ValueError("expected N, uniform:LO,HI (1 <= LO <= HI) or normal:MEAN,STD")

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        if self.kind == "fixed":
            return [int(self.a)] * n
        if self.kind == "uniform":
            return [int(x) for x in rng.integers(int(self.a), int(self.b) + 1, size=n)]
        return [max(1, int(round(x))) for x in rng.normal(self.a, self.b, size=n)]

    def __str__(self) -> str:
        return str(int(self.a)) if self.kind == "fixed" else f"{self.kind}:{self.a:g},{self.b:g}"


def synthetic_prompts(rng: np.random.Generator, n: int, input_len: LengthSpec, output_len: LengthSpec | None,
                      prefix_len: int = 0) -> list[PromptSpec]:
    """``n`` prompts of ``input_len`` words (``prefix_len`` of them shared by all), asking for ``output_len``."""
    prefix = " ".join(rng.choice(WORDS, size=prefix_len)) if prefix_len else ""
    in_lens = input_len.sample(rng, n)
    out_lens = output_len.sample(rng, n) if output_len else [None] * n
    prompts = []
    for i, (in_len, out_len) in enumerate(zip(in_lens, out_lens)):
        unique = max(in_len - prefix_len, 1)
        body = " ".join(rng.choice(WORDS, size=unique))
        text = f"{prefix} {body}" if prefix else body
        prompts.append(PromptSpec(index=i, text=text, messages=None, input_len=max(in_len, prefix_len + 1),
                                  output_len=out_len))
    return prompts


def salt_for_level(prompt: PromptSpec, level_index: int, prefix_len: int = 0) -> PromptSpec:
    """The prompt as sent at load level ``level_index`` (level 0 sends it unchanged).

    Synthetic prompts get their first unique word replaced by a level-specific one (same length); dataset prompts
    get a level-specific word in front of their text (or of the first message), one token longer.
    """
    if level_index == 0:
        return prompt
    salt = WORDS[level_index % len(WORDS)]
    if prompt.text is not None:
        words = prompt.text.split(" ")
        pos = min(prefix_len, len(words) - 1)
        if words[pos] in WORDS:
            words[pos] = WORDS[(WORDS.index(words[pos]) + level_index) % len(WORDS)]
            return replace(prompt, text=" ".join(words))
        return replace(prompt, text=f"{salt} {prompt.text}")
    if prompt.messages:
        messages = [dict(m) for m in prompt.messages]
        for m in messages:
            if isinstance(m.get("content"), str):
                m["content"] = f"{salt} {m['content']}"
                break
        return replace(prompt, messages=messages)
    return prompt


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message says which line and why."""


def _entry_to_prompt(obj: Any, where: str) -> tuple[str | None, list[dict] | None, int | None]:
    """(text, messages, output token hint) of one dataset entry."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    out_hint = obj.get("max_tokens", obj.get("output_len"))
    out_hint = out_hint if isinstance(out_hint, int) and out_hint > 0 else None
    for key in ("prompt", "text", "input"):
        if isinstance(obj.get(key), str):
            return obj[key], None, out_hint
    if isinstance(obj.get("messages"), list) and obj["messages"]:
        return None, obj["messages"], out_hint
    conv = obj.get("conversations") or obj.get("conversation")
    if isinstance(conv, list):  # ShareGPT: [{"from": "human"|"gpt", "value": ...}, ...]
        human = next((t for t in conv if isinstance(t, dict) and t.get("from") in ("human", "user")), None)
        if human and isinstance(human.get("value"), str):
            if out_hint is None:
                reply = next((t for t in conv[conv.index(human) + 1:]
                              if isinstance(t, dict) and t.get("from") in ("gpt", "assistant")), None)
                if reply and isinstance(reply.get("value"), str) and reply["value"]:
                    out_hint = max(1, round(len(reply["value"]) / 4))
            return human["value"], None, out_hint
    raise DatasetError(f"{where}: no 'prompt', 'text', 'messages' or ShareGPT 'conversations' field")


def load_dataset(path: Path) -> list[tuple[str | None, list[dict] | None, int | None]]:
    """Entries of a JSONL file (one object per line) or a JSON array file (ShareGPT dumps)."""
    raw = path.read_text(encoding="utf-8")
    stripped = raw.lstrip()
    entries = []
    if stripped.startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        for i, obj in enumerate(items):
            entries.append(_entry_to_prompt(obj, f"{path} item {i}"))
    else:
        for lineno, line in enumerate(raw.split("\n"), 1):  # not splitlines(): U+2028 is valid inside JSON
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
            entries.append(_entry_to_prompt(obj, f"{path} line {lineno}"))
    if not entries:
        raise DatasetError(f"{path}: no prompts found")
    return entries


def dataset_prompts(entries: list[tuple[str | None, list[dict] | None, int | None]], rng: np.random.Generator,
                    n: int, output_len: LengthSpec | None) -> list[PromptSpec]:
    """``n`` prompts drawn from ``entries`` (shuffled with ``rng``, cycling when there are fewer entries)."""
    order = rng.permutation(len(entries))
    out_lens = output_len.sample(rng, n) if output_len else None
    prompts = []
    for i in range(n):
        text, messages, hint = entries[int(order[i % len(entries)])]
        chars = len(text) if text is not None else sum(len(str(m.get("content", ""))) for m in messages or [])
        prompts.append(PromptSpec(index=i, text=text, messages=messages, input_len=max(1, round(chars / 4)),
                                  output_len=out_lens[i] if out_lens else hint))
    return prompts
