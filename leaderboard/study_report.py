"""``harness study report``: one HTML page (plus study.json) on how a study's entries trained.

Per setting: learning curves (mean over seeds, band from the lowest to the highest seed), best
accuracy with 95% t-intervals, convergence speed and stability (harness.store.derived), inference
latency, memory and size, gradient flow and norm-layer activation statistics (harness.engine.instruments).
Then a generated summary of the differences that are significant. A study with a grid
(harness.protocol.studies) has one cell per (entry, grid point, setting), and per setting one
section per axis: best accuracy against the axis value for each entry (and each value of the other
axes), each entry's sensitivity (the range of its mean best accuracy over the axis) and the
secondary metrics along it. An entry whose layer does not take a parameter axis has one cell for
all of that axis's values: drawn flat, it is the same runs at every value.

The statistics, stated once:
- per (entry, setting), over its completed runs (status ok or diverged): the mean, sample std
  (ddof=1) and Student-t 95% interval of the best test accuracy, and the mean of every dynamics
  metric over the runs that have it;
- every entry (at every grid point) is compared with the study's reference entry on each setting
  (at the same point of the axes that apply to the reference) by Welch's t-test
  (two-sided, unequal variances), on the best accuracy and, separately, on the epochs to reach 95%
  of the best; within each of the two families the p-values are Holm-Bonferroni adjusted over all
  (entry, point, setting) comparisons, and "significant" means adjusted p < 0.05. The probability of
  improvement P(X > Y) + P(X = Y)/2 over all pairs of runs is shown beside it. Both need at least
  two runs a side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.leaderboard import plots
from harness.leaderboard import stats as S
from harness.leaderboard.provenance import provenance as provenance_of
from harness.protocol.entries import sha256_file
from harness.protocol.recipe import PROTOCOL_VERSION
from harness.protocol.studies import Study, point_label
from harness.store.plan import study_records
from harness.store.record import finite, utc_now, write_json_atomic
from harness.store.results import COMPLETED, ResultsStore

REACH = ("90%", "95%", "99%")


def _mean(values) -> float | None:
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(xs)) if xs else None


@dataclass
class StudyCell:
    """One (entry, setting) of a study: the accuracy statistics of a leaderboard cell (the same
    t-interval, harness.leaderboard.stats) and how its runs trained, cost and compared."""

    entry: str
    setting: str
    expected: int
    runs: list[dict[str, Any]]
    point: tuple[tuple[str, Any], ...] = ()  # the grid axes that apply to the entry, and their values
    values: list[float] = field(default_factory=list)  # best accuracy of each completed run
    reach95: list[float] = field(default_factory=list)
    mean: float | None = None
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    final_mean: float | None = None
    reach: dict[str, float | None] = field(default_factory=dict)
    loss_rises: float | None = None
    late_std: float | None = None
    gap: float | None = None
    stopped_early: list[int] = field(default_factory=list)
    latency_ms: float | None = None
    throughput: float | None = None
    peak_memory_mb: float | None = None
    memory_kind: str | None = None
    norm_parameters: int | None = None
    parameters: int | None = None
    epoch_s: float | None = None
    probe_fraction: float | None = None  # the instruments' measured share of the run's time
    failed: int = 0
    diverged: int = 0
    versus: dict[str, Any] | None = None  # best accuracy against the reference
    versus_reach: dict[str, Any] | None = None  # epochs to 95% against the reference
    # At the last probe: log10 of the first weight layer's gradient norm over the last's (gradient
    # flow: below 0, the input end learns more slowly), and the mean std of the norm layers' outputs.
    grad_ratio: float | None = None
    activation_std: float | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def label(self) -> str:
        return point_label(self.entry, self.point)


def _probe_summary(record: dict[str, Any]) -> tuple[float, float]:
    last = plots.probe_positions(record).get("last")
    if not last:
        return math.nan, math.nan
    grads = [v for _, v in plots.weight_layers(last) if v]
    ratio = math.log10(grads[0] / grads[-1]) if len(grads) > 1 and grads[-1] > 0 else math.nan
    stds = [a["std"] for a in (last.get("activations") or {}).values() if a.get("std") is not None]
    return ratio, (float(np.mean(stds)) if stds else math.nan)


def summarise(entry: str, setting: str, runs: list[dict[str, Any]], expected: int,
              point: tuple[tuple[str, Any], ...] = ()) -> StudyCell:
    done = [r for r in runs if r["status"] in COMPLETED and r.get("best_acc") is not None]
    cell = StudyCell(entry, setting, expected, runs, point)
    cell.values = [float(r["best_acc"]) for r in done]
    cell.failed = sum(r["status"] == "failed" for r in runs)
    cell.diverged = sum(r["status"] == "diverged" for r in runs)
    if done:
        low, high = S.t_interval(cell.values)
        cell.mean, cell.ci_low, cell.ci_high = float(np.mean(cell.values)), finite(low), finite(high)
        cell.std = float(np.std(cell.values, ddof=1)) if len(done) > 1 else None
        cell.final_mean = _mean(r.get("final_acc") for r in done)
        dyn = [r.get("dynamics") or {} for r in done]
        cell.reach = {k: _mean((d.get("epochs_to_reach") or {}).get(k) for d in dyn) for k in REACH}
        cell.reach95 = [float(v) for d in dyn if (v := (d.get("epochs_to_reach") or {}).get("95%"))
                        is not None]
        cell.loss_rises = _mean(d.get("loss_rises") for d in dyn)
        cell.late_std = _mean(d.get("late_test_acc_std") for d in dyn)
        cell.gap = _mean(d.get("generalisation_gap") for d in dyn)
        cell.stopped_early = [r["stopped_early"] for r in done if r.get("stopped_early")]
        cell.latency_ms = _mean((r.get("inference") or {}).get("median_ms") for r in done)
        cell.throughput = _mean((r.get("inference") or {}).get("throughput_images_per_s") for r in done)
        peaks = [r.get("peak_memory") or {} for r in done]
        cell.peak_memory_mb = _mean(p.get("peak_memory_bytes", math.nan) / 2**20 for p in peaks)
        kinds = sorted({str(p["kind"]) for p in peaks if p.get("kind")})
        cell.memory_kind = ", ".join(kinds) or None
        cell.norm_parameters = next(((r.get("norm_layers") or {}).get("parameters") for r in done
                                     if r.get("norm_layers")), None)
        cell.parameters = next((r["model"]["parameters"] for r in done if r.get("model")), None)
        cell.probe_fraction = _mean((r.get("instruments") or {}).get("probe_fraction") for r in done)
        cell.epoch_s = _mean(np.mean([e["epoch_s"] for e in r["epochs"]]) for r in done if r["epochs"])
        probed = [_probe_summary(r) for r in done]
        cell.grad_ratio = _mean(g for g, _ in probed)
        cell.activation_std = _mean(a for _, a in probed)
    return cell


def _compare(x: list[float], y: list[float]) -> dict[str, Any]:
    p = S.welch_p(x, y)
    return {"difference": float(np.mean(x) - np.mean(y)) if x and y else None,
            "p_value": finite(p), "poi": finite(S.probability_of_improvement(x, y))}


Cells = dict[tuple[str, str, tuple], StudyCell]  # (entry, setting key, grid point) -> cell


def reference_point(study: Study, point: tuple) -> tuple | None:
    """The reference entry's grid point that matches ``point`` (an entry's): the values of the
    axes that apply to the reference; None when one of them does not apply to the entry."""
    ref = next(e for e in study.entries if e.name == study.reference)
    given = dict(point)
    wanted = [a.name for a in study.axes if a.kind == "recipe" or ref.takes_param(a.name)]
    if any(name not in given for name in wanted):
        return None
    return tuple((name, given[name]) for name in wanted)


def compare_with_reference(study: Study, cells: Cells) -> None:
    """Fill ``versus`` and ``versus_reach`` of every non-reference cell, Holm-adjusted per family."""
    for attr, values in (("versus", "values"), ("versus_reach", "reach95")):
        pairs = []
        for (entry, setting, point), cell in cells.items():
            matched = reference_point(study, point)
            ref = cells.get((study.reference, setting, matched)) if matched is not None else None
            if entry == study.reference or ref is None:
                continue
            result = _compare(getattr(cell, values), getattr(ref, values))
            setattr(cell, attr, result)
            pairs.append(result)
        adjusted = S.holm([math.nan if r["p_value"] is None else r["p_value"] for r in pairs])
        for result, p in zip(pairs, adjusted):
            result["p_holm"] = finite(p)
            result["significant"] = bool(not math.isnan(p) and p < S.ALPHA)
            result["comparisons"] = sum(not math.isnan(v) for v in adjusted)


def along(study: Study, cells: Cells, setting: str, axis_name: str) -> list[dict[str, Any]]:
    """The cells of ``setting`` along one axis: a row per entry and per combination of its other
    axes' values, with its cell at each value of the axis (``flat``: the entry does not take the
    axis, so one cell stands at every value)."""
    axis = study.axis(axis_name)
    rows = []
    for e in study.entries:
        groups: dict[tuple, dict[Any, StudyCell]] = {}
        for (entry, where, point), cell in cells.items():
            if entry == e.name and where == setting:
                rest = tuple((k, v) for k, v in point if k != axis_name)
                given = dict(point)
                groups.setdefault(rest, {})[repr(given[axis_name]) if axis_name in given else None] = cell
        for rest, by_value in groups.items():
            flat = None in by_value
            rows.append({"label": point_label(e.name, rest),
                         "entry": e.name, "flat": flat,
                         "cells": [by_value[None] if flat else by_value.get(repr(v))
                                   for v in axis.values]})
    return rows


def sensitivity(study: Study, rows: list[dict[str, Any]], axis_name: str) -> list[dict[str, Any]]:
    """Per row of :func:`along` (``rows``): the range (highest minus lowest) of the mean best
    accuracy over the axis's values and the value with the highest; None for a flat row or fewer
    than two means."""
    axis = study.axis(axis_name)
    out = []
    for row in rows:
        means = [(c.mean, v) for c, v in zip(row["cells"], axis.values) if c and c.mean is not None]
        usable = not row["flat"] and len(means) >= 2
        out.append({"label": row["label"], "flat": row["flat"],
                    "range": max(m for m, _ in means) - min(m for m, _ in means) if usable else None,
                    "best": max(means, key=lambda mv: mv[0])[1] if usable else None,
                    "means": [c.mean if c else None for c in row["cells"]]})
    return out


def _points(v: float) -> str:
    return f"{v:+.2f} points"


def summary_lines(study: Study, cells: Cells) -> list[str]:
    """Plain sentences: what differs significantly from the reference, what could not be tested,
    and what failed."""
    lines = []
    ref = study.reference
    for family, attr, what, unit in (("accuracy", "versus", "best test accuracy", "points"),
                                     ("convergence", "versus_reach", "epochs to reach 95% of the best", "epochs")):
        found = [c for c in cells.values() if getattr(c, attr) and getattr(c, attr)["significant"]]
        tested = [c for c in cells.values() if getattr(c, attr) and getattr(c, attr)["p_holm"] is not None]
        m = len(tested)
        for c in sorted(found, key=lambda c: (c.setting, c.label)):
            v = getattr(c, attr)
            direction = ("higher" if v["difference"] > 0 else "lower") if family == "accuracy" else \
                ("slower" if v["difference"] > 0 else "faster")
            amount = _points(v["difference"]) if unit == "points" else f"{v['difference']:+.1f} epochs"
            lines.append(f"{c.label} on {c.setting}: {what} {direction} than {ref} ({amount}; "
                         f"Welch p = {v['p_value']:.3g}, Holm-adjusted {v['p_holm']:.3g} over {m} "
                         f"comparisons).")
        if tested and not found:
            lines.append(f"No entry differs significantly from {ref} in {what} on any setting "
                         f"({m} comparisons, Holm-adjusted p >= 0.05).")
        if not tested and family == "accuracy":
            lines.append(f"Nothing could be tested against {ref}: a comparison needs at least two "
                         "completed runs on each side.")
    for setting in study.settings:
        means = [(c.mean, c) for c in cells.values() if c.setting == setting.key and c.mean is not None]
        if means:
            best, top = max(means, key=lambda mc: mc[0])
            lines.append(f"Highest mean best accuracy on {setting.key}: {top.label} "
                         f"({best:.2f}%" + (f", n={top.n})." if top.n else ")."))
    for c in sorted(cells.values(), key=lambda c: (c.setting, c.label)):
        unscored = sum(r["status"] == "diverged" and r.get("best_acc") is None for r in c.runs)
        if c.n < c.expected:
            why = [f"{k} {what}" for k, what in (
                (unscored, "diverged before completing an epoch"), (c.failed, "failed"),
                (c.expected - len(c.runs), "not run yet")) if k]
            lines.append(f"Incomplete: {c.label} on {c.setting} has a score for {c.n} of "
                         f"{c.expected} seeds ({', '.join(why)}).")
        if c.diverged - unscored:
            lines.append(f"{c.label} on {c.setting}: {c.diverged - unscored} run(s) diverged after "
                         "completing epochs; their best accuracy before divergence is counted.")
    for axis in study.axes:
        for setting in study.settings:
            for row in sensitivity(study, along(study, cells, setting.key, axis.name), axis.name):
                if row["range"] is not None:
                    lines.append(f"Sensitivity to {axis.name} on {setting.key}: {row['label']} "
                                 f"ranges {row['range']:.2f} points over {axis.name} "
                                 f"(best at {axis.name}={row['best']}).")
    return lines


def build_report(study: Study, results: str | Path, out: str | Path, precision: str = "fp32") -> Path:
    from harness.leaderboard.site import _env

    store = ResultsStore(results)
    found = study_records(study, store, precision)
    if not found:
        raise FileNotFoundError(
            f"{results}: no runs of study {study.name!r} for the entries' current files; run "
            f"`harness study run {study.path}` first (or pass --results)")
    cells: Cells = {}
    for s in study.settings:
        for e in study.entries:
            for v in study.variants(e):
                key = (e.name, s.key, v.point)
                cells[key] = summarise(e.name, s.key, found.get(key, []), len(study.seeds), v.point)
    compare_with_reference(study, cells)
    sections = []
    for s in study.settings:
        row_cells = [c for (_, where, _), c in cells.items() if where == s.key]
        groups = {c.label: [r for r in c.runs if r["status"] in COMPLETED] for c in row_cells}
        groups = {k: v for k, v in groups.items() if v}
        axes = []
        for axis in study.axes:
            rows = along(study, cells, s.key, axis.name)
            axes.append({"axis": axis, "rows": rows,
                         "sensitivity": sensitivity(study, rows, axis.name),
                         "figure": plots.along_axis(
                             [{"label": r["label"], "flat": r["flat"],
                               "points": [(c.mean, c.ci_low, c.ci_high) if c else (None, None, None)
                                          for c in r["cells"]]} for r in rows],
                             axis.name, [str(v) for v in axis.values],
                             f"{s.key}: best test accuracy against {axis.name}")})
        sections.append({
            "setting": s, "cells": row_cells, "axes": axes,
            "curves": plots.learning_curves(groups, s.key),
            "intervals": plots.accuracy_intervals(
                [{"label": c.label, "values": c.values, "mean": c.mean, "ci_low": c.ci_low,
                  "ci_high": c.ci_high} for c in row_cells], f"{s.key}: best test accuracy"),
            "gradients": plots.gradient_flow(groups, s.key),
            "activations": plots.activation_stats(groups, s.key),
            "runs": [{"entry": c.label, "record": r} for c in row_cells
                     for r in sorted(c.runs, key=lambda r: r["config"]["seed"])],
        })
    every = [r for rs in found.values() for r in rs]
    summary = summary_lines(study, cells)
    entries = [{"name": e.name, "source": e.source, "path": str(e.path),
                "sha256": sha256_file(e.path), "params": e.params,
                "axes": [a.name for a in study.axes if a.kind == "params" and e.takes_param(a.name)]}
               for e in study.entries]
    generated = {"at": utc_now(), "harness": __version__, "protocol": PROTOCOL_VERSION,
                 "reveal_hidden": False, "results": str(Path(results).resolve())}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = _env().get_template("study.html").render(
        study=study, entries=entries, sections=sections, summary=summary, generated=generated,
        deviations=study.recipe.deviations(), recipe=asdict(study.recipe),
        provenance={k: [str(x) for x in v] for k, v in provenance_of(every).items() if k != "recipe"},
        method=__doc__, precision=precision)
    (out / "index.html").write_text(page, encoding="utf-8")
    write_json_atomic(out / "study.json", {
        "study": {**study.describe(), "description": study.description, "reference": study.reference,
                  "seeds": list(study.seeds), "recipe": asdict(study.recipe),
                  "limit_train": study.limit_train, "limit_test": study.limit_test,
                  "precision": precision,
                  "grid": [{"name": a.name, "kind": a.kind, "values": list(a.values)}
                           for a in study.axes]},
        "entries": entries, "summary": summary, "generated": generated,
        "cells": [{k: v for k, v in asdict(c).items() if k not in ("runs", "point")}
                  | {"point": dict(c.point), "label": c.label, "n": c.n,
                     "run_ids": [r["run_id"] for r in c.runs]} for c in cells.values()],
        "sensitivity": [{"setting": sec["setting"].key, "axis": a["axis"].name, **row}
                        for sec in sections for a in sec["axes"] for row in a["sensitivity"]],
    })
    return out / "index.html"
