"""``harness leaderboard build``: a static site from a results folder.

index.html (one table per suite), entries/SLUG.html (one page per entry), leaderboard.csv and
leaderboard.json. Everything is rendered by jinja2 with autoescaping on, so entry names and
source code from strangers are inert text; figures are matplotlib SVGs embedded as data URIs; no
asset comes from the network, so the site works from file://.

Hidden settings: a cell is filled only for final entries, and shown only with ``reveal_hidden``;
otherwise it reads "hidden". The aggregates shown without ``reveal_hidden`` use public settings
only, so nothing about hidden results leaks through them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from harness import __version__
from harness.errors import SuiteError
from harness.leaderboard import plots
from harness.leaderboard import stats as S
from harness.leaderboard.columns import COLUMNS, LEAD, TAIL
from harness.leaderboard.provenance import distinct_values
from harness.leaderboard.provenance import provenance as provenance_of
from harness.protocol.catalog import TRACKS
from harness.protocol.recipe import PROTOCOL_VERSION
from harness.protocol.suites import Setting, Suite, load_suite
from harness.store.record import finite, utc_now, write_json_atomic
from harness.store.results import Entry, ResultsStore, entry_slug

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(["html"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, d=2: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"
    return env


@dataclass
class Row:
    entry: Entry
    slug: str
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)
    aggregate: float | None = None
    aggregate_ci: tuple[float | None, float | None] = (None, None)
    mean_rank: float | None = None
    rank: int | None = None
    group: str = ""  # letters: entries sharing one are not significantly different
    flags: list[str] = field(default_factory=list)
    versus: dict[str, dict[str, Any]] = field(default_factory=dict)


def _visible(setting: Setting, entry: Entry, reveal: bool) -> str:
    """'shown', 'hidden' (final entry, not revealed) or 'not-run' (hidden setting, not final)."""
    if not setting.hidden:
        return "shown"
    if not entry.final:
        return "not-run"
    return "shown" if reveal else "hidden"


def suite_of(name: str) -> Suite | None:
    try:
        return load_suite(name)
    except SuiteError:
        return None  # a suite no longer shipped: its records stay, but it is not rendered


def build_table(suite: Suite, entries: list[Entry], frame, reveal: bool) -> dict[str, Any]:
    frame = frame[(frame["suite"] == suite.name) & (frame["recipe_id"] == suite.recipe_id())]
    names = sorted(set(frame["entry"]))
    by_name = {e.name: e for e in entries if e.name in names}
    table = S.cells(frame, expected_seeds=len(suite.seeds))
    public = [s.key for s in suite.settings if not s.hidden]
    every = [s.key for s in suite.settings]
    group = every if reveal else public
    kinds = {n: by_name[n].kind for n in names}
    versus = S.versus_best_baseline(kinds, every, table)
    ranks_in_group = S.mean_ranks(names, group, table)

    rows = []
    for name in names:
        entry = by_name[name]
        row = Row(entry=entry, slug=entry_slug(name))
        for s in suite.settings:
            state = _visible(s, entry, reveal)
            cell = table.get((name, s.key))
            row.cells[s.key] = {"state": state if cell or state != "shown" else "missing",
                                "cell": cell if state == "shown" else None}
            if state == "shown" and cell:
                row.flags += [f for f in cell.flags if f not in row.flags]
            if state == "shown" and (name, s.key) in versus:
                row.versus[s.key] = versus[(name, s.key)]
        # Aggregates over the shown group; an entry missing a hidden result has none when revealed.
        mean, ci = S.aggregate(name, group, table)
        row.aggregate, row.aggregate_ci = finite(mean), (finite(ci[0]), finite(ci[1]))
        row.mean_rank = finite(ranks_in_group.get(name, math.nan))
        rows.append(row)

    means = {r.entry.name: r.aggregate if r.aggregate is not None else math.nan for r in rows}
    ranks = S.ordinal_ranks(means)
    ranked = sorted((n for n in means if not math.isnan(means[n])), key=lambda n: (-means[n], n))
    tests = S.pairwise({n: S.aggregate_values(n, group, table) for n in ranked})
    apart = S.separated(tests)
    groups = S.letter_groups(ranked, apart) if ranked else {}
    for r in rows:
        r.rank, r.group = ranks[r.entry.name], groups.get(r.entry.name, "")
    rows.sort(key=lambda r: (r.rank is None, r.rank or 0, -(r.aggregate or 0), r.entry.name))
    separations = [{"better": a, "worse": b, "difference": means[a] - means[b],
                    "p_adjusted": tests[frozenset((a, b))]["p_adjusted"]}
                   for i, a in enumerate(ranked) for b in ranked[i + 1:] if frozenset((a, b)) in apart]

    best: dict[str, float] = {}
    for s in suite.settings:
        values = [r.cells[s.key]["cell"].mean for r in rows
                  if r.cells[s.key]["cell"] is not None and r.cells[s.key]["cell"].n > 0]
        if values:
            best[s.key] = max(values)
    aggregates = [r.aggregate for r in rows if r.aggregate is not None]
    forests = {}
    for s in suite.settings:  # uncertainty at a glance: one forest plot per setting shown
        shown = [(r, r.cells[s.key]["cell"]) for r in rows if r.cells[s.key]["cell"] is not None]
        forests[s.key] = plots.accuracy_intervals(
            [{"label": r.entry.name, "values": c.values, "mean": c.mean, "ci_low": c.ci_low,
              "ci_high": c.ci_high, "baseline": r.entry.kind == "baseline",
              "note": ", ".join(c.flags)} for r, c in shown],
            f"{s.key}: best test accuracy") if shown else None
    return {"suite": suite, "rows": rows, "best": best, "best_aggregate": max(aggregates, default=None),
            "published": published_rows(suite, rows, reveal),
            "separations": separations, "forests": forests,
            "columns_public": [s for s in suite.settings if not s.hidden],
            "columns_hidden": [s for s in suite.settings if s.hidden],
            "group_label": "all settings" if reveal else "public settings", "frame": frame}


# Fewer epochs than this measure no convergence speed or late stability: in a 2-epoch run "epochs
# to 95% of the best" is the last epoch whatever the layer does. The page says "n/a" instead.
SHORT_RUN_EPOCHS = 10


def published_rows(suite: Suite, rows: list[Row], reveal: bool) -> list[dict[str, Any]]:
    """The reference benchmark's own numbers for this suite's settings (harness.protocol.published),
    and, where our baseline of that name ran the setting under the protocol's recipe, the gap
    ours - theirs with its 95% Welch interval."""
    from harness.protocol.published import published
    from harness.protocol.recipe import PROTOCOL_RECIPE
    from harness.protocol.spec import recipe_id

    under_protocol = suite.recipe_id() == recipe_id(PROTOCOL_RECIPE, None, None)
    ours = {r.entry.name: r for r in rows if r.entry.kind == "baseline"}
    out = []
    for s in suite.settings:
        if s.hidden and not reveal:
            continue
        for method, seeds in sorted(published().of(s.key).items()):
            values = list(seeds.values())
            low, high = S.t_interval(values)
            row = {"setting": s.key, "method": method, "seeds": seeds, "mean": float(np.mean(values)),
                   "std": float(np.std(values, ddof=1)), "ci": (low, high), "gap": None,
                   "gap_ci": (None, None), "ours": None}
            cell = ours[method].cells[s.key]["cell"] if method in ours else None
            if cell is not None and cell.n and under_protocol and "bf16" not in cell.flags:
                gap_low, gap_high = S.difference_interval(cell.values, values)
                row.update(ours=cell, gap=cell.mean - row["mean"], gap_ci=(finite(gap_low), finite(gap_high)))
            out.append(row)
    return out


def dynamics_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: convergence, stability and cost (harness.store.derived, harness.engine.instruments)."""
    rows = []
    for r in sorted(records, key=lambda r: r["config"]["seed"]):
        d = r.get("dynamics") or {}
        short = len(r.get("epochs") or []) < SHORT_RUN_EPOCHS
        peak = (r.get("peak_memory") or {}).get("peak_memory_bytes")
        rows.append({"seed": r["config"]["seed"], "short": short,
                     "reach": {} if short else d.get("epochs_to_reach") or {},
                     "loss_rises": d.get("loss_rises"),
                     "late_std": None if short else d.get("late_test_acc_std"),
                     "gap": d.get("generalisation_gap"),
                     "latency_ms": (r.get("inference") or {}).get("median_ms"),
                     "peak_mib": peak / 2**20 if peak else None,
                     "norm_parameters": (r.get("norm_layers") or {}).get("parameters")})
    return rows


