"""BLAS threads for the numpy engine, set on purpose.

A small policy's matmuls are too small to split: on a loaded 2-core machine OpenBLAS's
default threads make an update several times slower than one thread
(``scripts/bench_engine.py``). `set_blas_threads` limits numpy's BLAS through
threadpoolctl and keeps the limit for the rest of the run. It leaves the BLAS library's
environment variables (``OPENBLAS_*``) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["THREADS_CROSSOVER_MACS", "BlasThreads", "blas_threads", "set_blas_threads",
           "workload_threads"]

THREADS_CROSSOVER_MACS = 1 << 25
"""Below this many multiply-adds in an update's largest matmul, a run uses one thread.

Measured on a 2-core x86-64 machine, whole ``edgeag train`` PPO CartPole runs with 2
BLAS threads against 1 (medians of paired runs): hidden 64-64 (2^20 multiply-adds at
batch 256) took 1.21x the time, 256-256 (2^24) 1.03x, 512-512 (2^26) 0.78x; the
crossover is set between the last two. The update alone gains earlier
(``scripts/bench_threads.py``: 1.15x faster from 2^22), but a run also does many small
matmuls (the rollout's batch is the number of envs), and with the other core busy a
second thread made every matmul from 2^20 to 2^32 multiply-adds 5-20% slower."""


def workload_threads(allowed: int, macs: int) -> tuple[int, str]:
    """The threads a run uses: one when its largest matmul (``macs`` multiply-adds) is
    below `THREADS_CROSSOVER_MACS`, else ``allowed`` (the profile's cores or
    ``--threads``: an upper bound, never a floor); and why, in words."""
    if allowed <= 1:
        return 1, "1 thread allowed"
    if macs < THREADS_CROSSOVER_MACS:
        return 1, (f"largest matmul {macs:,} multiply-adds, below the "
                   f"{THREADS_CROSSOVER_MACS:,} where a second thread pays: 1 of "
                   f"{allowed} allowed")
    return allowed, (f"largest matmul {macs:,} multiply-adds, at least "
                     f"{THREADS_CROSSOVER_MACS:,}: {allowed} allowed, {allowed} used")

_LIMITS: list = []
"""The live threadpoolctl limiter (kept so the limit lasts the run)."""


@dataclass(frozen=True)
class BlasThreads:
    """The BLAS libraries loaded in this process and the threads each now uses."""

    libraries: tuple[tuple[str, str, int], ...]
    """``(internal_api, version, num_threads)`` per BLAS library (``openblas``, ``mkl``...)."""

    @property
    def threads(self) -> int:
        """Threads of the first BLAS library (numpy's), 0 when none is loaded."""
        return self.libraries[0][2] if self.libraries else 0

    def describe(self) -> str:
        return ", ".join(f"{api} {version}: {n} thread{'s' if n != 1 else ''}"
                         for api, version, n in self.libraries) or "no BLAS library loaded"


def blas_threads() -> BlasThreads:
    """What applies now."""
    import numpy  # noqa: F401  (loads numpy's BLAS before threadpoolctl looks)
    from threadpoolctl import threadpool_info

    return BlasThreads(tuple((info["internal_api"], str(info.get("version")),
                              int(info["num_threads"]))
                             for info in threadpool_info() if info["user_api"] == "blas"))


def set_blas_threads(n: int) -> BlasThreads:
    """Limit numpy's BLAS to ``n`` threads for the rest of the run and report what now
    applies. A later call replaces the earlier limit."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Invalid threads value: {n!r} (accepted: an integer >= 1)")
    import numpy  # noqa: F401
    from threadpoolctl import threadpool_limits

    while _LIMITS:
        _LIMITS.pop().restore_original_limits()
    _LIMITS.append(threadpool_limits(limits=n, user_api="blas"))
    return blas_threads()
