"""The model catalog (sizing/data/models.json) and models given as a Hugging Face config.json path."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sizing.arch import ModelArch, arch_from_config
from sizing.datafiles import read_json
from sizing.errors import SizingError
from sizing.names import build_index, resolve


@dataclass(frozen=True)
class ModelEntry:
    key: str
    hf_id: str
    arch: ModelArch
    aliases: tuple[str, ...] = ()
    published_params_total: float | None = None
    published_params_active: float | None = None
    published_params_source: str = ""
    checkpoints: dict[str, str] = field(default_factory=dict)   # quant key -> Hugging Face id of that checkpoint
    extended_context_tokens: int | None = None
    extended_context_how: str = ""
    source: str = ""
    confidence: str = ""
    notes: str = ""
    config: dict[str, Any] = field(default_factory=dict)        # the config.json keys the arch was read from
    quantized_config: dict[str, Any] = field(default_factory=dict)  # keys that differ in quantized checkpoints

    def arch_for(self, quant_key: str) -> ModelArch:
        """The architecture of the checkpoint for `quant_key`: quantized checkpoints may pad shapes (Qwen2.5-72B's
        AWQ/GPTQ checkpoints pad intermediate_size 29568 -> 29696 so TP 2/4/8 splits the groups of 128)."""
        overrides = {k: v for k, v in self.quantized_config.items() if k not in ("applies_to", "source")}
        if overrides and quant_key in self.quantized_config.get("applies_to", ()):
            return arch_from_config({**self.config, **overrides}, where=f"{self.key} ({quant_key} checkpoint)")
        return self.arch


def entry_from_json(item: dict[str, Any]) -> ModelEntry:
    published = item.get("published_params") or {}
    extended = item.get("extended_context") or {}
    return ModelEntry(
        key=item["key"], hf_id=item["hf_id"], arch=arch_from_config(item["config"], where=f"models.json:{item['key']}"),
        aliases=tuple(item.get("aliases", ())),
        published_params_total=published.get("total"), published_params_active=published.get("active"),
        published_params_source=published.get("source", ""), checkpoints=dict(item.get("checkpoints") or {}),
        extended_context_tokens=extended.get("tokens"), extended_context_how=extended.get("how", ""),
        source=item.get("source", ""), confidence=item.get("confidence", ""), notes=item.get("notes", ""),
        config=dict(item["config"]), quantized_config=dict(item.get("quantized_config") or {}))


@lru_cache(maxsize=1)
def load_models() -> tuple[ModelEntry, ...]:
    """Every model in sizing/data/models.json, in file order."""
    return tuple(entry_from_json(item) for item in read_json("models.json")["models"])


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    return build_index((m.key, m.aliases + (m.hf_id, m.hf_id.split("/")[-1])) for m in load_models())


def model_from_config_file(path: str, flag: str = "--model") -> ModelEntry:
    """A ModelEntry from a config.json file (or a directory holding one)."""
    file_path = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(file_path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except FileNotFoundError:
        raise SizingError(flag, f"{flag}: no config.json at {file_path!r}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SizingError(flag, f"{flag}: {file_path!r} is not a readable JSON config.json ({exc.__class__.__name__}: "
                                f"{exc}).") from None
    if not isinstance(raw, dict):
        raise SizingError(flag, f"{flag}: {file_path!r} holds JSON but not an object of config keys.")
    arch = arch_from_config(raw, where=file_path)
    name = raw.get("_name_or_path") or os.path.basename(os.path.dirname(os.path.abspath(file_path))) or file_path
    return ModelEntry(key=str(name), hf_id=str(name), arch=arch, source=f"config.json at {file_path}",
                      confidence="as given", config=dict(raw))


def resolve_model(name: str, flag: str = "--model") -> ModelEntry:
    """A catalog model by key/alias/Hugging Face id, or a config.json path (anything ending in .json or an existing
    path); SizingError with the closest names otherwise."""
    if name.endswith(".json") or os.path.sep in name and os.path.exists(name) or os.path.isdir(name):
        return model_from_config_file(name, flag)
    key = resolve(name, _index(), "model", flag, "sizing models")
    return next(model for model in load_models() if model.key == key)
