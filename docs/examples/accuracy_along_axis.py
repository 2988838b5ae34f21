"""Best test accuracy against one axis of a study's grid, per entry: the figure of a study report's
"Along p" section, drawn from the results API (harness.results) in a dozen lines of pandas.

Run it whole, or cell by cell (# %%) in a notebook or an editor that knows cells:

    python docs/examples/accuracy_along_axis.py demo/results --study selective-norm-grid-smoke \\
        --axis p --by lr --out along-p.png --table along-p.csv

The numbers are the report's: the mean over seeds of each run's best test accuracy and its
Student-t 95% interval (harness.leaderboard.stats.t_interval), over the completed runs (ok or
diverged; a run retried after a failure counts once, its latest attempt).
"""
# ruff: noqa: E402 - each cell imports what it uses, as a notebook's would

# %% Arguments (in a notebook: set them by hand)
import argparse

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("results", help="a results folder")
parser.add_argument("--study", help="only the runs of this study (its name)")
parser.add_argument("--axis", default="p", help="a layer parameter (p) or a recipe field (lr)")
parser.add_argument("--by", help="another axis: one line per entry and value of it")
parser.add_argument("--out", default="along-axis.png", help="the figure (PNG, SVG or PDF)")
parser.add_argument("--table", help="also write the summary as CSV")
args = parser.parse_args()

# %% Load: one row per run, config and metrics flattened
from harness import results

runs = results.load(args.results, study=args.study)
runs = runs[runs["status"].isin(["ok", "diverged"]) & runs["best_acc"].notna()]
runs = runs.sort_values("ended_at").drop_duplicates("key", keep="last")


def column(axis: str) -> str:
    """A layer parameter's column (config.params.NAME), else a recipe field's (config.NAME)."""
    for name in (f"config.params.{axis}", f"config.{axis}"):
        if name in runs.columns:
            return name
    raise SystemExit(f"no axis {axis!r} in these runs (columns: config.params.*, config.*)")


x = column(args.axis)
groups = ["entry"] + ([column(args.by)] if args.by else [])
print(f"{len(runs)} completed runs; axis {x}; lines by {', '.join(groups)}")

# %% Summarise: mean and 95% t-interval over seeds at each value of the axis
from harness.leaderboard.stats import t_interval

rows = []
for keys, runs_of in runs.groupby(groups + [x], dropna=False):
    low, high = t_interval(list(runs_of["best_acc"]))
    rows.append(dict(zip(groups + [x], keys)) | {"n": len(runs_of), "mean": runs_of["best_acc"].mean(),
                                                 "ci_low": low, "ci_high": high})
import pandas as pd

summary = pd.DataFrame(rows)
print(summary.to_string(index=False))
if args.table:
    summary.to_csv(args.table, index=False)

# %% Plot: one line per entry (and value of --by), error bars the 95% intervals; an entry whose
# layer does not take the axis (its value is empty) is a dashed line: the same runs at every value.
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

values = sorted(summary[x].dropna().unique())
fig, ax = plt.subplots(figsize=(7.5, 4.2))
for keys, line in summary.groupby(groups, dropna=False):
    keys = keys if isinstance(keys, tuple) else (keys,)
    label = keys[0] + (f", {args.by}={keys[1]}" if args.by else "")
    if line[x].isna().all():
        ax.plot([0, len(values) - 1], [line["mean"].iloc[0]] * 2, linestyle="--", linewidth=1.2,
                label=f"{label} (takes no {args.axis})")
        continue
    line = line.sort_values(x)
    below = (line["mean"] - line["ci_low"]).fillna(0)
    above = (line["ci_high"] - line["mean"]).fillna(0)
    ax.errorbar([values.index(v) for v in line[x]], line["mean"], yerr=[below, above], marker="o",
                markersize=4, capsize=3, label=label)
ax.set_xticks(range(len(values)), [str(v) for v in values])
ax.set(xlabel=args.axis, ylabel="best test accuracy (%)",
       title=f"{args.study or args.results}: best test accuracy against {args.axis}")
ax.grid(alpha=0.3)
ax.legend(fontsize=7, frameon=False)
fig.tight_layout()
fig.savefig(args.out)
print(f"figure: {args.out}")
