#!/usr/bin/env python
"""DQN on CartPole-v1 and TD3 on Pendulum-v1: edgeag (numpy and torch engines) against
Stable-Baselines3, in one run, with the RL Zoo's hyperparameters.

- **DQN CartPole-v1** (rl-baselines3-zoo ``hyperparams/dqn.yml``): 50k steps, lr 2.3e-3,
  batch 64, buffer 100k, learning from step 1000, gamma 0.99, target copy every 10
  steps, 128 gradient steps every 256 env steps, epsilon 1 -> 0.04 over 16% of the run,
  256-256 Q-network; SB3's Huber loss and gradient clip at 10 (``td_loss = "huber"``,
  ``max_grad_norm = 10`` for edgeag); Adam with torch's default eps 1e-8.
- **TD3 Pendulum-v1** (``hyperparams/td3.yml``): 20k steps, gamma 0.98, buffer 200k,
  learning from step 10k, exploration noise N(0, 0.1), one gradient step per env step,
  lr 1e-3, batch 256, 400-300 actor and critics, policy delay 2, target noise 0.2
  (clip 0.5), tau 0.005; Adam with eps 1e-8.

Systems: ``edgeag train`` with Adam on the numpy engine (the default), the same on the
torch engine (``--engine torch``: autograd and `edgeag.optim`), and SB3 (``DQN`` /
``TD3("MlpPolicy")``). Per task and system: the median (min-max) over seeds of env steps
per second of the whole run, gradient updates per second after ``learning_starts``
(TD3: with the GFLOP/s that makes, counting the multiply-adds of every matmul an
update runs, forward and backward), peak RSS, and the final deterministic return (10
episodes on seeds seed+10000...); then ratios to SB3.

Each (task, system, seed) runs alone in a fresh child process of this script, one after
the other, with 1 thread by default (``torch.set_num_threads``, ``OMP_NUM_THREADS``;
edgeag sets its BLAS threads from ``--threads``). Peak RSS is the child's VmHWM at
its very end. SB3 is a peer, not a dependency (``pip install stable-baselines3``).

    python scripts/bench_offpolicy.py [--tasks dqn,td3] [--seeds 1,2,3] [--threads 1]
                                      [--json results/bench_offpolicy.json]

Takes ~15 minutes with the defaults; run it on a quiet machine (timings are wall time).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

MiB = 2**20
EVAL_EPISODES, EVAL_SEED_OFFSET = 10, 10_000
SB3_MISSING = "bench_offpolicy: stable_baselines3 is not installed: pip install stable-baselines3"


@dataclass(frozen=True)
class Task:
    algo: str
    env_id: str
    steps: int
    learning_starts: int
    edgeag: dict
    """``--set`` values of ``edgeag train``."""
    sb3: dict
    """Keyword arguments of SB3's constructor."""
    hidden: tuple = ()
    extra: dict = field(default_factory=dict)


TASKS = {
    "dqn": Task("dqn", "CartPole-v1", 50_000, 1000, edgeag=dict(
        lr=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
        target_update_interval=10, train_frequency=256, gradient_steps=128,
        exploration_fraction=0.16, exploration_initial_eps=1.0, exploration_final_eps=0.04,
        hidden=[256, 256], tau=1.0, td_loss="huber", max_grad_norm=10.0, eps=1e-8),
        sb3=dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
                 gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                 exploration_fraction=0.16, exploration_final_eps=0.04,
                 policy_kwargs=dict(net_arch=[256, 256])), hidden=(256, 256)),
    "td3": Task("td3", "Pendulum-v1", 20_000, 10_000, edgeag=dict(
        lr=1e-3, batch_size=256, buffer_size=200_000, learning_starts=10_000, gamma=0.98,
        train_frequency=1, gradient_steps=1, exploration_noise=0.1, hidden=[400, 300],
        policy_frequency=2, policy_noise=0.2, noise_clip=0.5, tau=0.005, eps=1e-8),
        sb3=dict(learning_rate=1e-3, batch_size=256, buffer_size=200_000, learning_starts=10_000,
                 gamma=0.98, train_freq=1, gradient_steps=1, policy_delay=2,
                 target_policy_noise=0.2, target_noise_clip=0.5, tau=0.005,
                 policy_kwargs=dict(net_arch=[400, 300])), hidden=(400, 300)),
}
SYSTEMS = ("edgeag-numpy", "edgeag-torch", "sb3")


