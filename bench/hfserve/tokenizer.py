"""A byte-level BPE tokenizer trained on local text, for models that come without one (random weights).

No tokenizer can be downloaded where the benchmarks and tests run, so one is trained here with ``tokenizers`` on
this project's own Python and Markdown files (sorted, so the result is deterministic): byte-level, so any text
encodes; ``<|endoftext|>`` (padding), ``<|im_start|>`` and ``<|im_end|>`` (end of a turn, the EOS) as special
tokens; Qwen's ChatML chat template, so ``/v1/chat/completions`` works. Training on ~1 MB takes about a second.
"""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages, which holds bench/ and sizing/)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS, PAD = "<|im_end|>", "<|endoftext|>"
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
PATTERNS = ("bench/**/*.py", "sizing/**/*.py", "docs/*.md", "*.md", "tests/*.py")


def training_files(root: Path = PROJECT_ROOT) -> list[str]:
    """The text to train on: this project's sources and docs under `root`, sorted."""
    files = [p for pattern in PATTERNS for p in root.glob(pattern)]
    return [str(p) for p in sorted(set(files)) if p.is_file()]


def train_tokenizer(vocab: int, max_length: int, root: Path = PROJECT_ROOT):
    """A ``PreTrainedTokenizerFast`` with at most `vocab` tokens (fewer when the text has fewer merges), its
    ``model_max_length`` set to `max_length`. Raises FileNotFoundError when `root` holds no training text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    files = training_files(root)
    if not files:
        raise FileNotFoundError(f"no text to train a tokenizer on under {root}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train(files, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=None,
                                   unk_token=None, model_max_length=max_length)
    fast.chat_template = CHATML
    return fast
