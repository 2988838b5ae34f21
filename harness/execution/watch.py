"""Starting worker processes and holding them to their limits, from the parent.

A worker's output (stdout and stderr together) goes to a log, cut to :data:`LINE_BYTES` a line and
:data:`LOG_BYTES` in all, with control characters (terminal escapes) shown as ``\\xNN``, and is
never parsed: a worker's result reaches the parent by other means (a result file for trusted
workers, the pipes of :mod:`harness.execution.handover` for sandboxed ones).

:class:`Watch` polls a run's processes and kills them all when the run passes its wall-clock
time, its resident memory (summed over every process of each sandbox's PID namespace, which
``setsid`` cannot leave; over the process session for a trusted worker) or its thread count. A
sandbox's disk is held by the kernel (tmpfs limited in bytes and inodes), not polled.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from harness.execution.stops import start_thread, stop_signals

LINE_BYTES = 4096
LOG_BYTES = 8 << 20
POLL_S = 0.2

Echo = Callable[[str], None]
# C0 controls but tab, DEL and C1 controls: a line from a sandbox may be echoed to a terminal,
# where ESC sequences would move the cursor, rewrite earlier lines or set the clipboard.
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


T = TypeVar("T")  # a part of a run: its channels, pipes and processes


def started(part: T | None, what: str) -> T:
    """``part`` of a run whose processes were started; a harness error before that."""
    if part is None:
        raise RuntimeError(f"the {what} was used before the processes were started")
    return part


def printable(text: str) -> str:
    """``text`` with its control characters shown as ``\\xNN``."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def printable_json(value):
    """Every string (keys too) of a JSON value through :func:`printable`: what a sandbox reports
    may be printed on the user's terminal."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(k) if isinstance(k, str) else k: printable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable_json(v) for v in value]
    return value


class CappedLog:
    """The log of one process: lines cut at ``LINE_BYTES``, the file at ``LOG_BYTES``; what is cut
    is counted, not kept. ``echo`` sees the same (cut) lines."""

    def __init__(self, path: Path, echo: Echo | None = None, prefix: str = ""):
        self.path, self.echo, self.prefix = Path(path), echo, prefix
        self.written = 0
        self.dropped = 0

    def pump(self, fd: int) -> None:
        """Read ``fd`` to its end (in a thread of its own); memory stays within one line."""
        line, cut = b"", 0
        with open(self.path, "ab") as log:
            while True:
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                while chunk:
                    end = chunk.find(b"\n")
                    piece, chunk = (chunk, b"") if end < 0 else (chunk[:end], chunk[end + 1:])
                    room = LINE_BYTES - len(line)
                    line, cut = line + piece[:max(room, 0)], cut + max(len(piece) - room, 0)
                    if end >= 0:
                        self._line(log, line, cut)
                        line, cut = b"", 0
            if line or cut:
                self._line(log, line, cut)
            if self.dropped:
                log.write(f"[harness: {self.dropped} bytes of output not kept]\n".encode())
        os.close(fd)

    def _line(self, log, raw: bytes, cut: int) -> None:
        text = printable(raw.decode("utf-8", errors="replace").rstrip("\r"))
        if cut:
            text += f" [harness: line cut, {cut} more bytes]"
            self.dropped += cut
        data = (self.prefix + text + "\n").encode()
        if self.written + len(data) > LOG_BYTES:
            self.dropped += len(data)
            return
        log.write(data)
        log.flush()
        self.written += len(data)
        if self.echo:
            self.echo(self.prefix + text)

    def last_line(self) -> str:
        return next((ln for ln in reversed(self.tail().splitlines()) if ln.strip()), "no output")

    def tail(self, chars: int = 4000) -> str:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(max(0, self.path.stat().st_size - chars))
                return fh.read().decode("utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def _ns_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _stat(pid: str) -> tuple[int, int, int] | None:
    """(session, threads, resident bytes) of a process, or None when it is gone or not ours."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        with open(f"/proc/{pid}/statm", "rb") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return int(fields[3]), int(fields[17]), rss
    except (OSError, ValueError, IndexError):
        return None


# Set by a sweep's first Ctrl-C (harness.execution.local): from then on no worker starts, and
# kill_workers() ends those alive.
STOPPING = threading.Event()


class Stopping(RuntimeError):
    """A worker was about to start after the sweep's Ctrl-C."""


