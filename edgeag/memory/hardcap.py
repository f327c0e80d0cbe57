"""``--hard-cap``: let the kernel enforce the budget as well as the guard.

The budget counts anonymous memory (RssAnon + RssShmem, `edgeag.memory.Reading`): what
the kernel cannot reclaim, and what a cgroup's ``memory.max`` OOM-kills on. Two ways to
have the kernel hold a process to it, the better first:

- **a cgroup of its own** (cgroup v2 ``memory.max``, or cgroup v1
  ``memory.limit_in_bytes`` where only v1 has a memory controller), set to the budget,
  with swap disabled for it, so that pages the budget counts cannot be swapped out
  to make room. Mapped library files are reclaimed, not killed for; a process whose
  anonymous memory reaches the limit is OOM-killed by the kernel
  (`edgeag.train.launch` runs training in a child inside it and reports that);
- **RLIMIT_DATA** elsewhere: private data mappings may grow by the budget's headroom
  over the anonymous memory already held, so an allocation beyond it fails at once
  with a catchable error and the run stops at its last checkpoint.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from edgeag.errors import EdgeagError

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Cgroup:
    """A memory cgroup edgeag made for one training run."""

    path: Path
    version: int

    @property
    def description(self) -> str:
        limit = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        return f"cgroup v{self.version} {limit} ({self.path})"

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def oom_kills(self) -> int:
        """How many processes the kernel killed in it for crossing its limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def _own_cgroup(version: int) -> Path | None:
    """This process's cgroup directory in the v2 hierarchy, or in v1's memory one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        ident, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if version == 2 and ident == "0" and controllers == "":
            for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
                if (root / "cgroup.controllers").exists():
                    return root / path.lstrip("/")
        if version == 1 and "memory" in controllers.split(","):
            return CGROUP_ROOT / "memory" / path.lstrip("/")
    return None


def make_cgroup(budget_bytes: int, name: str) -> Cgroup | None:
    """A new cgroup below this process's own, limited to ``budget_bytes`` with
    no swap; None where no memory controller can be used here (not Linux, no cgroup
    memory controller, or no permission)."""
    for version in (2, 1):
        parent = _own_cgroup(version)
        if parent is None:
            continue
        if version == 2:
            try:
                enabled = (parent / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "memory" not in enabled:
                continue
        path = parent / name
        try:
            path.mkdir()
        except OSError:
            continue
        group = Cgroup(path, version)
        try:
            if version == 2:
                (path / "memory.max").write_text(str(budget_bytes))
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
            else:
                (path / "memory.limit_in_bytes").write_text(str(budget_bytes))
                if (path / "memory.memsw.limit_in_bytes").exists():
                    (path / "memory.memsw.limit_in_bytes").write_text(str(budget_bytes))
        except OSError:
            group.remove()
            continue
        return group
    return None


def cgroup_memory_limit() -> tuple[int, str] | None:
    """The memory limit of the cgroup this process is in, and where it is set, if any."""
    for version, name in ((2, "memory.max"), (1, "memory.limit_in_bytes")):
        path = _own_cgroup(version)
        if path is None:
            continue
        try:
            value = (path / name).read_text().strip()
        except OSError:
            continue
        if value != "max" and int(value) < 1 << 60:
            return int(value), f"cgroup v{version} {name} ({path})"
    return None


def _vm_data() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmData in /proc/self/status")


def apply_rlimit(budget_bytes: int, anon_bytes: int) -> str:
    """Let private data mappings grow by ``budget_bytes - anon_bytes`` (the budget's
    headroom over what is held now) from their current size, with RLIMIT_DATA: an
    allocation beyond it fails at once with a catchable error. Returns what was set."""
    try:
        limit = _vm_data() + max(0, budget_bytes - anon_bytes)
    except OSError:
        limit = budget_bytes
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY and hard < limit:
        raise EdgeagError(f"--hard-cap: the hard RLIMIT_DATA ({hard:,} bytes) is below the "
                          f"limit the budget needs ({limit:,} bytes)")
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return f"RLIMIT_DATA = {limit:,} bytes (data mappings now + the budget's headroom)"


BUDGET_KILLED = "OOM-killed by the kernel when the anonymous memory reached the limit"

IN_CGROUP_ENV = "EDGEAG_HARD_CAP_CGROUP"
"""Set for a training process that runs inside the cgroup its parent made."""


def inherited_cgroup() -> str | None:
    return os.environ.get(IN_CGROUP_ENV)
