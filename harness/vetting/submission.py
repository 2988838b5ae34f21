"""Loading a submission: a Python file that defines ``CustomNorm(num_features)``.

Only the file's top level runs (it is imported, never executed as ``__main__``), so a
reference-format file that carries its own training script under ``if __name__ == "__main__"``
contributes its CustomNorm and nothing else. Every way a file can be broken is reported as a
:class:`SubmissionError` with one line that names the file and, where there is one, the line.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from torch import nn

from harness.errors import SubmissionError
from harness.protocol.entries import CLASS_NAME, check_path, resolve, sha256_file
from harness.vetting import tamper


@dataclass(frozen=True)
class Submission:
    path: Path
    name: str  # the file's stem, e.g. "selective_norm"
    sha256: str
    norm_class: type[nn.Module]

    def norm_layer(self, params: dict[str, Any] | None = None) -> Callable[[int], nn.Module]:
        """What fills every norm slot: ``CustomNorm``, or ``CustomNorm(num_features, **params)``
        when a run gives its layer parameters."""
        return partial(self.norm_class, **params) if params else self.norm_class


def error_message(exc: BaseException, path: str | Path, shown: str | Path | None = None) -> str:
    """One line for a failure of the layer: the exception, and where in ``path`` it was raised
    (the deepest line of the submission on its traceback), named as ``shown`` (the user's file;
    default ``path``'s name)."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    line = _line_in(exc, Path(path).resolve())
    name = Path(shown or path).name
    return (text[:440] + (f" (at {name}:{line})" if line else ""))[:500]


def _line_in(exc: BaseException, path: Path) -> int | None:
    """The last line of ``path`` on the traceback, i.e. where the submission itself failed."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path:
            line = frame.lineno
    return line


def _import(path: Path, digest: str, tamper_check: bool = True):
    source = path.read_text(encoding="utf-8", errors="replace")
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise SubmissionError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    module_name = f"_harness_submission_{digest[:16]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:  # only for a name no loader claims; ours ends in .py
        raise SubmissionError(f"{path}: not a Python file Python can load")
    module = importlib.util.module_from_spec(spec)
    if tamper_check:
        tamper.baseline()  # what the scoring functions are before any submission has run
    # Registered while it runs so that dataclasses, pickling and typing inside it work.
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - importing the submission is the point
    except ModuleNotFoundError as exc:
        sys.modules.pop(module_name, None)
        where = _line_in(exc, path)
        raise SubmissionError(f"{path}:{where}: import error: no module named {exc.name!r}") from None
    except Exception as exc:  # noqa: BLE001 - anything raised at import time is the file's fault
        sys.modules.pop(module_name, None)
        where = _line_in(exc, path)
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise SubmissionError(f"{path}:{where}: {type(exc).__name__} while importing: {message}") from None
    changed = tamper.changes() if tamper_check else []
    if changed:
        raise SubmissionError(f"{path}: importing it changed the harness or torch: "
                              f"{'; '.join(changed[:3])}", "tampered")
    return module


def load(spec: str | Path, tamper_check: bool = True) -> Submission:
    """Import a submission file (or a baseline by name) with its CustomNorm class and sha256.
    ``tamper_check``: refuse a file whose import changed the harness or torch (harness.vetting.tamper;
    pointless in a sandboxed process that computes no score)."""
    path = resolve(spec).resolve()
    check_path(path)
    digest = sha256_file(path)
    module = _import(path, digest, tamper_check)
    cls = getattr(module, CLASS_NAME, None)
    if cls is None:
        raise SubmissionError(f"{path}: defines no {CLASS_NAME} class")
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise SubmissionError(f"{path}: {CLASS_NAME} must be a class deriving from torch.nn.Module, "
                              f"got {type(cls).__name__}")
    return Submission(path=path, name=path.stem, sha256=digest, norm_class=cls)


def load_submission(path: str | Path) -> type[nn.Module]:
    """Public API: the ``CustomNorm`` class defined in a submission file."""
    return load(path).norm_class
