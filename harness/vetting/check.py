"""``harness check``: vet a CustomNorm in seconds, before it trains for hours.

The checks themselves are in :mod:`harness.vetting.layer_checks`; this module runs them. Each
check returns one row: pass, warn or fail, with a one-line reason. Checks marked *fatal* are
also run by ``harness eval`` before training, which refuses a layer that fails any of them.

Every check runs under a limit that counts the layer's own work: CPU time of one thread (the
checks run single-threaded), scaled by this machine's measured speed (:func:`machine_speed`), so
that other processes on a busy machine do not make a sound layer fail; and, for a forward pass
that hangs without computing, a wall-clock limit several times longer. A fatal check that runs
out of time fails and stops the report; any other is a warning, and the rest still run.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable, Iterator

import torch
from torch import nn

from harness.errors import SubmissionError
from harness.protocol.entries import params_label
from harness.vetting.layer_checks import (
    FAIL,
    LAYOUTS,
    PASS,
    WARN,
    CheckFailed,
    CheckTimeout,
    check_batch_independent,
    check_buffers,
    check_construct,
    check_cost,
    check_dtype,
    check_eval_deterministic,
    check_finite,
    check_gradcheck,
    check_init_override,
    check_modes,
    check_shape,
    check_state_dict,
    one_line,
)
from harness.vetting.scan import refusing, scan_file, summary
from harness.vetting.submission import Submission, load

SKIP = "skip"


@dataclass
class Row:
    name: str
    status: str
    detail: str
    fatal: bool = False
    track: str = ""  # the track whose layout the check fed the layer; "" for the file's own rows


WALL_FACTOR = 4.0  # a hang is caught at this many times the CPU limit, on the wall clock
REFERENCE_S = 0.04  # machine_speed's workload, CPU seconds, on the 2-core machine the limits were set on


@contextlib.contextmanager
def time_limit(cpu_seconds: float, wall_seconds: float | None = None) -> Iterator[None]:
    """Raise CheckTimeout in the main thread after ``cpu_seconds`` of this process's CPU time, or
    ``wall_seconds`` (default WALL_FACTOR times as many) on the wall clock; elsewhere, no limit
    is possible."""
    if cpu_seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise CheckTimeout("wall" if signum == signal.SIGALRM else "cpu")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGALRM, signal.SIGPROF)}
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    signal.setitimer(signal.ITIMER_REAL, wall_seconds or WALL_FACTOR * cpu_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=1)
def machine_speed() -> float:
    """How many times slower this machine computes than the one the limits were set on (at least
    1): the best of five single-threaded CPU times of a fixed convolution-and-norm step. CPU time
    does not grow with other processes' load, so neither does this."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 16, 32, 32, generator=g)
    conv, norm = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
    best = float("inf")
    with single_threaded():
        for _ in range(5):
            t0 = time.thread_time()
            for _ in range(5):
                norm(conv(x)).square().mean().backward()
            best = min(best, time.thread_time() - t0)
    return max(1.0, best / REFERENCE_S)


def scan_check(path) -> Row:
    """The static scan (harness.vetting.scan) as a row: findings for review; never fatal."""
    findings = scan_file(path)
    if not findings:
        return Row("static-scan", PASS, "no imports or names outside tensor arithmetic")
    status = WARN if refusing(findings) else PASS
    return Row("static-scan", status, f"for review (--scan-policy refuse would refuse on the "
                                      f"non-note ones): {summary(findings)}")


@dataclass(frozen=True)
class Check:
    name: str
    fn: Callable
    fatal: bool
    description: str
    tracks: tuple[str, ...] = tuple(LAYOUTS)


CHECKS: list[Check] = [
    Check("construct", check_construct, True, "constructs for every channel count the models use"),
    Check("shape", check_shape, True, "output shape equals input shape"),
    Check("modes", check_modes, True, "train and eval modes both work"),
    Check("dtype", check_dtype, True, "dtype preserved"),
    Check("finite", check_finite, True, "finite outputs and gradients"),
    Check("gradcheck", check_gradcheck, False, "torch.autograd.gradcheck in float64"),
    Check("eval-deterministic", check_eval_deterministic, False, "evaluation is deterministic"),
    Check("eval-batch-independent", check_batch_independent, False,
          "evaluation output does not depend on the batch"),
    Check("buffers", check_buffers, False, "buffers change only in train mode"),
    Check("state-dict", check_state_dict, False, "state_dict round trip reproduces outputs"),
    Check("init-override", check_init_override, False,
          "the protocol's initialisation keeps your init (the CNNs' protocol only)", ("cnn",)),
    Check("cost", check_cost, False, "parameters and step time relative to BatchNorm"),
]


@dataclass
class Report:
    submission: str
    sha256: str | None
    rows: list[Row]

    @property
    def ok(self) -> bool:
        return not any(r.status == FAIL for r in self.rows)

    def fits(self) -> dict[str, bool]:
        """Per track checked: whether no check failed on its layout."""
        tracks = dict.fromkeys(r.track for r in self.rows if r.track)
        return {t: not any(r.status == FAIL and r.track == t for r in self.rows) for t in tracks}

    @property
    def fatal_failure(self) -> Row | None:
        return next((r for r in self.rows if r.status == FAIL and r.fatal), None)

    def to_json(self) -> dict:
        return {"submission": self.submission, "sha256": self.sha256, "ok": self.ok,
                "fits": self.fits(), "checks": [asdict(r) for r in self.rows]}


