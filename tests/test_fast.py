"""Speed options (harness.engine.fast): each is used only where it gives the plain model's step.

CPU-runnable throughout: the CUDA-only parts (cudnn.benchmark, CUDA graphs) are tested through
their logic (what is asked of torch), the checks through real layers and real torch.compile
backends, including torch's own deliberately broken testing backends.
"""

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from harness.cli import main
from harness.data.tensors import BatchPipeline, load_dataset
from harness.engine import fast
from harness.engine.fast import prepare, probe
from harness.engine.runner import run_eval
from harness.models import build_model
from harness.protocol.recipe import Recipe
from harness.protocol.spec import PLAIN, RunSpec, SpeedOptions
from harness.store.record import strip_timings
from harness.store.results import run_key
from harness.vetting.submission import load

from conftest import ROOT

CPU = torch.device("cpu")
SELECTIVE = ROOT / "submissions" / "selective_norm.py"


class RandLikeDropoutNorm(nn.BatchNorm2d):
    """BatchNorm, then dropout with a mask from rand_like: the mask follows the memory layout."""

    def forward(self, x):
        y = super().forward(x)
        if self.training:
            y = y * (torch.rand_like(y) >= 0.1) / 0.9
        return y


class FlatViewNorm(nn.Module):
    """Normalises each sample over (C, H, W) through a view that needs NCHW strides."""

    def __init__(self, num_features):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x):
        flat = x.view(x.shape[0], -1)
        flat = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-5)
        return flat.view_as(x) * self.weight.view(1, -1, 1, 1)


class ReluIdentityNorm(nn.BatchNorm2d):
    """BatchNorm written with torch.relu (relu(y) - relu(-y) == y), which torch's testing backends
    miscompile or refuse on purpose."""

    def forward(self, x):
        y = super().forward(x)
        return torch.relu(y) - torch.relu(-y)


def setup(norm, batch=16, seed=0):
    torch.manual_seed(seed)
    data = load_dataset("digits")
    model = build_model("resnet20", 10, norm)
    x = BatchPipeline(data.mean, data.std, 3, CPU).test_batch(data.train.inputs[:batch])
    return model, x, data.train.labels[:batch]


def test_device_defaults_and_what_is_dropped():
    cpu, notes = SpeedOptions().resolve(CPU)
    assert (cpu.channels_last, cpu.cudnn_benchmark, cpu.compile, cpu.cuda_graphs) == (False, False, False, False)
    assert notes == []
    cuda, notes = SpeedOptions().resolve(torch.device("cuda"))
    assert (cuda.channels_last, cuda.cudnn_benchmark, cuda.compile) == (True, True, False)
    graphs, notes = SpeedOptions(cuda_graphs=True, cudnn_benchmark=True).resolve(CPU)
    assert not graphs.cuda_graphs and not graphs.compile and not graphs.cudnn_benchmark
    assert any("CUDA graphs need a CUDA device" in n for n in notes)
    assert any("cudnn.benchmark" in n for n in notes)
    on_gpu, _ = SpeedOptions(cuda_graphs=True).resolve(torch.device("cuda"))
    assert on_gpu.cuda_graphs and on_gpu.compile  # graphs are captured through torch.compile
    off, _ = SpeedOptions(channels_last=False, cudnn_benchmark=False).resolve(torch.device("cuda"))
    assert not off.channels_last and not off.cudnn_benchmark


def test_probe_leaves_no_trace_and_repeats_exactly():
    model, x, y = setup(load(SELECTIVE).norm_class)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    a = probe(model, model, x, y, CPU, "fp32")
    b = probe(model, model, x, y, CPU, "fp32")
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    # It saw a real step: BatchNorm-style buffers moved, gradients are not all zero.
    assert a.tensors["update bn1.running_mean"].abs().sum() > 0
    assert a.tensors["gradient conv1.weight"].abs().sum() > 0


def test_default_cpu_run_is_the_plain_model_with_no_check():
    model, x, y = setup(nn.BatchNorm2d)
    prepared = prepare(model, x, y, CPU, SpeedOptions())
    assert prepared.model is model and prepared.memory_format == torch.contiguous_format
    assert prepared.report["checks"] == [] and prepared.report["compile"] == "eager"
    assert not prepared.report["channels_last"]


