"""The wheel works as a user installs it: built from the checkout, installed into a fresh virtual
environment, run from a folder that is not the checkout. Its baselines, suites and templates
must come with it (they live outside harness/ in the repository)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import ROOT


def run(argv, **kw):
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=900, **kw)
    assert out.returncode == 0, f"{argv}: {out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


@pytest.mark.slow
def test_a_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation",
         "--wheel-dir", tmp_path / "dist", "--quiet"], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("harness-*.whl")
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", wheel], capture_output=True,
                           text=True).stdout
    for shipped in ("harness/baselines/batch_norm.py", "harness/leaderboard/templates/",
                    "harness/protocol/suites/default.toml", "harness/protocol/published.toml",
                    "harness/py.typed"):
        assert shipped in names
    # Every package of the source tree is in the wheel (harness.bench once was not).
    folders = {"harness": ROOT / "harness", "harness/leaderboard": ROOT / "leaderboard",
               "harness/baselines": ROOT / "baselines"}
    for prefix, root in folders.items():
        for init in root.rglob("__init__.py"):
            assert f"{prefix}/{init.relative_to(root).as_posix()}" in names, init

    # A fresh environment whose dependencies (torch, ...) are this one's, reached through a .pth
    # line: a folder named in a .pth file is on sys.path, but its own .pth files (this checkout's
    # editable install) are not run, so `harness` can only come from the wheel.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                   .stdout.strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet", wheel])

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HARNESS_BASELINES")}
    where = run([python, "-c", "import harness; print(harness.__file__, harness.__version__)"],
                cwd=work, env=env).stdout
    assert str(purelib) in where and str(ROOT) not in where
    harness = env_dir / "bin" / "harness"
    assert "Measure training images/s" in run([harness, "bench", "--help"], cwd=work, env=env).stdout
    # The study's dry run imports the planning and the cost model (harness.bench) from the wheel.
    dry = run([harness, "study", "run", ROOT / "studies" / "selective_norm_grid_smoke.toml",
               "--dry-run", "--no-estimate", "--results", work / "dry"], cwd=work, env=env).stdout
    assert "56 run(s) to do of 56" in dry, dry
    listed = run([harness, "list"], cwd=work, env=env).stdout
    for name in ("batch_norm", "group_norm", "switchable_norm", "batch_instance_norm"):
        assert f"  {name} " in listed
    run([harness, "eval", "batch_norm", "--arch", "resnet20", "--dataset", "digits", "--epochs", "1",
         "--limit-train", "256", "--limit-test", "128", "--device", "cpu", "--results", work / "res",
         "--quiet"], cwd=work, env=env)
    (record,) = (work / "res" / "runs").glob("*.json")
    built = run([harness, "leaderboard", "build", "--results", work / "res", "--out", work / "site"],
                cwd=work, env=env)
    assert (work / "site" / "index.html").exists(), built.stdout
    assert record.stat().st_size > 0
