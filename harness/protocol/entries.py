"""Entries and their files: a submission is one Python file defining ``CustomNorm``, named by its
path or, for a reference baseline, by its name (``group_norm`` stands for the shipped
``baselines/group_norm.py``). Finding and hashing a file never imports it: that is
:mod:`harness.vetting.submission`'s business.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
from pathlib import Path

from harness.protocol.catalog import TRACKS

CLASS_NAME = "CustomNorm"


class SubmissionError(Exception):
    """A submission cannot be used; ``str(err)`` is a one-line explanation for the user.
    ``category`` is what a run record calls it: ``interface``, ``refused`` (static scan) or
    ``tampered``."""

    def __init__(self, message: str, category: str = "interface"):
        super().__init__(message)
        self.category = category


def baselines_dir() -> Path:
    """``$HARNESS_BASELINES``, else the baselines shipped in the package (``harness.baselines``: the
    top-level ``baselines/`` folder of a checkout)."""
    if os.environ.get("HARNESS_BASELINES"):
        return Path(os.environ["HARNESS_BASELINES"]).expanduser()
    spec = importlib.util.find_spec("harness.baselines")  # located, never executed
    return Path(next(iter(spec.submodule_search_locations)))


def baseline_names() -> list[str]:
    folder = baselines_dir()
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []


def describe(path: str | Path) -> str:
    """The first line of a file's module docstring (its one-line description)."""
    try:
        doc = ast.get_docstring(ast.parse(Path(path).read_text(encoding="utf-8")))
    except (OSError, SyntaxError, ValueError):
        return ""
    return doc.strip().splitlines()[0] if doc else ""


def declared_tracks(path: str | Path) -> tuple[str, ...]:
    """The tracks a file says its layer supports: a literal ``TRACKS = (...)`` at module level, read
    without importing the file. A file without one is a CNN layer (the reference's format);
    ``harness check`` tells whether a layer really fits a track."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ("cnn",)
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "TRACKS"):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(value, (tuple, list)):
                return tuple(t for t in TRACKS if t in value)
    return ("cnn",)


def resolve(spec: str | Path) -> Path:
    """A submission path, or a baseline's name (``group_norm``) standing for ``baselines/NAME.py``."""
    path = Path(spec).expanduser()
    text = str(spec)
    if not path.exists() and "/" not in text and os.sep not in text and not text.endswith(".py"):
        if text in baseline_names():
            return baselines_dir() / f"{text}.py"
        known = ", ".join(baseline_names()) or "none found"
        raise SubmissionError(f"{text}: no such file, and not a baseline name (baselines: {known})")
    return path


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_path(path: Path) -> None:
    if not path.exists():
        raise SubmissionError(f"{path}: no such file")
    if path.is_dir():
        raise SubmissionError(f"{path}: is a directory, expected a .py file defining {CLASS_NAME}")
    if path.suffix != ".py":
        raise SubmissionError(f"{path}: not a .py file; a submission is one Python file "
                              f"defining {CLASS_NAME}")


def validate_entry_name(name: str) -> str:
    if not name or len(name) > 100 or any(ord(ch) < 32 for ch in name):
        raise ValueError("an entry name is 1 to 100 printable characters")
    return name
