"""The calibration profile: one JSON file that `sizing calibrate` and `sizing probe` write and
`sizing recommend --calibration FILE` reads.

    {"kind": "gpucap-sizing-calibration", "version": 1, "created_at": ...,
     "deployment": {model, gpu, gpus, quant, engine, layout, decided_from} | null,
     "runs": [{path, label, started_at, hardware, levels}],
     "factors": {"engine", "family", "fitted", "before", "after", "ceilings"} | null,
     "card": {"gpu", "name", "family", "datasheet": {...}, "measured": {...} | null,
              "measured_vs_datasheet": {...}, "probe": {...}} | null,
     "levels": [{run, label, concurrency, seen_concurrency, predicted_at_concurrency, fitted, input_tokens, output_tokens,
                 measured {tpot_s, ttft_s}, before {...}, after {...}, error_before {tpot, ttft}, error_after {...}}],
     "summary": {median |error| of the predicted levels, before and after}}

Fitted factors keep efficiency.json's meaning (fractions of the datasheet peak), so they apply to every card of
the family with the same engine. The probe's numbers belong to one card: on that card a prediction never assumes
more bandwidth or FLOP/s than was measured (bw_efficiency <= measured / datasheet bandwidth, compute_efficiency <=
measured / datasheet matmul rate of the dtypes the plan uses), and the profile says what fraction of the measured
ceiling the engine reaches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sizing.calibrate import Calibration
from sizing.engines import Engine
from sizing.errors import SizingError
from sizing.factors import Factors, FactorTable
from sizing.gpus import Gpu
from sizing.quants import Support
from sizing.runs import RunFolder

KIND = "gpucap-sizing-calibration"
VERSION = 1
FITTABLE = ("bw_efficiency", "compute_efficiency", "layer_floor_s", "moe_layer_floor_s", "expert_floor_s",
            "dequant_ops_per_weight", "ttft_overhead_s")
DTYPES = ("bf16", "fp16", "fp8")


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


# -- the card: datasheet next to measured ---------------------------------------------------------------------
def datasheet(gpu: Gpu) -> dict[str, Any]:
    return {"mem_bandwidth_bytes_per_s": gpu.mem_bandwidth_bytes_per_s, "bf16_flops_per_s": gpu.bf16_flops_per_s,
            "fp16_flops_per_s": gpu.fp16_flops_per_s, "fp8_flops_per_s": gpu.fp8_flops_per_s,
            "source": f"sizing/data/gpus.csv: {gpu.source}"}


def ratios(card: dict[str, Any]) -> dict[str, float]:
    """measured / datasheet for each rate both know: {'mem_bandwidth': 0.9, 'bf16': 0.7, ...}."""
    ds, measured = card.get("datasheet") or {}, card.get("measured") or {}
    out = {}
    for name, key in [("mem_bandwidth", "mem_bandwidth_bytes_per_s")] + [(d, f"{d}_flops_per_s") for d in DTYPES]:
        if ds.get(key) and measured.get(key):
            out[name] = _r(measured[key] / ds[key], 4)
    return out


def card_section(gpu: Gpu | None, device_name: str, measured: dict[str, float | None],
                 probe: dict[str, Any]) -> dict[str, Any]:
    card = {"gpu": gpu.key if gpu else None, "name": gpu.name if gpu else device_name,
            "family": gpu.family if gpu else None, "datasheet": datasheet(gpu) if gpu else None,
            "measured": {k: _r(v) for k, v in measured.items()}, "probe": probe}
    card["measured_vs_datasheet"] = ratios(card) if gpu else {}
    return card


def ceilings(card: dict[str, Any] | None, dtypes: tuple[str, ...] = ("bf16", "fp16")) -> dict[str, float]:
    """Upper bounds the probe sets on the efficiencies: bandwidth ratio, and the smallest matmul ratio among
    `dtypes` (the plan's matmul dtype and its 16-bit attention dtype)."""
    if not card or not card.get("measured"):
        return {}
    r = ratios(card)
    out = {}
    if "mem_bandwidth" in r:
        out["bw_efficiency"] = r["mem_bandwidth"]
    compute = [r[d] for d in dtypes if d in r]
    if compute:
        out["compute_efficiency"] = min(compute)
    return out


# -- building and merging documents ----------------------------------------------------------------------------
def empty_profile(created_at: str) -> dict[str, Any]:
    return {"kind": KIND, "version": VERSION, "created_at": created_at, "deployment": None, "runs": [],
            "factors": None, "card": None, "levels": [], "summary": None}


def _pred(p) -> dict[str, float]:
    return {"tpot_s": _r(p.tpot_s), "ttft_s": _r(p.ttft_s)}


def calibration_profile(cal: Calibration, runs: list[RunFolder], card: dict[str, Any] | None,
                        created_at: str) -> dict[str, Any]:
    doc = empty_profile(created_at)
    doc["deployment"] = {**cal.deployment.as_dict(), "layout": cal.layout.as_dict(), "quant": cal.quant}
    if cal.deployment.quant is None:
        doc["deployment"]["decided_from"]["quant"] = "not recorded: the model's released precision on this card"
    doc["runs"] = [{"path": r.path, "label": r.run.get("label"), "started_at": r.run.get("started_at"),
                    "hardware": r.run.get("hardware"), "levels": [lv.concurrency for lv in r.levels],
                    "skipped": list(r.skipped)} for r in runs]
    doc["factors"] = {"engine": cal.engine, "family": cal.family, "fitted": list(cal.fitted),
                      "before": {k: _r(v) for k, v in cal.before.as_dict().items()},
                      "after": {k: _r(v) for k, v in cal.after.as_dict().items()},
                      "ceilings": {k: _r(v) for k, v in cal.ceilings.items()},
                      "basis": "fractions of the datasheet peaks (as in sizing/data/efficiency.json)"}
    doc["card"] = card
    doc["levels"] = [{"run": lf.level.run, "label": lf.level.label, "concurrency": lf.level.concurrency,
                      "seen_concurrency": _r(lf.level.seen_concurrency, 4),
                      "predicted_at_concurrency": lf.level.model_concurrency, "fitted": lf.fitted, "requests_ok": lf.level.ok,
                      "input_tokens": _r(lf.level.input_tokens), "output_tokens": _r(lf.level.output_tokens),
                      "measured": {"tpot_s": _r(lf.level.tpot_s), "ttft_s": _r(lf.level.ttft_s)},
                      "before": _pred(lf.before), "after": _pred(lf.after),
                      "error_before": {m: _r(lf.error(m, "before"), 4) for m in ("tpot", "ttft")},
                      "error_after": {m: _r(lf.error(m, "after"), 4) for m in ("tpot", "ttft")}}
                     for lf in cal.levels]
    doc["summary"] = {f"median_abs_{m}_error_{w}": _r(cal.median_abs_error(m, w), 4)
                      for m in ("tpot", "ttft") for w in ("before", "after")}
    doc["summary"]["over"] = "the levels not used in the fit"
    return doc


def merge_card(doc: dict[str, Any], card: dict[str, Any], where: str) -> dict[str, Any]:
    """`doc` with the probe's card section in it. A profile fitted on another card family is refused; the fitted
    factors stay as they are (they are fractions of the datasheet, which the probe does not change)."""
    dep = doc.get("deployment") or {}
    fam = (doc.get("factors") or {}).get("family")
    if fam and card.get("family") and fam != card["family"]:
        raise SizingError("--out", f"--out {where}: that profile was fitted on {dep.get('gpu')} ({fam}); the probe "
                                   f"measured {card.get('name')} ({card.get('family')}); write the probe to another "
                                   f"file.")
    if fam and card.get("family") is None:
        raise SizingError("--out", f"--out {where}: the probed card {card.get('name')!r} is not in sizing's "
                                   f"catalog, so it cannot be matched to that profile's {fam} factors; write the "
                                   f"probe to another file.")
    return {**doc, "card": card}


# -- reading a profile and applying it -------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    path: str
    doc: dict[str, Any]

    @property
    def factors(self) -> dict[str, Any] | None:
        return self.doc.get("factors")

    @property
    def card(self) -> dict[str, Any] | None:
        return self.doc.get("card")

    @property
    def family(self) -> str | None:
        return (self.factors or {}).get("family") or (self.card or {}).get("family")

    def applies_to_card(self, gpu: Gpu) -> bool:
        if self.factors:
            return self.factors.get("family") == gpu.family
        return (self.card or {}).get("gpu") == gpu.key

    def check(self, gpu: Gpu, engine: Engine) -> None:
        """Refuse (SizingError) a card or engine the profile says nothing about."""
        if self.factors:
            fam, eng = self.factors.get("family"), self.factors.get("engine")
            src = (self.doc.get("deployment") or {}).get("gpu")
            if fam != gpu.family:
                raise SizingError("--calibration", f"--calibration {self.path} was fitted on {src} ({fam} family); "
                                                   f"it does not apply to {gpu.key} ({gpu.family}): calibrate on a "
                                                   f"run of that card, or drop --calibration.")
            if eng != engine.factors_key:
                raise SizingError("--calibration", f"--calibration {self.path} was fitted on {eng}; this plan runs "
                                                   f"{engine.name}: give --engine {eng} (and a quantization it "
                                                   f"serves), or drop --calibration.")
        elif (self.card or {}).get("gpu") != gpu.key:
            raise SizingError("--calibration", f"--calibration {self.path} holds probe measurements of "
                                               f"{(self.card or {}).get('name')}; they do not apply to {gpu.key}: "
                                               f"probe that card, or drop --calibration.")

    def table(self, base: FactorTable) -> FactorTable:
        if not self.factors:
            return base
        values = {k: float(v) for k, v in self.factors["after"].items() if k in FITTABLE and v is not None}
        return base.with_override(self.factors["engine"], self.factors["family"], values,
                                  label=f"calibration {self.path}")

    def capped(self, factors: Factors, gpu: Gpu, support: Support) -> Factors:
        """On the probed card, efficiencies no higher than the measured ceiling."""
        if (self.card or {}).get("gpu") != gpu.key:
            return factors
        limits = ceilings(self.card, tuple(dict.fromkeys((support.compute, gpu.activation_dtype))))
        values = {n: min(getattr(factors, n), limit) for n, limit in limits.items()}
        return factors.with_values(**values)

    def describe(self, gpu: Gpu) -> str:
        """One reasoning sentence: that a calibration is applied, from where, and what it changed."""
        parts = []
        if self.factors:
            dep = self.doc.get("deployment") or {}
            fitted = ", ".join(f"c={lv.get('concurrency')} of {lv.get('run')}" for lv in self.doc.get("levels") or []
                               if lv.get("fitted")) or "?"
            changes = ", ".join(_change(n, self.factors["before"].get(n), self.factors["after"].get(n))
                                for n in self.factors.get("fitted", []))
            parts.append(f"Calibration applied from {self.path}: {self.factors['engine']} on {self.family} cards, "
                         f"fitted on {fitted} ({dep.get('model')} {dep.get('quant')} on {dep.get('gpus')} x "
                         f"{dep.get('gpu')}): {changes}")
        card = self.card or {}
        if card.get("measured") and card.get("gpu") == gpu.key:
            r = card.get("measured_vs_datasheet") or {}
            bits = [f"{name} {value:.0%} of datasheet" for name, value in r.items()]
            parts.append(f"probe of {card.get('name')} ({(card.get('probe') or {}).get('measured_at', '?')}): "
                         f"{', '.join(bits)}; efficiencies capped there")
        return "; ".join(parts) + "."


def _change(name: str, before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return name
    if name.endswith("_s"):
        return f"{name} {before * 1e3:.3g} -> {after * 1e3:.3g} ms"
    return f"{name} {before:.3g} -> {after:.3g}"


def load_profile(path: str, flag: str = "--calibration") -> Profile:
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        raise SizingError(flag, f"{flag}: no file at {path!r}; `sizing calibrate RUN_DIR --out {path}` writes one.") \
            from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SizingError(flag, f"{flag}: {path!r} is not a readable JSON file ({exc.__class__.__name__}).") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise SizingError(flag, f"{flag}: {path!r} is not a calibration profile (no \"kind\": \"{KIND}\"); "
                                f"`sizing calibrate` and `sizing probe --out` write them.")
    if doc.get("version") != VERSION:
        raise SizingError(flag, f"{flag}: {path!r} is profile version {doc.get('version')!r}; this sizing reads "
                                f"version {VERSION}.")
    factors = doc.get("factors")
    if factors is not None and not (isinstance(factors, dict) and isinstance(factors.get("after"), dict)
                                    and factors.get("engine") and factors.get("family")):
        raise SizingError(flag, f"{flag}: {path!r} has a 'factors' section without engine, family and 'after' "
                                f"values.")
    if factors is None and not (isinstance(doc.get("card"), dict) and doc["card"].get("measured")):
        raise SizingError(flag, f"{flag}: {path!r} holds neither fitted factors nor probe measurements.")
    return Profile(path=path, doc=doc)
