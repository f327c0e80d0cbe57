"""``edgeag train --tensorboard``: TensorBoard event files written without torch, through
the `tensorboardX` package (``pip install 'edgeag[logging]'``: tensorboardX, with
protobuf and numpy; no torch, no tensorflow, no tensorboard).

What it costs, and where the plan counts it (anonymous memory, RssAnon + RssShmem,
what the budget counts):

- **the import** (`prepare`, called before the floor is measured, so it is part of the
  floor): +2.47 MiB (2,592,768 - 2,600,960 B over 7 fresh processes, after numpy and
  gymnasium; the script below). `tensorboardX.writer` tries ``import torch`` at import
  time wherever torch is installed (only to accept torch tensors as values): a plain
  ``import tensorboardX`` measured +128.9 MiB (135,172,096 B, 3 processes) in this venv,
  which has torch. So `prepare` imports tensorboardX with torch, and the other optional
  integrations it probes at import (comet_ml, boto3, google.cloud), blocked, unless the
  run already imported them (the torch engine has torch: then it costs nothing more).
- **the writer** (`open_writer`: its event-logger thread, the feeder thread, pipe and
  semaphore of its `multiprocessing.Queue`, the queued events, the file buffer, the
  protobuf objects): `plan_item`, `WRITER_BYTES`. Measured in fresh processes with the
  script below (numpy, gymnasium, `prepare`; anonymous memory read; `open_writer`; 20
  scalars x N steps, the anonymous memory read every 10 steps and at the end): opening
  +172-180 KiB; peak +244-252 KiB over 5 runs of N = 1,000 and +252 KiB over 2 runs of
  N = 10,000 (bounded: it does not grow with the run). Planned at 1 MiB, the worst
  measured (252 KiB) x 4: margin for a training process, whose allocator arenas and
  thread stacks are laid out differently than in the measurement.

The measurement (``.venv/bin/python measure.py 1000``; tensorboardX 2.6.5, protobuf
7.36.2 with its upb backend, numpy 2.4.6, gymnasium, Python 3.11, x86-64)::

    import sys, tempfile
    from edgeag.memory import read_memory
    import numpy, gymnasium
    from edgeag.train import tblog
    n = int(sys.argv[1])
    a0 = read_memory().anon
    tblog.prepare()
    a = read_memory().anon                      # import: a - a0
    w = tblog.open_writer(tempfile.mkdtemp())
    peak = read_memory().anon
    for step in range(n):
        for k in range(20):
            w.add_scalar(f"group{k % 4}/metric_{k}", step * k / 7.0, step * 2048)
        if step % 10 == 0:
            peak = max(peak, read_memory().anon)
    peak = max(peak, read_memory().anon)        # writer: peak - a
    w.close()
"""

from __future__ import annotations

import os
import sys

from edgeag.errors import EdgeagError
from edgeag.memory import MiB, PlanItem

INSTALL = "pip install 'edgeag[logging]'"
"""What installs the logger's package."""

MAX_QUEUE = 32
"""Events waiting for the writer thread, at most. One iteration logs about 20 scalars,
so a whole iteration's row is queued without the training loop waiting, and the queue
(a `multiprocessing.Queue` of pickled events of ~100 bytes) stays a few KiB whatever
the run's length or speed: when the writer thread lags, ``add_scalar`` waits instead
of memory growing (tensorboardX's default is 10; a large queue, 1,000, measured
+0.7-1.1 MiB at 20 x 1,000 steps)."""

FLUSH_SECS = 10
"""How often the writer thread flushes the event file. The file's buffer is of a fixed
size (Python's buffered writer), so this bounds nothing in memory: it decides how
current TensorBoard's view is and how much a run killed outright (SIGKILL, the kernel
at a hard cap) loses of the event file (at most 10 s; metrics.jsonl has every row).
tensorboardX's default is 120 s."""

WRITER_BYTES = 1 * MiB
"""Anonymous memory the open writer adds beyond its import (see the module docstring:
measured at most 252 KiB, planned with a 4x margin)."""

SUBDIR = "tensorboard"
"""The event files go to ``<run>/tensorboard/``."""

_OPTIONAL = ("torch", "comet_ml", "boto3", "google.cloud")
"""Modules ``import tensorboardX`` tries to import and does without (ImportError is
caught): torch to accept torch tensors, comet_ml, boto3 and google.cloud for uploads.
None of them is needed to write scalars to a local event file."""


def prepare() -> None:
    """Import tensorboardX, with `_OPTIONAL` modules that are not imported yet blocked
    for the time of the import (so a numpy-engine run does not import torch through it:
    +129 MiB). Called before the floor is measured, so its import cost is part of the
    floor. Raises `EdgeagError` if it cannot be imported (see `require`)."""
    if "tensorboardX" in sys.modules and sys.modules["tensorboardX"] is not None:
        return
    blocked = [name for name in _OPTIONAL if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # ``import name`` raises ImportError
    try:
        import tensorboardX  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any failure to import is the same refusal
        raise EdgeagError(_missing_message(e)) from None
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def require() -> None:
    """Raise `EdgeagError` (exit 2), one line naming the missing package and what to
    install, when tensorboardX cannot be imported here. Imports it (as `prepare`)."""
    prepare()


def _missing_message(e: BaseException) -> str:
    if isinstance(e, ModuleNotFoundError) and e.name == "tensorboardX":
        return (f"--tensorboard writes its event files through the tensorboardX package, "
                f"which is not installed: {INSTALL}")
    detail = str(e).splitlines()[0][:120] if str(e) else ""
    return (f"--tensorboard writes its event files through the tensorboardX package, which "
            f"cannot be imported here ({type(e).__name__}{': ' + detail if detail else ''}): "
            f"{INSTALL}")


def open_writer(run_path: str | os.PathLike):
    """A tensorboardX ``SummaryWriter`` into ``<run_path>/tensorboard/`` (created if
    missing; a resumed run adds a new event file beside the earlier ones): call
    ``add_scalar(key, value, step)``, ``flush()``, ``close()``. Its memory is bounded
    (`MAX_QUEUE`) and planned (`plan_item`)."""
    prepare()
    from tensorboardX import SummaryWriter

    return SummaryWriter(os.path.join(os.fspath(run_path), SUBDIR), max_queue=MAX_QUEUE,
                         flush_secs=FLUSH_SECS)


def plan_item() -> PlanItem:
    """The writer's line of the memory plan (its import is in the floor)."""
    return PlanItem("tensorboard logger", WRITER_BYTES,
                    "writer thread, queue, file buffer (measured <= 252 KiB, 4x margin)")


PLAN_ITEM = plan_item()
