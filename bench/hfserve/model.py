"""The model and tokenizer to serve, from what ``--model`` names.

- a folder with ``config.json``: its weights (``from_pretrained``), or random weights with ``--random-weights`` (also
  when it has none: a folder without weights is an error unless asked);
- a ``config.json`` file (any name ending in ``.json``), with ``--random-weights``: e.g. a public model's config
  written by hand, since no weights can be downloaded on the machines we benchmark on;
- an architecture name (``Qwen2ForCausalLM``) or model type (``qwen2``), with ``--random-weights``: transformers'
  default config of that type.

``--config-overrides '{"num_hidden_layers": 2}'`` changes the config before a random-weight model is built. The
tokenizer is the folder's (or ``--tokenizer DIR``); where there is none, a byte-level BPE is trained on local text
(``tokenizer.py``) with at most ``--tokenizer-vocab`` tokens, and only its ids are ever sampled (a random-weight
model's vocabulary is usually larger). Random weights are drawn on the target device (seeded), which takes well under
a second for 1.5 B parameters on a GPU instead of tens of seconds on the CPU.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .tokenizer import train_tokenizer

log = logging.getLogger("bench.hfserve")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
DEFAULT_MAX_MODEL_LEN = 4096  # when the config states no limit


class ModelError(Exception):
    """--model (or a flag beside it) cannot be served; the message says why, in one sentence."""


@dataclass(frozen=True)
class ModelSpec:
    model: str
    device: str = "cuda"
    dtype: str | None = None              # None: bfloat16 on CUDA, float32 on the CPU
    random_weights: bool = False
    config_overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    tokenizer_vocab: int = 8192
    max_model_len: int | None = None
    attn_implementation: str | None = None
    seed: int = 0


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    name: str                 # the default served model id
    max_model_len: int
    sample_vocab: int         # ids below this may be sampled
    eos_ids: frozenset[int]
    pad_id: int
    dtype: torch.dtype
    device: torch.device
    parameters: int
    weights: str              # "random" or the folder the weights came from
    tokenizer_source: str     # the folder, or "trained on N local files (V tokens)"
    load_s: float


def resolve_dtype(name: str | None, device: str) -> torch.dtype:
    if name is None or name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
                "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}[name]
    except KeyError:
        raise ModelError(f"unknown --dtype {name!r}: use bfloat16, float16 or float32") from None


def load(spec: ModelSpec) -> Loaded:
    t0 = time.monotonic()
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda, but PyTorch sees no CUDA GPU here (use --device cpu)")
    device = torch.device(spec.device)
    dtype = resolve_dtype(spec.dtype, spec.device)
    config, folder, name = _config(spec)
    weights_here = folder is not None and any(any(folder.glob(p)) for p in WEIGHT_FILES)
    if not spec.random_weights and not weights_here:
        where = f"{folder} has no weights" if folder is not None else f"{spec.model!r} names no weights"
        raise ModelError(f"{where}: pass --random-weights to serve the architecture with random weights")
    if spec.random_weights:
        for key, value in spec.config_overrides.items():
            setattr(config, key, value)
    elif spec.config_overrides:
        raise ModelError("--config-overrides only applies to --random-weights models")
    _check_full_attention(config)

    limit = getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_MODEL_LEN
    max_model_len = int(min(spec.max_model_len, limit) if spec.max_model_len else limit)
    tok_dir = Path(spec.tokenizer) if spec.tokenizer else folder
    trained = tok_dir is None or not any((tok_dir / f).is_file() for f in TOKENIZER_FILES)
    if trained:
        vocab = min(spec.tokenizer_vocab, config.vocab_size)
        tokenizer = train_tokenizer(vocab, max_model_len)
        tokenizer_source = f"byte-level BPE trained on local text ({len(tokenizer)} tokens)"
    else:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        tokenizer_source = str(tok_dir)
    if len(tokenizer) > config.vocab_size:
        raise ModelError(f"the tokenizer has {len(tokenizer)} tokens, more than the model's {config.vocab_size}")

    torch.manual_seed(spec.seed)
    kwargs: dict[str, Any] = {_dtype_kwarg(): dtype}
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    if spec.random_weights:
        model = _random_model(config, device, kwargs)
        weights = "random"
    else:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).to(device)
        weights = str(folder.resolve())
    model.eval()

    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if not trained:  # the model's own tokenizer: its generation config's EOS ids count too
        eos |= _ids(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
        eos |= _ids(getattr(config, "eos_token_id", None))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(eos) if eos else 0)
    loaded = Loaded(model=model, tokenizer=tokenizer, name=name, max_model_len=max_model_len,
                    sample_vocab=min(len(tokenizer), config.vocab_size), eos_ids=frozenset(eos), pad_id=int(pad),
                    dtype=dtype, device=device, parameters=sum(p.numel() for p in model.parameters()),
                    weights=weights, tokenizer_source=tokenizer_source, load_s=0.0)
    warm_up(loaded)
    loaded.load_s = time.monotonic() - t0
    return loaded


def _config(spec: ModelSpec):
    """(config, the folder it came from or None, default served name)."""
    from transformers import AutoConfig

    path = Path(spec.model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json")
        return AutoConfig.from_pretrained(path), path, path.resolve().name
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ModelError(f"{path}: no such file")
        if not spec.random_weights:
            raise ModelError(f"{path} is a config without weights: pass --random-weights to serve it with random "
                             "weights")
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read {path} as JSON ({e})") from None
        if not isinstance(values, dict) or "model_type" not in values:
            raise ModelError(f"{path} has no \"model_type\": is it a transformers config.json?")
        model_type = values.pop("model_type")
        for key in ("transformers_version", "_name_or_path"):
            values.pop(key, None)
        try:
            config = AutoConfig.for_model(model_type, **values)
        except (ValueError, KeyError) as e:
            raise ModelError(f"{path}: transformers does not know model_type {model_type!r} ({e})") from None
        name = path.parent.resolve().name if path.name == "config.json" else path.stem
        return config, None, name
    if not spec.random_weights:
        raise ModelError(f"--model {spec.model!r} is neither a folder nor a .json file; an architecture name "
                         "(e.g. Qwen2ForCausalLM) needs --random-weights")
    return AutoConfig.for_model(_model_type(spec.model)), None, spec.model


def _model_type(name: str) -> str:
    """qwen2 -> qwen2; Qwen2ForCausalLM -> qwen2 (transformers' causal-LM mapping, read backwards)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if name in CONFIG_MAPPING_NAMES:
        return name
    for model_type, arch in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items():
        if arch == name or (isinstance(arch, (list, tuple)) and name in arch):
            return model_type
    raise ModelError(f"--model {name!r} is not a causal-LM architecture or model type transformers knows")


def _check_full_attention(config) -> None:
    """The engine keeps one left-padded cache for the whole batch: every layer must attend over all tokens."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = set(getattr(text, "layer_types", None) or ())
    if types - {"full_attention"}:
        raise ModelError(f"layer types {sorted(types)}: only full-attention models are served (no sliding-window "
                         "or linear-attention layers)")


def _dtype_kwarg() -> str:
    """transformers 4.56 renamed from_pretrained's torch_dtype to dtype."""
    import transformers
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _random_model(config, device: torch.device, kwargs: dict[str, Any]):
    from transformers import AutoModelForCausalLM
    try:
        with device:  # draw the weights where they will live
            return AutoModelForCausalLM.from_config(config, **kwargs)
    except (RuntimeError, NotImplementedError, TypeError) as e:
        log.warning("building on %s directly failed (%s); building on the CPU and moving it", device, e)
        return AutoModelForCausalLM.from_config(config, **kwargs).to(device)


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, (list, tuple, set)) else {int(value)}


def warm_up(loaded: Loaded) -> None:
    """One short prefill and two decode steps, so that the first request does not pay for CUDA context creation,
    kernel loading and library handles."""
    from .engine import new_cache

    with torch.inference_mode():
        ids = torch.full((1, 8), loaded.pad_id, dtype=torch.long, device=loaded.device)
        cache = new_cache()
        loaded.model(input_ids=ids, past_key_values=cache, use_cache=True)
        for _ in range(2):
            loaded.model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
