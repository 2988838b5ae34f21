"""`make gpu-check`'s logic, on CPU: the target table, the suite projection, the tolerance finding,
the summary and the JSON it writes (the GPU steps themselves need a GPU: issue 19)."""

import json
import sys

import pytest

from harness.bench import gpu_check as G


def steps(**outputs):
    return {name: {"output": out, "seconds": 1.0} for name, out in outputs.items()}


MEASURED = steps(
    pipeline={"ratio_harness_over_reference": 6.2, "projected_200_epoch_s": 420.0},
    norm_costs={"norm_costs": {"switchable_norm": {"eager_ratio": 3.1, "compiled_ratio": 1.7},
                               "batch_instance_norm": {"eager_ratio": 2.9, "compiled_ratio": 2.4}}},
    packing={"ratio": 1.6},
    suite_projection={"wall_s": 3 * 3600.0},
)


def test_each_target_is_judged_in_its_direction():
    rows = {r["key"]: r for r in G.evaluate(G.figures_of(MEASURED))}
    assert set(rows) == {t.key for t in G.TARGETS}
    assert rows["pipeline_ratio"]["status"] == "pass"              # 6.2x >= 5x
    assert rows["protocol_run_min"]["figure"] == pytest.approx(7.0)  # 420 s
    assert rows["protocol_run_min"]["status"] == "pass"            # <= 8 min
    assert rows["switchable_norm_compiled"]["status"] == "pass"    # 1.7 <= 2
    assert rows["batch_instance_norm_compiled"]["status"] == "short"  # 2.4 > 2
    assert rows["packing_ratio"]["status"] == "short"              # 1.6 < 2
    assert rows["default_suite_h"]["status"] == "short"            # 3 h > 2 h
    nothing = G.evaluate(G.figures_of({"pipeline": {"error": "exit 1", "seconds": 3}}))
    assert {r["status"] for r in nothing} == {"not measured"}


def test_the_default_suite_projection_multiplies_out_and_divides_by_packing():
    epoch = {"resnet56-cifar100": 2.0, "mobilenetv2-fmnist": 1.0, "resnet110-cifar100": 4.0}
    ratios = {"group_norm": 1.5, "switchable_norm": 2.0, "batch_instance_norm": 2.0,
              "selective_norm": 1.5}  # batch_norm: 1
    out = G.project_suite(epoch, ratios, packing=2.0)
    per_run_sum = 1 + 1.5 + 2 + 2 + 1.5  # the five entries' ratios
    assert out["runs"] == 45
    assert out["serial_s"] == pytest.approx(3 * 200 * (2 + 1 + 4) * per_run_sum)
    assert out["wall_s"] == pytest.approx(out["serial_s"] / 2)
    partial = G.project_suite({"resnet56-cifar100": 2.0}, {}, packing=0.5)  # packing never slows
    assert partial["settings_missing"] == ["mobilenetv2-fmnist", "resnet110-cifar100"]
    assert partial["wall_s"] == pytest.approx(3 * 200 * 2 * 5)


def test_the_tolerance_finding_reads_the_fast_paths_checks_from_records():
    def record(*checks):
        return {"config": {"speed": {"checks": list(checks)}}}

    records = [record({"option": "channels_last", "tensor": "gradient conv1.weight", "relative_error": 3e-3},
                      {"option": "channels_last", "tensor": "output", "relative_error": 2e-5}),
               record({"option": "compile", "tensor": "gradient fc.weight", "relative_error": 1.2e-2},
                      {"option": "compile", "error": "RuntimeError: no"}),
               record()]
    found = G.tolerance_finding(records)
    assert found["largest_error"] == {"channels_last": {"gradient": 3e-3, "other": 2e-5},
                                      "compile": {"gradient": 1.2e-2}}
    assert found["gradient_floor_now"] == 0.5
    assert found["suggested_gradient_floor"] == pytest.approx(0.05)  # 4 x 1.2e-2, rounded up
    assert G.tolerance_finding([])["suggested_gradient_floor"] is None


def test_the_summary_fits_a_screen_and_names_failures(tmp_path):
    rows = G.evaluate(G.figures_of(MEASURED))
    all_steps = {**MEASURED, "evals": {"error": "2 of 16 evals failed: a, b", "seconds": 90.0},
                 "untrusted": {"state": "not run (out of time)", "seconds": 0}}
    text = G.summary(rows, all_steps, G.tolerance_finding([]), "NVIDIA H200")
    assert len(text.splitlines()) <= 24 and max(len(line) for line in text.splitlines()) <= 160
    for target in G.TARGETS:
        assert target.description in text
    assert "SHORT" in text and "PASS" in text and "evals FAILED" in text
    assert "2 of 16 evals failed" in text and "untrusted not run (out of time)" in text
    path = G.write_report(tmp_path, "NVIDIA H200", rows, G.tolerance_finding([]), all_steps)
    data = json.loads(path.read_text())
    assert path.name.startswith("gpu-check-") and data["device"] == "NVIDIA H200"
    assert [r["key"] for r in data["targets"]] == [t.key for t in G.TARGETS]
    assert data["steps"]["evals"]["error"].startswith("2 of 16")


def test_a_step_is_a_command_whose_output_is_json():
    ok = G.run_step([sys.executable, "-c", "print('{\"ratio\": 2.5}')"], 60)
    assert ok["output"] == {"ratio": 2.5} and "error" not in ok
    failed = G.run_step([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(1)"], 60)
    assert failed["error"].startswith("exit 1") and "boom" in failed["error"]
    slow = G.run_step([sys.executable, "-c", "import time; time.sleep(30)"], 1)
    assert slow["error"] == "timed out after 1 s"


def test_without_a_gpu_it_says_so_and_exits_2(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: make gpu-check runs for real")
    assert G.main(["--out-dir", "unused"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
