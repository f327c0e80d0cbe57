"""Process memory: RSS readings, the kernel's high-water mark, tensor allocation peaks."""

from __future__ import annotations

import dataclasses

import os
import re
import resource
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable

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


def peak_allocated_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of tensor storage newly allocated (and still alive at the peak) while
    ``fn()`` runs, counted exactly from every op's outputs.

    Imports torch's dispatch machinery (and with it `torch._dynamo`): for benchmarks and
    tests, never for the training path.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class _Tracker(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, int] = {}
            self.current = 0
            self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor)}
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor):
                    continue
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes == 0 or key in self.live or key in inputs:  # in place or a view
                    continue
                self.live[key] = nbytes
                self.current += nbytes
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._free, key)
            return out

        def _free(self, key: int) -> None:
            self.current -= self.live.pop(key, 0)

    import gc
    gc.collect()
    tracker = _Tracker()
    with tracker:
        fn()
    return tracker.peak


# --- floor, plan and guard ---------------------------------------------------------

DYNAMO_IMPORT_BYTES = 70 * MiB
"""Peak RSS that importing `torch._dynamo` adds (measured with torch 2.13 on x86-64:
~68-72 MiB); counted by the plan for optimizers that import it (`torch.optim.*`)."""

RUNTIME_BYTES = 10 * MiB
"""RSS a training loop adds on its first iteration beyond its tensors: code pages of
the kernels it uses for the first time, per-thread buffers, allocator arenas. Measured
with torch 2.13 on x86-64: 10.6 MiB for PPO on CartPole-v1 (1 and 2 threads) after
the floor's warm-up."""

SAMPLE_INTERVAL = 0.05
"""Guard sampling interval in seconds. One reading of /proc/self/status takes tens of
microseconds, so 20 readings a second cost well under 0.1% of one core, while a
crossing is seen within 50 ms."""


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


@dataclass(frozen=True)
class PlanItem:
    name: str
    nbytes: int
    note: str = ""


@dataclass(frozen=True)
class MemoryPlan:
    """An itemised estimate of a training run's peak anonymous memory (`Reading.anon`:
    RssAnon + RssShmem, what the budget counts), against its budget."""

    budget_bytes: int
    items: tuple[PlanItem, ...]

    @property
    def total_bytes(self) -> int:
        return sum(item.nbytes for item in self.items)

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    def with_item(self, item: "PlanItem") -> "MemoryPlan":
        """This plan with ``item`` added before its last item (the runtime's)."""
        return dataclasses.replace(self, items=self.items[:-1] + (item,) + self.items[-1:])

    def table(self) -> str:
        """The breakdown as aligned text lines (MiB and bytes)."""
        lines = [f"  {item.name:24s} {item.nbytes / MiB:9.2f} MiB {item.nbytes:>14,d} B  {item.note}"
                 for item in self.items]
        lines.append(f"  {'total':24s} {self.total_bytes / MiB:9.2f} MiB {self.total_bytes:>14,d} B")
        lines.append(f"  {'budget':24s} {self.budget_bytes / MiB:9.2f} MiB "
                     f"{self.budget_bytes:>14,d} B  {'fits' if self.fits else 'DOES NOT FIT'}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"budget_bytes": self.budget_bytes, "total_bytes": self.total_bytes,
                "fits": self.fits, "items": {i.name: i.nbytes for i in self.items}}


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def plan_training(*, budget_bytes: int, floor_bytes: int, params: list, optimizer_spec,
                  momentum: float = 0.0, fused_backward: bool = False, buffer_bytes: int = 0,
                  buffer_name: str = "rollout buffer", activation_bytes: int = 0,
                  runtime_bytes: int = 0, temporary_bytes: int | None = None,
                  gradient_bytes: int | None = None,
                  extra_items: tuple[PlanItem, ...] = (),
                  slack_fraction: float = 0.10) -> MemoryPlan:
    """Plan a run from its parts. Gradients are every parameter's, or only the largest
    tensor when the update is fused into backward; optimizer state follows the
    optimizer's own rule (`OptimizerSpec.state_bytes`); update temporaries are
    `OptimizerSpec.temporaries` copies of the largest tensor;
    allocator slack is ``slack_fraction`` of the tensors above the floor;
    ``runtime_bytes`` (such as `RUNTIME_BYTES`) is added as its own item;
    ``temporary_bytes`` replaces the update-temporaries rule for updates that differ,
    ``gradient_bytes`` the gradients rule for a fused update whose largest tensors get
    no gradient of their size (AlphaGrad from a layer's gradient factors);
    ``extra_items`` (such as target networks) are added before the slack."""
    trainable = [p for p in params if p.requires_grad]
    param_bytes = tensor_bytes(trainable)
    largest = max((p.numel() * p.element_size() for p in trainable), default=0)
    grad_bytes = largest if fused_backward else param_bytes
    grad_note = "one tensor (fused into backward)" if fused_backward else "one per parameter"
    if gradient_bytes is not None:
        grad_bytes, grad_note = gradient_bytes, "largest formed (large weights: from factors)"
    items = [
        PlanItem("floor", floor_bytes, "measured anonymous memory after the imports"),
        PlanItem("parameters", param_bytes, f"{sum(p.numel() for p in trainable):,} values"),
        PlanItem("gradients", grad_bytes, grad_note),
        PlanItem("optimizer state", optimizer_spec.state_bytes(trainable, momentum),
                 optimizer_spec.name + (f", momentum {momentum}" if momentum else "")),
        PlanItem("update temporaries", largest * optimizer_spec.temporaries,
                 f"{optimizer_spec.temporaries} x largest tensor")
        if temporary_bytes is None else PlanItem("update temporaries", temporary_bytes),
        PlanItem(buffer_name, buffer_bytes),
        PlanItem("activations", activation_bytes, "largest batch, forward + backward"),
        *extra_items,
    ]
    if optimizer_spec.imports_dynamo:
        items.append(PlanItem("torch._dynamo import", DYNAMO_IMPORT_BYTES, "torch.optim"))
    above_floor = sum(i.nbytes for i in items[1:])
    items.append(PlanItem("allocator slack", int(above_floor * slack_fraction),
                          f"{slack_fraction:.0%} of the above"))
    if runtime_bytes:
        items.append(PlanItem("torch runtime", runtime_bytes,
                              "kernels and buffers first used by training (measured)"))
    return MemoryPlan(budget_bytes, tuple(items))


