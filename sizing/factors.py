"""Efficiency factors and latency floors (sizing/data/efficiency.json), per engine and card family.

Lookup: the defaults (priors), overridden by the (engine, '*') group, overridden by the (engine, family) group.
Values in groups are fitted by `python -m sizing.fit` on the published measurements (see docs/sizing.md);
values in `defaults` are priors that no measurement constrains.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Any

from sizing.datafiles import read_json

FACTOR_NAMES = ("bw_efficiency", "compute_efficiency", "layer_floor_s", "moe_layer_floor_s", "expert_floor_s",
                "dequant_ops_per_weight", "ttft_overhead_s")


@dataclass(frozen=True)
class Factors:
    bw_efficiency: float          # fraction of datasheet memory bandwidth reached by weight and KV reads
    compute_efficiency: float     # fraction of dense datasheet FLOP/s reached by matmuls
    layer_floor_s: float          # fixed time per decoder layer per forward pass (launches, norms, sync)
    moe_layer_floor_s: float      # extra fixed time per MoE layer (routing, dispatch)
    expert_floor_s: float         # fixed time per routed expert a GPU runs in a MoE layer (one small GEMM each)
    dequant_ops_per_weight: float  # CUDA-core operations to dequantize one weight-only-quantized weight
    ttft_overhead_s: float        # fixed time to first token: scheduling, tokenization, HTTP
    origin: str = ""              # which groups supplied the values

    def with_values(self, **values: float) -> Factors:
        return replace(self, **values)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in FACTOR_NAMES}


@dataclass(frozen=True)
class FactorGroup:
    engine: str
    family: str                   # card family or '*'
    values: dict[str, float]
    free: tuple[str, ...]         # the values `sizing.fit` fits for this group
    fitted_on: tuple[str, ...]    # measurement ids used by the last fit
    source: str
    label: str = ""               # how `origin` names it (default engine/family); calibrations name their file


@dataclass(frozen=True)
class FactorTable:
    defaults: dict[str, float]
    defaults_source: str
    groups: tuple[FactorGroup, ...]

    def lookup(self, engine: str, family: str) -> Factors:
        values = dict(self.defaults)
        origin = ["defaults"]
        for wanted_family in ("*", family):
            for group in self.groups:
                if group.engine == engine and group.family == wanted_family:
                    values.update(group.values)
                    origin.append(group.label or f"{group.engine}/{group.family}")
        return Factors(**{k: float(values[k]) for k in FACTOR_NAMES}, origin=" < ".join(origin))

    def with_group_values(self, engine: str, family: str, values: dict[str, float]) -> FactorTable:
        groups = tuple(replace(g, values={**g.values, **values}) if (g.engine, g.family) == (engine, family) else g
                       for g in self.groups)
        return replace(self, groups=groups)

    def with_override(self, engine: str, family: str, values: dict[str, float], label: str) -> FactorTable:
        """The table with one more group for (engine, family), looked up after the shipped ones: a calibration's
        fitted values win over efficiency.json's for that engine and card family only."""
        group = FactorGroup(engine=engine, family=family, values=dict(values), free=(), fitted_on=(), source=label,
                            label=label)
        return replace(self, groups=self.groups + (group,))


def table_from_json(doc: dict[str, Any]) -> FactorTable:
    return FactorTable(
        defaults={k: float(doc["defaults"][k]) for k in FACTOR_NAMES},
        defaults_source=doc["defaults"].get("source", ""),
        groups=tuple(FactorGroup(engine=g["engine"], family=g["family"],
                                 values={k: float(v) for k, v in g.get("values", {}).items()},
                                 free=tuple(g.get("free", ())), fitted_on=tuple(g.get("fitted_on", ())),
                                 source=g.get("source", "")) for g in doc["groups"]))


def table_to_json(table: FactorTable, about: str) -> dict[str, Any]:
    return {"about": about,
            "defaults": {**table.defaults, "source": table.defaults_source},
            "groups": [{"engine": g.engine, "family": g.family, "free": list(g.free),
                        "values": {k: float(f"{v:.6g}") for k, v in g.values.items()},
                        "fitted_on": list(g.fitted_on), "source": g.source} for g in table.groups]}


@lru_cache(maxsize=1)
def load_factor_table() -> FactorTable:
    return table_from_json(read_json("efficiency.json"))
