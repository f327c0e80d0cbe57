"""The studies behind the presets' alpha and lr, and the sensitivity report `docs/tuning.md`
quotes.

    python scripts/tune_presets.py run [--tasks ppo-cartpole,...] [--jobs 2]
    python scripts/tune_presets.py report

``run`` runs, task after task, three GridSampler studies of `edgeag train` runs, each
trial seeds 1, 2, 3 (final evaluation return, 10 deterministic episodes), 1 thread
per run:

- ``<task>-alphagrad``: stateless AlphaGrad, alpha x lr (the paper's rule);
- ``<task>-alphagrad-sqrt``: stateless AlphaGrad with ``alpha_scale = sqrt_numel``
  (each tensor's alpha times the square root of its size), alpha on one grid shared
  by every task, at the lr of the first study's best trial;
- ``<task>-adam``: Adam's lr.

Every study is one ``edgeag tune`` command, started ``--jobs`` times at once: the
workers split the grid through the study's storage (``--storage``, default the journal
file results/tune/presets.log; a database URL lets other machines join). A finished
trial stays in the study, so an interrupted ``run`` continues where it stopped.

``report`` reads the studies back with Optuna's API and writes docs/tuning/results.md
(every trial's per-seed returns, the good-alpha ranges), one figure per task and
across.png (every task on one scale).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from edgeag.report.studies import complete_trials, curve_mean, load_study, random_return

TASKS = {
    "ppo-cartpole": dict(algo="ppo", env="CartPole-v1", alphas=[1, 4, 16, 64],
                         lrs=[1e-3, 3e-3, 1e-2], adam_lrs=[3e-4, 1e-3, 3e-3]),
    "dqn-cartpole": dict(algo="dqn", env="CartPole-v1", alphas=[4, 16, 64, 256],
                         lrs=[2.5e-4, 1e-3], adam_lrs=[1e-4, 2.5e-4, 1e-3]),
    "ppo-acrobot": dict(algo="ppo", env="Acrobot-v1", alphas=[1, 4, 16, 64],
                        lrs=[1e-3, 3e-3, 1e-2], adam_lrs=[1e-4, 3e-4, 1e-3]),
    "ppo-pendulum": dict(algo="ppo", env="Pendulum-v1", alphas=[1, 4, 16, 64],
                         lrs=[3e-4, 1e-3, 3e-3], adam_lrs=[3e-4, 1e-3, 3e-3]),
    "td3-pendulum": dict(algo="td3", env="Pendulum-v1", alphas=[2, 8, 32, 128], lrs=[1e-3],
                         adam_lrs=[1e-3]),
    "sac-pendulum": dict(algo="sac", env="Pendulum-v1", alphas=[8, 32, 128, 512], lrs=[1e-3],
                         adam_lrs=[3e-4, 1e-3]),
}
"""Each task's grids: stateless AlphaGrad's alpha x lr, Adam's lr (the presets' other
settings: `edgeag/algos/*/presets.toml`)."""

SCALED_ALPHAS = [0.1, 0.3, 1, 3]
"""The ``sqrt_numel`` alpha grid, the same for every task (is one alpha enough?)."""

SEEDS = 3
GOOD = 0.9
"""A setting is *good* when its mean return is at least this fraction of the way from
a random policy's return to the task's best mean."""

STORAGE = "results/tune/presets.log"
OUT = Path("results/tune/presets")


def _values(xs) -> str:
    return ",".join(repr(float(x)) for x in xs)


def study_commands(task: str, storage: str, best_lr: float | None) -> list[tuple[str, list]]:
    """(study name, `edgeag tune` arguments) of the task's three studies; the scaled
    study needs the first study's best lr (None: not known yet)."""
    t = TASKS[task]
    base = ["--algo", t["algo"], "--env", t["env"], "--sampler", "grid", "--pruner", "none",
            "--seeds", str(SEEDS), "--threads", "1", "--storage", storage]
    out = []
    name = f"{task}-alphagrad"
    out.append((name, base + ["--optimizer", "alphagrad", "--study", name, "--space",
                              f"alpha={_values(t['alphas'])},lr={_values(t['lrs'])}",
                              "--set", "momentum=0.0", "--out", str(OUT / name)]))
    if best_lr is not None:
        name = f"{task}-alphagrad-sqrt"
        out.append((name, base + ["--optimizer", "alphagrad", "--study", name, "--space",
                                  f"alpha={_values(SCALED_ALPHAS)}", "--set",
                                  f"lr={best_lr!r}", "--set", "alpha_scale=sqrt_numel",
                                  "--set", "momentum=0.0", "--out", str(OUT / name)]))
    name = f"{task}-adam"
    out.append((name, base + ["--optimizer", "adam", "--study", name, "--space",
                              f"lr={_values(t['adam_lrs'])}", "--out", str(OUT / name)]))
    return out