class Process:
    """A started worker: plain (a session of its own) or in bubblewrap (a PID namespace of its own)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: CappedLog, *,
                 sandboxed: bool, pass_fds: tuple[int, ...] = ()):
        if STOPPING.is_set():
            raise Stopping("the sweep was interrupted")
        self.log = log
        self.sandboxed = sandboxed
        info_r = info_w = None
        if sandboxed:  # bubblewrap says where its child is, so the watch can find its namespace
            info_r, info_w = os.pipe()
            argv = [argv[0], "--info-fd", str(info_w), *argv[1:]]
            pass_fds = (*pass_fds, info_w)
        out_r, out_w = os.pipe()
        try:
            with stop_signals(blocked=False):  # the worker's mask is its starting thread's
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                             env=env if sandboxed else {**os.environ, **env},
                                             start_new_session=True, pass_fds=pass_fds)
        except BaseException:
            for fd in (out_r, info_r):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            os.close(out_w)
            if info_w is not None:
                os.close(info_w)
        self.pump = start_thread(log.pump, out_r)
        _SESSIONS.add(self.proc.pid)
        if STOPPING.is_set():  # the Ctrl-C's kill_workers() may have run before the line above
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.namespace = self._namespace(info_r) if info_r is not None else None

    def _namespace(self, fd: int) -> str | None:
        data, deadline = b"", time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
                if len(data) > 65536:
                    break
        finally:
            os.close(fd)
        try:
            child = int(json.loads(data.decode())["child-pid"])
        except (ValueError, KeyError, TypeError):
            return None  # bubblewrap failed before its child ran; its log says why
        return _ns_of(child)

    def members(self) -> list[tuple[int, int]]:
        """(threads, resident bytes) of every process that counts as this worker."""
        out = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            if self.namespace is not None:
                if int(entry.name) != self.proc.pid and _ns_of(int(entry.name)) != self.namespace:
                    continue
                stat = _stat(entry.name)
            else:
                stat = _stat(entry.name)
                if stat is None or stat[0] != self.proc.pid:
                    continue
            if stat is not None:
                out.append(stat[1:])
        return out

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        members = []
        if self.namespace is not None:
            members = [int(e.name) for e in os.scandir("/proc")
                       if e.name.isdigit() and _ns_of(int(e.name)) == self.namespace]
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass

    def wait(self) -> int:
        code = self.proc.wait()
        self.pump.join(timeout=10)
        _SESSIONS.discard(self.proc.pid)
        return code

    def finish(self, grace_s: float) -> int:
        """Give the process ``grace_s`` to end on its own, then kill it; its exit code."""
        deadline = time.monotonic() + grace_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running():
            self.kill()
        return self.wait()


# Worker sessions alive in this process: each runs in a session of its own (so that a timeout
# kills its whole tree), which also shields it from the terminal's Ctrl-C and from a job
# scheduler's signal to this process; kill_workers() ends them when this process is stopped.
_SESSIONS: set[int] = set()


def kill_workers() -> None:
    for pid in list(_SESSIONS):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class WatchLimits:
    """What the parent holds a run's processes to (0 or None: no limit)."""

    timeout_s: float | None = None
    memory_bytes: int | None = None
    max_threads: int | None = None  # beyond the sandbox's own RLIMIT_NPROC (a second line)


@dataclass
class Watch:
    """Polls a run's processes in a thread of its own; kills them all at the first limit passed."""

    limits: WatchLimits
    processes: list[Process] = field(default_factory=list)
    beat: Callable[[], None] | None = None
    killed_for: str | None = None  # "timeout", "out-of-memory", "threads"
    detail: str = ""
    peak_rss: int = 0
    peak_threads: int = 0

    def __post_init__(self):
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = start_thread(self._run)

    def add(self, process: Process) -> Process:
        self.processes.append(process)
        return process

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            if self.killed_for is None:
                self._check()
            if self.beat:
                self.beat()

    def _check(self) -> None:
        lim = self.limits
        reason: str | None = None
        detail = ""
        if lim.timeout_s and self.elapsed() > lim.timeout_s:
            reason, detail = "timeout", f"the wall-clock limit of {lim.timeout_s:g} s"
        else:
            members = [m for p in self.processes if p.running() for m in p.members()]
            rss, threads = sum(m[1] for m in members), sum(m[0] for m in members)
            self.peak_rss, self.peak_threads = max(self.peak_rss, rss), max(self.peak_threads, threads)
            if lim.memory_bytes and rss > lim.memory_bytes:
                reason, detail = "out-of-memory", (f"its resident memory passed the limit of "
                                                   f"{lim.memory_bytes / 2**30:.1f} GiB")
            elif lim.max_threads and threads > lim.max_threads:
                reason, detail = "threads", f"it ran {threads} threads (limit {lim.max_threads})"
        if reason:
            self.killed_for, self.detail = reason, detail
            self.kill()

    def category(self) -> str:
        """The record's failure category for what the watch killed the run for."""
        return {"timeout": "timeout", "out-of-memory": "out-of-memory"}.get(self.killed_for or "",
                                                                            "resource-limit")

    def kill(self) -> None:
        for p in self.processes:
            p.kill()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
