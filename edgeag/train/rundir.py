"""The run directory: where a training run keeps everything, written atomically.

::

    runs/<run>/
      config.toml          fully resolved configuration (+ device, budget, edgeag version)
      metrics.jsonl        one JSON object per iteration (keys: docs/run-directory.md, "Metrics")
      checkpoints/latest.safetensors  policy, optimizer, normalisers, RNGs, env state
                           (`edgeag.train.checkpoint`: no pickle, readable without torch)
      checkpoints/best.safetensors    the best periodic evaluation's (``--eval-every``)
      rss.csv              the budget guard's samples (seconds, rss_bytes, anon_bytes),
                           appended as they are taken
      summary.json         the outcome (written at the end, also on a budget stop)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeag.errors import EdgeagError
from edgeag.io import atomic_write, write_text
from edgeag.train import checkpoint as _checkpoint

CHECKPOINT_FORMAT = _checkpoint.FORMAT
"""The format `RunDir.save_checkpoint` writes (`edgeag.train.checkpoint`)."""
TORCH_CHECKPOINT_FORMAT = 1
"""The format of ``checkpoints/latest.pt``, written by edgeag before safetensors
checkpoints: ``torch.save`` of the state, numpy arrays wrapped as
``{"__ndarray__": tensor}``. Read with ``torch.load(weights_only=True)`` when torch is
installed."""
CHECKPOINT_NAME = "latest.safetensors"
BEST_CHECKPOINT_NAME = "best.safetensors"
TORCH_CHECKPOINT_NAME = "latest.pt"


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.toml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    rss = property(lambda self: self.path / "rss.csv")

    @property
    def checkpoint(self) -> Path:
        """The checkpoint to resume or export from: ``checkpoints/latest.safetensors``,
        or, in a run written before it (and not resumed since), ``checkpoints/latest.pt``."""
        new = self.path / "checkpoints" / CHECKPOINT_NAME
        old = self.path / "checkpoints" / TORCH_CHECKPOINT_NAME
        return old if not new.exists() and old.exists() else new

    best_checkpoint = property(lambda self: self.path / "checkpoints" / BEST_CHECKPOINT_NAME)
    """The best policy of a run trained with periodic evaluation (``eval_every``): a
    checkpoint like ``latest`` (without the replay buffer), with its ``eval_return``."""

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
        """Write ``state`` to ``checkpoints/latest.safetensors`` (`edgeag.train.checkpoint`;
        straight from the arrays, no second copy in memory). ``files`` (``{name:
        write(f)}``, names like ``replay-<step>.npy``) are written first beside it, each
        atomically, so the checkpoint only ever names complete files; the same kind of
        file from older checkpoints (same prefix before the ``-``) is removed afterwards,
        and so is an older run's ``latest.pt``."""
        files = files or {}
        folder = self.path / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp"):  # left by a killed process
            stale.unlink(missing_ok=True)
        for name, write in files.items():
            atomic_write(folder / name, write)
        atomic_write(folder / CHECKPOINT_NAME, lambda f: _checkpoint.save(f, state))
        (folder / TORCH_CHECKPOINT_NAME).unlink(missing_ok=True)
        prefixes = {name.split("-")[0] + "-" for name in files}
        for old in folder.iterdir():
            if old.name not in files and any(old.name.startswith(p) for p in prefixes):
                old.unlink()

    def load_checkpoint(self, purpose: str = "resume") -> dict:
        return load_checkpoint(self.checkpoint, purpose)


def load_checkpoint(path: Path, purpose: str = "resume") -> dict:
    """The state in the checkpoint ``path``: a ``.safetensors`` file `RunDir.save_checkpoint`
    wrote (read without pickle, and without torch unless it holds torch tensors), or an
    older run's ``latest.pt`` (``torch.load(weights_only=True)``; needs torch). Errors
    read "cannot <purpose>: ..." and name the file."""
    path = Path(path)
    if path.suffix == ".pt":
        return _load_torch_checkpoint(path, purpose)
    try:
        return _checkpoint.load(path)
    except FileNotFoundError:
        raise EdgeagError(f"cannot {purpose}: no checkpoint at {path}") from None
    except _checkpoint.NeedsTorch:
        raise EdgeagError(f"cannot {purpose}: {path} holds torch tensors (a run trained with "
                          f"torch), and torch is not installed; install it (pip install torch), "
                          f"or read the arrays as numpy arrays with "
                          f"edgeag.train.checkpoint.load(path, numpy_only=True)") from None
    except Exception as e:  # noqa: BLE001 (whatever the file holds, a one-line refusal)
        detail = str(e).splitlines()[0][:120] if str(e) else ""
        raise EdgeagError(f"cannot {purpose}: {path} is not a readable edgeag checkpoint "
                          f"({type(e).__name__}: {detail}; accepted: a safetensors file whose "
                          f"{_checkpoint.METADATA_KEY!r} metadata has format "
                          f"{CHECKPOINT_FORMAT})") from None


def _load_torch_checkpoint(path: Path, purpose: str) -> dict:
    """An older run's ``latest.pt`` (format 1), read as before: ``torch.load`` with
    ``weights_only=True`` (tensors and plain data only, no code)."""
    try:
        import torch
    except ImportError:
        raise EdgeagError(
            f"cannot {purpose}: {path} is a format-{TORCH_CHECKPOINT_FORMAT} checkpoint "
            f"(torch.save), which only torch can read; install torch (pip install torch) "
            f"and resume the run once (edgeag train --resume {path.parent.parent}): its next "
            f"checkpoint is {CHECKPOINT_NAME}, which needs no torch") from None
    try:
        state = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise EdgeagError(f"cannot {purpose}: no checkpoint at {path}") from None
    except Exception as e:  # noqa: BLE001
        raise EdgeagError(f"cannot {purpose}: {path} is not a readable edgeag checkpoint "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != TORCH_CHECKPOINT_FORMAT:
        raise EdgeagError(f"cannot {purpose}: {path} is not an edgeag checkpoint "
                          f"(format {TORCH_CHECKPOINT_FORMAT})")
    state = _to_numpy(state)
    del state["format"]
    return state


def _seconds(csv_line: str) -> float:
    try:
        return float(csv_line.split(",", 1)[0])
    except ValueError:  # a line cut short by a kill
        return float("inf")


def _to_numpy(tree):
    """A format-1 tree with its ``{"__ndarray__": tensor}`` wrappers turned back into
    numpy arrays."""
    if isinstance(tree, dict):
        if set(tree) == {"__ndarray__"}:
            return tree["__ndarray__"].numpy()
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(v) for v in tree)
    return tree
