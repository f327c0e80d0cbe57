"""One seed of a trial: an `edgeag train` child in its own process, watched
(`edgeag.train.children`: no database secret in its environment, it dies with its
worker).

While the child trains, its ``metrics.jsonl`` is read as it grows and every
iteration's ``rollout/ep_rew_mean`` is handed to ``on_return(steps, value)``; when
that answers True (the pruner says stop), the child is terminated (SIGTERM, then
SIGKILL after `children.GRACE_SECONDS`) and waited for. Whatever ends the watch,
Ctrl-C or an error included, the child is stopped and reaped before it returns or
raises: no child outlives its trial.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgeag.train import children

POLL_SECONDS = 0.1
"""How often a running child's metrics.jsonl is read."""
TAIL_ITERATIONS = 10
"""Iterations averaged for ``train_return_tail`` (the training return at the end)."""
_REFUSED = re.compile(r"^plan [\d.]+ MiB exceeds the budget")


@dataclass
class SeedRun:
    """What one child did. ``status``: ``done``, ``pruned`` (stopped by the pruner),
    ``refused`` (its plan does not fit the budget: exit 2 before training),
    ``budget`` (stopped at the budget: exit 3), ``failed`` (anything else)."""

    seed: int
    run_dir: Path
    pid: int
    exit_code: int | None
    seconds: float
    status: str
    message: str = ""
    summary: dict | None = None
    curve: list = field(default_factory=list)
    """(env steps, training return) per iteration."""

    @property
    def final_return(self) -> float | None:
        ev = (self.summary or {}).get("final_eval_return")
        return ev["mean"] if ev else None

    def record(self, out: Path) -> dict:
        """The figures a trial keeps of this seed (JSON): every memory figure of
        summary.json (each ``*_bytes`` key), returns, time, where the run is."""
        s = self.summary or {}
        tail = [r for _, r in self.curve[-TAIL_ITERATIONS:] if r is not None]
        try:
            where = str(self.run_dir.relative_to(out))
        except ValueError:
            where = str(self.run_dir)
        return {"seed": self.seed, "run_dir": where, "pid": self.pid,
                "exit_code": self.exit_code, "status": self.status, "message": self.message,
                "process_seconds": round(self.seconds, 2),
                "final_eval_return": self.final_return,
                "train_return_tail": sum(tail) / len(tail) if tail else None,
                **{k: v for k, v in s.items() if k.endswith("_bytes")},
                **{k: s.get(k) for k in ("parameter_count", "steps", "wall_seconds",
                                         "steps_per_second", "stopped") if k in s},
                "curve": [list(point) for point in self.curve]}


def train_command(*, env: str, algo: str, optimizer: str, seed: int, out: Path,
                  args: list[str], sets: dict) -> list[str]:
    """``edgeag train`` for one seed: ``args`` (budget, profile, threads, steps), then
    ``sets`` as ``--set NAME=VALUE`` (the trial's parameters last)."""
    from edgeag.tune.space import format_value

    cmd = [sys.executable, "-m", "edgeag.cli", "train", "--env", env, "--algo", algo,
           "--optimizer", optimizer, "--seed", str(seed), "--out", str(out), "--no-progress",
           *args]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={format_value(value) if not isinstance(value, str) else value}"]
    return cmd


class MetricsTail:
    """New rows of a growing ``metrics.jsonl`` (complete lines only)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def rows(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def run_seed(cmd: list[str], run_dir: Path, seed: int, *, threads: int | None,
             on_return=None) -> SeedRun:
    """Run one `edgeag train` child (output in ``run_dir/train.log``), reporting its
    training return as it goes; ``on_return(steps, value) -> True`` stops it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "train.log"
    tail = MetricsTail(run_dir / "metrics.jsonl")
    curve: list = []
    pruned: list = []

    def read(may_stop: bool = True) -> bool:
        for row in tail.rows():
            steps, value = row.get("time/total_timesteps"), row.get("rollout/ep_rew_mean")
            curve.append((steps, value))
            if value is not None and on_return is not None and on_return(steps, value) \
                    and may_stop:
                return True
        return False

    def prune(child) -> bool:
        if not read():
            return False
        pruned.append(curve[-1])
        return True

    done = children.run(children.ChildSpec(cmd, log=log, threads=threads,
                                           stop_signal=signal.SIGTERM,
                                           poll_seconds=POLL_SECONDS), prune)
    if not pruned:
        read(may_stop=False)  # a run that finished is not pruned; its rows are reported
    return _seed_run(seed, run_dir, log, done, curve, pruned[0] if pruned else None)


def _seed_run(seed: int, run_dir: Path, log: Path, done: children.Outcome, curve: list,
              pruned: tuple | None) -> SeedRun:
    """The `SeedRun` of a child that exited: its status from how it ended."""
    code, last_error = done.exit_code, done.last_error
    run = SeedRun(seed, run_dir, done.pid, code, done.seconds, "failed", curve=curve)
    summary_path = run_dir / "summary.json"
    if pruned is not None:
        run.status = "pruned"
        run.message = f"pruned at step {pruned[0]:,} (training return {pruned[1]:.1f})"
    elif code in (0, 3) and summary_path.exists():
        run.summary = json.loads(summary_path.read_text())
        stopped = run.summary.get("stopped")
        if stopped == "budget":
            run.status = "budget"
            run.message = (f"stopped at the memory budget at step {run.summary['steps']:,} "
                           f"(peak {run.summary['peak_rss_bytes']:,} bytes)")
        elif stopped == "done" and run.final_return is not None:
            run.status = "done"
        else:
            run.message = f"edgeag train stopped ({stopped}) without a final evaluation"
    elif code == 2 and _REFUSED.match(last_error):
        run.status = "refused"
        run.message = f"cannot start: {last_error}"
    else:
        run.message = (f"edgeag train exited {code}"
                       + (f": {last_error}" if last_error else f" (see {log})"))
    return run
