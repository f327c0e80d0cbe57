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
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from edgeag.errors import EdgeagError
from edgeag.memory import read_memory

ROW_SYNTAX = "NAME[:SETTING=VALUE...] separated by commas, e.g. alphagrad,adam,sgd:momentum=0.9"
RESERVED = ("env_id", "optimizer", "seed")
"""Settings compare chooses itself, so a row may not set them."""
KILL_POLL_SECONDS = 0.02
"""How often a watched child's memory is read (/proc/PID/status)."""


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
    from edgeag.optim_rules import OPTIMIZER_NAMES
    from edgeag.train.launch import check_optimizer_available

    rows = []
    for item in split_top_level(text):
        name, *settings = item.strip().split(":")
        if name not in OPTIMIZER_NAMES:
            raise EdgeagError(f"invalid --optimizers entry {item.strip()!r}: unknown optimizer "
                              f"{name!r} (accepted: {', '.join(OPTIMIZER_NAMES)}; "
                              f"syntax {ROW_SYNTAX})")
        if torch_available():  # else compare refuses the torch rows, this one included
            check_optimizer_available(name)
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


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 1, 2, 3; ``"1,7,9"`` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",")]
            ok = len(set(seeds)) == len(seeds) and all(s >= 0 for s in seeds)
        else:
            seeds = list(range(1, int(text) + 1))
            ok = bool(seeds)
    except ValueError:
        ok = False
    if not ok:
        raise EdgeagError(f"invalid --seeds {text!r}: expected a count such as 3 (seeds 1-3) "
                          "or distinct non-negative seeds such as 1,7,9")
    return seeds


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


@dataclass
class Child:
    exit_code: int | None
    """None when killed for crossing ``kill_above``."""
    seconds: float
    max_seen_anon_bytes: int
    """The highest anonymous memory (RssAnon + RssShmem) read while watching it."""
    last_error: str
    """The child's last ``edgeag: error:`` line (without the prefix), or ''."""


def run_child(cmd: list[str], log: Path, kill_above: int | None = None,
              threads: int | None = None) -> Child:
    """Run ``cmd`` with its output in ``log``. With ``kill_above``, read its anonymous
    memory (what budgets count) every 20 ms and kill it the moment it is seen above
    that many bytes."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    seen = 0
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            watched = proc.pid if kill_above is not None else None
            while True:
                try:
                    code = proc.wait(timeout=KILL_POLL_SECONDS if watched else None)
                    break
                except subprocess.TimeoutExpired:
                    pass
                try:
                    seen = max(seen, read_memory(watched).anon)
                except psutil.NoSuchProcess:
                    continue
                if seen > kill_above:
                    proc.kill()
                    proc.wait()
                    code = None
                    break
        except BaseException:  # Ctrl-C or an error here: never leave the child running
            proc.kill()
            proc.wait()
            raise
    text = log.read_text(errors="replace")
    errors = [line for line in text.splitlines() if line.startswith("edgeag: error: ")]
    return Child(code, time.monotonic() - t0, seen,
                 errors[-1][len("edgeag: error: "):] if errors else "")