def rank(trial) -> tuple:
    """Best first: the mean final return, then the learning curve's mean."""
    return (trial.value, curve_mean(trial), -trial.number)


def best_lr(storage: str, task: str) -> float | None:
    trials = complete_trials(load_study(storage, f"{task}-alphagrad"))
    t = TASKS[task]
    if len(trials) < len(t["alphas"]) * len(t["lrs"]):
        return None
    return max(trials, key=rank).params["lr"]


def tune(name: str, args: list, jobs: int) -> None:
    cmd = [sys.executable, "-m", "edgeag.cli", "tune", *args]
    log_dir = OUT / name
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"{name}: edgeag tune {' '.join(args)}", flush=True)
    workers = []
    for j in range(jobs):
        log = open(log_dir / f"worker{j}.log", "a")
        workers.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    for proc, log in workers:
        codes.append(proc.wait())
        log.close()
    if any(code != 0 for code in codes):
        sys.exit(f"tune_presets: {name}: edgeag tune exited {codes} (logs: {log_dir})")


def run(args) -> None:
    for task in args.tasks:
        for name, cmd in study_commands(task, args.storage, None)[:1]:
            tune(name, cmd, args.jobs)
        lr = best_lr(args.storage, task)
        for name, cmd in study_commands(task, args.storage, lr)[1:]:
            tune(name, cmd, args.jobs)


# --- report ---------------------------------------------------------------------------

def summarise(trials: list, keys: tuple) -> list[dict]:
    rows = []
    for t in trials:
        returns = t.user_attrs["returns"]
        rows.append({**{k: t.params[k] for k in keys}, "returns": returns,
                     "mean": statistics.fmean(returns),
                     "std": statistics.pstdev(returns), "number": t.number,
                     "curve_mean": curve_mean(t),
                     "peak_rss_bytes": t.user_attrs.get("peak_rss_bytes"),
                     "optimizer_state_bytes": t.user_attrs.get("optimizer_state_bytes")})
    return sorted(rows, key=lambda r: tuple(r[k] for k in keys))


def good_range(rows: list[dict], floor: float, best: float) -> list:
    """The alphas of ``rows`` (one lr) whose mean is good."""
    threshold = floor + GOOD * (best - floor)
    return [r["alpha"] for r in rows if r["mean"] >= threshold]


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def report(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Preset studies: every trial", "",
             "Written by `python scripts/tune_presets.py report` from the studies in "
             f"`{args.storage}`. Each cell: final evaluation return (10 deterministic "
             "episodes) of seeds 1, 2, 3, then their mean, and in brackets the training "
             "return averaged over the whole run (the learning curve's mean: how soon it "
             f"learns). *Good* (**bold**): a mean at "
             f"least {GOOD:.0%} of the way from a random policy's return to the task's best "
             "mean. The study commands: `python scripts/tune_presets.py run`.", ""]
    summary = {}
    for task in args.tasks:
        t = TASKS[task]
        studies = {kind: summarise(complete_trials(load_study(args.storage, f"{task}-{kind}")),
                                   keys)
                   for kind, keys in (("alphagrad", ("alpha", "lr")),
                                      ("alphagrad-sqrt", ("alpha",)), ("adam", ("lr",)))}
        if not studies["alphagrad"]:
            continue
        floor = random_return(t["env"])
        scaled_lr = best_lr(args.storage, task)
        every = studies["alphagrad"] + studies["alphagrad-sqrt"] + studies["adam"]
        best = max(r["mean"] for r in every)
        threshold = floor + GOOD * (best - floor)
        lines += [f"## {task}: {t['algo'].upper()} {t['env']}", "",
                  f"Random policy: {floor:.1f}; best mean: {best:.1f}; good: mean >= "
                  f"{threshold:.1f}.", "",
                  "Stateless AlphaGrad (`alpha_scale = none`):", "",
                  "| alpha | " + " | ".join(f"lr {_fmt(lr)}" for lr in t["lrs"]) + " |",
                  "|---|" + "---|" * len(t["lrs"])]

        def cell(r, threshold=threshold):
            text = (" / ".join(f"{x:.1f}" for x in r["returns"]) + f" → {r['mean']:.1f}"
                    f" ({r['curve_mean']:.0f})")
            return f"**{text}**" if r["mean"] >= threshold else text

        grid = {(r["alpha"], r["lr"]): r for r in studies["alphagrad"]}
        for a in t["alphas"]:
            lines.append(f"| {_fmt(a)} | " + " | ".join(
                cell(grid[(float(a), float(lr))]) if (float(a), float(lr)) in grid else "-"
                for lr in t["lrs"]) + " |")
        per_lr = {}
        for lr in t["lrs"]:
            rows = [r for r in studies["alphagrad"] if r["lr"] == float(lr)]
            per_lr[_fmt(lr)] = good_range(rows, floor, best)
        scaled = studies["alphagrad-sqrt"]
        if scaled:
            lines += ["", f"AlphaGrad with `alpha_scale = sqrt_numel`, lr {_fmt(scaled_lr)}:", "",
                      "| alpha | returns |", "|---|---|"]
            lines += [f"| {_fmt(r['alpha'])} | {cell(r)} |" for r in scaled]
        if studies["adam"]:
            lines += ["", "Adam:", "", "| lr | returns |", "|---|---|"]
            lines += [f"| {_fmt(r['lr'])} | {cell(r)} |" for r in studies["adam"]]
        lines += ["", "Good alphas per lr (stateless, `none`): " + "; ".join(
            f"lr {lr}: {', '.join(map(_fmt, a)) or 'none'}" for lr, a in per_lr.items())
            + (f". `sqrt_numel` at lr {_fmt(scaled_lr)}: "
               + (", ".join(map(_fmt, good_range(scaled, floor, best))) or "none")
               if scaled else "") + ".", ""]
        summary[task] = {"random_return": floor, "best_mean": best, "threshold": threshold,
                         "good_alphas": per_lr, "scaled_lr": scaled_lr,
                         "good_scaled_alphas": good_range(scaled, floor, best),
                         "studies": studies}
        plot_task(task, t, studies, floor, threshold, scaled_lr, out / f"{task}.png")
    if len(summary) > 1:
        lines += cross_task(summary)
        plot_across(summary, out / "across.png")
    from edgeag.io import write_json, write_text

    write_text(out / "results.md", "\n".join(lines))
    write_json(out / "results.json", summary)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'} and "
          f"{', '.join(str(out / (t + '.png')) for t in summary)}"
          + (f", {out / 'across.png'}" if len(summary) > 1 else ""))


