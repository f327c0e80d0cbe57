#!/usr/bin/env python
"""PPO training on CartPole-v1: edgeag (AlphaGrad, Adam; numpy and torch engines) against
Stable-Baselines3, in one run.

All use the RL Zoo's CartPole hyperparameters (8 envs, n_steps 32, batch 256,
20 epochs, gamma 0.98, gae_lambda 0.8, ent_coef 0, clip 0.2, 100k steps):
``edgeag train --optimizer alphagrad`` and ``--optimizer adam`` (preset lr/alpha; the
default numpy engine), ``--optimizer alphagrad --engine torch``, and SB3
``PPO("MlpPolicy")`` with lr linearly annealed from 1e-3 to 0 on a DummyVecEnv.

Per system: the median (min-max) over seeds of env steps per second of training,
training wall seconds, wall seconds from the start of training until the rolling mean
of the last 100 episode returns first reaches 475, peak RSS (and the anon/file split at
the end), and the final deterministic eval return (10 episodes); then ratios to SB3.

Each (system, seed) runs alone in a fresh child process of this script, one after the
other, with ``torch.set_num_threads(T)`` and ``OMP_NUM_THREADS=T``; edgeag's child runs
the real CLI in-process (``edgeag.cli.main(["train", ...])``). Peak RSS is the child's
own kernel high-water mark (VmHWM in /proc/self/status) read at its very end, not
``ru_maxrss``, which survives exec and can report the parent's peak. SB3 is a peer, not
a dependency (``pip install stable-baselines3``).

    python scripts/bench_train.py [--seeds 1,2,3] [--threads 1] [--json results/bench_train.json]

Takes ~5 minutes with the defaults; run it on a quiet machine (timings are wall time).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

SYSTEMS = {"alphagrad": "edgeag-alphagrad", "adam": "edgeag-adam",
           "alphagrad-torch": "edgeag-alphagrad-torch", "sb3": "sb3"}
"""edgeag's default `edgeag train` (numpy engine) with AlphaGrad and with Adam, the same
AlphaGrad run on the torch engine (the textbook autograd path), and SB3."""
EDGEAG_ARGS = {"alphagrad": ["--optimizer", "alphagrad"], "adam": ["--optimizer", "adam"],
               "alphagrad-torch": ["--optimizer", "alphagrad", "--engine", "torch"]}
TARGET = 475.0
EVAL_EPISODES, EVAL_SEED_OFFSET = 10, 10_000
SB3_MISSING = "bench_train: stable_baselines3 is not installed: pip install stable-baselines3"
MiB = 2**20


def run_edgeag(system: str, seed: int, steps: int, threads: int) -> dict:
    import contextlib

    from edgeag.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for our one JSON line
            code = main(["train", *EDGEAG_ARGS[system], "--seed", str(seed), "--threads",
                         str(threads), "--out", out, "--no-progress", "--total-steps", str(steps)])
        if code != 0:
            sys.exit(f"bench_train: edgeag train exited with {code}")
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    reached = next((r["time/elapsed_seconds"] for r in rows
                    if (r["rollout/ep_rew_mean"] or 0) >= TARGET), None)
    return {"steps": summary["steps"], "wall_seconds": summary["wall_seconds"],
            "seconds_to_475": reached, "final_eval_mean": summary["final_eval_return"]["mean"],
            "final_eval_std": summary["final_eval_return"]["std"]}


def run_sb3(seed: int, steps: int) -> dict:
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        print(SB3_MISSING, file=sys.stderr)
        sys.exit(2)
    import gymnasium

    class TimeToTarget(BaseCallback):
        reached: float | None = None

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:  # the buffer SB3's rollout/ep_rew_mean averages
            buf = self.model.ep_info_buffer
            if self.reached is None and buf and statistics.fmean(e["r"] for e in buf) >= TARGET:
                self.reached = time.monotonic() - t0

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                n_epochs=20, ent_coef=0.0, learning_rate=lambda progress: progress * 1e-3,
                clip_range=0.2, seed=seed, device="cpu", verbose=0)
    callback = TimeToTarget()
    t0 = time.monotonic()
    model.learn(steps, callback=callback)
    wall = time.monotonic() - t0
    eval_env, returns = gymnasium.make("CartPole-v1"), []
    for i in range(EVAL_EPISODES):
        obs, _ = eval_env.reset(seed=seed + EVAL_SEED_OFFSET + i)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = eval_env.step(int(action))
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    eval_env.close()
    env.close()
    return {"steps": model.num_timesteps, "wall_seconds": wall, "seconds_to_475": callback.reached,
            "final_eval_mean": statistics.fmean(returns),
            "final_eval_std": statistics.pstdev(returns)}


def child(system: str, seed: int, steps: int, threads: int) -> None:
    if system == "sb3":  # edgeag sets its engine's threads itself (and imports torch only for it)
        import torch

        torch.set_num_threads(threads)
    row = run_sb3(seed, steps) if system == "sb3" else run_edgeag(system, seed, steps, threads)
    row = {"system": SYSTEMS[system], "seed": seed, **row,
           "steps_per_second": row["steps"] / row["wall_seconds"]}
    from edgeag.memory import proc_status  # after training: cannot raise the peak

    status = proc_status()
    row.update(peak_rss_bytes=status["VmHWM"], rss_anon_bytes=status["RssAnon"],
               rss_file_bytes=status["RssFile"])
    print(json.dumps(row), flush=True)


def spawn(system: str, seed: int, steps: int, threads: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", system, "--seeds", str(seed),
           "--total-steps", str(steps), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit(2 if proc.returncode == 2 else 1)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stats(values: list) -> dict:
    """Median, min and max; None (never reached 475) counts as infinitely slow."""
    vals = [math.inf if v is None else v for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def fmt(s: dict, scale: float = 1.0, digits: int = 1) -> str:
    def show(v):
        return "never" if math.isinf(v) else f"{v / scale:.{digits}f}"
    return f"{show(s['median'])} ({show(s['min'])}-{show(s['max'])})"


def finite(obj):
    """JSON has no infinity: write it as null."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    return None if obj == math.inf else obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--total-steps", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1, help="torch/OMP threads per run (default 1)")
    ap.add_argument("--systems", default="alphagrad,adam,alphagrad-torch,sb3",
                    help="from " + ",".join(SYSTEMS))
    ap.add_argument("--json", help="also write all runs and the summary to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, int(args.seeds), args.total_steps, args.threads)

    systems, seeds = args.systems.split(","), [int(s) for s in args.seeds.split(",")]
    if unknown := [s for s in systems if s not in SYSTEMS]:
        ap.error(f"unknown system(s) {unknown}; choose from {list(SYSTEMS)}")
    if "sb3" in systems and importlib.util.find_spec("stable_baselines3") is None:
        print(SB3_MISSING, file=sys.stderr)
        sys.exit(2)
    runs, jobs = [], [(system, seed) for system in systems for seed in seeds]
    for i, (system, seed) in enumerate(jobs, 1):
        r = spawn(system, seed, args.total_steps, args.threads)
        runs.append(r)
        t475 = "never" if r["seconds_to_475"] is None else f"{r['seconds_to_475']:.1f} s"
        print(f"[{i}/{len(jobs)}] {r['system']} seed {seed}: {r['steps']:,} steps in "
              f"{r['wall_seconds']:.1f} s ({r['steps_per_second']:.0f}/s), to 475: {t475}, "
              f"eval {r['final_eval_mean']:.1f}, peak RSS {r['peak_rss_bytes'] / MiB:.1f} MiB",
              file=sys.stderr, flush=True)

    keys = ("steps_per_second", "wall_seconds", "seconds_to_475", "peak_rss_bytes",
            "rss_anon_bytes", "rss_file_bytes", "final_eval_mean")
    summary = {SYSTEMS[s]: {k: stats([r[k] for r in runs if r["system"] == SYSTEMS[s]])
                            for k in keys} for s in systems}
    print(f"\nPPO CartPole-v1, {args.total_steps:,} steps, seeds {args.seeds}, "
          f"{args.threads} thread(s); median (min-max) over seeds")
    print(f"{'system':17s} {'env steps/s':>20s} {'wall s':>20s} {'s to 475':>20s} "
          f"{'peak RSS MiB':>20s} {'anon/file MiB':>14s} {'eval return':>20s}")
    for name, s in summary.items():
        anon, file = s["rss_anon_bytes"]["median"] / MiB, s["rss_file_bytes"]["median"] / MiB
        split = f"{anon:.0f}/{file:.0f}"
        print(f"{name:17s} {fmt(s['steps_per_second'], digits=0):>20s} "
              f"{fmt(s['wall_seconds']):>20s} "
              f"{fmt(s['seconds_to_475']):>20s} {fmt(s['peak_rss_bytes'], MiB):>20s} "
              f"{split:>14s} {fmt(s['final_eval_mean']):>20s}")

    ratios = {}
    if "sb3" in summary:
        print("\nratios to SB3 (median / median): steps/s (higher is faster), peak RSS, "
              "time to 475 (lower is better)")
        base = summary["sb3"]
        def ratio(a, b):
            return a / b if math.isfinite(a) and math.isfinite(b) and b else None
        for name in (n for n in summary if n != "sb3"):
            ratios[name] = {k: ratio(summary[name][k]["median"], base[k]["median"])
                            for k in ("steps_per_second", "peak_rss_bytes", "seconds_to_475")}
            print(f"{name:17s} " + "  ".join(
                f"{label} {'n/a' if v is None else f'{v:.2f}x'}" for label, v in
                zip(("steps/s", "peak RSS", "time to 475"), ratios[name].values())))
    if args.json:
        from edgeag.io import write_json

        write_json(args.json, {"total_steps": args.total_steps, "seeds": seeds,
                               "threads": args.threads, "runs": runs,
                               "summary": finite(summary), "ratios_to_sb3": ratios})


if __name__ == "__main__":
    main()