def largest_fitting(plan_for, low: int, high: int) -> int | None:
    """The largest integer setting in [low, high] whose plan fits (plans grow with the
    setting), by bisection; None when even ``low`` does not fit."""
    if not plan_for(low).fits:
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if plan_for(mid).fits:
            low = mid
        else:
            high = mid - 1
    return low


class BudgetGuard:
    """Samples this process's memory on a daemon thread and raises a flag when its
    anonymous memory (`Reading.anon`: RssAnon + RssShmem) crosses the budget; the
    training loop checks :attr:`exceeded` at each update boundary.

    Its state is constant whatever the length of the run (the number of samples, the
    last one and the peaks); with ``csv`` each sample is also appended to that file as
    it is taken (``seconds,rss_bytes,anon_bytes``, flushed), so a run killed with
    SIGKILL keeps its series. :meth:`peak_rss_bytes` is the kernel's high-water mark of
    the whole RSS, so a spike between two samples still shows there.
    """

    CSV_HEADER = "seconds,rss_bytes,anon_bytes\n"

    def __init__(self, budget_bytes: int, interval: float = SAMPLE_INTERVAL,
                 csv: str | os.PathLike | None = None, t_offset: float = 0.0) -> None:
        self.budget_bytes = budget_bytes
        self.interval = interval
        self.t_offset = t_offset
        """Added to every sample's time in the csv (a resumed run's earlier seconds)."""
        self.samples = 0
        self.last: tuple[float, Reading] | None = None
        self.peak_anon_bytes = 0
        """The highest anonymous memory sampled."""
        self.max_sampled_rss_bytes = 0
        self.exceeded_at: float | None = None
        """Monotonic time of the first sample above the budget."""
        self._csv_path = csv
        self._csv = None
        self.write_error: OSError | None = None
        """Why streaming to the csv stopped (a full disk, a file-size limit); sampling
        and the budget go on."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._exceeded = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    @property
    def exceeded(self) -> bool:
        return self._exceeded.is_set()

    def sample(self) -> Reading:
        """Take one reading now (also called by the thread)."""
        reading = read_memory()
        now = time.monotonic()
        with self._lock:
            self.samples += 1
            self.last = (now - self._t0, reading)
            self.peak_anon_bytes = max(self.peak_anon_bytes, reading.anon)
            self.max_sampled_rss_bytes = max(self.max_sampled_rss_bytes, reading.rss)
            if self._csv is not None:
                try:
                    self._csv.write(f"{now - self._t0 + self.t_offset:.3f},{reading.rss},"
                                    f"{reading.anon}\n")
                    self._csv.flush()
                except OSError as e:
                    self.write_error, csv, self._csv = e, self._csv, None
                    try:
                        csv.close()
                    except OSError:
                        pass
        if reading.anon > self.budget_bytes and not self._exceeded.is_set():
            self.exceeded_at = now
            self._exceeded.set()
        return reading

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stream_to(self, csv: str | os.PathLike, t_offset: float = 0.0) -> None:
        """From now on append every sample to ``csv`` (with a header if it is new);
        ``t_offset`` is added to the samples' times (a resumed run's earlier seconds)."""
        new = not os.path.exists(csv) or os.path.getsize(csv) == 0
        f = open(csv, "a", buffering=1 << 16)
        if new:
            f.write(self.CSV_HEADER)
            f.flush()
        with self._lock:
            self.t_offset, self._csv = t_offset, f

    def start(self) -> "BudgetGuard":
        self._t0 = time.monotonic()
        if self._csv_path is not None:
            self.stream_to(self._csv_path, self.t_offset)
        self.sample()
        self._thread = threading.Thread(target=self._run, name="edgeag-budget-guard",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        with self._lock:
            if self._csv is not None:
                try:
                    self._csv.close()
                except OSError as e:
                    self.write_error = self.write_error or e
                self._csv = None

    def __enter__(self) -> "BudgetGuard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def peak_rss_bytes(self) -> int:
        """The kernel's high-water mark of the whole RSS (never below any sample)."""
        return max(peak_rss_bytes(), self.max_sampled_rss_bytes)


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
