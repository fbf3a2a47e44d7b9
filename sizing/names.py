"""Matching names people type (`a100-40g`, `R1`, `Qwen2.5-72B`) to catalog keys, with closest-name suggestions."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from sizing.errors import SizingError

_PREFIXES = ("nvidia-", "geforce-", "tesla-", "amd-", "instinct-", "huawei-")


def normalize(name: str) -> str:
    """Lower case, spaces/underscores/slashes to '-', vendor prefixes dropped: 'NVIDIA A100_40GB' -> 'a100-40gb'."""
    text = re.sub(r"[\s_/]+", "-", str(name).strip().lower())
    text = re.sub(r"-+", "-", text).strip("-")
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                text, changed = text[len(prefix):], True
    return text


def build_index(entries: Iterable[tuple[str, Iterable[str]]]) -> dict[str, str]:
    """{normalized name or alias: key} for (key, aliases) pairs; an alias never overrides another entry's key."""
    pairs = [(key, list(aliases)) for key, aliases in entries]
    index = {normalize(key): key for key, _ in pairs}
    for key, aliases in pairs:
        for alias in aliases:
            index.setdefault(normalize(alias), key)
    return index


def resolve(query: str, index: Mapping[str, str], kind: str, flag: str, listing_hint: str) -> str:
    """The catalog key for `query`, or a SizingError naming the closest names.

    `kind` is 'GPU', 'model' or 'quantization'; `listing_hint` is the command that lists them all.
    """
    wanted = normalize(query)
    if wanted in index:
        return index[wanted]
    close = difflib.get_close_matches(wanted, list(index), n=4, cutoff=0.5)
    suggestions: list[str] = []
    for name in close:
        if index[name] not in suggestions:
            suggestions.append(index[name])
    if suggestions:
        hint = "closest: " + ", ".join(suggestions)
    else:
        hint = "none is close"
    raise SizingError(flag, f"{flag}: unknown {kind} {query!r} ({hint}); `{listing_hint}` lists them all.")
