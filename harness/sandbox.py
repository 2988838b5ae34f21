"""The sandbox of an untrusted run (``--untrusted``): what the worker process can still do.

The parent starts the worker inside new Linux namespaces (``unshare``: user, network, mount, PID),
and the worker, before it imports the submission, calls :func:`enter`, which

- covers the results store with an empty read-only file system (the run can neither read other
  runs' records nor write its own: the parent writes the record from what the worker reports);
- mounts a private, size-limited tmpfs as its working and temporary directory, and makes every
  other mount read-only;
- sets resource limits: CPU time, address space (CPU runs; CUDA needs a huge address space, so a
  GPU run is held to its memory limit by the parent's resident-memory watch instead), open files,
  file size, no core dumps;
- installs a seccomp filter that refuses new processes (fork, vfork, clone without CLONE_THREAD,
  execve), sockets, ptrace, and every mount or namespace call (so the hiding cannot be undone).

The network namespace has only a loopback device that is down: no network at all. Where namespaces
are unavailable the parent refuses to run untrusted code unless told otherwise (the rest still
applies then). See README, "Running untrusted submissions", for what this does not protect.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from functools import lru_cache

UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork",
           "--kill-child"]
PRIVATE_TMP_SIZE = "1g"
OPEN_FILES = 256
ADDRESS_SPACE_SLACK = 8 << 30  # virtual reservations (thread arenas, libraries) beyond resident use


@lru_cache(maxsize=1)
def namespaces_unavailable() -> str | None:
    """Why this machine cannot put a run in its own namespaces, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"Linux namespaces are needed, and this is {sys.platform}"
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is not installed"
    try:
        proc = subprocess.run(UNSHARE + ["true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare failed: {exc}"
    if proc.returncode != 0:
        return (f"unshare could not create user and network namespaces ({proc.stderr.strip()}); "
                "unprivileged user namespaces may be disabled on this machine")
    return None


@dataclass
class Policy:
    """What :func:`enter` applies; written by the parent into the worker's spec."""

    private_dir: str  # an empty directory made by the parent; a private tmpfs inside the sandbox
    hide: list[str] = field(default_factory=list)  # covered with an empty read-only tmpfs
    # This run's own checkpoint folder (under the hidden store), the one writable place outside the
    # private tmpfs; seen inside at PRIVATE/checkpoints.
    checkpoint_dir: str | None = None
    namespaces: bool = True  # False only when explicitly overridden (no network or mount isolation)
    memory_bytes: int | None = None
    cpu_seconds: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def command(policy: Policy, argv: list[str]) -> list[str]:
    return UNSHARE + argv if policy.namespaces else argv


# -- mounts -----------------------------------------------------------------------------------

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MOUNT_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    if _libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mounts() -> list[tuple[str, int]]:
    """(mount point, its per-mount flags) of every mount this process sees."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
            flags = sum(_MOUNT_FLAGS.get(o, 0) for o in fields[5].split(","))
            out.append((point, flags))
    return out


def _isolate_files(policy: Policy) -> list[str]:
    notes = []
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    _mount("tmpfs", policy.private_dir, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={PRIVATE_TMP_SIZE},mode=0700")
    keep = {os.path.realpath(policy.private_dir), *map(os.path.realpath, policy.hide)}
    if policy.checkpoint_dir:  # bound before the store is hidden, which it lies in
        inside = os.path.join(policy.private_dir, "checkpoints")
        os.mkdir(inside)
        _mount(policy.checkpoint_dir, inside, None, MS_BIND, None)
        keep.add(os.path.realpath(inside))
    for path in policy.hide:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   "size=4k,mode=0555")
    for point, flags in _mounts():
        if point in keep or flags & MS_RDONLY:
            continue
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None)
        except OSError as exc:
            if point == "/":
                raise
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOENT):
                raise
            notes.append(f"{point} stays writable ({exc.strerror})")
    return notes


# -- seccomp ----------------------------------------------------------------------------------

_ARCH = {  # audit arch, syscall numbers
    "x86_64": (0xC000003E, {
        "execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435,
        "socket": 41, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272,
        "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "bpf": 321, "perf_event_open": 298,
        "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249}),
    "aarch64": (0xC00000B7, {
        "execve": 221, "execveat": 281, "clone": 220, "clone3": 435, "socket": 198, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "keyctl": 219, "add_key": 217, "request_key": 218}),
}
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL = 0x7FFF0000, 0x80000000
CLONE_THREAD = 0x00010000


def _errno(e: int) -> int:
    return 0x00050000 | e


def seccomp_program(machine: str) -> list[tuple[int, int, int, int]]:
    """The BPF filter, as (code, jt, jf, k) instructions, for ``machine`` (platform.machine())."""
    arch, nr = _ARCH[machine]
    refused = [n for name, n in nr.items() if name not in ("clone", "clone3")]
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_JEQ, 1, 0, arch),
        (_RET, 0, 0, _KILL),  # another ABI: no way to know what its numbers mean
        (_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":  # the x32 ABI reuses the numbers with bit 30 set
        prog += [(_JGE, 0, 1, 0x40000000), (_RET, 0, 0, _errno(errno.EPERM))]
    for n in refused:
        prog += [(_JEQ, 0, 1, n), (_RET, 0, 0, _errno(errno.EPERM))]
    # clone3 passes its flags in memory, out of the filter's reach: ENOSYS makes glibc fall back to
    # clone, whose flags are in a register: a thread (CLONE_THREAD) is allowed, a process is not.
    prog += [(_JEQ, 0, 1, nr["clone3"]), (_RET, 0, 0, _errno(errno.ENOSYS)),
             (_JEQ, 1, 0, nr["clone"]), (_RET, 0, 0, _ALLOW),
             (_LD_W_ABS, 0, 0, 16),  # low 32 bits of args[0] (little-endian)
             (_JSET, 0, 1, CLONE_THREAD), (_RET, 0, 0, _ALLOW),
             (_RET, 0, 0, _errno(errno.EPERM))]
    return prog


def install_seccomp() -> None:
    machine = platform.machine()
    if machine not in _ARCH:
        raise OSError(f"no seccomp filter for {machine}; untrusted runs need x86_64 or aarch64")
    prog = seccomp_program(machine)
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    libc = _libc()
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"installing the seccomp filter failed: {os.strerror(err)}")


# -- limits -----------------------------------------------------------------------------------

def set_limits(policy: Policy, device_type: str) -> list[str]:
    notes = []
    if policy.cpu_seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (policy.cpu_seconds, policy.cpu_seconds + 10))
    if policy.memory_bytes and device_type == "cpu":
        limit = policy.memory_bytes + ADDRESS_SPACE_SLACK
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    elif policy.memory_bytes:
        notes.append("address space not limited (CUDA reserves more than any sane limit); the "
                     "parent's resident-memory watch holds the run to its memory limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30, 1 << 30))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return notes


def enter(policy: Policy, device_type: str) -> list[str]:
    """Apply the policy to this process (the worker, before it imports the submission); return
    notes on what could not be applied. Irreversible."""
    if policy.namespaces:
        notes = _isolate_files(policy)
    else:
        notes = ["no namespaces (overridden): the network, the results store and the file system "
                 "are reachable"]
        if policy.checkpoint_dir:
            os.symlink(policy.checkpoint_dir, os.path.join(policy.private_dir, "checkpoints"))
    os.chdir(policy.private_dir)
    for var in ("TMPDIR", "TMP", "TEMP", "HOME"):
        os.environ[var] = policy.private_dir
    notes += set_limits(policy, device_type)
    install_seccomp()
    return notes
