"""Studies: controlled comparisons of several layers under one recipe, and what they found.

A study file (TOML) names its entries, settings and seeds, and may override the recipe, which a
leaderboard suite never may (the optimizer, schedule, early stopping and augmentation are
study-only; see harness.protocol.recipe.STUDY_ONLY_FIELDS)::

    name = "selective-norm"            # also names the study's records
    version = 1
    description = "..."
    seeds = [0, 1, 2]
    reference = "norm only"            # what the others are compared with (default: the first)
    limit_train = 512                  # optional, as in suites
    limit_test = 256
    track = "cnn"                      # optional (default cnn): the settings' track

    [recipe]                           # optional: the track's recipe, with these fields changed
    optimizer = "adam"
    lr = 0.001

    [[entries]]
    name = "no norm"
    source = "../submissions/no_norm.py"   # a file, relative to the study file, or a baseline name

    [[settings]]
    arch = "resnet20"
    dataset = "cifar10"

    [grid.recipe]                      # optional: axes over recipe fields, one run per value
    lr = [0.1, 0.02]
    [grid.params]                      # optional: axes over the layers' keyword parameters
    p = [0.05, 0.1, 0.2]

An entry may fix its layer's parameters (``params = { p = 0.2 }``: the layer is built as
``CustomNorm(num_features, p=0.2)``). The grid is the product of its axes; each entry runs every
point of it, with a parameter axis applied only to the entries whose ``CustomNorm`` takes that
keyword (read from the file without importing it). An entry that does not take ``p`` runs once
per point of the other axes, and a report draws it flat along ``p``: the same runs.

``harness study run`` runs every (entry, setting, seed) through the same store, worker processes
and resume as ``harness submit``; a run whose key (file, setting, seed, recipe, data limits,
protocol, precision) already has a completed record, from this study or any other or a suite, is
not run again. Study runs never register leaderboard entries and the leaderboard never shows them.
``harness study report`` finds each run's record by that key and renders harness.leaderboard.study_report.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from harness.errors import SubmissionError, SuiteError
from harness.protocol.entries import (
    check_params,
    declared_params,
    params_label,
    resolve,
    sha256_file,
    validate_entry_name,
)
from harness.protocol.recipe import Recipe
from harness.protocol.suites import (
    Setting,
    Suite,
    field_errors,
    parse_recipe,
    parse_seeds,
    parse_settings,
    parse_track,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

STUDY_KEYS = {"name", "version", "description", "seeds", "reference", "limit_train", "limit_test",
              "recipe", "entries", "settings", "track", "grid"}
AXIS_KINDS = ("recipe", "params")


@dataclass(frozen=True)
class StudyEntry:
    name: str
    source: str  # as written in the file
    path: Path  # the file it resolves to
    params: dict[str, Any] = field(default_factory=dict, hash=False)  # fixed layer parameters
    # The keywords its CustomNorm takes (None: the file does not say; every parameter axis applies).
    takes: frozenset[str] | None = None

    def takes_param(self, name: str) -> bool:
        return self.takes is None or name in self.takes


@dataclass(frozen=True)
class Axis:
    """One axis of a study's grid: a recipe field or a layer parameter, and its values in order."""

    name: str
    kind: str  # "recipe" or "params"
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Variant:
    """One point of the grid as an entry runs it: the values of the axes that apply to it, the
    recipe and the layer parameters its runs use."""

    point: tuple[tuple[str, Any], ...]  # (axis, value) for the axes that apply, in axis order
    recipe: Recipe
    params: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Study:
    name: str
    version: int
    description: str
    path: Path
    entries: tuple[StudyEntry, ...]
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    recipe: Recipe
    reference: str
    limit_train: int | None = None
    limit_test: int | None = None
    track: str = "cnn"
    axes: tuple[Axis, ...] = ()

    def points(self) -> list[dict[str, Any]]:
        """Every point of the grid (one empty point without a grid), axes in file order."""
        return [dict(zip((a.name for a in self.axes), values))
                for values in itertools.product(*(a.values for a in self.axes))]

    def variants(self, entry: StudyEntry) -> list[Variant]:
        """The distinct points ``entry`` runs: an axis over a parameter it does not take does not
        multiply its runs."""
        out: dict[tuple, Variant] = {}
        for point in self.points():
            applies = tuple((a.name, point[a.name]) for a in self.axes
                            if a.kind == "recipe" or entry.takes_param(a.name))
            if applies not in out:
                recipe = replace(self.recipe, **{a.name: point[a.name] for a in self.axes
                                                 if a.kind == "recipe"})
                params = {**entry.params, **{k: v for k, v in applies
                                             if self.axis(k).kind == "params"}}
                out[applies] = Variant(applies, recipe, params)
        return list(out.values())

    def axis(self, name: str) -> Axis:
        return next(a for a in self.axes if a.name == name)

    def run_count(self) -> int:
        return sum(len(self.variants(e)) for e in self.entries) * len(self.settings) * len(self.seeds)

    def as_suite(self) -> Suite:
        """The study's runs, in the shape the sweep takes (every setting public)."""
        return Suite(name=f"study:{self.name}", version=self.version, description=self.description,
                     settings=self.settings, seeds=self.seeds, recipe=self.recipe,
                     limit_train=self.limit_train, limit_test=self.limit_test, track=self.track)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "file": str(self.path)}

