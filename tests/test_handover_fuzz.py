"""Every reader of what a sandbox produces is total (property-based, Hypothesis): whatever the
bytes (random, adversarial, deeply nested, huge numbers, NaN, wrong types, extra keys, HTML,
path-like keys), a reader returns its value or raises the one error its caller turns into a
``malformed`` record, and a whole split run fed such hand-overs always ends in a valid record
that the store accepts. No sandbox is started: the pipes are fed by threads of this process."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.execution import handover
from harness.execution.checks import _checked_result
from harness.execution.local import parse_result
from harness.store import schema

from conftest import ROOT

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- adversarial values ----------------------------------------------------------------------

NASTY_TEXT = st.sampled_from(["<script>alert(1)</script>", "../../etc/passwd", "/in/submission.py",
                              "\x1b[2J\x1b]52;c;aGk=\x07", "=cmd|' /C calc'!A0", "\u202e", "", "a" * 5000,
                              "NaN", "1e999", "{{ config }}", "%s%n", "\x00"])
NUMBERS = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True),
                    st.just(10**400), st.just(-1), st.just(0))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20), NASTY_TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=10), NASTY_TEXT), inner,
                                                 max_size=4)), max_leaves=20)


def dumps(value) -> bytes:
    """JSON as a hostile writer would write it: NaN and infinities as bare tokens (Python's json
    reads them), numbers of any length."""
    return json.dumps(value, allow_nan=True).encode()


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_end(depth: int) -> bytes:
    """A valid end report but for its free-form ``speed``, nested ``depth`` deep (a few KB)."""
    return b'{"status": "ok", "speed": {"compile": "eager", "x": ' + b"[" * depth + b"1" + b"]" * depth + b"}}"


def epoch_report(epoch: int, draw_value) -> dict:
    return {"epoch": epoch, "lr": draw_value, "train_loss": 1.0, "train_acc": 50.0, "train_s": 1.0,
            "probe": None}


# Payloads shaped like reports, with any field spoiled or added.
def report_like(model: type[schema.BaseModel]):
    valid = {schema.StartReport: {"model": {"parameters": 10, "init_overwritten": []},
                                  "norm_layers": {"class": "CustomNorm", "count": 1, "parameters": 2},
                                  "device_name": "cpu"},
             schema.EpochReport: epoch_report(1, 0.1),
             schema.EndReport: {"status": "ok", "divergence": None, "speed": {"compile": "eager"}}}[model]
    return st.builds(lambda key, value, drop: {**{k: v for k, v in valid.items() if k != drop}, key: value},
                     st.one_of(st.sampled_from(sorted(valid)), NASTY_TEXT), JSON,
                     st.one_of(st.none(), st.sampled_from(sorted(valid))))


PAYLOADS = st.one_of(st.binary(max_size=300), JSON.map(dumps), st.integers(1, 5000).map(deep),
                     st.sampled_from([b"1" * 5000, b'{"a": 1e999}', b'"\\ud800"', b"\xff\xfe", b"NaN"]))


@pytest.mark.parametrize("model", [schema.StartReport, schema.EpochReport, schema.EndReport])
@FAST
@given(data=st.data())
def test_reports_are_read_totally(model, data):
    deep_speed = st.integers(1, 2000).map(nested_end)
    payload = data.draw(st.one_of(PAYLOADS, report_like(model).map(dumps), deep_speed))
    try:
        report = handover.parse_report(payload, model)
    except handover.HandoverError:
        return
    assert isinstance(report, model)
    dumped = report.model_dump(by_alias=True)
    json.dumps(dumped, allow_nan=False)  # fit for a record: all finite
    assert schema.json_depth(dumped, stop=10**6) <= schema.MAX_DEPTH + 3  # its fields, then bounded JSON
    assert "\x1b" not in json.dumps(dumped, ensure_ascii=False)  # nothing for a terminal to obey


# -- safetensors -----------------------------------------------------------------------------

DTYPES = st.sampled_from([*handover.DTYPE_BYTES, "F128", "", None, 3])


@st.composite
def weights_like(draw):
    """A safetensors-shaped payload: a header of tensors (some spoiled) and a body."""
    tensors, offset = {}, 0
    for i in range(draw(st.integers(0, 4))):
        dtype = draw(DTYPES)
        shape = draw(st.one_of(st.lists(st.integers(0, 6), max_size=3),
                               st.lists(st.one_of(st.integers(-3, 2**41), st.floats(), st.text(max_size=2)),
                                        max_size=3), JSON))
        size = (math.prod(shape) * handover.DTYPE_BYTES.get(dtype, 4)
                if isinstance(shape, list) and all(type(d) is int and 0 <= d < 100 for d in shape)
                else draw(st.integers(0, 64)))
        offsets = draw(st.one_of(st.just([offset, offset + size]),
                                 st.lists(st.integers(-5, 200), min_size=0, max_size=3)))
        offset += size
        name = draw(st.one_of(st.text(max_size=8), NASTY_TEXT))
        tensors[name] = draw(st.one_of(st.just({"dtype": dtype, "shape": shape, "data_offsets": offsets}),
                                       JSON))
    if draw(st.booleans()):
        tensors["__metadata__"] = draw(st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                                                 max_size=3), JSON))
    header = dumps(tensors)
    declared = draw(st.one_of(st.just(len(header)), st.integers(0, 2**64 - 1)))
    body = draw(st.one_of(st.just(b"\0" * offset), st.binary(max_size=200)))
    return declared.to_bytes(8, "little") + header + body


@FAST
@given(payload=st.one_of(st.binary(max_size=200), weights_like()))
def test_weights_are_checked_totally_and_what_passes_loads(payload):
    """Whatever passes the parent's check is loaded by safetensors itself (in the scoring
    process); everything else is refused with a HandoverError."""
    from safetensors.torch import load

    try:
        tensors = handover.check_weights(payload, 1 << 20)
    except handover.HandoverError:
        return
    loaded = load(payload)
    assert {k: (str(v.dtype), tuple(v.shape)) for k, v in loaded.items()}.keys() == tensors.keys()
    assert all(tuple(loaded[k].shape) == shape for k, (_, shape) in tensors.items())


@FAST
@given(shapes=st.lists(st.lists(st.integers(0, 5), max_size=3), max_size=4),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool,
                              torch.uint8, torch.float64]))
def test_real_weights_pass_the_check(shapes, dtype):
    from safetensors.torch import save

    payload = save({f"layer{i}.weight": torch.zeros(shape, dtype=dtype) for i, shape in enumerate(shapes)})
    assert len(handover.check_weights(payload, 1 << 20)) == len(shapes)


def test_weights_past_the_limit_are_refused_before_they_are_parsed():
    with pytest.raises(handover.HandoverError, match="more than the 0 MiB"):
        handover.check_weights(b"\0" * 1000, 100)


# -- the pipes -------------------------------------------------------------------------------

def fed(data: bytes) -> int:
    """The read end of a pipe a thread writes ``data`` into (then closes)."""
    r, w = os.pipe()

    def write():
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except OSError:  # the reader stopped reading
            pass
        finally:
            os.close(w)

    threading.Thread(target=write, daemon=True).start()
    return r


def drained() -> int:
    """The write end of a pipe whose reader throws everything away."""
    r, w = os.pipe()

    def read():
        try:
            while os.read(r, 1 << 16):
                pass
        finally:
            os.close(r)

    threading.Thread(target=read, daemon=True).start()
    return w


FRAME_HEADERS = st.builds(lambda kind, epoch, length: f"{kind} {epoch} {length}\n".encode(),
                          st.sampled_from([*handover.KINDS, "nope", "", "epoch epoch"]),
                          st.one_of(st.integers(0, 3), st.integers(-5, 10**7), st.text(max_size=3)),
                          st.one_of(st.integers(0, 40), st.integers(-1, 10**13)))
STREAM = st.lists(st.one_of(FRAME_HEADERS, st.binary(max_size=60), st.just(b"\n"),
                            st.just(b"x" * 2000)), max_size=8).map(b"".join)


@FAST
@given(stream=STREAM)
def test_frames_are_read_totally(stream):
    caps = {kind: 32 for kind in handover.KINDS}
    channel = handover.Channel(fed(stream))
    try:
        for _ in range(20):
            frame = channel.frame(caps, deadline=None)
            if frame is None:
                break
            assert frame.kind in handover.KINDS and len(frame.payload) <= 32
    except handover.HandoverError:
        pass
    finally:
        os.close(channel.fd)


ANSWER_LINES = st.one_of(
    st.builds(lambda e, r, c, m: f"logits {e} {r} {c} {m}\n".encode(),
              st.integers(0, 2), st.integers(0, 5), st.integers(0, 5),
              st.one_of(st.sampled_from(["nan", "1.2.3", "1e999", "inf", "-1", "0.5", "1e5", ""]),
                        st.text(max_size=4))),
    st.builds(lambda e, cat, msg: f"error {e} {cat} {msg}\n".encode(), st.integers(0, 2),
              st.sampled_from(["interface", "exception", "out-of-memory", "root"]), NASTY_TEXT),
    st.binary(max_size=40))


MEDIANS = st.one_of(st.sampled_from(["nan", "1.2.3", "1e999", "inf", "-1", "0.5", "1e5", "", "9" * 30]),
                    st.text(max_size=4))
ANSWERS_TO_EPOCH_1 = st.builds(
    lambda e, r, c, m, body: f"logits {e} {r} {c} {m}\n".encode() + body,
    st.sampled_from([1, 1, 1, 0, 2]), st.sampled_from([3, 3, 3, 0, 5]), st.sampled_from([4, 4, 4, 1]),
    MEDIANS, st.one_of(st.binary(min_size=48, max_size=48), st.binary(max_size=100)))


@FAST
@given(stream=st.lists(st.one_of(ANSWERS_TO_EPOCH_1, ANSWER_LINES, st.binary(max_size=80)),
                       max_size=4).map(b"".join))
def test_logits_are_read_totally(stream):
    channel = handover.Channel(fed(stream))
    try:
        logits, median = handover.read_logits(channel, 1, 3, 4)
        assert logits.shape == (3, 4) and logits.dtype == torch.float32
        assert median is None or math.isfinite(median)
    except (handover.HandoverError, handover.ScoringFailed):
        pass
    finally:
        os.close(channel.fd)


@FAST
@given(payload=st.one_of(PAYLOADS, st.builds(lambda v: dumps({"report": v}), JSON),
                         st.builds(lambda e, c: dumps({"error": e, "category": c}), JSON, JSON)))
def test_check_results_are_read_totally(payload):
    result = _checked_result(parse_result(payload))
    assert result is None or set(result) <= {"report", "error", "category"}


# -- a whole split run fed hostile hand-overs ------------------------------------------------

class FakeProcess:
    """Stands in for a sandboxed process: the pipes are what this test feeds."""

    def __init__(self, log):
        self.log, self.proc = log, type("Proc", (), {"returncode": 0})()

    def running(self) -> bool:
        return False

    def finish(self, grace_s: float) -> int:
        return 0

    def kill(self) -> None:
        pass

    def wait(self) -> int:
        return 0


def split_task(tmp_path: Path):
    from harness.execution.task import Task
    from harness.protocol.recipe import Recipe
    from harness.protocol.spec import RunSpec
    from harness.store.results import ResultsStore

    store = ResultsStore(tmp_path / "results")
    copy, digest = store.store_submission(ROOT / "custom_norm.py")
    spec = RunSpec(str(copy), "resnet20", "digits", seed=0, recipe=Recipe(epochs=2, batch_size=32),
                   limit_train=32, limit_test=16, device="cpu").with_(sha256=digest)
    return Task(spec, "fuzz", {"entry": "<b>fuzz</b>", "submission_source": "fuzz.py"}), store


def valid_weights() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.zeros(3)})


VALID_START = {"model": {"parameters": 10, "init_overwritten": ["<i>conv1</i>"]},
               "norm_layers": {"class": "<script>x</script>", "count": 1, "parameters": 2},
               "device_name": "../../etc/passwd"}


@st.composite
def trainer_stream(draw):
    """What a training process sends: the frames of an honest run (with hostile but valid
    values), then none to a few of them spoiled, dropped, repeated or moved, or garbage put in."""
    def frame(kind, epoch, payload):
        return f"{kind} {epoch} {len(payload)}\n".encode() + payload

    parts = [frame("start", 0, dumps(VALID_START))]
    for epoch in (1, 2):
        report = epoch_report(epoch, draw(st.sampled_from([0.1, 1e300, 0.0])))
        report["probe"] = draw(st.sampled_from([None, {"epoch": epoch, "grad_norms": {"../x": 1.0},
                                                       "activations": {"<b>": {"mean": 0, "std": 1}}}]))
        parts += [frame("epoch", epoch, dumps(report)), frame("weights", epoch, valid_weights()),
                  frame("checkpoint", epoch, draw(st.binary(max_size=30)))]
    parts.append(frame("end", 0, draw(st.one_of(  # the last: nested 900 deep, in 2 KB
        JSON.map(lambda speed: dumps({"status": "ok", "speed": speed})), st.integers(30, 900).map(nested_end)))))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        i = draw(st.integers(0, len(parts) - 1))
        how = draw(st.sampled_from(["spoil", "drop", "repeat", "garbage", "move"]))
        if how == "spoil":
            parts[i] = draw(st.one_of(FRAME_HEADERS, st.builds(
                lambda p, cut: p[:cut], st.just(parts[i]), st.integers(0, len(parts[i]))),
                st.builds(lambda v: frame("epoch", 1, dumps(v)), report_like(schema.EpochReport)),
                st.builds(lambda v: frame("end", 0, dumps(v)), report_like(schema.EndReport)),
                st.builds(lambda v: frame("start", 0, dumps(v)), report_like(schema.StartReport))))
        elif how == "drop":
            del parts[i]
        elif how == "repeat":
            parts.insert(i, parts[i])
        elif how == "garbage":
            parts.insert(i, draw(st.binary(max_size=30)))
        else:
            parts.insert(draw(st.integers(0, len(parts) - 1)), parts.pop(i))
    return b"".join(parts)


@st.composite
def scorer_stream(draw, rows: int, cols: int):
    """What a scoring process answers: ready, then logits (any float32 values: NaN, infinities,
    huge) or errors or garbage, for the epochs it is asked."""
    import numpy as np

    answers = [draw(st.sampled_from([b"ready\n"] * 18 + [b"error 0 interface no\n", b"nope\n"]))]
    for epoch in (1, 2):
        rng = np.random.default_rng(draw(st.integers(0, 2**32)))
        values = rng.normal(size=rows * cols).astype("<f4")
        spoil = draw(st.sampled_from([None, np.nan, np.inf, -np.inf, 3e38, 0.0]))
        if spoil is not None:
            values[rng.random(rows * cols) < draw(st.sampled_from([0.1, 1.0]))] = spoil
        good = f"logits {epoch} {rows} {cols} {draw(MEDIANS)}\n".encode()
        answers.append(good + values.tobytes() if draw(st.integers(0, 12)) else draw(ANSWER_LINES))
    return b"".join(answers)


def run_fed_split(tmp_path: Path, monkeypatch, task, store, streams: dict[str, bytes]) -> dict:
    """``run_untrusted`` of ``task`` with its processes' pipes fed ``streams`` (train, protocol, check)."""
    from harness.execution import untrusted
    from harness.execution.options import Isolation
    from harness.execution.task import Slot
    from harness.execution.watch import CappedLog

    def start_processes(run):
        log = CappedLog(tmp_path / "fuzz.log")
        run.handed = handover.Channel(fed(streams["train"]))
        run.answers = drained()
        run.trainer = FakeProcess(log)
        for kind, scorer in run.scorers.items():
            scorer.requests, scorer.process = drained(), FakeProcess(log)
            scorer.answers = handover.Channel(fed(streams[kind]))

    monkeypatch.setattr(untrusted.UntrustedRun, "start_processes", start_processes)
    return untrusted.run_untrusted(task, Slot(store, {}, tmp_path, "fuzz", Isolation(untrusted=True), 1 << 30))


