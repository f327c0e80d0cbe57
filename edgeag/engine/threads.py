"""BLAS threads for the numpy engine, set on purpose.

A small policy's matmuls are too small to split: on a loaded 2-core machine OpenBLAS's
default threads make an update several times slower than one thread
(``scripts/bench_engine.py``). `set_blas_threads` limits numpy's BLAS through
threadpoolctl and keeps the limit for the rest of the run. It leaves the BLAS library's
environment variables (``OPENBLAS_*``) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BlasThreads", "blas_threads", "set_blas_threads"]

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
