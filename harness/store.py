"""The results store: every run record of a results folder, and the entries they belong to.

Layout of a results folder (``--results DIR``, default ``./results``)::

    runs/RUN_ID.json          one record per run, written atomically (temporary file + rename)
    index.jsonl               one line per record (run id, key, status, entry), appended under a lock
    submissions/SHA256.py     content-addressed copies of every submitted file
    entries/NAME.json         an entry: its kind (submission or baseline), current sha256, history
    .lock                     the filelock guarding index.jsonl and entries/

Records are the truth; the index is a fast path derived from them. A record written by a process
that died before it reached the index is found and indexed on the next read, so nothing is lost.
Many processes (or cluster nodes on a shared filesystem) may write at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from harness.record import read_record, utc_now, write_json_atomic
from harness.submission import sha256_file

COMPLETED = ("ok", "diverged")  # a diverged run is a result; a failed one is retried


def entry_slug(name: str) -> str:
    """A file name for an entry: readable part plus a hash, so any name (even markup) is safe."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:48] or "entry"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def validate_entry_name(name: str) -> str:
    if not name or len(name) > 100 or any(ord(ch) < 32 for ch in name):
        raise ValueError("an entry name is 1 to 100 printable characters")
    return name


def run_key(record: dict[str, Any]) -> str:
    """What makes two runs the same run: code, setting, seed, recipe, protocol and precision."""
    cfg = record["config"]
    recipe_id = record.get("suite", {}).get("recipe_id") or "adhoc"
    return make_key(record["submission"]["sha256"], cfg["arch"], cfg["dataset"], cfg["seed"],
                    recipe_id, record["protocol_version"], cfg.get("precision", "fp32"))


def make_key(sha256: str, arch: str, dataset: str, seed: int, recipe_id: str, protocol: str,
             precision: str = "fp32") -> str:
    return "|".join([sha256, arch, dataset, str(seed), recipe_id, protocol, precision])


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "submission" or "baseline"
    sha256: str
    suite: str
    final: bool
    source: str  # where it was submitted from
    submitted_at: str


class ResultsStore:
    def __init__(self, root: str | Path = "results"):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.index_path = self.root / "index.jsonl"
        self.submissions_dir = self.root / "submissions"
        self.entries_dir = self.root / "entries"
        self._lock = FileLock(str(self.root / ".lock"), timeout=120)

    # -- records --------------------------------------------------------------------------

    def _ensure(self) -> None:
        for d in (self.runs_dir, self.submissions_dir, self.entries_dir):
            d.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _index_line(record: dict[str, Any]) -> dict[str, Any]:
        return {"run_id": record["run_id"], "key": run_key(record), "status": record["status"],
                "entry": record.get("entry"), "best_acc": record.get("best_acc")}

    def _append_index(self, lines: list[dict[str, Any]]) -> None:
        with self._lock:
            with open(self.index_path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(line) + "\n" for line in lines))
                fh.flush()
                os.fsync(fh.fileno())

    def add(self, record: dict[str, Any]) -> Path:
        """Write a record atomically and index it."""
        self._ensure()
        path = write_json_atomic(self.runs_dir / f"{record['run_id']}.json", record)
        self._append_index([self._index_line(record)])
        return path

    def index(self, record: dict[str, Any]) -> None:
        """Index a record already written into runs/ (e.g. by ``run_eval``)."""
        self._append_index([self._index_line(record)])

    def _read_index(self) -> dict[str, dict[str, Any]]:
        lines: dict[str, dict[str, Any]] = {}
        if self.index_path.exists():
            for raw in self.index_path.read_text(encoding="utf-8").splitlines():
                try:
                    line = json.loads(raw)
                    lines[line["run_id"]] = line
                except (json.JSONDecodeError, KeyError):
                    continue  # a line torn by a crash; the record itself is re-indexed below
        return lines

    def index_lines(self) -> dict[str, dict[str, Any]]:
        """The index, after indexing any record that is in runs/ but not yet in it."""
        lines = self._read_index()
        if not self.runs_dir.is_dir():
            return lines
        missing = [p for p in self.runs_dir.glob("*.json") if p.stem not in lines]
        new = []
        for path in missing:
            try:
                new.append(self._index_line(read_record(path)))
            except (OSError, ValueError, KeyError):
                continue  # not a record of this schema: left alone, never deleted
        if new:
            self._append_index(new)
            lines.update({line["run_id"]: line for line in new})
        return lines

    def records(self) -> Iterator[dict[str, Any]]:
        for run_id in sorted(self.index_lines()):
            path = self.runs_dir / f"{run_id}.json"
            if path.exists():
                yield read_record(path)

    def completed_keys(self) -> set[str]:
        return {line["key"] for line in self.index_lines().values() if line["status"] in COMPLETED}

    # -- submissions and entries ----------------------------------------------------------

    def store_submission(self, path: str | Path) -> tuple[Path, str]:
        """Copy a submission into submissions/SHA256.py (once); return (copy, sha256)."""
        self._ensure()
        digest = sha256_file(path)
        target = self.submissions_dir / f"{digest}.py"
        if not target.exists():
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        return target, digest

    def submission_source(self, sha256: str) -> str | None:
        path = self.submissions_dir / f"{sha256}.py"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else None

    def register_entry(self, name: str, kind: str, sha256: str, suite: str, final: bool,
                       source: str) -> Entry:
        """Create or update an entry; a changed file becomes the entry's current version."""
        self._ensure()
        path = self.entries_dir / f"{entry_slug(validate_entry_name(name))}.json"
        with self._lock:
            previous = json.loads(path.read_text()) if path.exists() else None
            if previous and previous["kind"] != kind:
                raise ValueError(f"the name {name!r} is already taken by a {previous['kind']}")
            history = previous.get("history", []) if previous else []
            if not previous or previous["sha256"] != sha256:
                history.append({"sha256": sha256, "submitted_at": utc_now()})
            final = final or bool(previous and previous["sha256"] == sha256 and previous["final"])
            entry = Entry(name=name, kind=kind, sha256=sha256, suite=suite, final=final,
                          source=source, submitted_at=utc_now())
            write_json_atomic(path, {**entry.__dict__, "history": history})
        return entry

    def entries(self) -> list[Entry]:
        if not self.entries_dir.is_dir():
            return []
        out = []
        for path in sorted(self.entries_dir.glob("*.json")):
            data = json.loads(path.read_text())
            data.pop("history", None)
            out.append(Entry(**data))
        return out
