#!/usr/bin/env bash
# The one prepared GPU check (issues 3 and 6, "On a real GPU"), for a machine with an NVIDIA GPU, PyTorch and
# transformers but no network and no vLLM. Run from anywhere:
#
#   scripts/gpu_check.sh            # ~3-4 min on one H100; stops itself at 7.5 min ($GPUCAP_CHECK_BUDGET_S, s)
#
# Steps (each prints OK / SKIPPED / FAILED with the reason, and the script goes on to the next; exit 0 always):
#   env      python, torch/CUDA, transformers and gpucap's own dependencies (orjson stand-in when it is missing)
#   smi      nvidia-smi summary
#   nvml     tests/test_telemetry_gpu_real.py (pytest), then a table: NVML readings (bench.telemetry's GpuReader)
#            against torch.cuda.mem_get_info while 0, 1, 4 and 16 GiB are allocated
#   probe    sizing probe (copy bandwidth, matmul rates) into a calibration profile, printed
#   serve    a random-weight Qwen2.5-1.5B (bf16, cuda) served by `python -m bench.hfserve`, launched and measured by
#            `bench run --launch ... --concurrency 1,10 --input-len 256 --output-len 128 --ignore-eos --report`;
#            the field table printed as Markdown
#   sizing   sizing recommend for the same model, card and workload, for comparison
# With $OUT set, everything also lands there: gpu_check.log (this console), gpu_check.md (the summary and tables to
# paste), probe_profile.json, bench_run.tar.gz (the run folder with its report). docs/gpu_check.md says more.
#
# Environment: GPUCAP_PYTHON (default python3: on the device machine the one with PyTorch), GPUCAP_CHECK_PORT (8011),
# GPUCAP_CHECK_REHEARSE=1 (no GPU needed: the serve step runs a 2-layer version of the model on the CPU with 16
# output tokens, to rehearse the plumbing; =full serves the whole 28-layer model on the CPU, 64 in / 32 out tokens,
# 10 requests a level, ~10 min on 2 cores), GPUCAP_CHECK_ORJSON_STANDIN=1 (use the orjson stand-in even where orjson
# is installed, as on the device machine), GPUCAP_CHECK_BUDGET_S (450).
#
# Nothing is installed and nothing needs the network: gpucap runs from this checkout (PYTHONPATH), `sizing` through
# sizing.cli. gpucap needs aiohttp, numpy, pandas, psutil, rich, prometheus_client and nvidia-ml-py (all in the
# device image); matplotlib for the report; uvloop is optional. orjson is not in the device image: wheels carried in
# .whl/ (see /work/.library/device/README.md) are installed into a temporary folder when present, otherwise a
# json-based stand-in module is put on the path (slower JSON, same results; negligible at concurrency <= 10).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${GPUCAP_PYTHON:-python3}
PORT=${GPUCAP_CHECK_PORT:-8011}
REHEARSE=${GPUCAP_CHECK_REHEARSE:-0}
SERVE_LIMIT_S=300
[ "$REHEARSE" = full ] && SERVE_LIMIT_S=1500
BUDGET_S=${GPUCAP_CHECK_BUDGET_S:-$((SERVE_LIMIT_S + 150))}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpucap-gpu-check.XXXXXX")
RESULTS="$WORK/results.tsv"   # step \t status \t seconds \t reason
SKIP=3                        # a step function's exit status meaning "skipped" (its reason in $WORK/reason)
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu_check.log") 2>&1
    TEE_PID=$!
fi
export ROOT PY PORT REHEARSE WORK SKIP PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-160}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$SECONDS
echo "gpucap GPU check: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -n), python: $PY, work folder: $WORK"

