"""Suites: versioned sets of settings (arch x dataset, public or hidden), seeds and one recipe.

A suite is a TOML file in ``harness/protocol/suites/``; ``harness list`` shows them. Public
settings are run for every submission; hidden ones only for final submissions (and for the
baselines), so nobody can tune on them by accident. A suite belongs to one track (``track``,
default ``cnn``): its architectures are that track's, each fed a dataset it can take, and its
recipe is the track's (harness.protocol.recipe.TRACK_RECIPES) with only its size changed.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path

from harness.errors import SuiteError
from harness.protocol.catalog import ARCHITECTURES as ARCHS
from harness.protocol.catalog import TRACKS, compatibility_error, resolve_dataset_name
from harness.protocol.recipe import STUDY_ONLY_FIELDS, TRACK_RECIPES, Recipe
from harness.protocol.spec import recipe_id

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SUITES_DIR = Path(__file__).resolve().parent / "suites"
VISIBILITIES = ("public", "hidden")


@dataclass(frozen=True)
class Setting:
    arch: str
    dataset: str
    hidden: bool

    @property
    def key(self) -> str:
        return f"{self.arch}-{self.dataset}"


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    recipe: Recipe
    limit_train: int | None = None
    limit_test: int | None = None
    track: str = "cnn"

    def settings_for(self, final: bool) -> tuple[Setting, ...]:
        return tuple(s for s in self.settings if final or not s.hidden)

    def find(self, arch: str, dataset: str) -> Setting | None:
        return next((s for s in self.settings if (s.arch, s.dataset) == (arch, dataset)), None)

    def recipe_id(self) -> str:
        """A short hash of everything that changes what a number means: recipe and data limits."""
        return recipe_id(self.recipe, self.limit_train, self.limit_test)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "recipe_id": self.recipe_id()}


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def parse_recipe(table: dict, origin: str, study: bool = False, track: str = "cnn") -> Recipe:
    """A ``[recipe]`` table over the track's recipe (the protocol's, for cnn). Only a study may
    change the fields in STUDY_ONLY_FIELDS (optimizer, schedule, warm-up, early stopping,
    augmentation, label smoothing, clipping)."""
    unknown = set(table) - {f.name for f in fields(Recipe)}
    if unknown:
        raise SuiteError(f"{origin}: unknown recipe field(s) {sorted(unknown)}")
    base = TRACK_RECIPES[track]
    try:
        recipe = replace(base, **table)
    except (TypeError, ValueError) as exc:
        raise SuiteError(f"{origin}: recipe: {exc}") from None
    changed = [k for k in STUDY_ONLY_FIELDS if getattr(recipe, k) != getattr(base, k)]
    if changed and not study:
        raise SuiteError(f"{origin}: a leaderboard suite trains with the {track} track's "
                         f"{', '.join(changed)}; change them in a study (harness study), not a suite")
    return recipe


def parse_track(data: dict, origin: str) -> str:
    track = data.get("track", "cnn")
    if track not in TRACKS:
        raise SuiteError(f"{origin}: unknown track {track!r}; tracks: {', '.join(TRACKS)}")
    return track


def parse_settings(rows: list, origin: str, visibility: bool = True,
                   track: str | None = "cnn") -> tuple[Setting, ...]:
    """The settings, each an architecture of ``track`` (any, when None) and a dataset it takes."""
    settings = []
    for s in rows:
        if s["arch"] not in ARCHS:
            raise SuiteError(f"{origin}: unknown architecture {s['arch']!r}")
        if track is not None and ARCHS[s["arch"]].track != track:
            raise SuiteError(f"{origin}: {s['arch']} is an architecture of the "
                             f"{ARCHS[s['arch']].track} track, not of this file's {track} track "
                             "(set track = ... at the top)")
        dataset = resolve_dataset_name(s["dataset"])
        mismatch = compatibility_error(s["arch"], dataset)
        if mismatch:
            raise SuiteError(f"{origin}: {mismatch}")
        if not visibility and "visibility" in s:
            raise SuiteError(f"{origin}: a study has no hidden settings; drop 'visibility'")
        if s.get("visibility", "public") not in VISIBILITIES:
            raise SuiteError(f"{origin}: visibility must be public or hidden, got {s['visibility']!r}")
        settings.append(Setting(s["arch"], dataset,
                                s.get("visibility", "public") == "hidden"))
    if not settings:
        raise SuiteError(f"{origin}: no settings")
    if len({s.key for s in settings}) != len(settings):
        raise SuiteError(f"{origin}: a setting is listed twice")
    return tuple(settings)


def parse_seeds(values: list, origin: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                               for x in values):
        raise SuiteError(f"{origin}: seeds must be a list of integers")
    seeds = tuple(values)
    if not seeds or len(set(seeds)) != len(seeds):
        raise SuiteError(f"{origin}: seeds must be a non-empty list of distinct integers")
    return seeds


@contextmanager
def field_errors(origin: str):
    """Turn a missing key or a wrongly typed value of a parsed file into one SuiteError line."""
    try:
        yield
    except SuiteError:
        raise
    except KeyError as exc:
        raise SuiteError(f"{origin}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise SuiteError(f"{origin}: {exc}") from None


def _parse(data: dict, origin: str) -> Suite:
    with field_errors(origin):
        track = parse_track(data, origin)
        recipe = parse_recipe(data.get("recipe", {}), origin, track=track)
        settings = parse_settings(data["settings"], origin, track=track)
        seeds = parse_seeds(data["seeds"], origin)
        return Suite(name=str(data["name"]), version=int(data["version"]),
                     description=str(data.get("description", "")), settings=tuple(settings),
                     seeds=seeds, recipe=recipe, limit_train=data.get("limit_train"),
                     limit_test=data.get("limit_test"), track=track)


def load_suite(name: str) -> Suite:
    """A packaged suite by name (``default``, ``smoke``)."""
    path = SUITES_DIR / f"{name}.toml"
    if not path.is_file():
        raise SuiteError(f"no suite named {name!r}; suites: {', '.join(suite_names())}")
    with open(path, "rb") as fh:
        return _parse(tomllib.load(fh), path.name)


def all_suites() -> list[Suite]:
    return [load_suite(n) for n in suite_names()]


def hidden_in(arch: str, dataset: str) -> list[str]:
    """Names of the suites in which (arch, dataset) is a hidden setting."""
    dataset = resolve_dataset_name(dataset)
    return [s.name for s in all_suites() if (setting := s.find(arch, dataset)) and setting.hidden]
