"""The figures of the leaderboard's entry pages and of study reports: matplotlib, rendered to SVG
and embedded as data URIs, so the pages need no JavaScript and no network.

Every function takes ``groups``, a label (an entry, or a seed) -> the run records behind it, and
draws one line per group: the mean over its runs, with a band from their lowest to their highest
value where a group has more than one run. Layer probes (harness.engine.instruments) are placed by
position: the first and last probed epoch of each run and the one between them.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Sequence

Groups = dict[str, list[dict[str, Any]]]
POSITIONS = ("first", "middle", "last")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def svg_uri(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    _plt().close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue().encode()).decode()


def _value(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


def mean_band(series: Sequence[Sequence[float | None]]) -> tuple[list[float], list[float], list[float]]:
    """Per position, over the series long enough to have it: mean, lowest and highest finite value."""
    n = max((len(s) for s in series), default=0)
    means, lows, highs = [], [], []
    for i in range(n):
        values = [v for s in series if i < len(s) and not math.isnan(v := _value(s[i]))]
        means.append(sum(values) / len(values) if values else math.nan)
        lows.append(min(values) if values else math.nan)
        highs.append(max(values) if values else math.nan)
    return means, lows, highs


def _line(ax, series: Sequence[Sequence[float | None]], label: str, x: Sequence[float] | None = None):
    means, lows, highs = mean_band(series)
    xs = list(x) if x is not None else list(range(1, len(means) + 1))
    (line,) = ax.plot(xs[:len(means)], means, label=label, linewidth=1.4)
    if len(series) > 1:
        ax.fill_between(xs[:len(means)], lows, highs, color=line.get_color(), alpha=0.18, linewidth=0)


def _colours(axes, n: int) -> None:
    """Twenty colours instead of ten when a figure has more than ten lines (a study's grid)."""
    if n > 10:
        for ax in axes:
            ax.set_prop_cycle(color=_plt().cm.tab20.colors)


def _finish(fig, axes, legend: bool = True) -> str:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    plain = FuncFormatter(lambda v, _: f"{v:.3g}")  # 0.5, 2: not 2x10^0
    # Between the powers of ten only 2 and 5 are labelled, so that a log axis never crowds.
    some = FuncFormatter(lambda v, _: f"{v:.3g}" if v > 0 and
                         round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else "")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_yscale() == "log":
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(some)
        ax.grid(alpha=0.3)
    bottom = 0.0
    if legend:
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            # A study grid has dozens of lines: the figure grows by a legend row per 4 labels.
            ncol = min(len(labels), 4)
            rows = math.ceil(len(labels) / ncol)
            height = fig.get_figheight()
            legend_in = 0.45 + 0.2 * rows
            fig.set_figheight(height + legend_in)
            bottom = legend_in / (height + legend_in)
            fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return svg_uri(fig)


def learning_curves(groups: Groups, title: str) -> str | None:
    """Test accuracy, training loss and test loss per epoch."""
    if not any(r.get("epochs") for rs in groups.values() for r in rs):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    _colours(axes, len(groups))
    for label, records in groups.items():
        runs = [r["epochs"] for r in records if r.get("epochs")]
        if not runs:
            continue
        for ax, key in zip(axes, ("test_acc", "train_loss", "test_loss")):
            _line(ax, [[e.get(key) for e in run] for run in runs], label)
    axes[0].set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{title}: test accuracy")
    axes[1].set(xlabel="epoch", ylabel="training loss", title="training loss", yscale="log")
    axes[2].set(xlabel="epoch", ylabel="test loss", title="test loss", yscale="log")
    return _finish(fig, axes)


def probe_positions(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A run's probes by position: first, middle (when there are three) and last probed epoch."""
    probes = sorted((p for p in record.get("probes") or [] if "grad_norms" in p),
                    key=lambda p: p["epoch"])
    if not probes:
        return {}
    out = {"first": probes[0], "last": probes[-1]}
    if len(probes) >= 3:
        out["middle"] = probes[len(probes) // 2]
    return out


def weight_layers(probe: dict[str, Any]) -> list[tuple[str, float | None]]:
    """The probe's gradient norms of the layers outside the norm layers (convolutions and the
    classifier), in the model's order: the depth profile of gradient flow."""
    norms = tuple(probe.get("activations") or ())
    return [(name, v) for name, v in probe["grad_norms"].items()
            if not any(name == n or name.startswith(n + ".") for n in norms)]


def _positions(groups: Groups) -> list[str]:
    present = {p for rs in groups.values() for r in rs for p in probe_positions(r)}
    return [p for p in POSITIONS if p in present]


def _epochs_label(records: list[dict[str, Any]], position: str) -> str:
    epochs = sorted({probe_positions(r)[position]["epoch"] for r in records
                     if position in probe_positions(r)})
    return f"{position} (epoch {', '.join(map(str, epochs))})" if epochs else position


def gradient_flow(groups: Groups, title: str) -> str | None:
    """Per-layer gradient L2 norm against depth (weight layers only), at each probed position."""
    positions = _positions(groups)
    if not positions:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(positions), figsize=(4.2 * len(positions), 3.4), squeeze=False)
    axes = axes[0]
    _colours(axes, len(groups))
    every = [r for rs in groups.values() for r in rs]
    for ax, position in zip(axes, positions):
        for label, records in groups.items():
            series = [[v for _, v in weight_layers(probe_positions(r)[position])] for r in records
                      if position in probe_positions(r)]
            if series:
                _line(ax, series, label)
        ax.set(xlabel="layer (input to output)", ylabel="gradient L2 norm", yscale="log",
               title=f"{title}: {_epochs_label(every, position)}")
    return _finish(fig, axes)


def activation_stats(groups: Groups, title: str) -> str | None:
    """Mean and standard deviation of each norm layer's output (training mode, probe batch)."""
    positions = _positions(groups)
    if not positions:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, len(positions), figsize=(4.2 * len(positions), 5.6), squeeze=False)
    _colours([ax for row in axes for ax in row], len(groups))
    every = [r for rs in groups.values() for r in rs]
    for col, position in enumerate(positions):
        for label, records in groups.items():
            probes = [probe_positions(r)[position] for r in records if position in probe_positions(r)]
            for row, stat in enumerate(("mean", "std")):
                series = [[s[stat] for s in p["activations"].values()] for p in probes]
                if any(series):
                    _line(axes[row][col], series, label)
        axes[0][col].set(title=f"{title}: {_epochs_label(every, position)}", ylabel="output mean")
        axes[1][col].set(xlabel="norm layer (input to output)", ylabel="output std")
    return _finish(fig, [ax for row in axes for ax in row])


def accuracy_intervals(rows: list[dict[str, Any]], title: str) -> str | None:
    """A forest plot of best test accuracy per entry: each run (dots), the mean (bar) and its 95%
    interval (line). A row may say ``baseline`` (drawn in grey, its label in italics) and carry a
    ``note`` (its flags, printed after the label)."""
    rows = [r for r in rows if r["values"]]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(rows)))
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        colour = "#8a94a6" if r.get("baseline") else "#2457c5"
        ax.scatter(r["values"], [y] * len(r["values"]), s=14, color="#667085", zorder=3)
        if r["ci_low"] is not None and not math.isnan(r["ci_low"]):
            ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=colour, linewidth=2.5, alpha=0.7)
        ax.plot([r["mean"]], [y], marker="|", markersize=16, color="#1d2430")
    labels = [r["label"] + (f"  ({r['note']})" if r.get("note") else "") for r in rows]
    ax.set_yticks(range(len(rows)), list(reversed(labels)))
    for tick, r in zip(ax.get_yticklabels(), reversed(rows)):
        if r.get("baseline"):
            tick.set_fontstyle("italic")
    ax.set(xlabel="best test accuracy (%)", title=title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return svg_uri(fig)


def along_axis(rows: list[dict[str, Any]], axis: str, values: list[str], title: str) -> str | None:
    """Best test accuracy against an axis's values: per row, the means joined by a line with their
    95% intervals as error bars; a ``flat`` row (a layer that does not take the axis: the same
    runs at every value) is a dashed line with its interval as a band. Values are placed evenly,
    in the study's order, whatever their type (a learning rate, an optimiser's name)."""
    if not any(m is not None for r in rows for m, _, _ in r["points"]):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    _colours([ax], len(rows))
    xs = list(range(len(values)))
    for r in rows:
        mean, low, high = (list(t) for t in zip(*r["points"]))
        if r["flat"]:
            if mean[0] is None:
                continue
            (line,) = ax.plot([xs[0], xs[-1]], [mean[0]] * 2, linestyle="--", linewidth=1.2,
                              label=f"{r['label']} (takes no {axis})")
            if low[0] is not None and high[0] is not None:
                ax.fill_between([xs[0], xs[-1]], [low[0]] * 2, [high[0]] * 2,
                                color=line.get_color(), alpha=0.06, linewidth=0)
            continue
        y = [_value(m) for m in mean]
        below = [_value(m) - _value(lo) if lo is not None else 0 for m, lo in zip(mean, low)]
        above = [_value(hi) - _value(m) if hi is not None else 0 for m, hi in zip(mean, high)]
        ax.errorbar(xs, y, yerr=[below, above], marker="o", markersize=4, capsize=3,
                    linewidth=1.4, label=r["label"])
    ax.set_xticks(xs, values)
    ax.set(xlabel=axis, ylabel="best test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", frameon=False)
    fig.tight_layout()
    return svg_uri(fig)
