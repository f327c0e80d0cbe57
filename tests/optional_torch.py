"""torch where it is installed, else None, and the marker of the tests that compare
against it: in an environment without torch (``pip install edgeag``, no extras) they are
skipped and the rest of their module runs."""

import pytest

try:
    import torch
except ImportError:  # not installed, or blocked with sys.modules["torch"] = None
    torch = None

TORCH_MISSING = "compares against torch, which is not installed (pip install 'edgeag[torch]')"

needs_torch = pytest.mark.skipif(torch is None, reason=TORCH_MISSING)
"""Skip the test where torch is not installed."""