# What ``harness eval`` runs before training: the fatal checks, plus the cheap one whose warning a
# reader of the result needs (recorded in the run record).
PREFLIGHT = frozenset({c.name for c in CHECKS if c.fatal} | {"eval-batch-independent"})


def refuse_on_fatal(checks: list[dict], source: str, params: dict | None = None) -> None:
    """Raise SubmissionError, naming ``source`` (the file or name as the user gave it) and the
    layer's ``params``, on the first fatal failure among ``checks`` (rows as in
    ``Report.to_json()``)."""
    failed = next((c for c in checks if c["status"] == FAIL and c["fatal"]), None)
    if failed is not None:
        track = failed.get("track") or "cnn"
        where, option = ("", "") if track == "cnn" else (f" on the {track} track's layout",
                                                         f" --track {track}")
        given = "".join(f" --param {k}={json.dumps(v)}" for k, v in (params or {}).items())
        with_params = f" with {params_label(params)}" if params else ""
        raise SubmissionError(f"{source}{with_params}: check '{failed['name']}' failed{where}: "
                              f"{failed['detail']} (`harness check {source}{option}{given}` for "
                              "the full report)")


def preflight(submission: Submission, timeout: float, source: str,
              tracks: tuple[str, ...] = ("cnn",), params: dict | None = None) -> Report:
    """The pre-flight checks of ``harness eval`` and ``harness submit`` on the layouts of
    ``tracks`` (those of the runs to come), the layer built with ``params``; raises
    SubmissionError on the first fatal failure (:func:`refuse_on_fatal`)."""
    report = run_checks(str(submission.path), timeout=timeout, only=PREFLIGHT, submission=submission,
                        tracks=tracks, params=params)
    refuse_on_fatal(report.to_json()["checks"], source, params)
    return report


def run_checks(path: str, timeout: float = 10.0, only: frozenset[str] | None = None,
               submission: Submission | None = None, tracks: tuple[str, ...] | None = None,
               params: dict | None = None) -> Report:
    """Load the submission (unless given) and run the checks (or ``only`` those named) on the
    layout of each of ``tracks`` (default: those the file declares in ``TRACKS``; a file without
    it is a CNN layer), each within ``timeout`` seconds of single-threaded CPU time scaled by
    :func:`machine_speed`. The layer is ``CustomNorm(C, **params)`` (the parameters a run gives it).

    Never raises for a bad layer: every problem is a failed (or, for a non-fatal check that ran
    out of time, a warned) row.
    """
    from harness.vetting import tamper

    tamper.baseline()  # the harness's own imports and its baseline are not the layer's time
    speed = machine_speed()
    limit = timeout * speed

    def ran_out(exc: CheckTimeout) -> str:
        if str(exc) == "wall":
            return f"did not finish within {WALL_FACTOR * limit:.3g} s (a forward that hangs?)"
        return (f"took more than {limit:.3g} s of CPU time ({timeout:g} s, scaled by this "
                f"machine's speed: {speed:.2f}x the reference)")

    rows: list[Row] = []
    if submission is None:
        try:
            with time_limit(limit):
                submission = load(path)
        except SubmissionError as exc:
            return Report(str(path), None, [Row("import", FAIL, str(exc), True)])
        except CheckTimeout as exc:
            return Report(str(path), None, [Row("import", FAIL, f"importing the file {ran_out(exc)}",
                                                True)])
    rows.append(Row("import", PASS, f"{submission.path.name} imports; CustomNorm is an nn.Module", True))
    if only is None:
        rows.append(scan_check(submission.path))
    cls = submission.norm_layer(params)
    if tracks is None:
        from harness.protocol.entries import declared_tracks

        tracks = declared_tracks(submission.path)
    for track in tracks:
        rows += _track_rows(cls, LAYOUTS[track], only, limit, timeout, ran_out)
    return Report(str(submission.path), submission.sha256, rows)


def _track_rows(cls, layout, only, limit: float, timeout: float, ran_out) -> list[Row]:
    """The checks' rows on one track's layout; a fatal failure stops that track's checks."""
    rows: list[Row] = []
    stop_reason = None
    for check in CHECKS:
        if (only is not None and check.name not in only) or layout.track not in check.tracks:
            continue
        if stop_reason:
            rows.append(Row(check.name, SKIP, stop_reason, check.fatal, layout.track))
            continue
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), single_threaded():
            warnings.simplefilter("ignore")  # the layer's own warnings would break the one-row report
            torch.manual_seed(0)
            try:
                with time_limit(limit if timeout else 0):
                    status, detail = check.fn(cls, layout)
            except CheckFailed as exc:
                status, detail = FAIL, str(exc)
            except CheckTimeout as exc:
                if check.fatal:  # what follows needs what this one checks
                    status, detail = FAIL, ran_out(exc)
                    stop_reason = f"not run: '{check.name}' ran out of time"
                else:
                    status, detail = WARN, f"{ran_out(exc)}; not judged"
            except Exception as exc:  # noqa: BLE001 - any error of the layer is a failed check
                status, detail = FAIL, f"raised {one_line(exc)}"
        rows.append(Row(check.name, status, detail, check.fatal, layout.track))
        if status == FAIL and check.name == "construct":
            stop_reason = "not run: CustomNorm cannot be constructed"
        elif status == FAIL and check.fatal and layout.track != "cnn":
            stop_reason = f"not run: '{check.name}' failed on this layout"
    return rows