def cross_task(summary: dict) -> list[str]:
    """Is one alpha good on every task? Unscaled: at each task's best lr, and at any of
    its lrs; scaled: at the lr its study ran."""
    def common(sets):
        sets = [set(x) for x in sets]
        return sorted(set.intersection(*sets)) if sets else []

    at_best, at_any, scaled = [], [], []
    for s in summary.values():
        lr = _fmt(s["scaled_lr"]) if s["scaled_lr"] is not None else None
        at_best.append(s["good_alphas"].get(lr, []))
        at_any.append([a for alphas in s["good_alphas"].values() for a in alphas])
        scaled.append(s["good_scaled_alphas"])
    rows = ["## Across tasks", "", "| task | good alphas at the best lr | good alphas at any lr |"
            " good `sqrt_numel` alphas |", "|---|---|---|---|"]
    for (task, s), b, a, c in zip(summary.items(), at_best, at_any, scaled):
        rows.append(f"| {task} (lr {_fmt(s['scaled_lr'])}) | {', '.join(map(_fmt, b)) or '-'} | "
                    f"{', '.join(map(_fmt, sorted(set(a)))) or '-'} | "
                    f"{', '.join(map(_fmt, c)) or '-'} |")
    groups = [("every task", list(summary))]
    for algo in sorted({TASKS[t]["algo"] for t in summary}):
        others = [t for t in summary if TASKS[t]["algo"] != algo]
        if len(others) > 1:
            groups.append((f"every task but {algo.upper()}", others))
    names = list(summary)
    for label, tasks in groups:
        idx = [names.index(t) for t in tasks]
        rows.append(f"| **{label}** | "
                    f"{', '.join(map(_fmt, common([at_best[i] for i in idx]))) or 'none'} | "
                    f"{', '.join(map(_fmt, common([at_any[i] for i in idx]))) or 'none'} | "
                    f"{', '.join(map(_fmt, common([scaled[i] for i in idx]))) or 'none'} |")
    return rows + [""]


