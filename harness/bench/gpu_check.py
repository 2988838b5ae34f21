"""``make gpu-check``: one prepared pass over the GPU path, with the speed targets it must meet.

On any CUDA machine, within a time budget (8 minutes by default), each step runs as a command of
its own (``harness bench`` / ``harness eval`` with ``--json``) on the ``noise`` dataset (random
CIFAR-sized images: the speed of CIFAR, no download), so that one crash or hang costs that step
only:

1. ``pipeline``: ResNet-56 + BatchNorm, the harness's epoch against the reference-style pipeline
   on the same GPU, and the projected 200-epoch run (noise is CIFAR-10's size; CIFAR-100 differs
   only in the classifier's 64 x 100 weights);
2. ``norm_costs``: each reference baseline's and SelectiveNorm's step relative to BatchNorm's,
   eager and compiled (ResNet-56);
3. ``packing``: suite throughput of ``--jobs N`` against ``--jobs 1`` (ResNet-20, one-epoch runs);
4. ``suite_epochs``: the epoch time of each setting of the default suite (for its projection);
5. ``evals``: a 2-epoch ``harness eval`` of every reference baseline with every speed option
   (the CUDA defaults: channels_last + cudnn.benchmark; compile; CUDA graphs; bf16), whose
   records carry each fast path's check against the plain model (relative errors per tensor);
6. ``untrusted``: one untrusted ``eval`` (the sandbox with CUDA).

Then :func:`evaluate` puts each figure beside its target (pass / short / not measured), the default
suite's wall time is projected (:func:`project_suite`) against the 2-hour aim, and the gradient
errors the fast paths really show are set against the tolerance floor (:func:`tolerance_finding`).
Everything goes to ``bench/results/gpu-check-<date>.json`` plus a one-screen summary. The exit
code is 1 when a step failed, 0 otherwise: a missed target is a finding, not an error.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

BASELINES = ("batch_norm", "group_norm", "switchable_norm", "batch_instance_norm")
SPEED_OPTIONS = {"default": [], "compile": ["--compile"], "cuda_graphs": ["--cuda-graphs"],
                 "bf16": ["--precision", "bf16"]}
# The default suite (harness/protocol/suites/default.toml): 3 settings x 3 seeds x 5 entries (the
# four reference baselines and a submission, here SelectiveNorm) = 45 runs of 200 epochs.
SUITE_SETTINGS = (("resnet56", "cifar100"), ("mobilenetv2", "fmnist"), ("resnet110", "cifar100"))
SUITE_ENTRIES = (*BASELINES, "selective_norm")
SUITE_SEEDS, PROTOCOL_EPOCHS = 3, 200
GRADIENT_FLOOR_NOW = 1e-2 * 50  # harness.engine.fast: the CUDA fp32 floor, x50 for gradients


@dataclass(frozen=True)
class Target:
    key: str
    description: str
    goal: float
    at_most: bool  # the figure must be <= goal (else >=)
    unit: str

    def judge(self, figure: float | None) -> str:
        if figure is None or not math.isfinite(figure):
            return "not measured"
        return "pass" if (figure <= self.goal if self.at_most else figure >= self.goal) else "short"


TARGETS = (
    Target("pipeline_ratio", "harness vs reference-style pipeline, ResNet-56 + BatchNorm", 5.0,
           False, "x"),
    Target("protocol_run_min", "projected 200-epoch ResNet-56/CIFAR-100 run", 8.0, True, "min"),
    Target("switchable_norm_compiled", "SwitchableNorm step / BatchNorm's, compiled", 2.0, True, "x"),
    Target("batch_instance_norm_compiled", "Batch-Instance Norm step / BatchNorm's, compiled", 2.0,
           True, "x"),
    Target("packing_ratio", "--jobs packing, suite throughput vs --jobs 1, ResNet-20", 2.0, False,
           "x"),
    Target("default_suite_h", "default suite, 45 runs of 200 epochs, one GPU (aim)", 2.0, True, "h"),
)


def project_suite(epoch_s: dict[str, float], ratios: dict[str, float], packing: float,
                  seeds: int = SUITE_SEEDS, epochs: int = PROTOCOL_EPOCHS) -> dict[str, Any]:
    """The default suite's wall time: for every setting (its BatchNorm epoch in ``epoch_s``) and
    entry (its step relative to BatchNorm in ``ratios``; 1 when unmeasured), ``seeds`` runs of
    ``epochs`` epochs, all divided by the measured ``packing`` speed-up (runs side by side on the
    GPU). Settings without an epoch time are left out and named."""
    per_setting, missing = {}, []
    for arch, dataset in SUITE_SETTINGS:
        key = f"{arch}-{dataset}"
        if key not in epoch_s:
            missing.append(key)
            continue
        per_setting[key] = sum(seeds * epochs * epoch_s[key] * ratios.get(e, 1.0)
                               for e in SUITE_ENTRIES)
    serial = sum(per_setting.values())
    return {"runs": len(SUITE_SETTINGS) * seeds * len(SUITE_ENTRIES), "serial_s": serial,
            "packing": packing, "wall_s": serial / max(packing, 1.0) if per_setting else None,
            "per_setting_serial_s": per_setting, "settings_missing": missing}


def tolerance_finding(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The relative errors the fast paths' checks measured on this GPU (from run records'
    ``config.speed.checks``), largest per option and kind of tensor, against the gradient floor.
    ``suggested_gradient_floor``: 4x the largest gradient error seen, to one significant digit,
    rounded up (None when nothing was measured)."""
    worst: dict[str, dict[str, float]] = {}
    for record in records:
        for check in ((record.get("config") or {}).get("speed") or {}).get("checks") or []:
            error, tensor = check.get("relative_error"), check.get("tensor") or ""
            if error is None or not math.isfinite(error):
                continue
            kind = "gradient" if tensor.startswith("gradient") else "other"
            slot = worst.setdefault(check["option"], {})
            slot[kind] = max(slot.get(kind, 0.0), error)
    gradients = [w["gradient"] for w in worst.values() if "gradient" in w]
    suggested = None
    if gradients and max(gradients) > 0:
        raw = 4 * max(gradients)
        scale = 10 ** math.floor(math.log10(raw))
        suggested = math.ceil(raw / scale) * scale
    return {"largest_error": worst, "gradient_floor_now": GRADIENT_FLOOR_NOW,
            "suggested_gradient_floor": suggested}