def point_label(entry: str, point: Any) -> str:
    """How a run or a cell of a grid is named: the entry, then its point when it has one
    (``SelectiveNorm [lr=0.1, p=0.3]``); ``point`` is (axis, value) pairs or a dict."""
    point = dict(point or ())
    return entry + (f" [{params_label(point)}]" if point else "")


def _limit(value: Any, name: str, origin: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SuiteError(f"{origin}: {name} must be a positive integer")
    return value


def parse_study(data: dict, path: Path) -> Study:
    origin = path.name
    unknown = set(data) - STUDY_KEYS
    if unknown:
        raise SuiteError(f"{origin}: unknown field(s) {sorted(unknown)}; a study has "
                         f"{', '.join(sorted(STUDY_KEYS))}")
    with field_errors(origin):
        name = data["name"]
        if not isinstance(name, str) or not name.strip():
            raise SuiteError(f"{origin}: name must be a non-empty string")
        track = parse_track(data, origin)
        recipe = parse_recipe(data.get("recipe", {}), origin, study=True, track=track)
        settings = parse_settings(data["settings"], origin, visibility=False, track=track)
        seeds = parse_seeds(data["seeds"], origin)
        entries = []
        for row in data["entries"]:
            extra = set(row) - {"name", "source", "params"}
            if extra:
                raise SuiteError(f"{origin}: an entry has name, source and params, not "
                                 f"{sorted(extra)}")
            entry_name, source = str(row["name"]), str(row["source"])
            try:
                validate_entry_name(entry_name)
            except ValueError as exc:
                raise SuiteError(f"{origin}: entry {entry_name!r}: {exc}") from None
            local = (path.parent / source) if not Path(source).is_absolute() else Path(source)
            try:
                resolved = local if local.is_file() else resolve(source)
            except SubmissionError as exc:
                raise SuiteError(f"{origin}: entry {entry_name!r}: {exc}") from None
            if not resolved.is_file():
                raise SuiteError(f"{origin}: entry {entry_name!r}: no file {source!r} "
                                 f"(relative paths are read from {path.parent})")
            entries.append(_entry(entry_name, source, resolved.resolve(), row.get("params", {}),
                                  origin))
        if not entries:
            raise SuiteError(f"{origin}: no entries")
        if len({e.name for e in entries}) != len(entries):
            raise SuiteError(f"{origin}: two entries have the same name")
        by_content: dict[tuple[str, str], str] = {}
        for e in entries:
            other = by_content.setdefault((sha256_file(e.path), params_label(e.params)), e.name)
            if other != e.name:  # the same runs: their records could not be told apart
                raise SuiteError(f"{origin}: entries {other!r} and {e.name!r} are the same file "
                                 "(same contents) with the same parameters")
        axes = parse_grid(data.get("grid", {}), origin, recipe, entries)
        reference = str(data.get("reference", entries[0].name))
        if reference not in {e.name for e in entries}:
            raise SuiteError(f"{origin}: reference {reference!r} is not one of the entries")
        return Study(name=name, version=int(data.get("version", 1)),
                     description=str(data.get("description", "")), path=path.resolve(),
                     entries=tuple(entries), settings=settings, seeds=seeds, recipe=recipe,
                     reference=reference,
                     limit_train=_limit(data.get("limit_train"), "limit_train", origin),
                     limit_test=_limit(data.get("limit_test"), "limit_test", origin), track=track,
                     axes=axes)


def _entry(name: str, source: str, path: Path, params: Any, origin: str) -> StudyEntry:
    """An entry, its fixed parameters checked against the keywords its CustomNorm takes."""
    try:
        params = check_params(params, f"{origin}: entry {name!r}")
    except ValueError as exc:
        raise SuiteError(str(exc)) from None
    declared = declared_params(path)
    takes = None if declared is None or declared[1] else frozenset(declared[0])
    unknown = sorted(set(params) - takes) if takes is not None else []
    if takes is not None and unknown:
        raise SuiteError(f"{origin}: entry {name!r}: CustomNorm in {path.name} takes no "
                         f"parameter {', '.join(map(repr, unknown))} (it takes "
                         f"{', '.join(sorted(takes)) or 'none but num_features'})")
    return StudyEntry(name, source, path, params, takes)


def parse_grid(table: Any, origin: str, recipe: Recipe,
               entries: list[StudyEntry]) -> tuple[Axis, ...]:
    """The ``[grid.recipe]`` and ``[grid.params]`` axes, each value checked: a recipe point must
    make a valid recipe, a parameter must be taken by some entry and fixed by none that takes it."""
    if not isinstance(table, dict) or set(table) - set(AXIS_KINDS):
        raise SuiteError(f"{origin}: [grid] has the tables [grid.recipe] and [grid.params], "
                         f"not {sorted(set(table) - set(AXIS_KINDS)) if isinstance(table, dict) else table!r}")
    axes: list[Axis] = []
    recipe_fields = {f.name for f in fields(Recipe)}
    for kind in AXIS_KINDS:
        for name, values in (table.get(kind) or {}).items():
            where = f"{origin}: grid.{kind}.{name}"
            if not isinstance(values, list) or not values:
                raise SuiteError(f"{where}: an axis is a non-empty list of values")
            if len({repr(v) for v in values}) != len(values):
                raise SuiteError(f"{where}: a value is listed twice")
            if any(a.name == name for a in axes):
                raise SuiteError(f"{where}: {name} is both a recipe axis and a parameter axis")
            if kind == "recipe":
                if name not in recipe_fields:
                    raise SuiteError(f"{where}: not a recipe field (fields: "
                                     f"{', '.join(sorted(recipe_fields))})")
            else:
                try:
                    for v in values:
                        check_params({name: v}, where)
                except ValueError as exc:
                    raise SuiteError(str(exc)) from None
                taking = [e for e in entries if e.takes_param(name)]
                if not taking:
                    raise SuiteError(f"{where}: no entry's CustomNorm takes {name!r}")
                fixed = [e.name for e in taking if name in e.params]
                if fixed:
                    raise SuiteError(f"{where}: entry {fixed[0]!r} fixes {name} in its params; "
                                     "the grid cannot vary it too")
            axes.append(Axis(name, kind, tuple(values)))
    recipe_axes = [a for a in axes if a.kind == "recipe"]
    for values in itertools.product(*(a.values for a in recipe_axes)):
        point = dict(zip((a.name for a in recipe_axes), values))
        try:
            replace(recipe, **point)
        except (TypeError, ValueError) as exc:
            raise SuiteError(f"{origin}: grid point {params_label(point)}: {exc}") from None
    return tuple(axes)


def load_study(path: str | Path) -> Study:
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such study file")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML: {exc}") from None
    return parse_study(data, path)


def hidden_settings(study: Study) -> list[str]:
    """The study's settings that a leaderboard suite keeps hidden (nobody may tune on them)."""
    from harness.protocol.suites import hidden_in

    return [f"{s.key} (hidden in {', '.join(names)})" for s in study.settings
            if (names := hidden_in(s.arch, s.dataset))]


def select_entries(study: Study, only: list[str] | None) -> list[StudyEntry]:
    names = [e.name for e in study.entries]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise SuiteError(f"{study.path.name}: no entry named {', '.join(map(repr, unknown))}; "
                         f"entries: {', '.join(names)}")
    return [e for e in study.entries if not only or e.name in only]