def test_channels_last_accepted_for_a_layout_independent_layer():
    model, x, y = setup(load(SELECTIVE).norm_class)
    warnings = []
    prepared = prepare(model, x, y, CPU, SpeedOptions(channels_last=True), warn=warnings.append)
    (row,) = prepared.report["checks"]
    assert row["option"] == "channels_last" and row["ok"], row
    assert 0 <= row["worst"] <= 1
    assert prepared.memory_format == torch.channels_last and prepared.report["channels_last"]
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert warnings == []


def test_channels_last_refused_when_a_random_mask_follows_the_layout():
    model, x, y = setup(RandLikeDropoutNorm)
    warnings = []
    prepared = prepare(model, x, y, CPU, SpeedOptions(channels_last=True), warn=warnings.append)
    (row,) = prepared.report["checks"]
    assert not row["ok"] and row["worst"] > 1
    assert row["relative_error"] > 0.1  # O(1), not rounding
    assert prepared.memory_format == torch.contiguous_format and not prepared.report["channels_last"]
    assert model.conv1.weight.is_contiguous()  # put back
    assert len(warnings) == 1 and "channels_last changes this layer's results" in warnings[0]


def test_channels_last_error_falls_back_to_nchw():
    model, x, y = setup(FlatViewNorm)
    warnings = []
    prepared = prepare(model, x, y, CPU, SpeedOptions(channels_last=True), warn=warnings.append)
    (row,) = prepared.report["checks"]
    assert not row["ok"] and "view" in row["error"]
    assert prepared.memory_format == torch.contiguous_format
    assert "channels_last failed on this layer" in warnings[0]


@pytest.mark.slow
def test_compile_accepted_when_it_computes_the_same_step():
    model, x, y = setup(nn.BatchNorm2d)
    prepared = prepare(model, x, y, CPU, SpeedOptions(compile=True, compile_backend="aot_eager"))
    (row,) = prepared.report["checks"]
    assert row["ok"] and row["worst"] == 0.0  # aot_eager runs the same aten kernels
    assert prepared.model is not model and prepared.report["compile"] == "aot_eager"
    # The compiled callable drives the same parameters.
    out = prepared.model(x)
    assert out.shape == (16, 10)


def test_compile_refused_when_the_compiler_changes_results():
    # A real torch backend that deliberately miscompiles torch.relu (into x + 1).
    model, x, y = setup(ReluIdentityNorm)
    warnings = []
    prepared = prepare(model, x, y, CPU,
                       SpeedOptions(compile=True, compile_backend="relu_accuracy_error_TESTING_ONLY"),
                       warn=warnings.append)
    (row,) = prepared.report["checks"]
    assert not row["ok"] and row["relative_error"] > 0.01
    assert prepared.model is model and prepared.report["compile"] == "eager"
    assert "compile changes this layer's results" in warnings[0]


def test_compile_error_falls_back_to_eager():
    model, x, y = setup(ReluIdentityNorm)
    warnings = []
    prepared = prepare(model, x, y, CPU,
                       SpeedOptions(compile=True, compile_backend="relu_compile_error_TESTING_ONLY"),
                       warn=warnings.append)
    (row,) = prepared.report["checks"]
    assert not row["ok"] and row["error"]
    assert prepared.model is model and prepared.report["compile"] == "eager"
    assert "compile failed on this layer" in warnings[0]


def test_cuda_graphs_ask_torch_for_reduce_overhead_and_mark_every_step(monkeypatch):
    seen = {}
    monkeypatch.setattr(torch, "compile", lambda model, **kw: seen.update(kw) or model)
    fast._compile(nn.Linear(2, 2), SpeedOptions(compile=True, cuda_graphs=True))
    assert seen["mode"] == "reduce-overhead" and seen["dynamic"] is False
    fast._compile(nn.Linear(2, 2), SpeedOptions(compile=True))
    assert seen["mode"] is None

    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    graphs = SpeedOptions(compile=True, cuda_graphs=True)
    fast.Prepared(nn.Identity(), torch.contiguous_format, graphs, {}).mark_step()
    fast.Prepared(nn.Identity(), torch.contiguous_format, PLAIN, {}).mark_step()
    assert marks == [1]
    assert fast.compile_mode_name(graphs) == "inductor+cudagraphs"


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown torch.compile backend 'nosuch'.*inductor"):
        fast.check_backend("nosuch")
    fast.check_backend("inductor")