def plot_across(summary: dict, path: Path) -> None:
    """Every task on one scale (0: a random policy, 1: the task's best mean): against
    alpha at the task's best lr, and against the ``sqrt_numel`` alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for task, s in summary.items():
        def score(v, s=s):
            return (v - s["random_return"]) / (s["best_mean"] - s["random_return"])
        rows = [r for r in s["studies"]["alphagrad"] if r["lr"] == s["scaled_lr"]]
        if rows:
            ax.plot([r["alpha"] for r in rows], [score(r["mean"]) for r in rows], "-o",
                    label=f"{task} (lr {_fmt(s['scaled_lr'])})")
        rows = s["studies"]["alphagrad-sqrt"]
        if rows:
            bx.plot([r["alpha"] for r in rows], [score(r["mean"]) for r in rows], "-o",
                    label=task)
    ax.set_title("stateless AlphaGrad, alpha as given (each task's best lr)", fontsize=9)
    bx.set_title("alpha x sqrt(tensor size) (same lr)", fontsize=9)
    ax.set_ylabel("score of the mean return (0 random, 1 best)")
    for a, label in ((ax, "alpha"), (bx, "alpha before the per-tensor scale")):
        a.set_xscale("log")
        a.set_xlabel(label)
        a.axhline(GOOD, color="grey", lw=0.8, ls="--")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def plot_task(task: str, t: dict, studies: dict, floor: float, threshold: float,
              scaled_lr: float | None, path: Path) -> None:
    """Left: return against alpha, a line per lr (means, seeds as dots), the scaled
    rule dashed against alpha / sqrt-scaled alpha on its own axis. Right: return
    against lr, Adam and the best alpha of each lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(14, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, lr in enumerate(t["lrs"]):
        rows = [r for r in studies["alphagrad"] if r["lr"] == float(lr)]
        if not rows:
            continue
        xs = [r["alpha"] for r in rows]
        ax.plot(xs, [r["mean"] for r in rows], "-o", color=colors[i], label=f"lr {_fmt(lr)}")
        for r in rows:
            ax.scatter([r["alpha"]] * len(r["returns"]), r["returns"], s=10, color=colors[i],
                       alpha=0.4)
    ax.set_title("stateless AlphaGrad (alpha as given)", fontsize=9)
    ax.set_xlabel("alpha")
    rows = studies["alphagrad-sqrt"]
    if rows:
        bx.plot([r["alpha"] for r in rows], [r["mean"] for r in rows], "-o", color="tab:purple",
                label=f"lr {_fmt(scaled_lr)}")
        for r in rows:
            bx.scatter([r["alpha"]] * len(r["returns"]), r["returns"], s=10, color="tab:purple",
                       alpha=0.4)
    bx.set_title("AlphaGrad, alpha x sqrt(tensor size)", fontsize=9)
    bx.set_xlabel("alpha (before the per-tensor scale)")
    best_per_lr = []
    for lr in t["lrs"]:
        rows = [r for r in studies["alphagrad"] if r["lr"] == float(lr)]
        if rows:
            best_per_lr.append((float(lr), max(rows, key=lambda r: r["mean"])))
    if best_per_lr:
        cx.plot([lr for lr, _ in best_per_lr], [r["mean"] for _, r in best_per_lr], "-o",
                color="tab:blue", label="AlphaGrad, best alpha per lr")
        for lr, r in best_per_lr:
            cx.scatter([lr] * len(r["returns"]), r["returns"], s=10, color="tab:blue", alpha=0.4)
    rows = studies["adam"]
    if rows:
        cx.plot([r["lr"] for r in rows], [r["mean"] for r in rows], "-s", color="tab:orange",
                label="Adam")
        for r in rows:
            cx.scatter([r["lr"]] * len(r["returns"]), r["returns"], s=10, color="tab:orange",
                       alpha=0.4)
    cx.set_title("against the learning rate", fontsize=9)
    cx.set_xlabel("lr")
    for a in (ax, bx, cx):
        a.set_xscale("log")
        a.axhline(threshold, color="grey", lw=0.8, ls="--")
        a.axhline(floor, color="grey", lw=0.8, ls=":")
        a.set_ylabel("final eval return")
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.suptitle(f"{t['algo'].upper()} {t['env']}: mean of seeds 1-3 (line) and each seed "
                 f"(dots); dashed: good ({GOOD:.0%} of the way from random, dotted, "
                 "to the best)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("run", "report"))
    ap.add_argument("--tasks", default=",".join(TASKS),
                    help=f"comma-separated, of {', '.join(TASKS)} (default all)")
    ap.add_argument("--jobs", type=int, default=2, help="workers per study (1 thread each)")
    ap.add_argument("--storage", default=STORAGE, help=f"study storage (default {STORAGE})")
    ap.add_argument("--out", default="docs/tuning", help="report directory (default docs/tuning)")
    args = ap.parse_args()
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in args.tasks if t not in TASKS]
    if bad:
        print(f"tune_presets: invalid --tasks {','.join(bad)}: expected {', '.join(TASKS)}",
              file=sys.stderr)
        sys.exit(2)
    if args.jobs < 1:
        print(f"tune_presets: invalid --jobs {args.jobs}: expected a positive integer",
              file=sys.stderr)
        sys.exit(2)
    if "://" not in args.storage:  # a journal file
        Path(args.storage).parent.mkdir(parents=True, exist_ok=True)
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
