"""How a command's runs execute, built once from the command line (harness/cli/common.py
``execution_options``) and passed down to the sweeps and executors as one :class:`Execution`: the
device, the data folder, precision, speed options, resume, how each run is held
(:class:`Isolation`) and how its file is vetted (harness.vetting.vet.Vetting). None of it is part
of a run's identity except precision (a bf16 run is another run than its fp32 twin)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from harness.protocol.spec import RunSpec, SpeedOptions
from harness.vetting.vet import Vetting

DEFAULT_TIMEOUT_S = 24 * 3600.0


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class Isolation:
    """How each run is held: wall-clock ``timeout_s`` (None: none), ``memory_bytes`` of resident
    memory for its processes (None: 80% of this machine's memory shared out over the runs), and,
    when ``untrusted``, the split into sandboxes (``namespaces=False`` only when explicitly
    overridden: then without bubblewrap)."""

    timeout_s: float | None = DEFAULT_TIMEOUT_S
    memory_bytes: int | None = None
    untrusted: bool = False
    namespaces: bool = True
    disk_quota_bytes: int = 1 << 30  # a sandboxed training process's /state tmpfs (in memory)

    def memory_for(self, slots: int) -> int:
        return self.memory_bytes or int(0.8 * physical_memory() / max(1, slots))


@dataclass(frozen=True)
class Execution:
    """Everything a command says about how its runs execute; see the module's docstring."""

    device: str = "auto"  # auto (a CUDA GPU when present), cpu, cuda or cuda:N
    data_root: str | None = None  # None: $HARNESS_DATA, else the cache
    download: bool = True
    precision: str = "fp32"
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    resume: bool = True
    isolation: Isolation = field(default_factory=Isolation)
    vetting: Vetting = field(default_factory=Vetting)

    def apply(self, spec: RunSpec) -> RunSpec:
        """``spec`` as it executes here (its key unchanged)."""
        return spec.with_(device=self.device, data_root=self.data_root, download=self.download,
                          speed=self.speed, resume=self.resume)
