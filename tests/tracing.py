"""The peak of numpy's allocations while a function runs (tracemalloc sees them)."""

import tracemalloc


def traced_peak(fn) -> int:
    """Bytes allocated at the peak of ``fn()`` above what was allocated before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
