"""Kill `edgeag train` with SIGKILL at random moments, checkpoint writes included, and
resume it each time: every checkpoint left behind must load, every resume must go on,
and the run must end with the policy of a run never interrupted, bit for bit.

    python scripts/kill_resume.py --kills 20 [--seed 0] [--out DIR]

Each resumed process is left to write one new checkpoint first (so the run moves on);
then half of the kills are aimed at a checkpoint write (the moment a temporary
checkpoint file appears), the others fall at a uniformly random moment within the
next second.
Prints one line per kill and a summary; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_ARGS = ["--total-steps", "49152", "--threads", "1", "--no-progress",
              "--set", "hidden=[256, 256]", "--set", "checkpoint_every=1",
              "--set", "eval_episodes=2"]
"""A CartPole PPO run of 96 iterations, a checkpoint at each (about 1 MB each)."""


def _train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeag.cli", "train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_at_write(proc: subprocess.Popen, ckpt_dir: Path, timeout: float) -> bool:
    """SIGKILL ``proc`` as soon as a temporary checkpoint file exists; True if it was
    killed that way, False if it ended or the time ran out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(e.name.endswith(".tmp") for e in os.scandir(ckpt_dir)):
                proc.send_signal(signal.SIGKILL)
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.0002)
    return False


def kill_and_resume(out: Path, kills: int, seed: int = 0, log=print) -> dict:
    """Train in ``out``, killing it ``kills`` times; returns the figures."""
    from edgeag.train.rundir import CHECKPOINT_NAME, load_checkpoint

    rng = random.Random(seed)
    ckpt = out / "checkpoints" / CHECKPOINT_NAME
    figures = {"kills": 0, "during_write": 0, "unloadable": 0, "resumes": 0, "finished": False}
    for i in range(kills):
        args = ["--resume", str(out), "--no-progress"] if out.exists() else \
               [*TRAIN_ARGS, "--out", str(out)]
        mark = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        proc = _train(args)
        while proc.poll() is None and (ckpt.stat().st_mtime_ns if ckpt.exists() else None) == mark:
            time.sleep(0.001)  # until this process has written a checkpoint of its own
        if i % 2 == 0:
            _kill_at_write(proc, ckpt.parent, timeout=60)
        else:
            time.sleep(rng.uniform(0.0, 1.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        if code != -signal.SIGKILL:  # it finished (or failed) before the kill
            log(f"kill {i + 1}: the run ended first (exit {code}) {proc.stderr.read()[-300:]}")
            if code != 0:
                return figures
            break
        figures["kills"] += 1
        figures["during_write"] += bool(i % 2 == 0 and list(ckpt.parent.glob(".*.tmp")))
        step = None
        if ckpt.exists():
            try:
                step = load_checkpoint(ckpt)["global_step"]
            except Exception as e:  # noqa: BLE001: counting what cannot be loaded
                figures["unloadable"] += 1
                log(f"kill {i + 1}: checkpoint unloadable: {e}")
        log(f"kill {i + 1}: {'during a checkpoint write' if i % 2 == 0 else 'at a random moment'}"
            f", checkpoint at step {step}")
        figures["resumes"] += 1
    proc = _train(["--resume", str(out), "--no-progress"])
    code = proc.wait()
    figures["finished"] = code == 0
    if code != 0:
        log(f"final resume: exit {code}: {proc.stderr.read()[-500:]}")
    return figures


def same_policy(a: Path, b: Path) -> bool:
    """Whether two runs' final checkpoints hold the same policy, bit for bit."""
    import numpy as np

    from edgeag.train.rundir import RunDir

    pa = RunDir(a).load_checkpoint()["policy"]
    pb = RunDir(b).load_checkpoint()["policy"]
    return pa.keys() == pb.keys() and all(np.array_equal(np.asarray(pa[k]), np.asarray(pb[k]))
                                          for k in pa)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--out", help="work directory (default: a temporary one, removed)")
    a = parser.parse_args()
    if a.kills < 1:
        parser.error(f"--kills {a.kills}: expected a positive integer")
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="edgeag-kill-"))
    try:
        t0 = time.monotonic()
        figures = kill_and_resume(work / "killed", a.kills, a.seed)
        ref = _train([*TRAIN_ARGS, "--out", str(work / "reference")])
        same = ref.wait() == 0 and figures["finished"] and same_policy(work / "killed",
                                                                      work / "reference")
        print(f"{figures['kills']} kills ({figures['during_write']} during a checkpoint write), "
              f"{figures['unloadable']} unloadable checkpoints, {figures['resumes']} resumes, "
              f"final resume {'finished' if figures['finished'] else 'FAILED'}, final policy "
              f"{'equal to' if same else 'DIFFERENT from'} the uninterrupted run's, bit for bit "
              f"({time.monotonic() - t0:.0f} s)")
        ok = figures["unloadable"] == 0 and figures["finished"] and same
        return 0 if ok else 1
    finally:
        if not a.out:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
