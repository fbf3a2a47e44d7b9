"""Validation cases: published measurements (calibration_measurements.csv, extra_measurements.csv) joined with how
sizing reads each one (validation_cases.csv: the model, card, quantization, engine and layout a row stands for)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sizing.datafiles import optional_float, read_csv


@dataclass(frozen=True)
class Measurement:
    id: str
    model: str
    quant: str
    gpu: str
    n_gpus: str
    engine: str
    metric: str
    value: float
    unit: str
    source_url: str
    source_title: str
    notes: str
    confidence: str


@dataclass(frozen=True)
class Case:
    id: str
    check: str                 # speed | prefill | fit | memory
    model: str
    quant: str
    gpu: str
    gpus: int
    engine: str
    tp: int | None
    pp: int | None
    dp_attention: bool
    kv_dtype: str
    input_len: int
    output_len: int
    concurrency: int | None    # None: 'max' (as many as the KV cache and engine run)
    memory_fraction: float | None
    max_num_seqs: int | None
    context_tokens: int | None
    measured_value: float | None
    measured_unit: str
    scored: bool
    interpretation: str
    measurement: Measurement

    @property
    def measured(self) -> float:
        return self.measured_value if self.measured_value is not None else self.measurement.value

    @property
    def aggregate(self) -> bool:
        return "aggregate" in self.measurement.metric


def _int(text: str) -> int | None:
    value = optional_float(text)
    return None if value is None else int(value)


@lru_cache(maxsize=1)
def load_measurements() -> dict[str, Measurement]:
    rows = read_csv("calibration_measurements.csv") + read_csv("extra_measurements.csv")
    return {r["id"]: Measurement(id=r["id"], model=r["model"], quant=r["quant"], gpu=r["gpu"], n_gpus=r["n_gpus"],
                                 engine=r["engine"], metric=r["metric"], value=float(r["value"]), unit=r["unit"],
                                 source_url=r["source_url"], source_title=r["source_title"], notes=r["notes"],
                                 confidence=r["confidence"]) for r in rows}


@lru_cache(maxsize=1)
def load_cases() -> tuple[Case, ...]:
    measurements = load_measurements()
    cases = []
    for r in read_csv("validation_cases.csv"):
        cases.append(Case(
            id=r["id"], check=r["check"], model=r["model"], quant=r["quant"], gpu=r["gpu"], gpus=int(r["gpus"]),
            engine=r["engine"], tp=_int(r["tp"]), pp=_int(r["pp"]), dp_attention=r["dp_attention"] == "yes",
            kv_dtype=r["kv_dtype"] or "auto", input_len=int(r["input_len"]), output_len=int(r["output_len"]),
            concurrency=None if r["concurrency"] == "max" else int(r["concurrency"]),
            memory_fraction=optional_float(r["memory_fraction"]), max_num_seqs=_int(r["max_num_seqs"]),
            context_tokens=_int(r["context_tokens"]), measured_value=optional_float(r["measured_value"]),
            measured_unit=r["measured_unit"], scored=r["scored"] == "yes", interpretation=r["interpretation"],
            measurement=measurements[r["id"]]))
    return tuple(cases)
