"""Should a user pick stateless AlphaGrad? Adam, stateless AlphaGrad and AlphaGrad with
momentum 0.9 on every task of the protocol, reported with the statistics the field
uses (`edgeag.report.stats`: IQM, median and mean with stratified-bootstrap 95%
intervals, the probability of improvement, performance profiles).

    python scripts/evaluate_optimizers.py estimate
    python scripts/evaluate_optimizers.py run [--tasks ppo-cartpole,...] [--jobs 2]
                                              [--storage URL]
    python scripts/evaluate_optimizers.py report [--storage URL]
    python scripts/evaluate_optimizers.py commands --tasks td3-hopper --storage URL

``run`` runs one ``edgeag tune`` study per task and optimizer (``eval-<task>-<opt>``),
each a GridSampler over seeds (``--space seed=101,...``): one trial is one seed's
`edgeag train` run, at the preset's settings and length, one thread. ``--jobs``
workers (default: the machine's cores) go through the studies in order, each starting
the next grid point no one holds. A finished trial stays in the storage, so a killed
``run`` repeats at most the runs that were under way; started again, it continues.
The storage (default ``sqlite:///results/evaluation/studies.db``) is a database with
Optuna's heartbeat: a trial whose worker died is marked FAIL once silent for twice
``--heartbeat`` seconds, and its seed runs again. The same ``--storage`` URL on other
machines splits the work between them (``postgresql://...``).

Seeds start at 101: the presets' alpha and lr were picked on seeds 1-3
(``scripts/tune_presets.py``), and a result reported on the seeds it was picked on
flatters it.

``report`` reads the studies back and writes ``docs/evaluation/results.md``,
``results.json`` and the figures beside them: per task, every seed's final
deterministic evaluation and its training return averaged over the run (the area
under the learning curve); per group of tasks, the aggregates with intervals, the
probabilities of improvement, and performance profiles. ``docs/evaluation.md`` reads
them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeag.report import stats
from edgeag.report.studies import load_study, random_return, run_curve_mean

STORAGE = "sqlite:///results/evaluation/studies.db"
OUT = Path("results/evaluation")
DOCS = Path("docs/evaluation")
FIRST_SEED = 101
HEARTBEAT = 30
"""Seconds between a worker's heartbeats; a trial silent for twice this is failed."""
RANDOM_EPISODES = 100


@dataclass(frozen=True)
class Task:
    algo: str
    env: str
    seeds: int
    reference: float
    source: str
    """Where the reference return comes from, and what kind of figure it is."""
    steps: int | None = None
    """None: the preset's length."""
    group: str = ""
    default: bool = True
    """Part of ``run`` without ``--tasks`` (TD3 Hopper is one command for a cluster)."""


RLZOO = "RL Zoo, deterministic evaluation of one run"
CLEANRL = "CleanRL, training return of the last 100 episodes, 3 seeds"
TASKS = {
    "ppo-cartpole": Task("ppo", "CartPole-v1", 10, 500.0, f"{RLZOO} (CleanRL: 490.04)",
                         group="ppo-classic"),
    "ppo-acrobot": Task("ppo", "Acrobot-v1", 10, -73.5, f"{RLZOO} (CleanRL: -86.36)",
                        group="ppo-classic"),
    "ppo-pendulum": Task("ppo", "Pendulum-v1", 10, -172.2, f"{RLZOO}, with gSDE",
                         group="ppo-classic"),
    "ppo-mountaincar": Task("ppo", "MountainCarContinuous-v0", 10, 90.0,
                            "gymnasium's reward_threshold for the env (solved)",
                            group="ppo-classic"),
    "ppo-halfcheetah": Task("ppo", "HalfCheetah-v5", 5, 1442.64, f"{CLEANRL} (v4, 1M steps)",
                            steps=1_000_000, group="ppo-mujoco"),
    "ppo-hopper": Task("ppo", "Hopper-v5", 5, 2382.86, f"{CLEANRL} (v4, 1M steps)",
                       steps=1_000_000, group="ppo-mujoco"),
    "dqn-cartpole": Task("dqn", "CartPole-v1", 10, 500.0, f"{RLZOO} (CleanRL: 488.69)",
                         steps=500_000, group="dqn"),
    "td3-pendulum": Task("td3", "Pendulum-v1", 10, -151.9, RLZOO, steps=20_000, group="td3"),
    "td3-hopper": Task("td3", "Hopper-v5", 5, 3134.61, f"{CLEANRL} (td3_continuous_action, v4, "
                       "1M steps)", steps=1_000_000, group="td3-mujoco", default=False),
}
"""The protocol's tasks: algorithm, env, seeds, the reference a score is normalised
to (1.0) and where it comes from, the length when not the preset's."""