bench() { "$PY" -m bench "$@"; }
sizing() { "$PY" -c 'import sys; from sizing.cli import main; sys.argv[0] = "sizing"; sys.exit(main())' "$@"; }
why() { echo "$*" > "$WORK/reason"; echo "-> $*"; }
has_cuda() { "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }
no_cuda_reason() {
    "$PY" -c 'import torch; print(f"PyTorch {torch.__version__} sees no CUDA GPU")' 2>/dev/null \
        || echo "PyTorch cannot be imported by $PY"
}
export -f bench sizing why has_cuda no_cuda_reason

# Run one step function under a time limit (and the whole script's budget); record its status and reason.
step() {
    local name=$1 limit=$2 left=$((BUDGET_S - (SECONDS - START))) status rc t0
    [ "$limit" -gt "$left" ] && limit=$((left > 0 ? left : 0))
    echo
    echo "=== [$name] $(date +%T) (limit ${limit}s) ==="
    rm -f "$WORK/reason"
    t0=$SECONDS
    if [ "$limit" -lt 10 ]; then
        rc=$SKIP; echo "the script's ${BUDGET_S}s budget is spent" > "$WORK/reason"
    else
        # timeout runs the step in a process group of its own (pgid = its pid); whatever of the step outlives it
        # (bench run finishing its requests after SIGTERM, say) gets 15 s, then SIGKILL: the next step starts clean.
        # A server launched by bench leaves that group but dies with bench (PR_SET_PDEATHSIG).
        timeout --kill-after=15 "$limit" bash -o pipefail -c "$name" &
        local group=$!
        wait "$group"; rc=$?
        if kill -0 -- "-$group" 2>/dev/null; then
            kill -TERM -- "-$group" 2>/dev/null
            for _ in $(seq 30); do kill -0 -- "-$group" 2>/dev/null || break; sleep 0.5; done
            kill -KILL -- "-$group" 2>/dev/null && echo "(killed what was left of the step)"
            sleep 1
        fi
    fi
    case $rc in
        0) status=OK ;;
        "$SKIP") status=SKIPPED ;;
        124|137) status=FAILED; echo "timed out after ${limit}s" > "$WORK/reason" ;;
        *) status=FAILED; [ -s "$WORK/reason" ] || echo "exit status $rc (see the output above)" > "$WORK/reason" ;;
    esac
    local reason; reason=$(cat "$WORK/reason" 2>/dev/null || true)
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" "$reason" >> "$RESULTS"
    echo "=== [$name] $status in $((SECONDS - t0))s${reason:+: $reason} ==="
}

