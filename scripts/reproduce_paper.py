#!/usr/bin/env python
"""Reproduce the AlphaGrad paper's comparison (Sane, 2025, arXiv 2504.16020) with
edgeag: AlphaGrad against Adam on PPO HalfCheetah-v5, TD3 Hopper-v5 and DQN
CartPole-v1, and one step further than the paper: AlphaGrad in its fully stateless
mode (momentum 0) beside the paper's mode (momentum 0.9).

For each task:

1. **alpha sweep** on seed 1: AlphaGrad at every alpha of the grid, momentum 0.9 and 0;
2. the best alpha of each momentum (highest final eval return on seed 1; the smaller
   alpha on a tie) and Adam then run on every seed.

The learning rate is the paper's for both optimizers (PPO 3e-4 annealed, TD3 3e-4,
DQN 2.5e-4); AlphaGrad eps 1e-5; Adam eps as in the paper (PPO and DQN 1e-5, TD3
1e-8); everything else is the preset (``edgeag/algos/<algo>/presets.toml``, the
paper's CleanRL settings) except what ``--quick`` shortens (listed in the output).

Each phase is an Optuna study with a GridSampler (``edgeag.tune``): the sweep over
task x optimizer setting (Adam, or AlphaGrad at each momentum and alpha) x seed 1,
then task x (Adam, best alpha of each momentum) x the other seeds. Every trial is
``edgeag train`` in its own process (1 thread; ``--jobs`` at once), with no
budget (measured, not enforced); a finished trial is kept in the study, so an
interrupted reproduction continues where it stopped. With ``--storage`` on a database
(``postgresql://USER@HOST/DB``, password in ``EDGEAG_STORAGE_PASSWORD`` or
``PGPASSWORD``), the same command on N machines splits the runs between them; each
machine waits for the others at the end of the sweep and writes the same report
(every result, learning curve included, is kept in the study).

Output (``--docs``, default ``docs/reproduction``): ``results-<mode>.md`` (the command,
the machine, the settings, the results table: final deterministic eval return mean +-
std over seeds, peak RSS, optimizer state bytes; the alpha sweep) and
``<task>-<mode>.png`` learning curves. Runs go to ``--out`` (default
``results/reproduce/<mode>``).

    python scripts/reproduce_paper.py --quick          # ~20 min on 2 idle cores
    python scripts/reproduce_paper.py                  # the full settings: days of CPU

Needs MuJoCo (``pip install 'edgeag[mujoco]'``) and matplotlib (``pip install
'edgeag[report]'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 2**20


@dataclass(frozen=True)
class Task:
    algo: str
    env: str
    lr: float
    """The paper's learning rate, for Adam and AlphaGrad alike."""
    paper_steps: int
    quick_steps: int
    quick_set: tuple[str, ...] = ()
    """--set overrides of the quick mode (shorter warm-up for shorter runs)."""
    note: str = ""


TASKS = {
    "ppo-halfcheetah": Task("ppo", "HalfCheetah-v5", 3e-4, 1_000_000, 50_000,
                            note="CleanRL ppo_continuous_action settings (1 env, 2048-step "
                                 "rollouts, 10 epochs, 32 minibatches)"),
    "td3-hopper": Task("td3", "Hopper-v5", 3e-4, 500_000, 10_000,
                       ("learning_starts=2000",),
                       note="CleanRL td3_continuous_action settings (256-256, buffer 1M, "
                            "batch 256, policy delay 2)"),
    "dqn-cartpole": Task("dqn", "CartPole-v1", 2.5e-4, 500_000, 50_000,
                         ("learning_starts=5000",),
                         note="CleanRL dqn settings (120-84, buffer 10k, batch 128, target "
                              "copy every 500 steps, epsilon over half the run)"),
}

GRIDS = {"quick": [8.0, 64.0], "full": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]}
SEEDS = {"quick": [1, 2], "full": [1, 2, 3, 4, 5]}
MOMENTA = (0.9, 0.0)
"""The paper's mode (every experiment in the paper) and the stateless mode."""