def test_relative_error_edge_cases():
    a = torch.tensor([1.0, float("nan")])
    assert fast.relative_error(a, a.clone()) == 0.0
    assert fast.relative_error(torch.tensor([1.0, 2.0]), a) == float("inf")
    assert fast.relative_error(torch.ones(2), torch.ones(3)) == float("inf")
    assert fast.relative_error(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(1.0)


# -- whole runs: the fast path against the plain one -------------------------------------------

def smoke(speed, seed=0, submission=SELECTIVE):
    return RunSpec(submission=str(submission), arch="resnet20", dataset="digits", seed=seed,
                     recipe=Recipe(epochs=2, batch_size=32), limit_train=256, limit_test=120,
                     device="cpu", speed=speed)


def without_speed(record):
    out = strip_timings(record)
    out["config"] = {k: v for k, v in out["config"].items() if k not in ("compile", "speed")}
    for k in ("run_id", "started_at", "ended_at", "peak_memory", "environment"):
        out.pop(k, None)
    return out


@pytest.mark.slow
def test_compiled_run_gives_the_plain_record_exactly(tmp_path):
    """Same aten kernels (aot_eager), so everything must be bit-identical: the check consumed no
    randomness, the data order and masks are the same, and the compiled callable really trained."""
    plain, _ = run_eval(smoke(SpeedOptions()), tmp_path / "plain")
    compiled, _ = run_eval(smoke(SpeedOptions(compile=True, compile_backend="aot_eager")),
                           tmp_path / "compiled")
    assert compiled["config"]["compile"] == "aot_eager" and plain["config"]["compile"] == "eager"
    assert compiled["config"]["speed"]["checks"][0]["ok"]
    assert without_speed(compiled) == without_speed(plain)
    assert run_key(compiled) == run_key(plain) and compiled["comparable"] == plain["comparable"]


@pytest.mark.slow
def test_channels_last_run_agrees_with_the_plain_run_within_rounding(tmp_path):
    """channels_last changes the order of float additions, so the records cannot be identical, and
    training amplifies a rounding difference like a change of seed after a few epochs (measured on
    digits: after 4 epochs the accuracies of two such runs differed by up to 12 points, as two
    seeds do). What must hold is what rounding allows: the same first step (the check) and a first
    epoch whose training loss agrees to 2%."""
    plain, _ = run_eval(smoke(SpeedOptions(), seed=1), tmp_path / "plain")
    nhwc, _ = run_eval(smoke(SpeedOptions(channels_last=True), seed=1), tmp_path / "nhwc")
    assert nhwc["config"]["speed"]["channels_last"], nhwc["config"]["speed"]
    first_plain, first_nhwc = plain["epochs"][0]["train_loss"], nhwc["epochs"][0]["train_loss"]
    assert abs(first_nhwc - first_plain) <= 0.02 * first_plain
    assert first_nhwc != first_plain  # it really ran a different kernel path
    assert nhwc["data"] == plain["data"] and run_key(nhwc) == run_key(plain)


def test_cli_speed_options(tmp_path):
    runner = CliRunner()
    args = ["eval", str(SELECTIVE), "--arch", "resnet20", "--dataset", "digits", "--epochs", "1",
            "--limit-train", "64", "--limit-test", "32", "--device", "cpu", "--results", str(tmp_path)]
    bad = runner.invoke(main, args + ["--compile", "--compile-backend", "nosuch"])
    assert bad.exit_code == 1 and "unknown torch.compile backend 'nosuch'" in bad.output
    ok = runner.invoke(main, args + ["--cuda-graphs", "--compile-backend", "aot_eager",
                                     "--channels-last"])
    assert ok.exit_code == 0, ok.output
    assert "CUDA graphs need a CUDA device; ignored on cpu" in ok.output
    record = next((tmp_path / "runs").glob("*.json")).read_text()
    assert '"compile": "eager"' in record and '"channels_last": true' in record
