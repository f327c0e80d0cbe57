"""What a comparison is made of: rows (an optimizer with its settings), seeds, the
device it ran on, and `edgeag train` children, each in its own fresh process.

A child reports its own peaks into ``summary.json``: of its anonymous memory (RssAnon +
RssShmem, what budgets count, sampled) and of its whole RSS (the kernel's high-water
mark, VmHWM). ``ru_maxrss`` would not do: it survives ``exec`` and can report the
parent's peak.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from edgeag.errors import EdgeagError
from edgeag.train import children

ROW_SYNTAX = "NAME[:SETTING=VALUE...] separated by commas, e.g. alphagrad,adam,sgd:momentum=0.9"
RESERVED = ("env_id", "optimizer", "seed")
"""Settings compare chooses itself, so a row may not set them."""


@dataclass(frozen=True)
class Row:
    """One row of a report: a registered optimizer and PPO settings (``--set``)."""

    optimizer: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return " ".join([self.optimizer, *(f"{k}={v}" for k, v in self.options)])

    @property
    def slug(self) -> str:
        """The label as a file name."""
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.label).strip("-")

    def set_args(self) -> list[str]:
        return [arg for k, v in self.options for arg in ("--set", f"{k}={v}")]

    def as_dict(self) -> dict:
        return {"label": self.label, "optimizer": self.optimizer, "options": dict(self.options)}


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside brackets (so ``hidden=[64, 64]`` stays whole)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return parts + [current]


def parse_rows(text: str) -> list[Row]:
    """``"alphagrad,adam,sgd:momentum=0.9"`` -> rows; EdgeagError naming the bad entry."""
    from edgeag.errors import torch_available
    from edgeag.optim.registry import OPTIMIZERS as OPTIMIZER_NAMES
    from edgeag.optim.registry import check_available

    rows = []
    for item in split_top_level(text):
        name, *settings = item.strip().split(":")
        if name not in OPTIMIZER_NAMES:
            raise EdgeagError(f"invalid --optimizers entry {item.strip()!r}: unknown optimizer "
                              f"{name!r} (accepted: {', '.join(OPTIMIZER_NAMES)}; "
                              f"syntax {ROW_SYNTAX})")
        if torch_available():  # else compare refuses the torch rows, this one included
            check_available(name)
        options = []
        for setting in settings:
            key, eq, value = (s.strip() for s in setting.partition("="))
            if not eq or not key or not value:
                raise EdgeagError(f"invalid --optimizers entry {item.strip()!r}: expected "
                                  f"SETTING=VALUE after ':' ({ROW_SYNTAX})")
            if key in RESERVED:
                raise EdgeagError(f"invalid --optimizers entry {item.strip()!r}: {key} is set "
                                  f"by compare itself (use --env, --seeds or another row)")
            options.append((key, value))
        row = Row(name, tuple(options))
        if row in rows:
            raise EdgeagError(f"invalid --optimizers: {row.label!r} is listed twice")
        rows.append(row)
    return rows


def _torch_version() -> str:
    import torch

    return torch.__version__


def device_info(profile) -> dict:
    """The machine a report was measured on, and the profile it was planned for (``torch``
    None where torch is not installed)."""
    import gymnasium

    from edgeag import __version__
    from edgeag.errors import torch_available

    return {
        "profile": profile.name if profile else None,
        "profile_arch": profile.arch if profile else None,
        "profile_ram_bytes": profile.ram_bytes if profile else None,
        "hostname": platform.node(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cores": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "torch": _torch_version() if torch_available() else None,
        "gymnasium": gymnasium.__version__,
        "edgeag": __version__,
    }


def spread(values: list[float]) -> dict | None:
    """Median, min, max and range (max - min) of ``values``; None when empty."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "range": max(values) - min(values), "n": len(values)}


def train_command(env: str, row: Row, seed: int, out: Path, args: list[str]) -> list[str]:
    """An `edgeag train` child: ``args`` first, then the row's own settings (which win)."""
    return [sys.executable, "-m", "edgeag.cli", "train", "--env", env, "--optimizer",
            row.optimizer, "--seed", str(seed), "--out", str(out), "--no-progress", *args,
            *row.set_args()]


def run_child(cmd: list[str], log: Path, kill_above: int | None = None,
              threads: int | None = None) -> children.Outcome:
    """Run ``cmd`` with its output in ``log`` (`edgeag.train.children`). With
    ``kill_above``, read its anonymous memory (what budgets count) every
    `children.POLL_SECONDS` and kill it the moment it is seen above that many bytes
    (its ``exit_code`` is then None). Ctrl-C or an error: it is killed at once."""
    return children.run(children.ChildSpec(cmd, log=log, threads=threads,
                                           kill_above=kill_above, grace=0))