def td3_update_flop(obs_dim: int, action_dim: int, hidden, batch: int, delay: int) -> float:
    """Floating-point operations of one TD3 gradient step, averaged over the policy
    delay: 2 per multiply-add of every matmul; a layer's forward is 2 B I O, its backward
    2 B I O for the weight's gradient and 2 B I O for its input's. Critic step: both
    critics forward and backward, the target actor and both target critics forward.
    Actor step (every ``delay``-th): the actor forward and backward, critic 1 forward and
    backward to its input only."""
    def weights(sizes):
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    pa = weights([obs_dim, *hidden, action_dim])
    pc = weights([obs_dim + action_dim, *hidden, 1])
    critic = 2 * 6 * pc + 2 * pa + 2 * 2 * pc
    actor = 6 * pa + 2 * pc + 2 * pc
    return batch * (critic + actor / delay)


def evaluate_sb3(model, env_id: str, seed: int) -> list[float]:
    import gymnasium

    env, returns = gymnasium.make(env_id), []
    for i in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=seed + EVAL_SEED_OFFSET + i)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return returns


def run_sb3(task: Task, seed: int) -> dict:
    try:
        import numpy as np
        from stable_baselines3 import DQN, TD3
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.noise import NormalActionNoise
    except ImportError:
        print(SB3_MISSING, file=sys.stderr)
        sys.exit(2)

    class LearningStarts(BaseCallback):
        at: float | None = None

        def _on_step(self) -> bool:
            if self.at is None and self.num_timesteps >= task.learning_starts:
                self.at = time.monotonic()
            return True

    kwargs = dict(task.sb3)
    if task.algo == "td3":
        kwargs["action_noise"] = NormalActionNoise(np.zeros(1), 0.1 * np.ones(1))
    model = (DQN if task.algo == "dqn" else TD3)("MlpPolicy", task.env_id, seed=seed,
                                                 device="cpu", verbose=0, **kwargs)
    callback = LearningStarts()
    t0 = time.monotonic()
    model.learn(task.steps, callback=callback)
    end = time.monotonic()
    returns = evaluate_sb3(model, task.env_id, seed)
    return {"steps": model.num_timesteps, "wall_seconds": end - t0,
            "learning_seconds": end - callback.at, "updates": model._n_updates,
            "final_eval_mean": statistics.fmean(returns)}


