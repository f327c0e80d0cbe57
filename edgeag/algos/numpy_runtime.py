"""What every algorithm's numpy engine shares: the runtime it adds to a plan, and its
threads and warm-up before the floor is measured."""

from __future__ import annotations

import numpy as np

from edgeag.engine import set_blas_threads
from edgeag.memory import MiB, PlanItem, fix_mmap_threshold

__all__ = ["RUNTIME", "prepare"]

RUNTIME = PlanItem("numpy runtime", 2 * MiB,
                   "BLAS buffers and allocator arenas first used by training (measured)")
"""Anonymous memory a run adds beyond its arrays (`scripts/bench_engine.py`)."""


def prepare(threads: int) -> str:
    """BLAS threads for the run, large allocations given back to the kernel when freed
    (`edgeag.memory.fix_mmap_threshold`), then one small forward/backward so BLAS maps
    its kernels and allocates its buffers before the floor is measured. Every algorithm
    on the numpy engine prepares this way."""
    blas = set_blas_threads(threads)
    fixed = fix_mmap_threshold()
    a = np.ones((256, 256), np.float32)
    np.matmul(a, a.T)
    np.matmul(a.T, a)
    return f"numpy engine ({blas.describe()}" + ("; large arrays mmapped)" if fixed else ")")