# ---- env: versions, dependencies, the orjson stand-in -------------------------------------------------------------
env_check() {
    "$PY" - <<'PY' || { why "$PY cannot run Python"; return 1; }
import importlib, importlib.metadata, platform, sys
print(f"python {platform.python_version()} at {sys.executable}")
DIST = {"pynvml": "nvidia-ml-py", "prometheus_client": "prometheus-client"}
for name in ("torch", "transformers", "tokenizers", "aiohttp", "numpy", "pandas", "psutil", "rich", "pynvml",
             "prometheus_client", "matplotlib", "orjson", "uvloop", "pytest"):
    try:
        m = importlib.import_module(name)
        try:
            version = importlib.metadata.version(DIST.get(name, name))
        except importlib.metadata.PackageNotFoundError:
            version = getattr(m, "__version__", "?")
        extra = ""
        if name == "torch":
            extra = f" (CUDA {m.version.cuda}, available: {m.cuda.is_available()}" + (
                f", {m.cuda.get_device_name(0)})" if m.cuda.is_available() else ")")
        print(f"  {name:18s} {version}{extra}")
    except Exception as e:  # noqa: BLE001
        print(f"  {name:18s} MISSING ({type(e).__name__}: {e})")
PY
    mkdir -p "$WORK/site"
    if [ "${GPUCAP_CHECK_ORJSON_STANDIN:-0}" != 1 ] && ! "$PY" -c 'import orjson' 2>/dev/null \
            && ls "$ROOT"/.whl/orjson-*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$ROOT"/.whl/*.whl \
            && PYTHONPATH="$WORK/site" "$PY" -c 'import orjson' && echo "orjson installed from $ROOT/.whl"
    fi
    if [ "${GPUCAP_CHECK_ORJSON_STANDIN:-0}" = 1 ] || ! PYTHONPATH="$WORK/site" "$PY" -c 'import orjson' 2>/dev/null
    then
        cat > "$WORK/site/orjson.py" <<'STANDIN'
"""json-based stand-in for orjson, written by scripts/gpu_check.sh where orjson is not installed: same output
(compact UTF-8 bytes, NaN as null), slower."""
import dataclasses
import datetime
import enum
import json
import math

OPT_INDENT_2, OPT_SERIALIZE_NUMPY, OPT_NON_STR_KEYS, OPT_SORT_KEYS, OPT_APPEND_NEWLINE = 1, 2, 4, 8, 16


class JSONDecodeError(json.JSONDecodeError):
    pass


class JSONEncodeError(TypeError):
    pass


def _default(o):
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, (datetime.datetime, datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, enum.Enum):
        return o.value
    raise JSONEncodeError(f"Type is not JSON serializable: {type(o).__name__}")


def _finite(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def dumps(obj, default=None, option=0):
    def fallback(o):
        if default is not None:
            try:
                return default(o)
            except TypeError:
                pass
        return _default(o)
    kw = {"ensure_ascii": False, "default": fallback, "sort_keys": bool(option & OPT_SORT_KEYS)}
    kw.update({"indent": 2} if option & OPT_INDENT_2 else {"separators": (",", ":")})
    try:
        text = json.dumps(obj, allow_nan=False, **kw)
    except ValueError:
        text = json.dumps(_finite(json.loads(json.dumps(obj, **kw))), allow_nan=False, **kw)
    return (text + ("\n" if option & OPT_APPEND_NEWLINE else "")).encode()


def loads(data):
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise JSONDecodeError(e.msg, e.doc, e.pos) from None
STANDIN
        local because=": orjson is not installed"
        [ "${GPUCAP_CHECK_ORJSON_STANDIN:-0}" = 1 ] && because=", as GPUCAP_CHECK_ORJSON_STANDIN=1 asks"
        echo "orjson: using a json-based stand-in ($WORK/site/orjson.py)$because"
    fi
    PYTHONPATH="$WORK/site:$PYTHONPATH" "$PY" -c 'import bench.cli, sizing.cli, bench.telemetry' \
        2>"$WORK/import.err" || {
        tail -3 "$WORK/import.err"; why "gpucap does not import: $(tail -1 "$WORK/import.err")"; return 1; }
    echo "gpucap imports from $ROOT"
}

# ---- smi --------------------------------------------------------------------------------------------------------
smi() {
    command -v nvidia-smi >/dev/null || { why "nvidia-smi not found (no NVIDIA driver here)"; return "$SKIP"; }
    nvidia-smi || { why "nvidia-smi failed"; return 1; }
    local fields=index,name,uuid,memory.total,memory.used,driver_version,power.draw,power.limit,temperature.gpu
    nvidia-smi --query-gpu="$fields,clocks.sm,clocks.max.sm" --format=csv
}

# ---- nvml: the telemetry test, then NVML vs torch at known allocations --------------------------------------------
nvml() {
    has_cuda || { why "$(no_cuda_reason)"; return "$SKIP"; }
    "$PY" -c 'import pynvml' 2>/dev/null || { why "nvidia-ml-py (pynvml) is not installed"; return 1; }
    local rc=0
    if "$PY" -c 'import pytest' 2>/dev/null; then
        "$PY" -m pytest tests/test_telemetry_gpu_real.py -v -rs -p no:cacheprovider -o addopts="" || rc=$?
        [ $rc -eq 0 ] || why "tests/test_telemetry_gpu_real.py failed (pytest exit $rc)"
    else
        rc=1; why "pytest is not installed: tests/test_telemetry_gpu_real.py not run"
    fi
    "$PY" - <<'PY' || { [ $rc -ne 0 ] || why "NVML and torch disagree (table above)"; return 1; }
import os, sys, time
import pynvml, torch
from bench.telemetry.gpu import GpuReader

GIB, MIB = 2**30, 2**20
TOL = 64 * MIB
torch.zeros(1, device="cuda")
torch.cuda.synchronize()
uuid = str(torch.cuda.get_device_properties(0).uuid)
notes = []
pynvml.nvmlInit()

def nvml_uuid(i):
    u = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
    return (u.decode() if isinstance(u, bytes) else u).removeprefix("GPU-")

index = next((i for i in range(pynvml.nvmlDeviceGetCount()) if nvml_uuid(i) == uuid), None)
if index is None:
    sys.exit(f"no NVML GPU has CUDA device 0's UUID {uuid}")
reader = GpuReader.open(pynvml, (index,), notes.append)
if reader is None:
    sys.exit(f"GpuReader did not open: {notes}")

def reading():
    time.sleep(0.3)
    free, total = torch.cuda.mem_get_info()
    row, procs = reader.read()
    mine = [p.mem_bytes for p in procs if p.pid == os.getpid()]
    return total - free, row[f"gpu{index}_mem_used_bytes"], row[f"gpu{index}_mem_total_bytes"], total, \
        (mine[0] if mine else None)

print(f"GPU {index} ({torch.cuda.get_device_name(0)}): NVML used (GpuReader) vs torch.cuda.mem_get_info total - free")
print("| allocated GiB | torch used GiB | NVML used GiB | NVML - torch MiB | NVML growth GiB | "
      "this process (NVML) GiB |")
print("|---:|---:|---:|---:|---:|---:|")
bad = []
base = None
blocks = []
for gib in (0, 1, 4, 16):
    if gib:
        blocks.append(torch.empty(gib * GIB - sum(b.numel() for b in blocks), dtype=torch.uint8, device="cuda"))
        blocks[-1].fill_(1)
        torch.cuda.synchronize()
    t_used, n_used, n_total, t_total, mine = reading()
    base = n_used if base is None else base
    growth = n_used - base
    print(f"| {gib} | {t_used / GIB:.3f} | {n_used / GIB:.3f} | {(n_used - t_used) / MIB:+.1f} | {growth / GIB:.3f} | "
          f"{'-' if mine is None else f'{mine / GIB:.3f}'} |")
    if n_total != t_total:
        bad.append(f"total: NVML {n_total} vs torch {t_total}")
    if abs(n_used - t_used) > TOL:
        bad.append(f"{gib} GiB: NVML {n_used} vs torch {t_used}")
    if abs(growth - gib * GIB) > TOL:
        bad.append(f"{gib} GiB: NVML grew by {growth}")
del blocks
torch.cuda.empty_cache()
t_used, n_used, *_ = reading()
print(f"after freeing: torch used {t_used / GIB:.3f} GiB, NVML used {n_used / GIB:.3f} GiB")
reader.close()
print("notes:", notes or "none")
if bad:
    sys.exit("; ".join(bad))
print(f"NVML agrees with torch within {TOL // MIB} MiB at every step")
PY
    return $rc
}

# ---- probe: sizing probe into a calibration profile ----------------------------------------------------------------
probe() {
    has_cuda || { why "$(no_cuda_reason)"; return "$SKIP"; }
    sizing probe --out "$WORK/probe_profile.json" || { why "sizing probe failed"; return 1; }
    echo "--- $WORK/probe_profile.json"
    cat "$WORK/probe_profile.json"
}

# ---- serve: hfserve with a random-weight Qwen2.5-1.5B, measured by bench run --launch -----------------------------
write_config() {  # Qwen/Qwen2.5-1.5B-Instruct's public config.json, by hand (no download possible)
    mkdir -p "$WORK/qwen2.5-1.5b"
    cat > "$WORK/qwen2.5-1.5b/config.json" <<'JSON'
{
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "hidden_act": "silu",
  "hidden_size": 1536,
  "initializer_range": 0.02,
  "intermediate_size": 8960,
  "max_position_embeddings": 32768,
  "max_window_layers": 21,
  "model_type": "qwen2",
  "num_attention_heads": 12,
  "num_hidden_layers": 28,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}
JSON
}
export -f write_config

gpu_name() { nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1; }
hardware_label() {  # --hardware of the run
    case "$(gpu_name)" in
        *H100*) echo "1x H100-80G" ;;
        *H200*) echo "1x H200-141G" ;;
        "") echo "no GPU" ;;
        *) echo "1x $(gpu_name)" ;;
    esac
}
sizing_gpu() {  # the card's sizing name (h100 where none is seen: the card this check was written for)
    case "$(gpu_name)" in *H200*) echo h200 ;; *H100*PCIe*) echo h100-pcie ;; *) echo h100 ;; esac
}
export -f gpu_name hardware_label sizing_gpu

