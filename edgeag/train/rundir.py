"""The run directory: where a training run keeps everything, written atomically.

::

    runs/<run>/
      config.toml          fully resolved configuration (+ device, budget, edgeag version)
      metrics.jsonl        one JSON object per iteration (keys in README "Metrics")
      checkpoints/latest.pt  policy, optimizer, normalisers, RNGs, env state
      rss.csv              the budget guard's samples (seconds, rss_bytes, anon_bytes),
                           appended as they are taken
      summary.json         the outcome (written at the end, also on a budget stop)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

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
    f = None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as raw:
            f = _Recording(raw)
            write(f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if f is not None and f.error is not None and not isinstance(e, OSError):
            raise f.error from None  # a writer (torch.save) that reports it as its own error
        raise


class _Recording:
    """A binary file that remembers the OSError a write raised (a full disk, a file-size
    limit), so that a writer which wraps it in an error of its own cannot hide it."""

    def __init__(self, raw) -> None:
        self.raw, self.error = raw, None

    def write(self, data) -> int:
        try:
            return self.raw.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self.raw, name)


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

    def truncate_rss(self, seconds: float) -> None:
        """Keep the samples of rss.csv up to ``seconds`` (a resumed run's checkpoint
        time): the budget guard appends to it as it samples."""
        if not self.rss.exists():
            return
        lines = self.rss.read_text().splitlines(keepends=True)
        keep = lines[:1] + [line for line in lines[1:] if _seconds(line) <= seconds]
        write_text(self.rss, "".join(keep))

    def save_checkpoint(self, state: dict, files: dict | None = None) -> None:
        """Write ``state`` to ``checkpoints/latest.pt``. ``files`` (``{name: write(f)}``,
        names like ``replay-<step>.npy``) are written first beside it, each atomically,
        so latest.pt only ever names complete files; the same kind of file from older
        checkpoints (same prefix before the ``-``) is removed afterwards."""
        files = files or {}
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.checkpoint.parent.glob(".*.tmp"):  # left by a killed process
            stale.unlink(missing_ok=True)
        for name, write in files.items():
            atomic_write(self.checkpoint.parent / name, write)
        import torch

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
    import torch

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


def _seconds(csv_line: str) -> float:
    try:
        return float(csv_line.split(",", 1)[0])
    except ValueError:  # a line cut short by a kill
        return float("inf")


# numpy arrays travel as {"__ndarray__": tensor}: weights_only loading accepts tensors.
def _to_torch(tree):
    import torch

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
