"""Process memory: RSS readings, the kernel's high-water mark, tensor allocation peaks."""

from __future__ import annotations

import resource
import sys
import weakref
from typing import Callable

MiB = 1 << 20


def proc_status() -> dict[str, int]:
    """Bytes of VmRSS, VmHWM, RssAnon and RssFile from /proc/self/status (Linux), or
    ru_maxrss alone where /proc is missing."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    if "VmHWM" not in out:
        out["VmHWM"] = peak_rss_bytes()
    return out


def peak_rss_bytes() -> int:
    """The kernel's own high-water mark of this process's RSS, in bytes.

    Prefers VmHWM: ``ru_maxrss`` survives ``exec`` and can report a parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
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