serve() {
    local device=cuda dtype=bfloat16 in_len=256 out_len=128 overrides="" hardware extra=()
    hardware=$(hardware_label)
    if [ "$REHEARSE" = full ]; then
        device=cpu dtype=float32 in_len=64 out_len=32 hardware="CPU ($(nproc) cores), no GPU"
        extra=(--num-requests 10)
        echo "GPUCAP_CHECK_REHEARSE=full: the whole 28-layer model (fp32, ~6.2 GB) on the CPU, $out_len output tokens"
    elif [ "$REHEARSE" = 1 ]; then
        device=cpu dtype=float32 out_len=16 hardware="CPU rehearsal"
        overrides='{"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4}'
        echo "GPUCAP_CHECK_REHEARSE=1: a 2-layer version of the model on the CPU, $out_len output tokens"
    elif ! has_cuda; then
        why "$(no_cuda_reason) (GPUCAP_CHECK_REHEARSE=1 rehearses this step on the CPU)"; return "$SKIP"
    fi
    "$PY" -c 'import transformers, tokenizers' 2>/dev/null || { why "transformers/tokenizers not installed"; return 1; }
    write_config
    local cmd="$PY -m bench.hfserve --model $WORK/qwen2.5-1.5b/config.json --random-weights --device $device"
    cmd+=" --dtype $dtype --port $PORT --max-batch 16 --served-model-name qwen2.5-1.5b-random"
    [ -n "$overrides" ] && cmd+=" --config-overrides '$overrides'"
    local rc=0
    bench run --launch "$cmd" --base-url "http://127.0.0.1:$PORT" --launch-timeout 240 \
        --concurrency 1,10 --input-len "$in_len" --output-len "$out_len" "${extra[@]}" --ignore-eos --continuous-usage on \
        --report --hardware "$hardware" --label hfserve-qwen2.5-1.5b-random --out "$WORK/run" --no-progress || rc=$?
    [ -f "$WORK/run/server.log" ] && { echo "--- server.log (last 15 lines)"; tail -15 "$WORK/run/server.log"; }
    [ -f "$WORK/run/summary.json" ] || { why "bench run wrote no summary (exit $rc)"; return 1; }
    "$PY" - "$WORK/run" "$out_len" <<'PY' | tee "$WORK/field_table.md" \
        || { why "the run's checks failed (above)"; return 1; }
import json, sys
from pathlib import Path
from bench.records import read_records
from bench.report.load import load_runs
from bench.report.tables import field_table, levels_table

run_dir, out_len = Path(sys.argv[1]), int(sys.argv[2])
run = json.loads((run_dir / "run.json").read_text())
levels = json.loads((run_dir / "summary.json").read_text())["levels"]
server = run.get("server") or {}
print(f"server: {server.get('version')}; model {server.get('served_model')}; hardware {run.get('hardware') or '-'}")
table = field_table(levels_table(load_runs([run_dir])))
cols = [c for c in table.columns if c != "run"]
print()
print("| " + " | ".join(cols) + " |")
print("|" + "|".join("---:" if c not in ("level", "ok / requests") else "---" for c in cols) + "|")
for _, row in table.iterrows():
    cells = []
    for c in cols:
        v = row[c]
        cells.append("–" if v != v or v is None else (f"{v:,.1f}" if isinstance(v, float) else str(v)))
    print("| " + " | ".join(cells) + " |")
print()
print("| level | TPOT ms mean | ITL ms p99 | E2E s p50 | GPU util % mean | GPU power W peak | "
      "server GPU memory GB (NVML, per process) |")
print("|---|---:|---:|---:|---:|---:|---:|")
def f(v, scale=1.0, fmt="{:,.1f}"):
    return "–" if v is None else fmt.format(v * scale)
for lv in levels:
    t = lv.get("telemetry") or {}
    tpot, itl, e2e = ((lv.get(k) or {}) for k in ("tpot_ms", "itl_ms", "e2e_ms"))
    print(f"| {lv['phase']} | {f(tpot.get('mean'), fmt='{:,.2f}')} | {f(itl.get('p99'), fmt='{:,.2f}')} | "
          f"{f(e2e.get('p50'), 1e-3, '{:,.2f}')} | {f(t.get('gpu_util_pct_mean'))} | "
          f"{f(t.get('gpu_power_w_total_peak'))} | {f(t.get('server_gpu_mem_bytes_peak'), 1e-9, '{:,.2f}')} |")
records = list(read_records(run_dir / "requests.jsonl"))
wrong = [r.request_id for r in records if r.status != 200 or r.output_tokens != out_len]
print(f"\n{len(records)} requests; every one returned {out_len} tokens by the server's usage: {not wrong}")
sys.exit(f"requests without {out_len} tokens: {wrong[:5]}" if wrong else 0)
PY
    [ $rc -eq 0 ] || { why "bench run exited $rc"; return 1; }
}

