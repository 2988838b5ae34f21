"""The reference benchmark's published results, per setting, method and seed (``published.toml``),
so that the board can show them beside ours: labelled as not produced by this harness, and, where
our baseline ran the same setting under the protocol, with the gap between the two."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FILE = Path(__file__).resolve().parent / "published.toml"


@dataclass(frozen=True)
class Published:
    source: str
    protocol: str
    results: dict[str, dict[str, dict[int, float]]]  # setting key -> method -> seed -> accuracy

    def of(self, setting: str) -> dict[str, dict[int, float]]:
        return self.results.get(setting, {})


@lru_cache(maxsize=1)
def published() -> Published:
    data = tomllib.loads(FILE.read_text(encoding="utf-8"))
    results = {setting: {method: {int(seed): float(acc) for seed, acc in seeds.items()}
                         for method, seeds in methods.items()}
               for setting, methods in data["results"].items()}
    return Published(data["source"], data["protocol"], results)
