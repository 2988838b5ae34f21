"""The columns of a leaderboard table, declared once. The page's headers and cells
(templates/index.html) and the exports (leaderboard.csv, leaderboard.json) all read
:data:`COLUMNS`; between the ``lead`` and the ``tail`` columns come the suite's settings, one cell
each (mean, spread, interval, flags: harness.leaderboard.stats.Cell).

A new column is one :class:`Column` here: its value is the :class:`~harness.leaderboard.site.Row`
field of its name, or what its ``value`` computes from the row; a plain number or text is shown
and sorted without touching the template (which draws only the columns with markup of their own:
rank, group, entry, the aggregate and the flags).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Column:
    key: str  # the Row field it shows (unless ``value`` says otherwise)
    header: str
    title: str = ""  # the header's tooltip: what the number is
    sort: str | None = "num"  # a click on the header sorts by it: num, text, or None (no sort)
    part: str = "tail"  # lead (before the settings' cells) or tail (after them)
    digits: int = 2  # decimals shown (a number)
    export: str | None = None  # its name in the exports ("{group}": the aggregate's group); None: the key
    value: Callable[[Any], Any] | None = None  # row -> value, where it is not a Row field
    joined: bool = False  # a list, exported as one "a;b" string

    def of(self, row: Any) -> Any:
        return self.value(row) if self.value is not None else getattr(row, self.key)

    def export_name(self, group_label: str) -> str:
        return (self.export or self.key).format(group=group_label.replace(" ", "_"))

    def exported(self, row: Any) -> Any:
        v = self.of(row)
        return ";".join(v) if self.joined else v


COLUMNS: list[Column] = [
    Column("rank", "rank", "position by aggregate mean accuracy", part="lead"),
    Column("group", "group", "entries that share a letter are not significantly different: Welch's "
           "t-test on per-seed aggregates, Holm-adjusted over all pairs, p < 0.05", sort="text",
           part="lead"),
    Column("entry", "entry", sort="text", part="lead", value=lambda r: r.entry.name),
    Column("aggregate", "mean acc", "mean over settings of the cell means", export="aggregate_{group}"),
    Column("mean_rank", "mean rank", "mean over settings of the entry's rank", digits=1),
    Column("flags", "flags", sort=None, joined=True),
]
LEAD = [c for c in COLUMNS if c.part == "lead"]
TAIL = [c for c in COLUMNS if c.part == "tail"]
