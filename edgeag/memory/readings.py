"""Readings of a process's memory from the kernel: RSS split into anonymous and
file-backed pages (what budgets count is the anonymous part), the high-water mark, the
floor a run starts from, and glibc's mmap threshold."""

from __future__ import annotations

import re
import resource
import sys
from dataclasses import dataclass

import psutil

MiB = 1 << 20


def proc_status() -> dict[str, int]:
    """Bytes of VmRSS, VmHWM, RssAnon, RssFile and RssShmem from /proc/self/status
    (Linux); empty where /proc is missing."""
    return _status("/proc/self/status")


def _status(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return out
    for key, value in _STATUS_FIELDS.findall(text):
        out[key.decode()] = int(value) * 1024
    return out


_STATUS_FIELDS = re.compile(rb"^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem):\s+(\d+) kB", re.M)


@dataclass(frozen=True)
class Reading:
    """One reading of a process's resident memory, in bytes.

    ``anon`` is what edgeag's budgets count: anonymous plus shared-memory pages
    (``RssAnon + RssShmem``), the memory the kernel cannot take back without swap and
    what a cgroup's ``memory.max`` OOM-kills on. ``file`` is mapped files (library code):
    clean pages the kernel drops and re-reads under pressure, whose resident size
    depends on the page cache (more right after ``pip install``). ``rss = anon + file``.
    """

    rss: int
    anon: int
    file: int


def read_memory(pid: int | str = "self") -> Reading:
    """A `Reading` of process ``pid`` (default this one). Without /proc (macOS), the
    whole RSS counts as anonymous: the budget is then never looser than the RSS."""
    status = _status(f"/proc/{pid}/status")
    if "RssAnon" not in status:
        rss = psutil.Process(None if pid == "self" else int(pid)).memory_info().rss
        return Reading(rss, rss, 0)
    anon = status["RssAnon"] + status.get("RssShmem", 0)
    return Reading(anon + status.get("RssFile", 0), anon, status.get("RssFile", 0))


BUDGET_COUNTS = "RssAnon + RssShmem"
"""The quantity a budget caps (see `Reading`), as reports name it."""


def peak_rss_bytes() -> int:
    """The kernel's own high-water mark of this process's RSS, in bytes.

    Prefers VmHWM: ``ru_maxrss`` survives ``exec`` and can report a parent's peak.
    """
    hwm = proc_status().get("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@dataclass(frozen=True)
class Floor:
    """Memory of this process after the imports training needs: what no setting can
    shrink. ``anon_bytes`` (RssAnon + RssShmem) is what the plan builds on;
    ``rss_bytes = anon_bytes + file_bytes``."""

    rss_bytes: int
    anon_bytes: int
    file_bytes: int


def measure_floor() -> Floor:
    """The current memory, split into anonymous (+ shared) and file-backed pages."""
    r = read_memory()
    return Floor(r.rss, r.anon, r.file)


MMAP_THRESHOLD = 1 << 20
"""Allocations at least this large get pages of their own (see `fix_mmap_threshold`).
Smaller ones come from the heap: a temporary of a few hundred KiB (TD3's 256 x 400
activations) taken from fresh pages every minibatch costs its page faults each time,
which made a 400-300 TD3 update 1.4x slower at 256 KiB than at 1 MiB
(`scripts/bench_offpolicy.py`'s TD3 row; measured 14.7 against 10.3 ms)."""


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Have glibc's malloc serve every allocation of ``nbytes`` or more from its own
    ``mmap`` and give it back to the kernel when freed, instead of raising the threshold
    after the first large free (glibc's default) and keeping freed blocks in the heap,
    where they fragment: a training loop that allocates and frees a few MiB of
    temporaries per minibatch then holds ~15 MiB less (measured on a 2048-wide policy).
    Returns whether it applied (glibc only)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))
