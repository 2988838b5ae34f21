"""Vetting one submission before its runs: the static scan, then the pre-flight checks on the
layouts of the tracks its runs use, its layer built with each set of parameters they use; then
the file is kept in the store under its sha256 (a refused file is not kept).

Where the checks run is the caller's choice, passed in as ``run_checks``: here, for trusted code
(the default), or in a sandboxed worker for untrusted code, so that this process never imports
it (harness.execution.checks.checks_in_worker). Either way a fatal failure refuses the file.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.errors import SubmissionError
from harness.protocol.entries import check_path, params_label, resolve
from harness.vetting.check import preflight
from harness.vetting.scan import refusing, scan_file, summary
from harness.vetting.submission import load

if TYPE_CHECKING:
    from harness.store.results import ResultsStore

SCAN_POLICIES = ("report", "refuse")

# The pre-flight check rows of a staged file on the layouts of some tracks, its layer built with
# some parameters: (file, tracks, params) -> rows (as in Report.to_json()["checks"]).
CheckRunner = Callable[[Path, tuple[str, ...], dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Vetting:
    """How a file is vetted: the scan policy (``report``: findings are recorded; ``refuse``: a
    finding in code the harness runs refuses the file), ``trust_code`` (run it despite them), and
    the seconds each pre-flight check may take (0: no limit)."""

    scan_policy: str = "report"
    trust_code: bool = False
    check_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.scan_policy not in SCAN_POLICIES:
            raise ValueError(f"scan policy must be one of {SCAN_POLICIES}, got {self.scan_policy!r}")


@dataclass
class Vetted:
    """A submission that passed vetting: where it came from, its stored copy (what runs), and
    the check rows of each set of layer parameters it was checked with (the scan's row first)."""

    path: Path  # the file as the user named it, resolved
    copy: Path
    sha256: str
    checked: dict[str, list[dict[str, Any]]]  # params_label(params) -> rows
    scan: dict[str, Any]

    def checks_for(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.checked[params_label(params)]


def scan_row(path: Path, shown: str, vetting: Vetting = Vetting()) -> tuple[dict[str, Any], dict[str, Any]]:
    """The static scan (harness.vetting.scan) as a check row and the record's ``scan``. With policy
    ``refuse``, a finding in code the harness runs raises SubmissionError (category
    ``refused``), unless ``trust_code``. ``shown`` is the file as the user named it."""
    findings = scan_file(path)
    refuse, trusted = vetting.scan_policy == "refuse", vetting.trust_code
    if refuse and refusing(findings) and not trusted:
        raise SubmissionError(
            f"{shown}: refused by the static scan (--scan-policy refuse): "
            f"{summary(refusing(findings))}. A norm layer needs tensors and arithmetic only; if "
            "you have read this file and trust it, pass --trust-code", "refused")
    if findings:
        detail = summary(findings) + (" (allowed by --trust-code)" if trusted and refuse
                                      else " (for review; not refused)")
    else:
        detail = "no imports or names outside tensor arithmetic"
    row = {"name": "static-scan", "status": "warn" if refusing(findings) else "pass",
           "detail": detail[:4000], "fatal": False}
    scan = {"policy": vetting.scan_policy, "trust_code": trusted,
            "findings": [f.to_json() for f in findings[:200]]}
    return row, scan


def checks_here(vetting: Vetting, source: str) -> CheckRunner:
    """The pre-flight checks run in this process (trusted code only: it imports the file)."""
    def run(staged: Path, tracks: tuple[str, ...], params: dict[str, Any]) -> list[dict[str, Any]]:
        report = preflight(load(staged), vetting.check_timeout, source, tracks, params)
        return report.to_json()["checks"]

    return run


def vet(source: str, vetting: Vetting, store: ResultsStore, run_checks: CheckRunner | None = None,
        tracks: tuple[str, ...] = ("cnn",), params: tuple[dict[str, Any], ...] = ({},)) -> Vetted:
    """Scan and pre-flight-check a submission (``run_checks``, default :func:`checks_here`) on the
    layouts of ``tracks``, its layer built with each of ``params`` (those of the runs to come),
    then keep it in ``store``. Raises SubmissionError, its message naming ``source`` (the file as
    the user named it) and the parameters, when the file is unusable or refused."""
    path = resolve(source).resolve()
    check_path(path)
    data = path.read_bytes()
    run_checks = run_checks or checks_here(vetting, source)
    checked = {}
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / path.name  # exactly these bytes are vetted, then stored
        staged.write_bytes(data)
        row, scan = None, None
        for given in params:
            try:
                if row is None:
                    row, scan = scan_row(staged, source, vetting)
                rows = run_checks(staged, tracks, given)
            except SubmissionError as exc:
                raise SubmissionError(str(exc).replace(str(staged), source), exc.category) from None
            checked[params_label(given)] = [row, *rows]
    if scan is None:
        raise ValueError("vet() needs at least one set of layer parameters")
    copy, digest = store.store_bytes(data)
    return Vetted(path, copy, digest, checked, scan)