def figures(records: list[dict[str, Any]], title: str) -> dict[str, str | None]:
    """The training-dynamics figures of an entry's runs of one setting, one line per seed."""
    groups = {f"seed {r['config']['seed']}": [r]
              for r in sorted(records, key=lambda r: r["config"]["seed"])}
    return {"curves": plots.learning_curves(groups, title),
            "gradients": plots.gradient_flow(groups, title),
            "activations": plots.activation_stats(groups, title)}


def _export_rows(tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for t in tables:
        for r in t["rows"]:
            row = {"track": t["suite"].track, "suite": t["suite"].name,
                   **{c.export_name(t["group_label"]): c.exported(r) for c in COLUMNS},
                   "kind": r.entry.kind, "final": r.entry.final, "sha256": r.entry.sha256}
            for s in t["suite"].settings:
                c = r.cells[s.key]
                if c["state"] == "shown" and c["cell"] is not None:
                    cell = c["cell"]
                    row.update({f"{s.key}_mean": finite(cell.mean), f"{s.key}_std": finite(cell.std),
                                f"{s.key}_n": cell.n, f"{s.key}_ci_low": finite(cell.ci_low),
                                f"{s.key}_ci_high": finite(cell.ci_high),
                                f"{s.key}_final_mean": finite(cell.final_mean)})
                else:
                    row.update({f"{s.key}_mean": c["state"] if c["state"] != "shown" else None})
            out.append(row)
    return out


@dataclass
class Site:
    index: Path
    skipped: dict[str, str]  # files of the results folder that are not records or entries: why
    left_out: dict[str, int] = field(default_factory=dict)  # records not on the board, by reason


def left_out(records: list[dict[str, Any]], current: dict[str, str]) -> dict[str, int]:
    """The records the board does not show, counted by why (S.left_out_reason)."""
    out: dict[str, int] = {}
    for r in records:
        why = S.left_out_reason(r, current)
        if why:
            out[why] = out.get(why, 0) + 1
    return out


def build_tables(entries: list[Entry], frame, reveal: bool) -> list[dict[str, Any]]:
    """One table per suite that has runs (a suite no longer shipped is left out), by track."""
    suites = [s for s in map(suite_of, sorted(set(frame["suite"]))) if s is not None]
    order = list(TRACKS)
    return [build_table(suite, entries, frame, reveal)
            for suite in sorted(suites, key=lambda s: (order.index(s.track), s.name))]


def build_site(results: str | Path, out: str | Path, reveal_hidden: bool = False) -> Site:
    """Write the site. A file of the store that is not a record (harness.store.schema) is skipped and
    listed in ``Site.skipped`` and on the index page; it never stops the build."""
    store = ResultsStore(results)
    entries = store.entries()
    records = list(store.records())
    current = {e.name: e.sha256 for e in entries}
    frame = S.runs_frame(records, current)
    by_id = {r["run_id"]: r for r in records}
    env = _env()
    out = Path(out)
    (out / "entries").mkdir(parents=True, exist_ok=True)
    generated = {"at": utc_now(), "harness": __version__, "protocol": PROTOCOL_VERSION,
                 "reveal_hidden": reveal_hidden, "results": str(Path(results).resolve())}

    tables = build_tables(entries, frame, reveal_hidden)
    tracks = [{"track": TRACKS[t], "tables": group} for t in TRACKS
              if (group := [x for x in tables if x["suite"].track == t])]

    for t in tables:
        # Each cell's runs, found once for the curves of the index and the entry pages.
        cell_runs = dict(iter(t["frame"].groupby(["entry", "setting"])))
        none = t["frame"].iloc[0:0]
        t["curves"] = {}  # the entries' curves side by side, per setting: mean and band over seeds
        for s in t["suite"].settings:
            groups = {row.entry.name: [by_id[i] for i in cell_runs[(row.entry.name, s.key)]["run_id"]]
                      for row in t["rows"] if row.cells[s.key]["state"] == "shown"
                      and (row.entry.name, s.key) in cell_runs}
            t["curves"][s.key] = plots.learning_curves(groups, s.key) if groups else None
        suite = t["suite"]
        for row in t["rows"]:
            sections = []
            for s in suite.settings:
                state = row.cells[s.key]["state"]
                runs = cell_runs.get((row.entry.name, s.key), none)
                recs = [by_id[i] for i in runs["run_id"]] if state == "shown" else []
                sections.append({"setting": s, "state": state, "cell": row.cells[s.key]["cell"],
                                 "runs": runs.sort_values("seed").to_dict("records") if recs else [],
                                 "dynamics": dynamics_rows(recs),
                                 "figures": figures(recs, s.key),
                                 "versus": row.versus.get(s.key)})
            shown = [by_id[i] for i in t["frame"][t["frame"]["entry"] == row.entry.name]["run_id"]]
            provenance = provenance_of(shown)
            page = env.get_template("entry.html").render(
                row=row, suite=suite, sections=sections, generated=generated,
                source=store.submission_source(row.entry.sha256) or "(source not in this results folder)",
                provenance=provenance, trust=_trust(shown), history=store.history(row.entry.name),
                flag_text=S.FLAGS, short_run=SHORT_RUN_EPOCHS)
            (out / "entries" / f"{row.slug}.html").write_text(page, encoding="utf-8")

    skipped = dict(sorted(store.problems.items()))
    ignored = left_out(records, current)
    index = env.get_template("index.html").render(tables=tables, tracks=tracks, generated=generated,
                                                  method=_markdown(S.__doc__), skipped=skipped,
                                                  flag_text=S.FLAGS, left_out=ignored,
                                                  published_source=_published_source(),
                                                  lead=LEAD, tail=TAIL)
    (out / "index.html").write_text(index, encoding="utf-8")
    rows = _export_rows(tables)
    write_json_atomic(out / "leaderboard.json", {"generated": generated, "rows": rows,
                                                 "skipped": skipped})
    with open(out / "leaderboard.csv", "w", newline="", encoding="utf-8") as fh:
        fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("track", "suite", "rank", "entry"), k))
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in r.items()} for r in rows)
    return Site(out / "index.html", skipped, ignored)