# ---- sizing: the prediction for the same model, card and workload -------------------------------------------------
sizing_cmp() {
    sizing recommend --model qwen2.5-1.5b --gpu "$(sizing_gpu)" --gpus 1 --input-len 256 --output-len 128 \
        --concurrency 1,10 | tee "$WORK/sizing_recommend.txt" || { why "sizing recommend failed"; return 1; }
}

export -f env_check smi nvml probe serve sizing_cmp
step env_check 60
# the orjson stand-in (or carried wheels), for every later step
[ -d "$WORK/site" ] && export PYTHONPATH="$WORK/site:$PYTHONPATH"
step smi 30
step nvml 120
step probe 120
step serve "$SERVE_LIMIT_S"
step sizing_cmp 60

# ---- summary ---------------------------------------------------------------------------------------------------
{
    card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
    echo "## gpucap GPU check, $(date -u +%Y-%m-%d), ${card:-no GPU}"
    echo
    echo "| step | status | s | reason |"
    echo "|---|---|---:|---|"
    while IFS=$'\t' read -r name status secs reason; do
        echo "| $name | $status | $secs | ${reason:--} |"
    done < "$RESULTS"
    if [ -f "$WORK/field_table.md" ]; then
        echo
        echo "### bench run --launch hfserve (random-weight Qwen2.5-1.5B)"
        echo
        cat "$WORK/field_table.md"
    fi
} > "$WORK/gpu_check.md"
echo
echo "=== summary (total $((SECONDS - START))s) ==="
cat "$WORK/gpu_check.md"
if [ -n "${OUT:-}" ]; then
    cp "$WORK/gpu_check.md" "$OUT/"
    [ -f "$WORK/probe_profile.json" ] && cp "$WORK/probe_profile.json" "$OUT/"
    [ -d "$WORK/run" ] && tar -czf "$OUT/bench_run.tar.gz" -C "$WORK" run
    echo "outputs in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
    exec 1>&- 2>&-
    wait "$TEE_PID" 2>/dev/null || sleep 1  # let tee finish the log
fi
exit 0
