"""The run directory: where a training run keeps everything, written atomically.

::

    runs/<run>/
      config.toml          fully resolved configuration (+ device, budget, edgeag version)
      metrics.jsonl        one JSON object per iteration (keys in README "Metrics")
      checkpoints/latest.pt  policy, optimizer, normalisers, RNGs, env state
      rss.csv              the budget guard's RSS samples (seconds, bytes)
      summary.json         the outcome (written at the end, also on a budget stop)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgeag.errors import EdgeagError

CHECKPOINT_FORMAT = 1


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path`` and then move it into
    place, so a reader (or a crash) never sees half a file. The file gets the usual
    permissions of a new file (``0o666`` less the umask), not the temporary file's 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.toml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    rss = property(lambda self: self.path / "rss.csv")
    checkpoint = property(lambda self: self.path / "checkpoints" / "latest.pt")

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, iterations: int) -> None:
        """Keep the first ``iterations`` rows (those the checkpoint has seen), so a
        resumed run's metrics.jsonl reads as if never interrupted."""
        if not self.metrics.exists():
            return
        rows = self.metrics.read_text().splitlines(keepends=True)
        keep = [r for r in rows if json.loads(r).get("time/iterations", 0) <= iterations]
        write_text(self.metrics, "".join(keep))

    def append_rss(self, series: list[tuple[float, int]], t_offset: float) -> None:
        new = not self.rss.exists()
        with open(self.rss, "a") as f:
            if new:
                f.write("seconds,rss_bytes\n")
            f.writelines(f"{t + t_offset:.3f},{rss}\n" for t, rss in series)

    def save_checkpoint(self, state: dict, files: dict | None = None) -> None:
        """Write ``state`` to ``checkpoints/latest.pt``. ``files`` (``{name: write(f)}``,
        names like ``replay-<step>.npy``) are written first beside it, each atomically,
        so latest.pt only ever names complete files; the same kind of file from older
        checkpoints (same prefix before the ``-``) is removed afterwards."""
        files = files or {}
        for name, write in files.items():
            atomic_write(self.checkpoint.parent / name, write)
        state = {"format": CHECKPOINT_FORMAT, **_to_torch(state)}
        atomic_write(self.checkpoint, lambda f: torch.save(state, f))
        prefixes = {name.split("-")[0] + "-" for name in files}
        for old in self.checkpoint.parent.iterdir():
            if old.name not in files and any(old.name.startswith(p) for p in prefixes):
                old.unlink()

    def load_checkpoint(self, purpose: str = "resume") -> dict:
        return load_checkpoint(self.checkpoint, purpose)


def load_checkpoint(path: Path, purpose: str = "resume") -> dict:
    """A checkpoint written by `RunDir.save_checkpoint` (``torch.load(weights_only=True)``);
    errors read "cannot <purpose>: ..."."""
    try:
        state = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise EdgeagError(f"cannot {purpose}: no checkpoint at {path}") from None
    except Exception as e:
        raise EdgeagError(f"cannot {purpose}: {path} is not a readable edgeag checkpoint "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise EdgeagError(f"cannot {purpose}: {path} is not an edgeag checkpoint "
                          f"(format {CHECKPOINT_FORMAT})")
    return _to_numpy(state)


# numpy arrays travel as {"__ndarray__": tensor}: weights_only loading accepts tensors.
def _to_torch(tree):
    if isinstance(tree, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(tree).copy())}
    if isinstance(tree, dict):
        return {k: _to_torch(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_torch(v) for v in tree)
    return tree


def _to_numpy(tree):
    if isinstance(tree, dict):
        if set(tree) == {"__ndarray__"}:
            return tree["__ndarray__"].numpy()
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(v) for v in tree)
    return tree