def run_edgeag(task: Task, system: str, seed: int, threads: int) -> dict:
    from edgeag.cli import main

    sets = [a for k, v in task.edgeag.items()
            for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
    engine = "torch" if system == "edgeag-torch" else "numpy"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        with contextlib.redirect_stdout(sys.stderr):
            code = main(["train", "--algo", task.algo, "--env", task.env_id, "--optimizer",
                         "adam", "--engine", engine, "--seed", str(seed), "--threads",
                         str(threads), "--total-steps", str(task.steps), "--out", out,
                         "--no-progress", *sets])
        if code != 0:
            sys.exit(f"bench_offpolicy: edgeag train exited with {code}")
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    # the first iteration boundary at or past learning_starts: updates from there on
    start = next(r for r in rows if r["time/total_timesteps"] >= task.learning_starts)
    last = rows[-1]
    return {"steps": summary["steps"], "wall_seconds": summary["wall_seconds"],
            "learning_seconds": last["time/elapsed_seconds"] - start["time/elapsed_seconds"],
            "updates": last["train/n_updates"] - start.get("train/n_updates", 0),
            "final_eval_mean": summary["final_eval_return"]["mean"]}


def child(task_name: str, system: str, seed: int, threads: int) -> None:
    task = TASKS[task_name]
    if system == "sb3":
        import torch

        torch.set_num_threads(threads)
        row = run_sb3(task, seed)
    else:
        row = run_edgeag(task, system, seed, threads)
    row = {"task": task_name, "system": system, "seed": seed, **row,
           "steps_per_second": row["steps"] / row["wall_seconds"],
           "updates_per_second": row["updates"] / row["learning_seconds"]}
    if task.algo == "td3":
        row["gflops"] = row["updates_per_second"] * td3_update_flop(
            3, 1, task.hidden, task.edgeag["batch_size"], task.edgeag["policy_frequency"]) / 1e9
    from edgeag.memory import proc_status

    status = proc_status()
    row.update(peak_rss_bytes=status["VmHWM"], rss_anon_bytes=status["RssAnon"])
    print(json.dumps(row), flush=True)


def spawn(task: str, system: str, seed: int, threads: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{task}:{system}",
           "--seeds", str(seed), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit(2 if proc.returncode == 2 else 1)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stats(values: list) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict, scale: float = 1.0, digits: int = 1) -> str:
    low, mid, high = (f"{s[k] / scale:.{digits}f}" for k in ("min", "median", "max"))
    return f"{mid} ({low}-{high})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="dqn,td3", help="from " + ",".join(TASKS))
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="from " + ",".join(SYSTEMS))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write every run and the summary to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        task, system = args.child.split(":")
        return child(task, system, int(args.seeds), args.threads)
    tasks, systems = args.tasks.split(","), args.systems.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    if bad := [t for t in tasks if t not in TASKS] + [s for s in systems if s not in SYSTEMS]:
        ap.error(f"unknown task or system {bad[0]!r} (accepted: tasks {', '.join(TASKS)}; "
                 f"systems {', '.join(SYSTEMS)})")
    if "sb3" in systems and importlib.util.find_spec("stable_baselines3") is None:
        print(SB3_MISSING, file=sys.stderr)
        sys.exit(2)
    jobs = [(t, s, seed) for t in tasks for s in systems for seed in seeds]
    runs = []
    for i, (t, s, seed) in enumerate(jobs, 1):
        r = spawn(t, s, seed, args.threads)
        runs.append(r)
        gflops = f", {r['gflops']:.1f} GFLOP/s" if "gflops" in r else ""
        print(f"[{i}/{len(jobs)}] {t} {s} seed {seed}: {r['steps']:,} steps in "
              f"{r['wall_seconds']:.1f} s ({r['steps_per_second']:.0f}/s), "
              f"{r['updates_per_second']:.0f} updates/s{gflops}, eval {r['final_eval_mean']:.1f}, "
              f"peak RSS {r['peak_rss_bytes'] / MiB:.1f} MiB", file=sys.stderr, flush=True)
    keys = ("steps_per_second", "updates_per_second", "gflops", "peak_rss_bytes",
            "final_eval_mean")
    summary, ratios = {}, {}
    for t in tasks:
        summary[t] = {s: {k: stats([r[k] for r in runs if r["task"] == t and r["system"] == s])
                          for k in keys if any(k in r for r in runs if r["task"] == t)}
                      for s in systems}
        task = TASKS[t]
        print(f"\n{task.algo.upper()} {task.env_id}, {task.steps:,} steps, seeds {args.seeds}, "
              f"{args.threads} thread(s); median (min-max) over seeds")
        print(f"{'system':14s} {'env steps/s':>20s} {'updates/s':>18s} "
              f"{'GFLOP/s' if t == 'td3' else '':>16s} {'peak RSS MiB':>20s} {'eval return':>24s}")
        for s, row in summary[t].items():
            g = fmt(row["gflops"]) if "gflops" in row else ""
            print(f"{s:14s} {fmt(row['steps_per_second'], digits=0):>20s} "
                  f"{fmt(row['updates_per_second'], digits=0):>18s} {g:>16s} "
                  f"{fmt(row['peak_rss_bytes'], MiB):>20s} {fmt(row['final_eval_mean']):>24s}")
        if "sb3" in summary[t]:
            base = summary[t]["sb3"]
            ratios[t] = {}
            for s in (x for x in systems if x != "sb3"):
                ratios[t][s] = {k: summary[t][s][k]["median"] / base[k]["median"]
                                for k in ("steps_per_second", "updates_per_second",
                                          "peak_rss_bytes")}
                print(f"  {s} / sb3: env steps/s {ratios[t][s]['steps_per_second']:.2f}x, "
                      f"updates/s {ratios[t][s]['updates_per_second']:.2f}x, peak RSS "
                      f"{ratios[t][s]['peak_rss_bytes']:.2f}x")
    if args.json:
        from edgeag.io import write_json

        write_json(args.json, {"seeds": seeds, "threads": args.threads, "runs": runs,
                               "summary": summary, "ratios_to_sb3": ratios})


if __name__ == "__main__":
    main()
