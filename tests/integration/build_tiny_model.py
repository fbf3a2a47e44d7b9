"""Write a tiny Qwen2-architecture model with random weights and a locally trained tokenizer, for a real vLLM to serve.

No weights can be downloaded where the tests run, so the model is made here: 2 layers, hidden size 256, 4 attention
heads (2 KV heads), MLP 1024, a 4,096-token byte-level BPE vocabulary trained with `tokenizers` on this repository's
own Python and Markdown files, tied embeddings: about 3 M parameters. Random weights produce random text, which is
all a latency benchmark needs when requests set ``ignore_eos`` and a fixed ``max_tokens``. The tokenizer carries a
ChatML chat template (Qwen's), so ``/v1/chat/completions`` works.

    python tests/integration/build_tiny_model.py OUT_DIR [--force]

Deterministic (seeded weights, sorted training files); does nothing when OUT_DIR already holds a model built by
this script with the same settings. Needs torch, transformers and tokenizers (the vLLM venv has all three).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script by a python where gpucap is not installed: import it from here
    sys.path.insert(0, str(ROOT))
SETTINGS = {"layers": 2, "hidden": 256, "heads": 4, "kv_heads": 2, "intermediate": 1024, "vocab": 4096,
            "max_positions": 4096, "seed": 0, "dtype": "bfloat16"}
STAMP = "gpucap_tiny_model.json"


def build_tokenizer(out: Path, vocab: int):
    """Train the byte-level BPE tokenizer (``bench.hfserve.tokenizer``, shared with the hfserve server) on this
    checkout's text and save it into `out`."""
    from bench.hfserve.tokenizer import train_tokenizer

    try:
        fast = train_tokenizer(vocab, SETTINGS["max_positions"], root=ROOT)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    fast.save_pretrained(out)
    return fast


def build_model(out: Path, tokenizer) -> int:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    s = SETTINGS
    torch.manual_seed(s["seed"])
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=s["hidden"], intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
        max_position_embeddings=s["max_positions"], tie_word_embeddings=True, rms_norm_eps=1e-6,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    model = Qwen2ForCausalLM(config).to(getattr(torch, s["dtype"]))
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id).save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="model folder to write")
    p.add_argument("--force", action="store_true", help="rebuild even when OUT already holds this model")
    args = p.parse_args(argv)
    stamp = args.out / STAMP
    if not args.force and stamp.is_file() and json.loads(stamp.read_text()).get("settings") == SETTINGS:
        print(f"{args.out}: tiny model already built", file=sys.stderr)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(args.out, SETTINGS["vocab"])
    params = build_model(args.out, tokenizer)
    stamp.write_text(json.dumps({"settings": SETTINGS, "parameters": params, "vocab": len(tokenizer)}) + "\n")
    print(f"{args.out}: Qwen2 with random weights, {params / 1e6:.2f} M parameters, vocabulary {len(tokenizer)}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