def figures_of(steps: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each target's figure from the steps' outputs (None where a step failed or did not run)."""
    def out(name: str) -> dict[str, Any]:
        return steps.get(name, {}).get("output") or {}

    pipeline, costs = out("pipeline"), out("norm_costs").get("norm_costs") or {}
    suite = steps.get("suite_projection", {}).get("output") or {}
    projected = pipeline.get("projected_200_epoch_s")
    return {
        "pipeline_ratio": pipeline.get("ratio_harness_over_reference"),
        "protocol_run_min": projected / 60 if projected is not None else None,
        "switchable_norm_compiled": (costs.get("switchable_norm") or {}).get("compiled_ratio"),
        "batch_instance_norm_compiled": (costs.get("batch_instance_norm") or {}).get("compiled_ratio"),
        "packing_ratio": out("packing").get("ratio"),
        "default_suite_h": suite["wall_s"] / 3600 if suite.get("wall_s") is not None else None,
    }


def evaluate(figures: dict[str, float | None]) -> list[dict[str, Any]]:
    return [{**asdict(t), "figure": figures.get(t.key), "status": t.judge(figures.get(t.key))}
            for t in TARGETS]


def summary(rows: list[dict[str, Any]], steps: dict[str, dict[str, Any]],
            finding: dict[str, Any], device: str) -> str:
    """One screen: the targets, the steps that failed, the tolerance finding."""
    lines = [f"GPU check on {device}", "", f"{'target':<58} {'figure':>9} {'goal':>9}  status"]
    for r in rows:
        sign = "<=" if r["at_most"] else ">="
        figure = "" if r["figure"] is None else f"{r['figure']:.2f} {r['unit']}"
        lines.append(f"{r['description']:<58} {figure:>9} {sign}{r['goal']:g} {r['unit']:<3} "
                     f"{r['status'].upper()}")
    failed = {k: v["error"] for k, v in steps.items() if v.get("error")}
    lines.append("")
    lines.append("steps: " + ", ".join(f"{k} {'FAILED' if k in failed else v.get('state', 'ok')}"
                                       f" ({v.get('seconds', 0):.0f} s)" for k, v in steps.items()))
    for k, message in failed.items():
        lines.append(f"  {k}: {message}")
    floor = finding.get("suggested_gradient_floor")
    lines.append(f"gradient tolerance floor: {finding['gradient_floor_now']:g} now; the fast paths "
                 "moved gradients by at most " + (
                     ", ".join(f"{o} {w['gradient']:.2g}" for o, w in finding["largest_error"].items()
                               if "gradient" in w) or "(not measured)")
                 + (f"; suggested floor {floor:g}" if floor is not None else ""))
    return "\n".join(lines)


# -- running it on a GPU ----------------------------------------------------------------------------

def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def run_step(argv: list[str], timeout: float) -> dict[str, Any]:
    """One command whose standard output is JSON: its output, or the error (its last lines)."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    try:
        output = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        output = None
    if done.returncode not in (0, 3) or output is None:  # 3: a run diverged, its record is written
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)[:600]}", "seconds": seconds,
                "output": output}
    return {"output": output, "seconds": seconds}


