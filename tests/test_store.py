"""The results store: atomic records, a locked index, nothing lost under concurrent writers."""

import json
import multiprocessing as mp
import sys
from pathlib import Path

import pytest

from harness.store.results import EntryTaken, ResultsStore, entry_slug, run_key

from records import make_record

WRITERS, PER_WRITER = 8, 25


def _writer(root: str, worker: int, start) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from records import make_record as mk

    store = ResultsStore(root)
    start.wait()  # every process writes at the same time
    for i in range(PER_WRITER):
        store.add(mk(f"w{worker}", f"{worker:064x}", "resnet20-digits", i, 50.0 + i))


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, start)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    files = list((tmp_path / "runs").glob("*.json"))
    assert len(files) == WRITERS * PER_WRITER
    for f in files:
        json.loads(f.read_text())  # every record parses
    lines = (tmp_path / "index.jsonl").read_text().splitlines()
    assert len(lines) == WRITERS * PER_WRITER
    assert {json.loads(line)["run_id"] for line in lines} == {f.stem for f in files}
    assert not list(tmp_path.glob("runs/.*.tmp"))
    store = ResultsStore(tmp_path)
    assert len(list(store.records())) == WRITERS * PER_WRITER
    assert len(store.completed_keys()) == WRITERS * PER_WRITER


def test_completed_keys_and_failed_runs(tmp_path):
    store = ResultsStore(tmp_path)
    ok = make_record("a", "1" * 64, "resnet20-digits", 0, 80.0)
    diverged = make_record("a", "1" * 64, "resnet20-digits", 1, 20.0, status="diverged")
    failed = make_record("a", "1" * 64, "resnet56-digits", 0, None, status="failed")
    for r in (ok, diverged, failed):
        store.add(r)
    assert store.completed_keys() == {run_key(ok), run_key(diverged)}


def test_an_unindexed_record_is_found_and_a_torn_line_ignored(tmp_path):
    store = ResultsStore(tmp_path)
    store.add(make_record("a", "1" * 64, "resnet20-digits", 0, 80.0))
    orphan = make_record("a", "1" * 64, "resnet20-digits", 1, 81.0)
    (tmp_path / "runs" / f"{orphan['run_id']}.json").write_text(json.dumps(orphan))  # writer died here
    with open(tmp_path / "index.jsonl", "a") as fh:
        fh.write('{"run_id": "half a li')  # and another one mid-append
    assert run_key(orphan) in store.completed_keys()
    assert len(list(store.records())) == 2
    assert len(ResultsStore(tmp_path).index_lines()) == 2  # the orphan was indexed once


def test_submissions_are_content_addressed(tmp_path):
    store = ResultsStore(tmp_path)
    src = tmp_path / "norm.py"
    src.write_text("x = 1\n")
    copy, digest = store.store_submission(src)
    assert copy.name == f"{digest}.py" and copy.read_text() == "x = 1\n"
    assert store.store_submission(src) == (copy, digest)
    src.write_text("x = 2\n")
    copy2, digest2 = store.store_submission(src)
    assert digest2 != digest and copy.read_text() == "x = 1\n"


def test_the_same_file_under_a_second_name_is_refused_with_the_first_name(tmp_path):
    """Runs are keyed by the file: a second name would only skip them all, silently."""
    store = ResultsStore(tmp_path)
    store.register_entry("mine", "submission", "1" * 64, "smoke", False, "a.py")
    with pytest.raises(EntryTaken, match="already the entry 'mine'.*--name 'mine'.*change the file"):
        store.register_entry("yours", "submission", "1" * 64, "smoke", False, "copy.py")
    assert [e.name for e in store.entries()] == ["mine"]
    store.register_entry("mine", "submission", "1" * 64, "smoke", True, "a.py")  # itself: fine