def rows_of(kind: str) -> int:
    from harness.protocol.scoring import EvalPlan

    return len(EvalPlan.build(16, 128, 0).feed(kind)[2])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.large_base_example])
@given(data=st.data())
def test_a_split_run_fed_hostile_handovers_always_ends_in_a_valid_record(tmp_path, monkeypatch, data):
    task, store = split_task(tmp_path)
    streams = {"train": data.draw(trainer_stream()),
               **{kind: data.draw(scorer_stream(rows_of(kind), 10)) for kind in ("protocol", "check")}}
    record = run_fed_split(tmp_path, monkeypatch, task, store, streams)
    schema.validate_record(record)
    json.dumps(record, allow_nan=False)
    store.add(record)
    assert record["status"] in ("ok", "diverged", "failed")
    # Hostile bytes are the run's failure, never the harness's: its last-resort catch never fires.
    assert not (record.get("failure") or {}).get("message", "").startswith("internal error")
    if record["status"] == "ok":
        assert record["epochs_completed"] == 2 and record["best_acc"] is not None


def test_what_a_sandbox_reports_renders_inert_on_the_board(tmp_path, monkeypatch):
    """Markup, template syntax, terminal escapes and path-like keys in everything a sandbox
    reports (the model's description, probes, speed, its failure message) reach the record as
    text, and the board shows them inert."""
    import numpy as np

    from harness.leaderboard.site import build_site
    from harness.protocol.suites import load_suite

    def frame(kind, epoch, payload):
        return f"{kind} {epoch} {len(payload)}\n".encode() + payload

    def logits(kind, epoch):
        values = np.random.default_rng(epoch).normal(size=rows_of(kind) * 10).astype("<f4")
        return f"logits {epoch} {rows_of(kind)} 10 0.5\n".encode() + values.tobytes()

    mark = "<marquee>x</marquee>"
    probe = {"epoch": 1, "grad_norms": {mark: 1.0, "../../etc": 2.0},
             "activations": {"{{ 7*7 }}": {"mean": 0.0, "std": 1.0}}, "error": mark}
    speed = {mark: {"\x1b[2J": [mark]}, "compile": mark}
    ok = b"".join([frame("start", 0, dumps({**VALID_START, "norm_layers": {
        "class": mark, "count": 1, "parameters": 2}, "device_name": mark})),
        frame("epoch", 1, dumps({**epoch_report(1, 0.1), "probe": probe})),
        frame("weights", 1, valid_weights()), frame("checkpoint", 1, b"x"),
        frame("epoch", 2, dumps(epoch_report(2, 0.1))), frame("weights", 2, valid_weights()),
        frame("end", 0, dumps({"status": "ok", "speed": speed}))])
    failed = frame("end", 0, dumps({"status": "failed", "failure": {
        "category": "exception", "message": f"{mark} \x1b]52;c;aGk=\x07", "traceback": mark}}))
    suite = load_suite("smoke")
    for seed, train in ((0, ok), (1, failed)):
        task, store = split_task(tmp_path)
        task.extra.update({"entry": mark, "entry_kind": "submission", "suite": {
            **suite.describe(), "setting": "resnet20-digits", "hidden": False, "final": False}})
        task.spec = task.spec.with_(seed=seed)
        if seed == 0:
            store.register_entry(mark, "submission", task.spec.sha256, "smoke", False, "x.py")
        scorers = {kind: b"ready\n" + logits(kind, 1) + logits(kind, 2) for kind in ("protocol", "check")}
        record = run_fed_split(tmp_path, monkeypatch, task, store, {"train": train, **scorers})
        assert record["status"] == ("ok" if seed == 0 else "failed"), record.get("failure")
        store.add(record)
    build_site(store.root, tmp_path / "site", False)
    pages = [p for p in (tmp_path / "site").rglob("*.html")]
    assert len(pages) >= 2
    for page in pages:
        html = page.read_text()
        assert "<marquee" not in html and "\x1b" not in html, page
    assert any("&lt;marquee&gt;" in p.read_text() for p in pages)
    json.loads((tmp_path / "site" / "leaderboard.json").read_text())