def _eval_matrix(results: Path, left: Callable[[], float]) -> dict[str, Any]:
    """Every baseline x speed option, 2 epochs of ResNet-20 on noise, four at a time, each within
    the time ``left()`` when it starts (a run that cannot start in time is reported as failed)."""
    jobs = [(b, o) for b in BASELINES for o in SPEED_OPTIONS]
    common = ["--arch", "resnet20", "--dataset", "noise", "--epochs", "2", "--limit-train", "10240",
              "--limit-test", "2048", "--device", "cuda", "--json"]

    def one(job):
        baseline, option = job
        if left() < 10:
            return job, {"error": "not run (out of time)", "seconds": 0}
        return job, run_step(_harness("eval", baseline, *common, *SPEED_OPTIONS[option],
                                      "--results", str(results / f"{baseline}-{option}")), left())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        done = dict(pool.map(one, jobs))
    rows = {f"{b}/{o}": {"status": (r.get("output") or {}).get("status"), "error": r.get("error"),
                         "speed": ((r.get("output") or {}).get("config") or {}).get("speed"),
                         "epoch_s": [e["epoch_s"] for e in (r.get("output") or {}).get("epochs", [])],
                         "peak_memory": (r.get("output") or {}).get("peak_memory")}
            for (b, o), r in done.items()}
    failed = [k for k, r in rows.items() if r["error"] or r["status"] not in ("ok", "diverged")]
    return {"output": {"runs": rows, "records": [r["output"] for r in done.values() if r.get("output")]},
            "seconds": time.perf_counter() - t0,
            **({"error": f"{len(failed)} of {len(rows)} evals failed: {', '.join(failed[:4])}"}
               if failed else {})}


Step = Callable[[], dict[str, Any]]