GROUPS = {
    "ppo-classic": "PPO, classic control",
    "ppo-mujoco": "PPO, MuJoCo",
    "dqn": "DQN",
    "td3": "TD3",
    "td3-mujoco": "TD3, MuJoCo",
}
"""The groups of tasks aggregated together (one claim of the paper each)."""

OPTIMIZERS = {
    "adam": ("adam", []),
    "alphagrad": ("alphagrad", ["--set", "momentum=0.0"]),
    "alphagrad-m0.9": ("alphagrad", ["--set", "momentum=0.9"]),
}
"""Adam at its preset lr; stateless AlphaGrad at its preset alpha and lr; AlphaGrad
with momentum 0.9 (the paper's mode) at the same alpha and lr."""
LABELS = {"adam": "Adam", "alphagrad": "AlphaGrad (stateless)",
          "alphagrad-m0.9": "AlphaGrad (momentum 0.9)"}
COMPARISONS = [("alphagrad", "adam"), ("alphagrad-m0.9", "adam"), ("alphagrad", "alphagrad-m0.9")]
"""The probabilities of improvement reported: P(first > second)."""


def study_name(task: str, optimizer: str) -> str:
    return f"eval-{task}-{optimizer}"


def seeds_of(task: str, args) -> list[int]:
    count = args.seeds or TASKS[task].seeds
    return list(range(args.first_seed, args.first_seed + count))


def tune_args(task: str, optimizer: str, args) -> list[str]:
    """The ``edgeag tune`` arguments of one study."""
    t = TASKS[task]
    family, sets = OPTIMIZERS[optimizer]
    name = study_name(task, optimizer)
    steps = args.total_steps or t.steps
    return ["--algo", t.algo, "--env", t.env, "--optimizer", family, *sets,
            "--sampler", "grid", "--pruner", "none", "--threads", "1",
            "--space", "seed=" + ",".join(map(str, seeds_of(task, args))),
            *(["--total-steps", str(steps)] if steps else []),
            "--study", name, "--storage", args.storage, "--heartbeat", str(args.heartbeat),
            "--out", str(Path(args.out) / name)]


def _parse_list(text: str | None, known, what: str, default) -> list[str]:
    if not text:
        return list(default)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        sys.exit(f"evaluate_optimizers: unknown {what} {bad[0]!r} (accepted: "
                 f"{', '.join(known)})")
    return names


# --- run ------------------------------------------------------------------------------

def _studies(args) -> list[tuple[str, str]]:
    return [(task, opt) for task in args.tasks for opt in args.optimizers]


def _worker(index: int, args, studies, codes: list) -> None:
    """One worker: every study in turn, until its grid has no point left to start."""
    for task, opt in studies:
        name = study_name(task, opt)
        folder = Path(args.out) / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"worker{index}.log", "a") as log:
            code = subprocess.run([sys.executable, "-m", "edgeag.cli", "tune",
                                   *tune_args(task, opt, args)],
                                  stdout=log, stderr=subprocess.STDOUT).returncode
        codes.append((name, code))


def _open(args, name: str):
    """The study with a heartbeat-aware storage (so stale trials can be failed)."""
    import optuna

    from edgeag.tune.storage import open_storage, resolve_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(
            resolve_storage(args.storage), args.heartbeat))
    except KeyError:
        return None