def test_entries_keep_history_and_kinds_apart(tmp_path):
    store = ResultsStore(tmp_path)
    store.register_entry("mine", "submission", "1" * 64, "smoke", False, "a.py")
    store.register_entry("mine", "submission", "1" * 64, "smoke", True, "a.py")
    with pytest.raises(EntryTaken, match="another file's.*--replace"):
        store.register_entry("mine", "submission", "2" * 64, "smoke", False, "b.py")
    assert store.entries()[0].sha256 == "1" * 64  # the name still belongs to its first file
    store.register_entry("mine", "submission", "2" * 64, "smoke", False, "b.py", replace=True)
    (entry,) = store.entries()
    assert entry.sha256 == "2" * 64 and entry.final is False  # a new file is not final by inheritance
    assert entry.owner  # who first submitted it
    data = json.loads((tmp_path / "entries" / f"{entry_slug('mine')}.json").read_text())
    assert [(h["sha256"], h["replaced"]) for h in data["history"]] == [("1" * 64, False),
                                                                       ("2" * 64, True)]
    with pytest.raises(ValueError, match="already taken by a submission"):
        store.register_entry("mine", "baseline", "3" * 64, "smoke", True, "b.py")
    store.register_entry("<script>alert(1)</script>", "submission", "4" * 64, "smoke", False, "c.py")
    assert {e.name for e in store.entries()} == {"mine", "<script>alert(1)</script>"}


def test_a_record_is_never_overwritten(tmp_path):
    store = ResultsStore(tmp_path)
    record = make_record("a", "1" * 64, "resnet20-digits", 0, 80.0)
    path = store.add(record)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        store.add({**record, "best_acc": 100.0})
    assert path.read_bytes() == before and not list(store.runs_dir.glob(".*"))


@pytest.mark.slow
def test_whatever_is_in_the_store_its_readers_survive(tmp_path):
    """Malformed and hostile files in runs/, entries/ and the index are skipped and reported:
    the records, the leaderboard and harness status still work."""
    from click.testing import CliRunner

    from harness.cli import main
    from harness.leaderboard.site import build_site

    store = ResultsStore(tmp_path)
    src = tmp_path / "s.py"
    src.write_text("from torch import nn\nCustomNorm = nn.BatchNorm2d\n")
    _, sha = store.store_submission(src)
    store.register_entry("good", "submission", sha, "smoke", False, str(src))
    good = make_record("good", sha, "resnet20-digits", 0, 80.0)
    store.add(good)
    bad = {
        "torn.json": "{\"schema_version\": 3, ",
        "list.json": "[1, 2, 3]",
        "future.json": json.dumps({**good, "run_id": "future", "schema_version": 99}),
        "wrong-types.json": json.dumps({**good, "run_id": "wrong-types", "best_acc": "100",
                                        "epochs": "many"}),
        "huge-string.json": json.dumps({**good, "run_id": "huge-string",
                                        "entry": "x" * 100_000}),
        "script.json": json.dumps({**good, "run_id": "script", "status": "<script>"}),
        "renamed.json": json.dumps({**good, "run_id": "not-its-name"}),
    }
    for name, text in bad.items():
        (store.runs_dir / name).write_text(text)
    (store.entries_dir / "junk.json").write_text("not json")
    with open(store.index_path, "a") as fh:
        fh.write('{"run_id": "../../x", "key": 1, "status": "ok", "best_acc": "lots"}\n')
        fh.write('{"run_id": "ok-name", "key": "k", "status": "ok", "best_acc": "lots"}\n')
    assert [r["run_id"] for r in ResultsStore(tmp_path).records()] == [good["run_id"]]
    site = build_site(tmp_path, tmp_path / "site")
    assert {Path(p).name for p in site.skipped} == {*bad, "junk.json"}
    assert "are not records and were left out" in site.index.read_text()
    status = CliRunner().invoke(main, ["status", "--results", str(tmp_path), "--suite", "smoke"])
    assert status.exit_code == 0, status.output
    built = CliRunner().invoke(main, ["leaderboard", "build", "--results", str(tmp_path),
                                      "--out", str(tmp_path / "site2")])
    assert built.exit_code == 0 and "warning: skipped" in built.output
    from harness.protocol.suites import load_suite
    from harness.store.plan import plan_entry

    planned = plan_entry(ResultsStore(tmp_path), "a", sha, load_suite("smoke"), False)  # what a sweep does
    assert [p.done for p in planned] == [True, False]


def test_precision_is_part_of_the_run_key():
    a = make_record("a", "1" * 64, "resnet20-digits", 0, 80.0)
    b = make_record("a", "1" * 64, "resnet20-digits", 0, 80.0)
    b["config"]["precision"] = "bf16"
    assert run_key(a) != run_key(b) and run_key(a).endswith("|fp32")
