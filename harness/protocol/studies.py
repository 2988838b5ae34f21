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

``harness study run`` runs every (entry, setting, seed) through the same store, worker processes
and resume as ``harness submit``; a run whose key (file, setting, seed, recipe, data limits,
protocol, precision) already has a completed record, from this study or any other or a suite, is
not run again. Study runs never register leaderboard entries and the leaderboard never shows them.
``harness study report`` finds each run's record by that key and renders harness.leaderboard.study_report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.protocol.entries import SubmissionError, resolve, sha256_file, validate_entry_name
from harness.protocol.recipe import Recipe
from harness.protocol.suites import (
    Setting,
    Suite,
    SuiteError,
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
              "recipe", "entries", "settings", "track"}


@dataclass(frozen=True)
class StudyEntry:
    name: str
    source: str  # as written in the file
    path: Path  # the file it resolves to


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

    def as_suite(self) -> Suite:
        """The study's runs, in the shape the sweep takes (every setting public)."""
        return Suite(name=f"study:{self.name}", version=self.version, description=self.description,
                     settings=self.settings, seeds=self.seeds, recipe=self.recipe,
                     limit_train=self.limit_train, limit_test=self.limit_test, track=self.track)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "file": str(self.path)}

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
            extra = set(row) - {"name", "source"}
            if extra:
                raise SuiteError(f"{origin}: an entry has name and source, not {sorted(extra)}")
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
            entries.append(StudyEntry(entry_name, source, resolved.resolve()))
        if not entries:
            raise SuiteError(f"{origin}: no entries")
        if len({e.name for e in entries}) != len(entries):
            raise SuiteError(f"{origin}: two entries have the same name")
        by_content: dict[str, str] = {}
        for e in entries:
            other = by_content.setdefault(sha256_file(e.path), e.name)
            if other != e.name:  # the same runs: their records could not be told apart
                raise SuiteError(f"{origin}: entries {other!r} and {e.name!r} are the same file "
                                 "(same contents)")
        reference = str(data.get("reference", entries[0].name))
        if reference not in {e.name for e in entries}:
            raise SuiteError(f"{origin}: reference {reference!r} is not one of the entries")
        return Study(name=name, version=int(data.get("version", 1)),
                     description=str(data.get("description", "")), path=path.resolve(),
                     entries=tuple(entries), settings=settings, seeds=seeds, recipe=recipe,
                     reference=reference,
                     limit_train=_limit(data.get("limit_train"), "limit_train", origin),
                     limit_test=_limit(data.get("limit_test"), "limit_test", origin), track=track)


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