def progress(args) -> dict[str, dict]:
    """Per study: seeds finished (COMPLETE or PRUNED), running, left to start."""
    from optuna.trial import TrialState

    out = {}
    for task, opt in _studies(args):
        name = study_name(task, opt)
        study = _open(args, name)
        want = set(seeds_of(task, args))
        trials = study.get_trials(deepcopy=False) if study is not None else []
        done = {t.params.get("seed") for t in trials
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
        running = {t.params.get("seed") for t in trials if t.state == TrialState.RUNNING}
        out[name] = {"done": len(want & done), "running": len(want & running - done),
                     "left": len(want - done - running), "seeds": len(want)}
    return out


def fail_stale(args) -> None:
    """Mark FAIL the running trials whose worker stopped beating (a killed ``run``):
    their seeds become free to run again."""
    import optuna

    for task, opt in _studies(args):
        study = _open(args, study_name(task, opt))
        if study is not None:
            optuna.storages.fail_stale_trials(study)


def run(args) -> None:
    """Work through the studies with ``--jobs`` workers; then, while seeds are left
    (their trial failed, or its worker was killed and has since gone silent), again."""
    studies = _studies(args)
    steps = {task: args.total_steps or TASKS[task].steps for task in args.tasks}
    print(f"evaluate_optimizers: {len(studies)} studies, {args.jobs} worker(s), storage "
          f"{args.storage}, runs under {args.out}/", flush=True)
    for task in args.tasks:
        print(f"  {task}: {TASKS[task].algo} {TASKS[task].env}, seeds "
              f"{seeds_of(task, args)[0]}-{seeds_of(task, args)[-1]}, "
              f"{steps[task] or 'preset'} steps, x {len(args.optimizers)} optimizers",
              flush=True)
    for _ in range(args.attempts):
        codes: list = []
        workers = [threading.Thread(target=_worker, args=(j, args, studies, codes))
                   for j in range(args.jobs)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for name, code in codes:
            if code not in (0, 1):  # 1: a trial failed (its seed is run again below)
                sys.exit(f"evaluate_optimizers: edgeag tune exited {code} on study {name} "
                         f"(log: {args.out}/{name}/worker*.log)")
        state = progress(args)
        if any(s["running"] for s in state.values()):
            time.sleep(2 * args.heartbeat + 1)  # a killed worker's trial: stale by now
            fail_stale(args)
            state = progress(args)
        left = sum(s["left"] for s in state.values())
        running = sum(s["running"] for s in state.values())
        done = sum(s["done"] for s in state.values())
        total = sum(s["seeds"] for s in state.values())
        print(f"evaluate_optimizers: {done} of {total} runs finished, {running} running on "
              f"other workers, {left} to run", flush=True)
        if left == 0:
            return
    bad = [name for name, s in progress(args).items() if s["left"]]
    sys.exit(f"evaluate_optimizers: seeds still to run after {args.attempts} passes in "
             f"{', '.join(bad)} (their trials failed: see {args.out}/<study>/worker*.log)")


def commands(args) -> None:
    """The ``edgeag tune`` command of each study, to start on other machines."""
    for task, opt in _studies(args):
        print("edgeag tune " + " ".join(tune_args(task, opt, args)))


# --- estimate -------------------------------------------------------------------------

def estimate(args) -> None:
    """CPU time of the protocol from a short timed run per task (Adam, one thread)."""
    import json
    import tempfile

    from edgeag.train.config import resolve_config

    total = 0.0
    for task in args.tasks:
        t = TASKS[task]
        steps = args.total_steps or t.steps or resolve_config(t.env, "adam", {}, t.algo)[0] \
            .total_steps
        probe = min(steps, max(5_000, steps // 50))
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "edgeag.cli", "train", "--algo", t.algo,
                            "--env", t.env, "--optimizer", "adam", "--threads", "1",
                            "--total-steps", str(probe), "--out", f"{tmp}/run",
                            "--no-progress", "--set", "eval_episodes=1"],
                           check=True, capture_output=True)
            wall = time.monotonic() - started
            sps = json.loads(Path(f"{tmp}/run/summary.json").read_text())["steps_per_second"]
        runs = (args.seeds or t.seeds) * len(args.optimizers)
        cpu = runs * (steps / sps + min(wall, 30))
        total += cpu
        print(f"{task:16s} {steps:>9,d} steps at {sps:,.0f} steps/s: {runs} runs, "
              f"{cpu / 3600:5.2f} CPU hours", flush=True)
    print(f"total {total / 3600:.1f} CPU hours: about {total / 3600 / args.jobs:.1f} hours on "
          f"{args.jobs} cores, one thread per run")


# --- report ---------------------------------------------------------------------------

def collect(args) -> dict:
    """Per task, per optimizer: each seed's final evaluation, learning-curve mean and
    training-return tail, from the studies' COMPLETE trials."""
    out = {}
    for task in args.tasks:
        rows = {}
        for opt in args.optimizers:
            runs = []
            for trial in _complete(load_study(args.storage, study_name(task, opt))):
                run = (trial.user_attrs.get("runs") or [{}])[0]
                runs.append({"seed": trial.params["seed"], "final": trial.value,
                             "curve": run_curve_mean(run),
                             "tail": run.get("train_return_tail"),
                             "wall_seconds": run.get("wall_seconds"),
                             "peak_rss_bytes": run.get("peak_rss_bytes")})
            rows[opt] = sorted(runs, key=lambda r: r["seed"])
        if any(rows.values()):
            out[task] = rows
    return out


def _complete(study) -> list:
    from edgeag.report.studies import complete_trials

    return complete_trials(study)


def score_matrices(results: dict, group: str, key: str, floors: dict) -> dict:
    """``{optimizer: (n_runs, n_tasks) normalised scores}`` of a group's tasks, for the
    optimizers with the same number of runs on every task of the group."""
    tasks = [t for t in results if TASKS[t].group == group]
    out = {}
    for opt in OPTIMIZERS:
        columns = [[r[key] for r in results[t].get(opt, []) if r[key] is not None]
                   for t in tasks]
        n = min((len(c) for c in columns), default=0)
        if n < 2:
            continue
        out[opt] = np.column_stack([
            stats.normalise(np.asarray(c[:n], float), floors[t], TASKS[t].reference)
            for t, c in zip(tasks, columns)])
    return out


def report(args) -> None:
    from edgeag.io import write_json, write_text

    results = collect(args)
    if not results:
        sys.exit(f"evaluate_optimizers: no finished runs in {args.storage}")
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    floors = {t: random_return(TASKS[t].env, RANDOM_EPISODES) for t in results}
    lines = ["# Optimizer evaluation: results", "",
             f"Written by `python scripts/evaluate_optimizers.py report` from the studies in "
             f"`{args.storage}`. Every run: the preset's settings and length, one thread, seeds "
             f"from {args.first_seed} (not the seeds the presets were picked on). *Final*: the "
             "final deterministic evaluation (the preset's episodes); *curve*: the training "
             "return averaged over the whole run (the area under the learning curve). Scores "
             f"are normalised per task: 0 is a uniformly random policy ({RANDOM_EPISODES} "
             "seeded episodes), 1 the reference return named in the table. Intervals: 95% "
             "stratified bootstrap (2000 replicates, runs resampled within each task).", "",
             "## Per task", "",
             "| task | random | reference | optimizer | runs | final: mean ± std | final: "
             "IQM | curve: mean |", "|---|---|---|---|---|---|---|---|"]
    for task, rows in results.items():
        t = TASKS[task]
        for opt, runs in rows.items():
            finals = [r["final"] for r in runs]
            curves = [r["curve"] for r in runs if r["curve"] is not None]
            if not finals:
                continue
            iqm = float(stats.iqm(np.asarray(finals)[:, None]))
            curve = f"{statistics.fmean(curves):.1f}" if curves else "-"
            lines.append(
                f"| {task} | {floors[task]:.1f} | {t.reference:g} ({t.source}) | {LABELS[opt]} "
                f"| {len(finals)} | {statistics.fmean(finals):.1f} ± "
                f"{statistics.pstdev(finals):.1f} | {iqm:.1f} | {curve} |")
    summary = {"storage": args.storage, "first_seed": args.first_seed,
               "random_returns": floors, "tasks": results, "groups": {}}
    for group, title in GROUPS.items():
        section = group_report(results, group, floors, docs)
        if section is None:
            continue
        summary["groups"][group] = section["json"]
        tasks = [t for t in results if TASKS[t].group == group]
        lines += ["", f"## {title}: {', '.join(TASKS[t].env for t in tasks)}", "",
                  *section["lines"]]
    write_text(docs / "results.md", "\n".join(lines) + "\n")
    write_json(docs / "results.json", summary)
    print(f"wrote {docs / 'results.md'}, {docs / 'results.json'} and the figures in {docs}/")


def group_report(results: dict, group: str, floors: dict, docs: Path) -> dict | None:
    finals = score_matrices(results, group, "final", floors)
    if not finals:
        return None
    curves = score_matrices(results, group, "curve", floors)
    lines = ["| optimizer | runs x tasks | final: IQM | final: median | final: mean | "
             "curve: IQM | seed spread (std) |", "|---|---|---|---|---|---|---|"]
    out = {"aggregates": {}, "improvement": {}}
    for opt, scores in finals.items():
        ci = {name: stats.stratified_bootstrap_ci(scores, fn) for name, fn in
              (("iqm", stats.iqm), ("median", stats.median), ("mean", stats.mean),
               ("spread", spread))}
        curve = stats.stratified_bootstrap_ci(curves[opt], stats.iqm) if opt in curves else None
        lines.append(f"| {LABELS[opt]} | {scores.shape[0]} x {scores.shape[1]} | {ci['iqm']} | "
                     f"{ci['median']} | {ci['mean']} | {curve if curve else '-'} | "
                     f"{ci['spread']} |")
        out["aggregates"][opt] = {k: _interval(v) for k, v in
                                  {**ci, "curve_iqm": curve}.items() if v is not None}
    lines += ["", "| comparison | P(first > second): final | curve |", "|---|---|---|"]
    for a, b in COMPARISONS:
        if a in finals and b in finals:
            p = stats.stratified_bootstrap_ci((finals[a], finals[b]),
                                              stats.probability_of_improvement)
            pc = (stats.stratified_bootstrap_ci((curves[a], curves[b]),
                                                stats.probability_of_improvement)
                  if a in curves and b in curves else None)
            lines.append(f"| {LABELS[a]} > {LABELS[b]} | {p} | {pc if pc else '-'} |")
            out["improvement"][f"{a}>{b}"] = {"final": _interval(p),
                                               "curve": _interval(pc) if pc else None}
    taus = np.linspace(-0.25, 1.25, 61)
    bands = stats.performance_profile_bands(finals, taus)
    figure = docs / f"{group}-profile.png"
    shape = next(iter(finals.values())).shape
    profile_figure(f"{GROUPS[group]}: {shape[1]} task(s) x {shape[0]} runs, final evaluation",
                   taus, bands, figure)
    lines += ["", f"![performance profile]({figure.name})"]
    return {"lines": lines, "json": out}


def spread(scores) -> np.ndarray:
    """The mean over tasks of the standard deviation of the runs' scores: how much the
    seed decides (lower is more stable)."""
    return np.asarray(scores).std(axis=-2).mean(axis=-1)


def _interval(e) -> dict:
    return {"point": float(e.point), "low": float(e.low), "high": float(e.high)}


def profile_figure(title: str, taus, bands: dict, path: Path) -> None:
    """Fraction of runs above each normalised score, with its 95% band, per optimizer."""
    from edgeag.report.plots import profiles

    profiles(title, taus, {LABELS[k]: v for k, v in bands.items()}, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report", "estimate", "commands"])
    p.add_argument("--tasks", help="comma-separated (default: every task but td3-hopper): "
                   + ", ".join(TASKS))
    p.add_argument("--optimizers", help="comma-separated (default all): " + ", ".join(OPTIMIZERS))
    p.add_argument("--storage", default=STORAGE, help=f"study storage (default {STORAGE})")
    p.add_argument("--out", default=str(OUT), help=f"run directories (default {OUT})")
    p.add_argument("--docs", default=str(DOCS), help=f"report directory (default {DOCS})")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="workers on this machine (default: its cores)")
    p.add_argument("--seeds", type=int, help="seeds per task (default: the protocol's)")
    p.add_argument("--first-seed", type=int, default=FIRST_SEED)
    p.add_argument("--total-steps", type=int, help="every run's length (default: the "
                   "protocol's; shorter only to try the pipeline)")
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT)
    p.add_argument("--attempts", type=int, default=3, help="passes over failed seeds")
    args = p.parse_args()
    args.tasks = _parse_list(args.tasks, TASKS, "task",
                             [k for k, t in TASKS.items() if t.default])
    args.optimizers = _parse_list(args.optimizers, OPTIMIZERS, "optimizer", OPTIMIZERS)
    if args.storage.startswith("sqlite:///"):
        Path(args.storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    {"run": run, "report": report, "estimate": estimate, "commands": commands}[args.command](args)


if __name__ == "__main__":
    main()