def test_a_run_done_stays_done_whatever_its_processes_do_after(tmp_path, monkeypatch):
    """Early stopping after epoch 2 of 3 (journaled): the trainer ignores "stop" and hands over
    epoch 3, and the watch kills it while it does: the record is the two scored epochs, ok."""
    import numpy as np

    from harness.data.tensors import load_dataset
    from harness.execution import untrusted
    from harness.protocol.recipe import Recipe
    from harness.protocol.scoring import EvalPlan

    def frame(kind, epoch, payload):
        return f"{kind} {epoch} {len(payload)}\n".encode() + payload

    labels = load_dataset("digits", None).test.head(16).labels.numpy()
    plan = EvalPlan.build(16, 128, 0)

    def logits(kind, epoch):  # epoch 1 right on every image, the later ones wrong on every one
        order = plan.feed(kind)[0]
        values = np.zeros((len(order), 10), dtype="<f4")
        values[np.arange(len(order)), (labels[order] + (epoch > 1)) % 10] = 5.0
        return f"logits {epoch} {len(order)} 10 0.5\n".encode() + values.tobytes()

    task, store = split_task(tmp_path)
    task.spec = task.spec.with_(recipe=Recipe(epochs=3, batch_size=32, early_stopping_patience=1))
    train = b"".join([frame("start", 0, dumps(VALID_START))] + [
        frame(kind, epoch, payload) for epoch in (1, 2, 3) for kind, payload in (
            ("epoch", dumps(epoch_report(epoch, 0.1))), ("weights", valid_weights()),
            ("checkpoint", b"x"))])
    scorers = {kind: b"ready\n" + b"".join(logits(kind, e) for e in (1, 2, 3)) for kind in ("protocol", "check")}
    runs = []
    original = untrusted.UntrustedRun.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        runs.append(self)

    def finish_killed(self, grace_s):
        runs[0].watch.killed_for, runs[0].watch.detail = "out-of-memory", "it passed the limit"
        return 0

    monkeypatch.setattr(untrusted.UntrustedRun, "__init__", keep)
    monkeypatch.setattr(FakeProcess, "finish", finish_killed)
    record = run_fed_split(tmp_path, monkeypatch, task, store, {"train": train, **scorers})
    assert record["status"] == "ok", record["failure"]
    assert [e["test_acc"] for e in record["epochs"]] == [100.0, 0.0] and record["stopped_early"] == 2
    assert not list((store.root / "checkpoints").rglob("*.*"))  # done: its state is gone


def test_a_record_the_store_cannot_write_becomes_a_failure_record(tmp_path, monkeypatch):
    """Whatever makes a run's record unwritable (here the store's own write raising, as the
    pure-Python JSON encoder does on deep nesting), the run ends in a failure record, stored."""
    from harness.execution import local, untrusted
    from harness.execution.options import Isolation
    from harness.execution.task import crash_record
    from harness.store.results import ResultsStore

    task, store = split_task(tmp_path)
    monkeypatch.setattr(untrusted, "run_untrusted", lambda task, *a, **k: crash_record(task, "crashed", "x"))
    add, calls = ResultsStore.add, []

    def add_once_failing(self, record):
        calls.append(record["failure"]["message"])
        if len(calls) == 1:
            raise RecursionError("maximum recursion depth exceeded while encoding a JSON object")
        return add(self, record)

    monkeypatch.setattr(ResultsStore, "add", add_once_failing)
    record = local.run_in_worker(task, store, {}, tmp_path / "logs", 0, Isolation(untrusted=True))
    assert record["status"] == "failed" and record["failure"]["category"] == "malformed"
    assert "could not be stored (RecursionError" in record["failure"]["message"]
    assert [r["run_id"] for r in store.records()] == [record["run_id"]]