def _plan(tmp: Path, packing_jobs: int, left: Callable[[], float]) -> list[tuple[str, Step]]:
    """The steps in the order they run, each under the budget's time left when it starts."""
    def harness(*argv: str) -> Step:
        return lambda: run_step(_harness(*argv), left())

    norms = [a for n in (*BASELINES[1:], "submissions/selective_norm.py") for a in ("--norm", n)]
    plan = [
        ("pipeline", harness("bench", "--arch", "resnet56", "--dataset", "noise", "--device", "cuda",
                             "--rounds", "3", "--json")),
        ("norm_costs", harness("bench", "--arch", "resnet56", "--dataset", "noise", "--device", "cuda",
                               "--compile", "--rounds", "2", *norms, "--json")),
        ("packing", harness("bench", "--packing", str(packing_jobs), "--arch", "resnet20", "--dataset",
                            "noise", "--device", "cuda", "--json")),
    ]
    plan += [(f"suite_epoch_{a}-{d}", harness("bench", "--arch", a, "--dataset", d, "--device", "cuda",
                                              "--rounds", "1", "--workers", "0", "--json"))
             for a, d in SUITE_SETTINGS[1:]]
    plan += [("evals", lambda: _eval_matrix(tmp / "evals", left)),
             ("untrusted", harness("eval", "batch_norm", "--arch", "resnet20", "--dataset", "noise",
                                   "--epochs", "1", "--limit-train", "5120", "--limit-test", "1024",
                                   "--device", "cuda", "--untrusted", "--results", str(tmp / "untrusted"),
                                   "--json"))]
    return plan


def _projection(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The protocol suite's GPU-hours, projected from the measured epochs, norm costs and packing."""
    pipeline = steps["pipeline"].get("output") or {}
    epoch_s = {f"{a}-{d}": (steps.get(f"suite_epoch_{a}-{d}", {}).get("output") or {}).get(
        "projected_200_epoch_s", math.nan) / PROTOCOL_EPOCHS for a, d in SUITE_SETTINGS[1:]}
    if pipeline.get("projected_200_epoch_s"):
        epoch_s["resnet56-cifar100"] = pipeline["projected_200_epoch_s"] / PROTOCOL_EPOCHS
    costs = (steps["norm_costs"].get("output") or {}).get("norm_costs") or {}
    ratios = {Path(k).stem: v.get("compiled_ratio") or v.get("eager_ratio") for k, v in costs.items()}
    return project_suite({k: v for k, v in epoch_s.items() if math.isfinite(v)}, ratios,
                         (steps["packing"].get("output") or {}).get("ratio") or 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The GPU path's checks and speed targets "
                                                 "(harness/bench/gpu_check.py).")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="wall-clock budget for all steps (default 480: 8 minutes)")
    parser.add_argument("--out-dir", default="bench/results", help="where gpu-check-*.json goes")
    parser.add_argument("--packing-jobs", type=int, default=4)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; it measures the GPU path and needs one",
              file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0)
    deadline = time.monotonic() + args.budget_s

    def left() -> float:
        return deadline - time.monotonic()

    steps: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name, step in _plan(Path(tmp), args.packing_jobs, left):
            if left() < 20:
                steps[name] = {"state": "not run (out of time)", "seconds": 0}
                continue
            print(f"gpu-check: {name} ({left():.0f} s left)", file=sys.stderr, flush=True)
            steps[name] = step()
    steps["suite_projection"] = {"output": _projection(steps), "seconds": 0}
    untrusted = steps["untrusted"].get("output") or {}
    if untrusted and not (untrusted.get("isolation") or {}).get("sandboxed"):
        steps["untrusted"]["error"] = "the untrusted run was not sandboxed"
    records = (steps["evals"].get("output") or {}).get("records") or []
    finding = tolerance_finding(records)
    rows = evaluate(figures_of(steps))
    out = write_report(Path(args.out_dir), device, rows, finding, steps)
    print(summary(rows, steps, finding, device))
    print(f"\nwritten: {out}")
    return 1 if any(s.get("error") for s in steps.values()) else 0


def write_report(out_dir: Path, device: str, rows: list[dict[str, Any]], finding: dict[str, Any],
                 steps: dict[str, dict[str, Any]]) -> Path:
    """``out_dir/gpu-check-<UTC date>.json``: the targets, the finding and every step's output
    (without the eval records themselves: their figures are kept)."""
    for step in steps.values():
        (step.get("output") or {}).pop("records", None)
    now = datetime.now(timezone.utc)
    out = out_dir / f"gpu-check-{now:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "make gpu-check", "device": device,
                               "date": now.isoformat(timespec="seconds"), "targets": rows,
                               "tolerance": finding, "steps": steps}, indent=2, default=str) + "\n")
    return out
