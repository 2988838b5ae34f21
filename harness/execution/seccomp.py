"""The seccomp filter of sandboxed processes: the system calls they are refused, and the BPF
program that refuses them, installed from inside the sandbox (harness.execution.confine.enter).

The list and its sources are in docs/security.md; a test checks every syscall number against
libseccomp's tables where it is installed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

# Refused with EPERM (source: Docker's default seccomp profile, docs.docker.com/engine/security/
# seccomp, "Significant syscalls blocked by the default profile", and moby/moby#46762, which
# removed io_uring from it in 2023), plus, for a norm layer: new processes, sockets, memfd.
DOCKER_REFUSED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "move_pages",
    "name_to_handle_at", "nfsservctl", "open_by_handle_at", "perf_event_open", "pivot_root",
    "process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl", "reboot",
    "request_key", "set_mempolicy", "setns", "settimeofday", "swapon", "swapoff", "sysfs",
    "_sysctl", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
)
HARNESS_REFUSED = ("execve", "execveat", "fork", "vfork", "socket", "memfd_create",
                   "memfd_secret", "chroot")
REFUSED = DOCKER_REFUSED + HARNESS_REFUSED
# A scoring process also may not signal to another through a file both can open (a lock on the
# same inode, a watch on a file the other reads): the batch check's process must learn nothing of
# the protocol batches' (harness.execution.scorers).
SCORER_REFUSED = ("flock", "inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_init")
# fcntl's commands that lock, lease or watch: F_GETLK, F_SETLK, F_SETLKW, the open-file-description
# locks F_OFD_GETLK/SETLK/SETLKW, F_SETLEASE, F_GETLEASE, F_NOTIFY.
FCNTL_REFUSED = (5, 6, 7, 36, 37, 38, 1024, 1025, 1026)

# Syscall numbers (from the kernels' syscall tables; tests/test_sandbox.py checks them against
# libseccomp where it is installed). Calls an architecture does not have are absent.
SYSCALLS = {
    "x86_64": (0xC000003E, {
        "acct": 163, "add_key": 248, "bpf": 321, "clock_adjtime": 305, "clock_settime": 227,
        "create_module": 174, "delete_module": 176, "finit_module": 313, "get_kernel_syms": 177,
        "get_mempolicy": 239, "init_module": 175, "ioperm": 173, "iopl": 172, "kcmp": 312,
        "kexec_file_load": 320, "kexec_load": 246, "keyctl": 250, "lookup_dcookie": 212,
        "mbind": 237, "mount": 165, "move_pages": 279, "name_to_handle_at": 303,
        "nfsservctl": 180, "open_by_handle_at": 304, "perf_event_open": 298, "pivot_root": 155,
        "process_vm_readv": 310, "process_vm_writev": 311, "ptrace": 101, "query_module": 178,
        "quotactl": 179, "reboot": 169, "request_key": 249, "set_mempolicy": 238, "setns": 308,
        "settimeofday": 164, "swapon": 167, "swapoff": 168, "sysfs": 139, "_sysctl": 156,
        "umount2": 166, "unshare": 272, "uselib": 134, "userfaultfd": 323, "ustat": 136,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442,
        "execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "socket": 41,
        "memfd_create": 319, "memfd_secret": 447, "chroot": 161,
        "clone": 56, "clone3": 435,
        "flock": 73, "fcntl": 72, "inotify_init": 253, "inotify_init1": 294, "inotify_add_watch": 254,
        "fanotify_init": 300}),
    "aarch64": (0xC00000B7, {
        "acct": 89, "add_key": 217, "bpf": 280, "clock_adjtime": 266, "clock_settime": 112,
        "delete_module": 106, "finit_module": 273, "get_mempolicy": 236, "init_module": 105,
        "kcmp": 272, "kexec_file_load": 294, "kexec_load": 104, "keyctl": 219,
        "lookup_dcookie": 18, "mbind": 235, "mount": 40, "move_pages": 239,
        "name_to_handle_at": 264, "nfsservctl": 42, "open_by_handle_at": 265,
        "perf_event_open": 241, "pivot_root": 41, "process_vm_readv": 270,
        "process_vm_writev": 271, "ptrace": 117, "quotactl": 60, "reboot": 142,
        "request_key": 218, "set_mempolicy": 237, "setns": 268, "settimeofday": 170,
        "swapon": 224, "swapoff": 225, "umount2": 39, "unshare": 97, "userfaultfd": 282,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442,
        "execve": 221, "execveat": 281, "socket": 198, "memfd_create": 279, "memfd_secret": 447,
        "chroot": 51, "clone": 220, "clone3": 435,
        "flock": 32, "fcntl": 25, "inotify_init1": 26, "inotify_add_watch": 27, "fanotify_init": 262}),
}
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL = 0x7FFF0000, 0x80000000
CLONE_THREAD = 0x00010000


def _errno(e: int) -> int:
    return 0x00050000 | e


def seccomp_program(machine: str) -> list[tuple[int, int, int, int]]:
    """The BPF filter, as (code, jt, jf, k) instructions, for ``machine`` (platform.machine())."""
    arch, nr = SYSCALLS[machine]
    refused = [nr[name] for name in REFUSED if name in nr]
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


def scorer_program(machine: str) -> list[tuple[int, int, int, int]]:
    """A second filter, stacked on the first in a scoring process: no file locks, leases or
    watches (:data:`SCORER_REFUSED`, :data:`FCNTL_REFUSED`)."""
    arch, nr = SYSCALLS[machine]
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, 4), (_JEQ, 1, 0, arch), (_RET, 0, 0, _KILL), (_LD_W_ABS, 0, 0, 0)]
    for n in [nr[name] for name in SCORER_REFUSED if name in nr]:
        prog += [(_JEQ, 0, 1, n), (_RET, 0, 0, _errno(errno.EPERM))]
    prog += [(_JEQ, 1, 0, nr["fcntl"]), (_RET, 0, 0, _ALLOW),
             (_LD_W_ABS, 0, 0, 24)]  # low 32 bits of args[1], the command
    for cmd in FCNTL_REFUSED:
        prog += [(_JEQ, 0, 1, cmd), (_RET, 0, 0, _errno(errno.EPERM))]
    return prog + [(_RET, 0, 0, _ALLOW)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def install_seccomp(scorer: bool = False) -> None:
    """The filter (and, for a scoring process, the second one on top of it). Irreversible."""
    machine = platform.machine()
    if machine not in SYSCALLS:
        raise OSError(f"no seccomp filter for {machine}; untrusted runs need x86_64 or aarch64")
    _install(seccomp_program(machine))
    if scorer:
        _install(scorer_program(machine))


def _install(prog: list[tuple[int, int, int, int]]) -> None:
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