@dataclass(frozen=True)
class Config:
    optimizer: str
    alpha: float | None = None
    momentum: float | None = None

    @property
    def label(self) -> str:
        if self.optimizer == "adam":
            return "Adam"
        mode = "paper mode" if self.momentum else "stateless"
        return f"AlphaGrad m={self.momentum:g} ({mode}), alpha={self.alpha:g}"

    @property
    def slug(self) -> str:
        if self.optimizer == "adam":
            return "adam"
        return f"alphagrad-m{self.momentum:g}-a{self.alpha:g}"


@dataclass
class Runner:
    out: Path
    mode: str
    jobs: int
    storage: str
    """``--storage``: a journal file (default ``<out>/study.log``) or a database URL."""
    study: str

    def command(self, name: str, task: Task, cfg: Config, seed: int) -> tuple[Path, list[str]]:
        run = self.out / "runs" / f"{name}-{cfg.slug}-s{seed}"
        cmd = [sys.executable, "-m", "edgeag.cli", "train", "--algo", task.algo,
               "--env", task.env, "--optimizer", cfg.optimizer, "--lr", repr(task.lr),
               "--seed", str(seed), "--threads", "1", "--no-progress", "--out", str(run),
               "--total-steps", str(task.quick_steps if self.mode == "quick" else task.paper_steps)]
        if cfg.optimizer == "alphagrad":
            cmd += ["--alpha", repr(cfg.alpha), "--momentum", repr(cfg.momentum)]
        if self.mode == "quick":
            for item in task.quick_set:
                cmd += ["--set", item]
        return run, cmd

    def run_grid(self, phase: str, grid: dict[str, list], job_of) -> dict:
        """Every point of ``grid`` as one trial of the GridSampler study
        ``<study>-<phase>``: ``job_of(params)`` gives its (task name, task, config,
        seed), run as `edgeag train` in its own process. This machine runs ``--jobs``
        trials at once until no point is left, then waits for the trials other machines
        are running; returns {(task name, config, seed): result}. Failed points are
        run again by the next invocation."""
        import optuna
        from optuna.trial import TrialState

        from edgeag.tune.children import run_seed
        from edgeag.tune.storage import open_storage, resolve_storage

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        storage = resolve_storage(self.storage)
        study = optuna.create_study(study_name=f"{self.study}-{phase}",
                                    storage=open_storage(storage), direction="maximize",
                                    sampler=optuna.samplers.GridSampler(grid),
                                    load_if_exists=True)
        points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]

        def objective(trial) -> float:
            params = {k: trial.suggest_categorical(k, v) for k, v in grid.items()}
            job = job_of(params)
            run, cmd = self.command(*job)
            if run.exists():  # an unfinished run: start it again from nothing
                shutil.rmtree(run)
            done = run_seed(cmd, run, job[3], threads=1)
            if done.status != "done":
                trial.set_user_attr("fail_reason", done.message)
                raise RuntimeError(f"{shlex.join(cmd)}: {done.message}")
            result = load_run(run)
            trial.set_user_attr("result", result)
            trial.set_user_attr("host", platform.node())
            return result["eval"]

        def report(study, trial) -> None:
            what = (f"{trial.value:.1f}" if trial.state == TrialState.COMPLETE else
                    f"{trial.state.name}: {trial.user_attrs.get('fail_reason', '')}")
            print(f"{phase} trial {trial.number} {trial.params}: {what}", file=sys.stderr,
                  flush=True)

        def complete() -> dict:
            got = {}
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                got[tuple(sorted(t.params.items()))] = t
            return got

        missing = [p for p in points if tuple(sorted(p.items())) not in complete()]
        running = {tuple(sorted(t.params.items()))
                   for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        retry = [p for p in missing if tuple(sorted(p.items())) not in running]
        if study.sampler.is_exhausted(study) and retry:  # failed before: run them again
            for p in retry:
                study.enqueue_trial(p)
            study.optimize(objective, n_trials=len(retry), n_jobs=self.jobs,
                           catch=(RuntimeError,), callbacks=[report])
        elif retry:
            study.optimize(objective, n_jobs=self.jobs, catch=(RuntimeError,),
                           callbacks=[report])
        while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            print(f"{phase}: waiting for the trials other workers are running "
                  f"({storage.display})", file=sys.stderr, flush=True)
            time.sleep(30)
        got = complete()
        missing = [p for p in points if tuple(sorted(p.items())) not in got]
        if missing:
            raise SystemExit(f"reproduce_paper: {len(missing)} run(s) of {phase} failed "
                             f"({missing[:3]}...); their reasons are the trials' fail_reason "
                             "in the study; run the same command again to retry them")
        out = {}
        for p in points:
            name, _, cfg, seed = job_of(p)
            out[name, cfg, seed] = got[tuple(sorted(p.items()))].user_attrs["result"]
        return out


def load_run(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"eval": summary["final_eval_return"]["mean"], "peak_rss": summary["peak_rss_bytes"],
            "state_bytes": summary["optimizer_state_bytes"], "steps": summary["steps"],
            "wall": summary["wall_seconds"], "params": summary["parameter_count"],
            "curve": [(r["time/total_timesteps"], r["rollout/ep_rew_mean"]) for r in rows]}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"load average at the start {load[0]:.1f}")


