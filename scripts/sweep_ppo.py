"""Grid sweep of PPO optimizer settings, as an `edgeag tune` study: a GridSampler over
alpha x lr, each trial every seed in its own `edgeag train` process; prints the final
deterministic eval return per seed and the figures the presets quote.

    python scripts/sweep_ppo.py --env CartPole-v1 --alphas 1,4,16 --lrs 1e-3,3e-3 --seeds 1,2,3

``--jobs`` workers join the study at once (1 torch thread each); with ``--storage`` on
a database (or a journal file on a shared disk), the same command on other machines
splits the grid with them. A finished trial is kept in the study, so an interrupted
sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="CartPole-v1")
    ap.add_argument("--optimizer", default="alphagrad")
    ap.add_argument("--alphas", default="1", help="comma-separated alphas")
    ap.add_argument("--lrs", default="1e-3", help="comma-separated learning rates")
    ap.add_argument("--momentum", type=float, default=None)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--total-steps", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="extra --set NAME=VALUE")
    ap.add_argument("--jobs", type=int, default=2, help="workers at once (1 thread each)")
    ap.add_argument("--out", default="results/sweeps")
    ap.add_argument("--storage", help="study storage (default OUT/<env>-<optimizer>.log)")
    args = ap.parse_args()
    if args.jobs < 1:
        sys.exit(f"sweep_ppo: invalid --jobs {args.jobs}: expected a positive integer")

    tag = f"{args.env}-{args.optimizer}" + (f"-m{args.momentum:g}" if args.momentum else "")
    out = Path(args.out) / tag
    storage = args.storage or str(Path(args.out) / f"{tag}.log")
    study = f"sweep-{tag}"
    cmd = [sys.executable, "-m", "edgeag.cli", "tune", "--env", args.env, "--optimizer",
           args.optimizer, "--sampler", "grid", "--pruner", "none", "--space",
           f"alpha={args.alphas},lr={args.lrs}", "--seeds", args.seeds, "--threads", "1",
           "--storage", storage, "--study", study, "--out", str(out)]
    if args.momentum is not None:
        cmd += ["--set", f"momentum={args.momentum!r}"]
    if args.total_steps:
        cmd += ["--total-steps", str(args.total_steps)]
    for item in args.set:
        cmd += ["--set", item]
    workers = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(args.jobs)]
    codes = [w.wait() for w in workers]
    if any(code not in (0, 1) for code in codes):
        sys.exit(f"sweep_ppo: edgeag tune exited {codes}")

    import optuna

    from edgeag.tune.storage import open_storage, resolve_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = optuna.load_study(study_name=study, storage=open_storage(
        resolve_storage(storage))).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    print(f"{args.env} {args.optimizer} momentum {args.momentum or 0:g}"
          f"{' ' + ' '.join(args.set) if args.set else ''}")
    print(f"{'alpha':>7s} {'lr':>8s}  {'eval return per seed':32s} {'median':>8s} "
          f"{'train tail':>10s}")
    for t in sorted(trials, key=lambda t: (t.params["alpha"], t.params["lr"])):
        evals = t.user_attrs["returns"]
        tails = [r["train_return_tail"] for r in t.user_attrs["runs"]
                 if r["train_return_tail"] is not None]
        print(f"{t.params['alpha']:7g} {t.params['lr']:8g}  "
              f"{' '.join(f'{e:8.1f}' for e in evals):32s} {statistics.median(evals):8.1f} "
              f"{statistics.median(tails) if tails else float('nan'):10.1f}")
    print(f"study {study!r} in {storage}; runs in {out}/trials/", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
