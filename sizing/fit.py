"""Fitting the speed factors on the published measurements: `python -m sizing.fit [--write]`.

For each factor group in efficiency.json, in file order (parents before the groups that refine them), the group's
free values are chosen to minimise
    sum over the group's rows of log(predicted / measured)^2  +  0.01 x sum over free values of log(value / prior)^2
with a Nelder-Mead search in log space. The small pull towards the prior keeps a value sane when the rows hardly
constrain it. Rows belong to the most specific group of their engine and card family.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import resources

import numpy as np

from sizing.cases import Case, load_cases
from sizing.datafiles import read_json
from sizing.factors import FactorGroup, FactorTable, load_factor_table, table_to_json
from sizing.validation import Prepared, group_of, is_fit_row, predict_speed, prepare

REGULARIZATION = 0.01
BOUNDS = {"bw_efficiency": (0.02, 0.95), "compute_efficiency": (0.01, 1.0), "layer_floor_s": (1e-7, 0.02),
          "moe_layer_floor_s": (1e-7, 0.05), "expert_floor_s": (1e-8, 1e-3), "dequant_ops_per_weight": (0.1, 500.0), "ttft_overhead_s": (1e-4, 2.0)}


def nelder_mead(objective: Callable[[np.ndarray], float], x0: np.ndarray, step: float = 0.3,
                iterations: int = 400, tolerance: float = 1e-10) -> np.ndarray:
    """Minimise `objective` from `x0` (a small, dependency-free Nelder-Mead)."""
    n = len(x0)
    simplex = [x0] + [x0 + step * np.eye(n)[i] for i in range(n)]
    values = [objective(x) for x in simplex]
    for _ in range(iterations):
        order = np.argsort(values)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if abs(values[-1] - values[0]) < tolerance:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        reflected = centroid + (centroid - simplex[-1])
        f_r = objective(reflected)
        if f_r < values[0]:
            expanded = centroid + 2.0 * (centroid - simplex[-1])
            f_e = objective(expanded)
            simplex[-1], values[-1] = (expanded, f_e) if f_e < f_r else (reflected, f_r)
        elif f_r < values[-2]:
            simplex[-1], values[-1] = reflected, f_r
        else:
            contracted = centroid + 0.5 * (simplex[-1] - centroid)
            f_c = objective(contracted)
            if f_c < values[-1]:
                simplex[-1], values[-1] = contracted, f_c
            else:
                best = simplex[0]
                simplex = [best] + [best + 0.5 * (x - best) for x in simplex[1:]]
                values = [values[0]] + [objective(x) for x in simplex[1:]]
    return simplex[int(np.argmin(values))]


def _clip(name: str, value: float) -> float:
    low, high = BOUNDS[name]
    return min(max(value, low), high)


def _fit_group(table: FactorTable, group: FactorGroup, rows: Sequence[Prepared]) -> dict[str, float]:
    """The free values of `group` that best explain `rows` (log error, pulled gently towards the prior)."""
    if group.family == "*":
        prior_values = [table.defaults[name] for name in group.free]
    else:   # a family refines its engine's '*' group: that group's values are the prior
        prior_values = [getattr(table.lookup(group.engine, "(no family)"), name) for name in group.free]
    prior = np.log(prior_values)
    start = table.lookup(group.engine, group.family)
    x0 = np.log([getattr(start, name) for name in group.free])

    def values_of(x: np.ndarray) -> dict[str, float]:
        return {name: _clip(name, math.exp(v)) for name, v in zip(group.free, x)}

    def objective(x: np.ndarray) -> float:
        trial = table.with_group_values(group.engine, group.family, values_of(x))
        loss = sum(math.log(predict_speed(p, trial) / p.case.measured) ** 2 for p in rows)
        return loss + REGULARIZATION * float(np.sum((x - prior) ** 2))

    return values_of(nelder_mead(objective, x0))


def fit_table(table: FactorTable, prepared: Sequence[Prepared], engine: str | None = None) -> FactorTable:
    """`table` with every group's free values fitted on its rows (groups without rows keep their priors);
    with `engine`, only that engine's groups are refitted. Groups are fitted in file order."""
    for group in table.groups:
        if engine is not None and group.engine != engine:
            continue
        key = (group.engine, group.family)
        rows = [p for p in prepared if is_fit_row(p) and group_of(p, table) == key]
        if not rows or not group.free:
            continue
        table = table.with_group_values(group.engine, group.family, _fit_group(table, group, rows))
        table = replace(table, groups=tuple(replace(g, fitted_on=tuple(p.case.id for p in rows))
                                            if (g.engine, g.family) == key else g for g in table.groups))
    return table


def strip_values(table: FactorTable, engine: str | None = None) -> FactorTable:
    """The table with the fitted values removed (back to priors), the starting point of a fit; with `engine`,
    only that engine's groups."""
    return replace(table, groups=tuple(
        replace(g, values={k: v for k, v in g.values.items() if k not in g.free}, fitted_on=())
        if engine is None or g.engine == engine else g for g in table.groups))


def prepare_all(table: FactorTable, cases: Sequence[Case] | None = None) -> list[Prepared]:
    return [prepare(case, table) for case in (cases or load_cases()) if case.check in ("speed", "prefill")]


def fit(table: FactorTable | None = None) -> FactorTable:
    """Refit every group from the priors on all scored rows."""
    start = strip_values(table or load_factor_table())
    return fit_table(start, prepare_all(start))


def leave_one_out(table: FactorTable | None = None) -> dict[str, FactorTable]:
    """{case id: the table refitted without that case} for every scored speed/prefill case. Only the groups of
    the case's engine are refitted; the others cannot depend on it."""
    full = table or load_factor_table()
    prepared = prepare_all(full)
    out: dict[str, FactorTable] = {}
    for p in prepared:
        if not is_fit_row(p) or group_of(p, full) is None:
            continue
        others = [q for q in prepared if q.case is not p.case]
        out[p.case.id] = fit_table(strip_values(full, p.factors_engine), others, p.factors_engine)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sizing.fit", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the fitted values into sizing/data/efficiency.json")
    args = parser.parse_args(argv)
    about = read_json("efficiency.json")["about"]
    text = json.dumps(table_to_json(fit(), about), indent=1) + "\n"
    if not args.write:
        print(text, end="")
        return 0
    path = resources.files("sizing").joinpath("data", "efficiency.json")
    with open(str(path), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
