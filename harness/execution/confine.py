"""What a sandboxed process does to itself, from inside, before the submission is imported
(:func:`enter`; :mod:`harness.execution.sandbox` builds the sandbox from outside): it mounts its
writable space, tmpfs limited by the kernel in bytes and inodes, in a mount namespace of its
own; empties its capability bounding set; becomes ``nobody`` where the harness runs as root;
gives up every capability left; sets its resource limits; and installs the seccomp filter
(:mod:`harness.execution.seccomp`). Irreversible, and in that order: each step needs what the
next one takes away.
"""

from __future__ import annotations

import os
import resource

from harness.execution.sandbox import (
    ADDRESS_SPACE_SLACK,
    OPEN_FILES,
    SCRATCH,
    SCRATCH_INODES,
    SHM_BYTES,
    SHM_INODES,
    STATE,
    STATE_INODES,
    SandboxLimits,
)
from harness.execution.seccomp import install_seccomp


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


_libc = None


def _call(name: str, *args) -> None:
    """A libc call that raises OSError on failure."""
    import ctypes

    global _libc
    _libc = _libc or ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


CLONE_NEWNS = 0x00020000


def mount_writable(limits: SandboxLimits) -> None:
    """Mount this sandbox's writable space: tmpfs limited by the kernel in bytes and in inodes,
    owned by the user the process is about to become, in a mount namespace of its own (the one
    bubblewrap made belongs to a user namespace above this process's). Needs CAP_SYS_ADMIN in
    the sandbox's user namespace (bubblewrap's ``--cap-add``)."""
    uid = limits.drop_to if limits.drop_to is not None else os.getuid()
    gid = limits.drop_to if limits.drop_to is not None else os.getgid()
    _call("unshare", CLONE_NEWNS)
    spaces = [(SCRATCH, limits.scratch_bytes, SCRATCH_INODES, "0700"),
              ("/dev/shm", SHM_BYTES, SHM_INODES, "1777")]
    if limits.state_bytes:
        spaces.append((STATE, limits.state_bytes, STATE_INODES, "0700"))
    for path, size, inodes, mode in spaces:
        options = f"size={size},nr_inodes={inodes},mode={mode},uid={uid},gid={gid}"
        _call("mount", b"harness", path.encode(), b"tmpfs", 0x2 | 0x4, options.encode())  # nosuid, nodev
    os.chdir(SCRATCH)  # the working directory bubblewrap gave is the tmpfs now hidden


def empty_bounding_set() -> None:
    """No capability can ever come back (PR_CAPBSET_DROP of each; needs CAP_SETPCAP)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: past the last
            raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}: {os.strerror(ctypes.get_errno())}")


def drop_capabilities() -> None:
    """Give up every capability (permitted, effective, inheritable; ambient ones go with them)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    _call("capset", ctypes.byref(Header(0x20080522, 0)), (Data * 2)())  # version 3: 64 bits


def enter(limits: SandboxLimits, device_type: str) -> list[str]:
    """Apply ``limits`` to this process (the worker, after its own imports, before the
    submission's); return notes on what could not be applied. Irreversible."""
    notes = []
    if limits.namespaces:
        mount_writable(limits)
        empty_bounding_set()
    if limits.drop_to is not None:
        os.setresgid(limits.drop_to, limits.drop_to, limits.drop_to)
        os.setresuid(limits.drop_to, limits.drop_to, limits.drop_to)  # clears every capability
    if limits.namespaces:
        drop_capabilities()
    if not limits.namespaces:
        notes.append("no namespaces (overridden): the network, the results folder, the data root "
                     "and the file system are reachable")
    if limits.cpu_seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 10))
    if limits.memory_bytes and device_type == "cpu":
        cap = limits.memory_bytes + ADDRESS_SPACE_SLACK
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    elif limits.memory_bytes:
        notes.append("address space not limited (CUDA reserves more than any sane limit); the "
                     "parent's resident-memory watch holds the run to its memory limit")
    if limits.namespaces:
        # Counted per user namespace: only this sandbox's threads count.
        cap = max(limits.max_threads, _threads() + 8)
        resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))
    else:  # counted over every process of this user on the machine: no meaningful cap
        notes.append("no thread limit without namespaces")
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    install_seccomp(scorer=limits.scoring)
    return notes
