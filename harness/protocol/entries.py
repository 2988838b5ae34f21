"""Entries and their files: a submission is one Python file defining ``CustomNorm``, named by its
path or, for a reference baseline, by its name (``group_norm`` stands for the shipped
``baselines/group_norm.py``). Finding and hashing a file never imports it: that is
:mod:`harness.vetting.submission`'s business.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from harness.errors import SubmissionError
from harness.protocol.catalog import TRACKS

CLASS_NAME = "CustomNorm"


def baselines_dir() -> Path:
    """``$HARNESS_BASELINES``, else the baselines shipped in the package (``harness.baselines``: the
    top-level ``baselines/`` folder of a checkout)."""
    if os.environ.get("HARNESS_BASELINES"):
        return Path(os.environ["HARNESS_BASELINES"]).expanduser()
    spec = importlib.util.find_spec("harness.baselines")  # located, never executed
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package harness.baselines is missing from this installation")
    return Path(next(iter(spec.submodule_search_locations)))


def baseline_names() -> list[str]:
    folder = baselines_dir()
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []


def describe(path: str | Path) -> str:
    """The first paragraph of a file's module docstring, on one line (its description)."""
    try:
        doc = ast.get_docstring(ast.parse(Path(path).read_text(encoding="utf-8")))
    except (OSError, SyntaxError, ValueError):
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split()) if doc else ""


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


# A layer parameter's value: a JSON scalar, so that it can name a run in its key and its record.
PARAM_TYPES = (bool, int, float, str)


def check_params(params: dict[str, Any], origin: str = "params") -> dict[str, Any]:
    """``params`` as a layer takes them (``CustomNorm(num_features, **params)``): identifier keys
    other than ``num_features``, scalar values; raises ValueError naming ``origin`` otherwise."""
    if not isinstance(params, dict):
        raise ValueError(f"{origin}: layer parameters are a table of name = value")
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier() or name == "num_features":
            raise ValueError(f"{origin}: {name!r} cannot be a layer parameter (a keyword of "
                             "CustomNorm other than num_features)")
        if not isinstance(value, PARAM_TYPES) or (isinstance(value, float) and value != value):
            raise ValueError(f"{origin}: parameter {name} = {value!r}: a value is a number, a "
                             "boolean or a string")
    return dict(sorted(params.items()))


def params_label(params: dict[str, Any]) -> str:
    """``p=0.2, q=1``: how a run's parameters are shown and keyed (sorted, JSON values)."""
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line; VALUE is read as JSON (``0.2``, ``true``,
    ``"x"``), else kept as a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"{text!r}: a layer parameter is NAME=VALUE, e.g. p=0.2")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    name = name.strip()
    check_params({name: value}, "--param")
    return name, value


def declared_params(path: str | Path) -> tuple[dict[str, str], bool] | None:
    """The keyword parameters ``CustomNorm.__init__`` takes after ``num_features``, read without
    importing the file: (name -> its default as written, whether it also takes ``**kwargs``).
    None when the file does not say in a way that can be read (no ``class CustomNorm`` with its
    own ``__init__`` at module level): then only constructing it tells."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == CLASS_NAME), None)
    init = next((n for n in (cls.body if cls else []) if isinstance(n, ast.FunctionDef)
                 and n.name == "__init__"), None)
    if init is None:
        return None
    args = init.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    # Past self and the channel count, whatever they are called; positional-only ones cannot be
    # given by keyword.
    pairs = [(a, d) for i, (a, d) in enumerate(zip(positional, defaults))
             if i >= 2 and a not in args.posonlyargs]
    pairs += list(zip(args.kwonlyargs, args.kw_defaults))
    named = {a.arg: "" if d is None else ast.unparse(d) for a, d in pairs}
    return named, args.kwarg is not None


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