def _published_source() -> str:
    from harness.protocol.published import published

    return f"Source: {published().source}; protocol {published().protocol}"


def _markdown(text: str) -> str:
    """Our own Markdown (the statistics notes) as HTML; raw HTML in it is not passed through."""
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    return Markup(MarkdownIt("commonmark", {"html": False}).render(text))


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string starting with =, +, -, @ (or a tab or
    carriage return) would be read as a formula, so it gets a leading apostrophe (OWASP's
    advice for CSV injection). Numbers are left as they are."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _how_run(isolation: dict[str, Any]) -> str:
    if not isolation.get("sandboxed"):
        return "no: trusted code, run and scored in one process"
    if isolation.get("sandbox") == "none":
        return ("split (training without the test set, scoring without labels), but WITHOUT the "
                "sandbox's isolation (--unsafe-no-namespaces)")
    return "yes (split: training without the test set, scoring without labels)"


def _trust(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How an entry's runs were vetted and run: what a reader must know before trusting them."""
    scans = [r["scan"] for r in records if r.get("scan")]
    findings = {(f["line"], f["what"], f.get("severity", "refuse")): f for s in scans
                for f in s.get("findings", [])}
    isolation = [r.get("isolation") or {} for r in records]
    return {
        "sandboxed": distinct_values(isolation, _how_run),
        "scan_policy": distinct_values(scans, lambda s: s["policy"]),
        "trust_code": any(s.get("trust_code") for s in scans),
        "findings": sorted(findings.values(), key=lambda f: f["line"]),
        "reported": sorted({f for r in records for f in r.get("reported") or []}),
    }
