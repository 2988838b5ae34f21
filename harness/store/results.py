"""The results store: every run record of a results folder, and the entries they belong to.

Layout of a results folder (``--results DIR``, default ``./results``)::

    runs/RUN_ID.json          one record per run, written atomically (temporary file + rename)
    index.jsonl               one line per record (run id, key, status, entry), appended under a lock
    submissions/SHA256.py     content-addressed copies of every submitted file
    entries/NAME.json         an entry: its kind (submission or baseline), current sha256, history
    .lock                     the filelock guarding index.jsonl and entries/

Records are the truth; the index is a fast path derived from them. A record written by a process
that died before it reached the index is found and indexed on the next read, so nothing is lost.
Many processes (or cluster nodes on a shared filesystem) may write at once. A record is never
overwritten: a second record under a run id that exists is refused.

Every record read is checked against the run-record schema (harness.store.schema); one that is not a
record (malformed, hostile, of an unknown version, too large) is skipped and listed in
``problems``, never fatal to whoever reads the store (the leaderboard, ``harness status``, a
sweep).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from harness.protocol.entries import validate_entry_name
from harness.protocol.spec import RunSpec
from harness.store import schema
from harness.store.record import UMASK, read_record, utc_now, write_json_atomic

RECORD_BYTES = 64 << 20  # a record larger than this is not read

COMPLETED = ("ok", "diverged")  # a diverged run is a result; a failed one is retried


def entry_slug(name: str) -> str:
    """A file name for an entry: readable part plus a hash, so any name (even markup) is safe."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:48] or "entry"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def run_key(record: dict[str, Any]) -> str:
    """The key (harness.protocol.spec.RunSpec.key) of the run a record is of."""
    return RunSpec.of_record(record).key()


class EntryTaken(ValueError):
    """An entry name is taken by another file (or another kind of entry)."""


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "submission" or "baseline"
    sha256: str
    suite: str
    final: bool
    source: str  # where it was submitted from
    submitted_at: str
    owner: str = ""  # the user who first submitted it


