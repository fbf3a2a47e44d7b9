"""The command line that starts the planned deployment: `vllm serve ...` (or `llama-server ...` for GGUF files).

Only flags that differ from the engine defaults or that the plan depends on are printed.
"""

from __future__ import annotations

import shlex

from sizing.plan import Evaluation

_VLLM_QUANT_FLAG = {"fp8": "fp8", "int8": None, "awq": "awq_marlin", "gptq-int4": "gptq_marlin",
                    "int8-w8a16": "gptq_marlin"}


def _checkpoint(evaluation: Evaluation) -> tuple[str, bool]:
    """(model to load, whether it is a separate quantized checkpoint)."""
    model, quant = evaluation.setup.model, evaluation.setup.quant
    released = model.arch.released_dtype
    if quant.key in ("bf16", "fp16") or quant.key == released:
        return model.hf_id, False
    if quant.key in model.checkpoints:
        return model.checkpoints[quant.key], True
    if quant.key == "fp8":
        return model.hf_id, False          # vLLM quantizes a 16-bit checkpoint to fp8 on load
    return f"<{quant.key} checkpoint of {model.hf_id}>", True


def vllm_command(evaluation: Evaluation) -> str:
    setup, layout, workload = evaluation.setup, evaluation.layout, evaluation.workload
    model, is_quantized_ckpt = _checkpoint(evaluation)
    args = ["vllm", "serve", model]
    if layout.tp > 1:
        args += ["--tensor-parallel-size", str(layout.tp)]
    if layout.pp > 1:
        args += ["--pipeline-parallel-size", str(layout.pp)]
    if layout.dp > 1:
        args += ["--data-parallel-size", str(layout.dp)]
    if layout.ep > 1:
        args += ["--enable-expert-parallel"]
    if not setup.gpu.has_bf16:
        args += ["--dtype", "half"]
    quant_flag = _VLLM_QUANT_FLAG.get(setup.quant.key)
    if setup.quant.key == "fp8" and not is_quantized_ckpt and setup.model.arch.released_dtype != "fp8":
        args += ["--quantization", "fp8"]
    elif quant_flag and is_quantized_ckpt and setup.quant.key != "fp8":
        args += ["--quantization", quant_flag]
    if setup.kv_dtype.key == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    args += ["--max-model-len", str(workload.context_tokens)]
    fraction = setup.memory_fraction
    if fraction is not None and abs(fraction - setup.engine.memory_fraction) > 1e-9:
        args += ["--gpu-memory-utilization", f"{fraction:g}"]
    if setup.max_num_seqs:
        args += ["--max-num-seqs", str(setup.max_num_seqs)]
    return shlex.join(args)


def llama_cpp_command(evaluation: Evaluation) -> str:
    setup, layout, workload = evaluation.setup, evaluation.layout, evaluation.workload
    repo = setup.model.checkpoints.get("gguf", setup.model.hf_id + "-GGUF")
    parallel = max(1, min(max(workload.concurrency), evaluation.max_running or 1))
    args = ["llama-server", "--hf-repo", repo, "--hf-file", f"<{setup.quant.key.upper()} .gguf file>",
            "--n-gpu-layers", "999", "--ctx-size", str(workload.context_tokens * parallel),
            "--parallel", str(parallel)]
    if layout.pp > 1:
        args += ["--split-mode", "layer"]
    return shlex.join(args)


def launch_command(evaluation: Evaluation) -> str | None:
    """The serve command for this plan, or None for engines sizing cannot launch (TensorRT-LLM, SGLang...)."""
    if evaluation.setup.engine.launch == "vllm":
        return vllm_command(evaluation)
    if evaluation.setup.engine.launch == "llama.cpp":
        return llama_cpp_command(evaluation)
    return None
