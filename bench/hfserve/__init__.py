"""`python -m bench.hfserve`: a small OpenAI-compatible server around Hugging Face ``transformers``, for
benchmarking a real model on a GPU (or the CPU) where vLLM is not available.

- :mod:`.tokenizer` trains a byte-level BPE tokenizer on local text, for models that come without one;
- :mod:`.model` builds the model and tokenizer from a folder, a ``config.json`` or an architecture name (random
  weights on request);
- :mod:`.engine` is the generation worker: one thread running a batched decode loop with requests admitted
  between steps;
- :mod:`.detok` turns token ids into text deltas as they are generated;
- :mod:`.protocol` validates requests and builds the response bytes, as vLLM sends them (no torch there);
- :mod:`.server` is the aiohttp application and the command line.

torch and transformers are optional (the ``torch`` extra): this package imports without them, and
``python -m bench.hfserve`` says in one sentence what is missing and exits 2.
"""
from __future__ import annotations

import importlib.util

REQUIRED = ("torch", "transformers", "tokenizers")


def missing_requirements() -> list[str]:
    """The modules the server needs that are not installed (without importing them)."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]