class ResultsStore:
    def __init__(self, root: str | Path = "results"):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.index_path = self.root / "index.jsonl"
        self.submissions_dir = self.root / "submissions"
        self.entries_dir = self.root / "entries"
        self._lock = FileLock(str(self.root / ".lock"), timeout=120)
        self.problems: dict[str, str] = {}  # path -> why it was skipped (harness.store.schema)

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
        """Write a record (checked against the schema) atomically and index it; a record already
        under its run id is never overwritten (FileExistsError)."""
        schema.validate_record(record)
        self._ensure()
        path = self.runs_dir / f"{record['run_id']}.json"
        fd, tmp = tempfile.mkstemp(dir=self.runs_dir, prefix=".new.", suffix=".tmp")
        os.close(fd)
        try:
            write_json_atomic(tmp, record)
            os.link(tmp, path)  # fails when the name exists: no record replaces another
        finally:
            os.unlink(tmp)
        self._append_index([self._index_line(record)])
        return path

    def read(self, path: Path) -> dict[str, Any] | None:
        """A record, or None (and the reason in ``problems``) when the file is not one."""
        try:
            if path.stat().st_size > RECORD_BYTES:
                raise ValueError(f"larger than {RECORD_BYTES >> 20} MiB")
            record = read_record(path)
            schema.validate_record(record)
            return record
        except (OSError, ValueError, TypeError, KeyError, schema.ValidationError) as exc:
            self.problems[str(path)] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            return None

    def index(self, record: dict[str, Any]) -> None:
        """Index a record already written into runs/ (e.g. by ``run_eval``)."""
        self._append_index([self._index_line(record)])

    def _read_index(self) -> dict[str, dict[str, Any]]:
        lines: dict[str, dict[str, Any]] = {}
        if self.index_path.exists():
            for raw in self.index_path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash; the record itself is re-indexed below
                if _index_line_ok(line):
                    lines[line["run_id"]] = line
        return lines

    def index_lines(self) -> dict[str, dict[str, Any]]:
        """The index, after indexing any record that is in runs/ but not yet in it."""
        lines = self._read_index()
        if not self.runs_dir.is_dir():
            return lines
        missing = [p for p in self.runs_dir.glob("*.json") if p.stem not in lines]
        new = []
        for path in missing:  # anything that is not a record is left alone, never deleted
            record = self.read(path)
            if record is not None and record["run_id"] != path.stem:
                self.problems[str(path)] = (f"its run_id {record['run_id'][:80]!r} is not its "
                                            "file's name")
            elif record is not None:
                new.append(self._index_line(record))
        if new:
            self._append_index(new)
            lines.update({line["run_id"]: line for line in new})
        return lines

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record; what is not one is skipped (see ``problems``)."""
        for run_id in sorted(self.index_lines()):
            path = self.runs_dir / f"{run_id}.json"
            if path.exists():
                record = self.read(path)
                if record is not None:
                    yield record

    def completed_keys(self) -> set[str]:
        return {line["key"] for line in self.index_lines().values() if line["status"] in COMPLETED}

    # -- submissions and entries ----------------------------------------------------------

    def store_submission(self, path: str | Path) -> tuple[Path, str]:
        """Copy a submission into submissions/SHA256.py (once); return (copy, sha256)."""
        return self.store_bytes(Path(path).read_bytes())

    def store_bytes(self, data: bytes) -> tuple[Path, str]:
        """Keep a submission's bytes as submissions/SHA256.py (once); return (copy, sha256)."""
        self._ensure()
        digest = hashlib.sha256(data).hexdigest()
        target = self.submissions_dir / f"{digest}.py"
        if not target.exists():
            fd, tmp = tempfile.mkstemp(dir=self.submissions_dir, prefix=".new.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o666 & ~UMASK)
            os.replace(tmp, target)
        return target, digest

    def submission_source(self, sha256: str) -> str | None:
        path = self.submissions_dir / f"{sha256}.py"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else None

    def register_entry(self, name: str, kind: str, sha256: str, suite: str, final: bool,
                       source: str, replace: bool = False) -> Entry:
        """Create or update an entry. A name belongs to the file first submitted under it: another
        file takes it over only with ``replace`` (``--replace``), and the history records who
        replaced what, and when. Raises EntryTaken."""
        self._ensure()
        path = self.entries_dir / f"{entry_slug(validate_entry_name(name))}.json"
        user = _user()
        with self._lock:
            previous: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
            twin = next((e for e in self.entries() if e.sha256 == sha256 and e.name != name), None)
            if twin is not None and not (previous and previous["sha256"] == sha256):
                # Runs are keyed by the file, not the name: under a second name every run would be
                # "already done", and the new name would never reach the board.
                raise EntryTaken(
                    f"this file (sha256 {sha256[:12]}) is already the entry {twin.name!r} "
                    f"(submitted {twin.submitted_at} by {twin.owner or 'unknown'}): its runs are on "
                    f"the board under that name, so under {name!r} every run would be skipped as "
                    f"done. Submit it as --name {twin.name!r}, or change the file to make it a new "
                    "entry")
            if previous and previous["kind"] != kind:
                raise EntryTaken(f"the name {name!r} is already taken by a {previous['kind']}")
            changed = bool(previous) and previous["sha256"] != sha256
            if changed and not replace:
                raise EntryTaken(
                    f"the entry {name!r} is another file's (sha256 {previous['sha256'][:12]}, "
                    f"submitted {previous['submitted_at']} by {previous.get('owner') or 'unknown'} "
                    f"from {previous['source']}); pass --replace to make this file its current "
                    "version (recorded in its history), or choose another --name")
            history = previous.get("history", []) if previous else []
            if not previous or changed:
                history.append({"sha256": sha256, "submitted_at": utc_now(), "by": user,
                                "source": source, "replaced": changed})
            final = final or bool(previous and not changed and previous["final"])
            entry = Entry(name=name, kind=kind, sha256=sha256, suite=suite, final=final,
                          source=source, submitted_at=utc_now(),
                          owner=(previous or {}).get("owner") or user)
            write_json_atomic(path, {**entry.__dict__, "history": history})
        return entry

    def entries(self) -> list[Entry]:
        """Every entry; a file that is not one is skipped (see ``problems``)."""
        if not self.entries_dir.is_dir():
            return []
        out = []
        for path in sorted(self.entries_dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                data.pop("history", None)
                out.append(Entry(**data))
            except (OSError, ValueError, TypeError) as exc:
                self.problems[str(path)] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return out

    def history(self, name: str) -> list[dict[str, Any]]:
        path = self.entries_dir / f"{entry_slug(name)}.json"
        try:
            return json.loads(path.read_text()).get("history", [])
        except (OSError, ValueError):
            return []


def _index_line_ok(line: Any) -> bool:
    """An index line of the shape this module writes (anything else is ignored; the records it
    would point to are indexed again from the records themselves)."""
    return (isinstance(line, dict) and isinstance(line.get("run_id"), str)
            and bool(schema.RUN_ID.match(line["run_id"])) and isinstance(line.get("key"), str)
            and line.get("status") in ("ok", "diverged", "failed")
            and (line.get("entry") is None or isinstance(line.get("entry"), str))
            and (line.get("best_acc") is None or (isinstance(line.get("best_acc"), (int, float))
                                                   and not isinstance(line.get("best_acc"), bool))))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
