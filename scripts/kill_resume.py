"""Kill `edgeag train` with SIGKILL at random moments, checkpoint writes included, and
resume it each time: every checkpoint left behind must load, every resume must go on,
and the run must end with the policy of a run never interrupted, bit for bit.

    python scripts/kill_resume.py --kills 20 [--seed 0] [--out DIR]
    python scripts/kill_resume.py --kills 20 --profile rpi4 --budget 256MB
    python scripts/kill_resume.py --kills 20 --api [--profile rpi4 --budget 256MB]

With ``--profile``, the run is started with the profile (and ``--budget``) and every
resume is the plain ``edgeag train --resume RUN`` that edgeag prints: the run's own
profile, budget and threads must come back with it, or the policy would differ. With
``--api``, every process trains through the Python API instead (``edgeag.PPO(...).learn``,
then ``edgeag.load(run).learn(rest, reset_num_timesteps=False)``); the reference is the
same uninterrupted ``edgeag train`` run either way.

Each resumed process is left to write one new checkpoint first (so the run moves on);
then half of the kills are aimed at a checkpoint write (the moment a temporary
checkpoint file appears), the others fall at a uniformly random moment within the
next second.
Prints one line per kill and a summary; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOTAL_STEPS = 49152
TRAIN_ARGS = ["--total-steps", str(TOTAL_STEPS), "--threads", "1", "--no-progress",
              "--set", "hidden=[256, 256]", "--set", "checkpoint_every=1",
              "--set", "eval_episodes=2"]
"""A CartPole PPO run of 96 iterations, a checkpoint at each (about 1 MB each)."""


API_TRAIN = """
import sys
from pathlib import Path

import edgeag

run, total = sys.argv[1], int(sys.argv[2])
profile, budget = sys.argv[3] or None, sys.argv[4] or None
if (Path(run) / "config.toml").exists():
    model = edgeag.load(run)
    if model.num_timesteps < total:
        model.learn(total - model.num_timesteps, reset_num_timesteps=False)
else:
    model = edgeag.PPO("CartPole-v1", run_dir=run, profile=profile, budget=budget,
                       hidden=[256, 256], checkpoint_every=1, eval_episodes=2,
                       **({} if profile else {"threads": 1}))
    model.learn(total)
sys.exit(model.exit_code if model.summary else 0)
"""
"""One process of the API case: a new run, or the run in ``argv[1]`` continued to the total."""


def _train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeag.cli", "train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _train_api(out: Path, device: list[str]) -> subprocess.Popen:
    profile = device[device.index("--profile") + 1] if "--profile" in device else ""
    budget = device[device.index("--budget") + 1] if "--budget" in device else ""
    return subprocess.Popen([sys.executable, "-c", API_TRAIN, str(out), str(TOTAL_STEPS),
                             profile, budget],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def train_args(device: list[str]) -> list[str]:
    """`TRAIN_ARGS` for a run on ``device`` (``--profile``/``--budget`` flags): the
    profile's threads rather than one."""
    if "--profile" not in device:
        return [*TRAIN_ARGS, *device]
    i = TRAIN_ARGS.index("--threads")
    return [*TRAIN_ARGS[:i], *TRAIN_ARGS[i + 2:], *device]


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


def kill_and_resume(out: Path, kills: int, seed: int = 0, log=print, device: list[str] = (),
                    api: bool = False) -> dict:
    """Train in ``out``, killing it ``kills`` times; returns the figures. ``device``:
    ``--profile``/``--budget`` flags of the first process (a resume gets none); ``api``:
    every process trains through the Python API."""
    device = list(device)
    from edgeag.train.rundir import CHECKPOINT_NAME, load_checkpoint

    rng = random.Random(seed)
    ckpt = out / "checkpoints" / CHECKPOINT_NAME
    figures = {"kills": 0, "during_write": 0, "unloadable": 0, "resumes": 0, "finished": False}
    for i in range(kills):
        args = ["--resume", str(out), "--no-progress"] if out.exists() else \
               [*train_args(device), "--out", str(out)]
        mark = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        proc = _train_api(out, device) if api else _train(args)
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
            except Exception as e:  # noqa: BLE001 (counting what cannot be loaded)
                figures["unloadable"] += 1
                log(f"kill {i + 1}: checkpoint unloadable: {e}")
        log(f"kill {i + 1}: {'during a checkpoint write' if i % 2 == 0 else 'at a random moment'}"
            f", checkpoint at step {step}")
        figures["resumes"] += 1
    proc = _train_api(out, device) if api else _train(["--resume", str(out), "--no-progress"])
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
    parser.add_argument("--profile", help="device profile of the run (e.g. rpi4); resumes "
                        "give none: the run's own must come back")
    parser.add_argument("--budget", help="budget of the run (e.g. 256MB)")
    parser.add_argument("--api", action="store_true", help="train through the Python API")
    a = parser.parse_args()
    if a.kills < 1:
        parser.error(f"--kills {a.kills}: expected a positive integer")
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="edgeag-kill-"))
    try:
        t0 = time.monotonic()
        device = [*(["--profile", a.profile] if a.profile else []),
                  *(["--budget", a.budget] if a.budget else [])]
        figures = kill_and_resume(work / "killed", a.kills, a.seed, device=device, api=a.api)
        ref = _train([*train_args(device), "--out", str(work / "reference")])
        same = ref.wait() == 0 and figures["finished"] and same_policy(work / "killed",
                                                                      work / "reference")
        summary = json.loads((work / "killed" / "summary.json").read_text()) \
            if (work / "killed" / "summary.json").exists() else {}
        print(f"{'API' if a.api else 'CLI'}; device {' '.join(device) or 'none'}: the killed "
              f"run ended with profile {summary.get('profile')}, budget "
              f"{summary.get('budget_bytes')} bytes, {summary.get('threads')} thread(s)")
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
