"""Grid sweep of PPO optimizer settings: each (alpha, lr, seed) is one `edgeag train`
run in its own process; prints the final deterministic eval return per seed and the
figures the presets quote.

    python scripts/sweep_ppo.py --env CartPole-v1 --alphas 1,4,16 --lrs 1e-3,3e-3 --seeds 1,2,3
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="CartPole-v1")
    ap.add_argument("--optimizer", default="alphagrad")
    ap.add_argument("--alphas", type=floats, default=[1.0])
    ap.add_argument("--lrs", type=floats, default=[1e-3])
    ap.add_argument("--momentum", type=float, default=None)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--total-steps", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="extra --set NAME=VALUE")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 thread each)")
    ap.add_argument("--out", default="results/sweeps")
    args = ap.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    grid = list(itertools.product(args.alphas, args.lrs, seeds))
    root = Path(args.out) / f"{args.env}-{args.optimizer}"

    def run(alpha, lr, seed):
        out = root / f"a{alpha:g}-lr{lr:g}-m{args.momentum or 0:g}-s{seed}"
        if not (out / "summary.json").exists():
            cmd = [sys.executable, "-m", "edgeag.cli", "train", "--env", args.env,
                   "--optimizer", args.optimizer, "--alpha", str(alpha), "--lr", str(lr),
                   "--seed", str(seed), "--threads", "1", "--no-progress", "--out", str(out)]
            if args.momentum is not None:
                cmd += ["--momentum", str(args.momentum)]
            if args.total_steps:
                cmd += ["--total-steps", str(args.total_steps)]
            for item in args.set:
                cmd += ["--set", item]
            subprocess.run(cmd, check=True, capture_output=True)
        summary = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        tail = [r["rollout/ep_rew_mean"] for r in rows[-10:] if r["rollout/ep_rew_mean"] is not None]
        return (alpha, lr, seed, summary["final_eval_return"]["mean"],
                statistics.mean(tail) if tail else float("nan"), summary["wall_seconds"])

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda g: run(*g), grid))

    print(f"{args.env} {args.optimizer} momentum {args.momentum or 0:g}"
          f"{' ' + ' '.join(args.set) if args.set else ''}")
    print(f"{'alpha':>7s} {'lr':>8s}  {'eval return per seed':32s} {'median':>8s} {'train tail':>10s}")
    for (alpha, lr), group in itertools.groupby(results, key=lambda r: r[:2]):
        group = list(group)
        evals = [r[3] for r in group]
        print(f"{alpha:7g} {lr:8g}  {' '.join(f'{e:8.1f}' for e in evals):32s} "
              f"{statistics.median(evals):8.1f} {statistics.median(r[4] for r in group):10.1f}")


if __name__ == "__main__":
    main()