def fmt_mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.pstdev(values):.1f}"


def plot(name: str, task: Task, curves: dict[str, list[list[tuple[int, float]]]],
         path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, runs in curves.items():
        n = min(len(c) for c in runs)
        steps = [runs[0][i][0] for i in range(n)]
        per_step = [[c[i][1] for c in runs if c[i][1] is not None] for i in range(n)]
        keep = [i for i in range(n) if per_step[i]]
        mean = [statistics.mean(per_step[i]) for i in keep]
        x = [steps[i] for i in keep]
        line, = ax.plot(x, mean, label=f"{label} ({len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(x, [min(per_step[i]) for i in keep], [max(per_step[i]) for i in keep],
                            color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training episode return (last 100)")
    ax.set_title(f"{task.algo.upper()} {task.env}: mean over seeds, band = min..max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, 2 seeds, alphas 8 and 64")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"subset of {', '.join(TASKS)}")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (1 thread each)")
    ap.add_argument("--out", help="run directories (default results/reproduce/<mode>)")
    ap.add_argument("--docs", default="docs/reproduction", help="where the table and plots go")
    ap.add_argument("--storage", help="the studies' storage: a journal file (default "
                    "OUT/study.log) or a database URL, e.g. postgresql://USER@HOST/DB "
                    "(password: EDGEAG_STORAGE_PASSWORD or PGPASSWORD); the same command on "
                    "several machines splits the runs")
    ap.add_argument("--study", help="name prefix of the two studies (default "
                    "reproduce-<mode>: <study>-sweep and <study>-seeds)")
    args = ap.parse_args()

    mode = "quick" if args.quick else "full"
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [n for n in names if n not in TASKS]
    if bad or not names:
        sys.exit(f"reproduce_paper: unknown task {', '.join(bad) or '(none)'} "
                 f"(accepted: {', '.join(TASKS)})")
    missing = [m for m, needed in (("matplotlib", True),
                                   ("mujoco", any(TASKS[n].env.endswith("-v5") for n in names)))
               if needed and importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"reproduce_paper: needs {', '.join(missing)}: "
                 "pip install 'edgeag[mujoco,report]'")
    if args.jobs < 1:
        sys.exit(f"reproduce_paper: invalid --jobs {args.jobs}: expected a positive integer")

    out = Path(args.out or f"results/reproduce/{mode}")
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, mode, args.jobs, args.storage or str(out / "study.log"),
                    args.study or f"reproduce-{mode}")
    grid, seeds = GRIDS[mode], SEEDS[mode]
    header = machine()
    started = time.monotonic()

    configs = {c.slug: c for c in [Config("alphagrad", a, m) for m in MOMENTA for a in grid]
               + [Config("adam")]}
    results = runner.run_grid(
        "sweep", {"task": names, "config": list(configs), "seed": [seeds[0]]},
        lambda p: (p["task"], TASKS[p["task"]], configs[p["config"]], p["seed"]))

    best: dict[tuple[str, float], Config] = {}
    for n in names:
        for m in MOMENTA:
            cands = [Config("alphagrad", a, m) for a in grid]
            best[n, m] = max(cands, key=lambda c: (results[n, c, seeds[0]]["eval"], -c.alpha))
    main_configs = {n: [Config("adam")] + [best[n, m] for m in MOMENTA] for n in names}
    ranks = {"adam": lambda n: Config("adam"), **{f"best-m{m:g}": (lambda n, m=m: best[n, m])
                                                   for m in MOMENTA}}
    results.update(runner.run_grid(
        "seeds", {"task": names, "rank": list(ranks), "seed": seeds[1:]},
        lambda p: (p["task"], TASKS[p["task"]], ranks[p["rank"]](p["task"]), p["seed"])))
    wall = time.monotonic() - started

    command = "python scripts/reproduce_paper.py" + (" --quick" if args.quick else "") + \
        (f" --tasks {args.tasks}" if args.tasks != ",".join(TASKS) else "") + \
        (f" --jobs {args.jobs}" if args.jobs != 2 else "")
    lines = [f"# AlphaGrad paper reproduction: {mode} settings", "",
             "Generated by `scripts/reproduce_paper.py`; read `docs/reproduction.md` for what "
             "the figures mean and where they differ from the paper.", "",
             f"- command: `{command}`",
             f"- machine: {header}; load average at the end "
             f"{os.getloadavg()[0]:.1f} (the machine was shared: wall times are not speeds)",
             f"- wall time of this invocation: {wall / 60:.1f} min ({args.jobs} runs at once, "
             "1 thread each; runs already on disk are reused)",
             f"- seeds: {', '.join(map(str, seeds))}; alpha grid: "
             f"{', '.join(f'{a:g}' for a in grid)} (seed {seeds[0]} only)",
             "- final return: deterministic evaluation, 10 episodes per seed on seeds "
             "seed+10000...; mean +- std over seeds of each seed's mean",
             "- peak RSS: median over seeds of the whole training process's VmHWM (no "
             "budget enforced); optimizer state: bytes held in optimizer.state at the end", ""]
    lines += ["## Settings", "", "| task | steps (paper) | steps here | lr (both optimizers) | "
              "other changes from the paper | paper's settings |", "|---|---|---|---|---|---|"]
    for n in names:
        t = TASKS[n]
        steps = t.quick_steps if args.quick else t.paper_steps
        changes = ", ".join(t.quick_set) if args.quick and t.quick_set else "none"
        lines.append(f"| {t.algo.upper()} {t.env} | {t.paper_steps:,} | {steps:,} | {t.lr:g} | "
                     f"{changes} | {t.note} |")
    lines += ["", "## Results", "", "| task | optimizer | final return (mean +- std) | "
              "per seed | peak RSS (MiB) | optimizer state (bytes) |", "|---|---|---|---|---|---|"]
    for n in names:
        t = TASKS[n]
        for c in main_configs[n]:
            rs = [results[n, c, s] for s in seeds]
            evals = [r["eval"] for r in rs]
            per_seed = " / ".join(f"{e:.1f}" for e in evals)
            lines.append(f"| {t.algo.upper()} {t.env} | {c.label} | {fmt_mean_std(evals)} "
                         f"| {per_seed} "
                         f"| {statistics.median(r['peak_rss'] for r in rs) / MiB:.1f} "
                         f"| {rs[0]['state_bytes']:,} |")
    lines += ["", f"## Alpha sweep (seed {seeds[0]}, final return)", "",
              "| task | momentum | " + " | ".join(f"alpha {a:g}" for a in grid) + " | Adam |",
              "|---|---|" + "---|" * (len(grid) + 1)]
    for n in names:
        t = TASKS[n]
        adam = results[n, Config("adam"), seeds[0]]["eval"]
        for m in MOMENTA:
            cells = [f"{results[n, Config('alphagrad', a, m), seeds[0]]['eval']:.1f}"
                     for a in grid]
            lines.append(f"| {t.algo.upper()} {t.env} | {m:g} | " + " | ".join(cells) +
                         f" | {adam:.1f} |")
    lines += ["", "## Learning curves", ""]
    for n in names:
        png = docs / f"{n}-{mode}.png"
        curves = {c.label: [results[n, c, s]["curve"] for s in seeds] for c in main_configs[n]}
        plot(n, TASKS[n], curves, png)
        lines.append(f"![{n}]({png.name})")
    lines.append("")
    md = docs / f"results-{mode}.md"
    from edgeag.io import write_text

    write_text(md, "\n".join(lines))
    print("\n".join(lines))
    print(f"\nwrote {md} and {len(names)} plots in {docs} ({wall / 60:.1f} min)", file=sys.stderr)


if __name__ == "__main__":
    main()
