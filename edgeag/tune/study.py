"""``edgeag tune``: an Optuna study whose trials are isolated `edgeag train` runs.

A worker joins (or creates) the study in its storage and runs ``--trials`` trials;
every worker started with the same ``--storage`` and ``--study`` works on the same
study, on one machine or many. A trial picks its parameters (`edgeag.tune.space`),
then trains each seed in a fresh `edgeag train` child under the worker's budget
(`edgeag.tune.children`); its value is the mean of the seeds' final deterministic
evaluation returns.

How a trial ends:

- **COMPLETE**: every seed trained to the end and was evaluated.
- **PRUNED**: the pruner stopped a seed (its training return was below the median
  of the other trials at the same step), or a seed could not respect the memory
  budget: its plan was refused before training (``cannot start``) or the guard
  stopped it (``stopped at the memory budget``). Both are results (this setting does
  not fit this device), and a pruned trial tells the sampler so, where a failed one
  would be ignored. The reason is the trial's ``pruned_reason`` attribute.
- **FAIL**: a child failed otherwise, the parameters make an invalid configuration,
  the worker was interrupted (Ctrl-C: the child is stopped and waited for), or the
  study had already reached ``--max-total-trials`` when the trial started (it ran
  nothing). The reason is the trial's ``fail_reason`` attribute.
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeag.errors import EdgeagError
from edgeag.tune.children import run_seed, train_command
from edgeag.tune.space import SEED, Param, format_value, grid
from edgeag.tune.storage import Storage, open_storage

FORMAT = "edgeag-tune/1"
OBJECTIVE_ATTR = "edgeag_objective"
"""Study user attribute: what the trials' value means (env, algo, optimizer, seeds,
steps, settings, space). A worker whose objective differs is refused."""
OPTIMIZER_KEYS = ("lr", "alpha", "momentum", "eps", "fuse_backward")
"""Settings a best-trial preset keeps in its optimizer's sub-table."""


class TrialFailed(Exception):
    """A trial that cannot give a value; Optuna records it as FAIL and goes on."""


@dataclass
class TuneSettings:
    env: str
    algo: str
    optimizer: str
    params: list[Param]
    seeds: list[int]
    storage: Storage
    study_name: str
    out: Path
    trials: int | None = 20
    max_total_trials: int | None = None
    total_steps: int | None = None
    sets: dict = field(default_factory=dict)
    """``--set`` for every trial (the trial's parameters win)."""
    budget_bytes: int | None = None
    profile_arg: str | None = None
    threads: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    prune_after: int = 5
    """Trials that must complete before the median pruner prunes."""
    heartbeat: int | None = None
    """Seconds between a database worker's heartbeats (None: no heartbeat)."""
    log: object = print

    def objective(self) -> dict:
        """What a trial's value means; every worker of a study must agree on it."""
        return {"env": self.env, "algo": self.algo, "optimizer": self.optimizer,
                "seeds": self.seeds, "total_steps": self.total_steps,
                "sets": {k: str(v) for k, v in self.sets.items()},
                "space": [p.describe() for p in self.params]}

    def overrides(self, params: dict) -> dict:
        steps = {"total_steps": self.total_steps} if self.total_steps else {}
        return {**self.sets, **steps, **params}

    def resolve(self, overrides: dict):
        from edgeag.train.config import resolve_config

        return resolve_config(self.env, self.optimizer, overrides, self.algo)[0]

    def child_args(self) -> list[str]:
        args = ["--threads", str(self.threads)]
        if self.budget_bytes is not None:
            args += ["--budget", str(self.budget_bytes)]
        if self.profile_arg:
            args += ["--profile", self.profile_arg]
        return args


class StudyCap:
    """``--max-total-trials``: at most ``n`` trials of the study run, counted over
    every worker.

    Optuna's ``MaxTrialsCallback`` stops a worker after a trial once the study holds
    ``n`` trials in the given states; workers that asked for a trial at the same
    moment still run theirs, and the study ends above ``n``. Here the callback counts
    RUNNING and WAITING trials as well as COMPLETE and PRUNED ones (so a worker stops
    asking as soon as the running trials fill the cap), and `admits` decides for each
    new trial, by its number, whether it is within the cap: trial numbers are given
    out one at a time by the storage, so among the trials numbered up to this one,
    the ones that have not failed are counted, and a trial that would make them more
    than ``n`` runs nothing (FAIL, ``fail_reason`` says why). Hence at most ``n``
    trials end COMPLETE or PRUNED, however many workers race; a trial that fails
    frees its place.
    """

    def __init__(self, n: int):
        self.n = n

    def _counted(self, study, below: int | None = None) -> int:
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        return sum(1 for t in study.get_trials(deepcopy=False, states=states)
                   if below is None or t.number <= below)

    def reached(self, study) -> bool:
        return self._counted(study) >= self.n

    def admits(self, study, trial) -> bool:
        return self._counted(study, below=trial.number) <= self.n

    def __call__(self, study, frozen) -> None:
        if self.reached(study):
            study.stop()


def grid_left(study, params: list[Param]) -> int:
    """Grid points that no trial of the study has run or is running. Optuna's
    GridSampler, once every point has started, hands a worker a point another worker is
    still running; a worker stops asking instead (`grid_done`)."""
    from optuna.trial import TrialState

    taken = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)
             if t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)}
    points = grid(params)
    names = sorted(points)
    every = {tuple(zip(names, values)) for values in itertools.product(*(points[n] for n in names))}
    return len(every - taken)


def _sampler(s: TuneSettings):
    import optuna

    if s.sampler == "grid":
        return optuna.samplers.GridSampler(grid(s.params))
    if s.sampler == "random":
        return optuna.samplers.RandomSampler()
    return optuna.samplers.TPESampler()


def _pruner(s: TuneSettings, steps_per_seed: int):
    import optuna

    if s.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=s.prune_after,
                                       n_warmup_steps=steps_per_seed // 4)


def load_or_create_study(s: TuneSettings, steps_per_seed: int):
    """The study (created when new), with the objective checked against this worker's."""
    import optuna

    storage = open_storage(s.storage, s.heartbeat)
    try:
        study = optuna.create_study(study_name=s.study_name, storage=storage,
                                    sampler=_sampler(s), pruner=_pruner(s, steps_per_seed),
                                    direction="maximize", load_if_exists=True)
        theirs = study.user_attrs.get(OBJECTIVE_ATTR)
        mine = s.objective()
        if theirs is None:
            study.set_user_attr(OBJECTIVE_ATTR, mine)
            study.set_user_attr("format", FORMAT)
    except EdgeagError:
        raise
    except Exception as e:
        raise EdgeagError(f"cannot open study {s.study_name!r} in --storage "
                          f"{s.storage.display!r}: "
                          f"{s.storage.scrub(' '.join(str(e).split()))[:300]}") from None
    if theirs is not None and theirs != mine:
        diff = [f"{k} {theirs.get(k)!r} (here {mine[k]!r})" for k in mine
                if theirs.get(k) != mine[k]]
        raise EdgeagError(f"study {s.study_name!r} in {s.storage.display} was started with "
                          f"other settings: {'; '.join(diff)}; join it with the same "
                          "--env/--algo/--optimizer/--seeds/--total-steps/--set/--space, or "
                          "choose another --study")
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise EdgeagError(f"study {s.study_name!r} in {s.storage.display} minimizes; an edgeag "
                          "study maximizes the return: choose another --study")
    return study


def make_objective(s: TuneSettings, cap: StudyCap | None, steps_per_seed: int, failures: list):
    """The function Optuna calls for each trial of this worker."""
    return _Objective(s, cap, steps_per_seed, failures)


class _Objective:
    """One trial: its parameters admitted, each seed's ``edgeag train`` child run and
    reported (Optuna may prune between them), the mean final return."""

    def __init__(self, s: TuneSettings, cap: StudyCap | None, steps_per_seed: int,
                 failures: list):
        self.s, self.cap, self.steps_per_seed, self.failures = s, cap, steps_per_seed, failures
        self.host = platform.node()

    def __call__(self, trial) -> float:
        s = self.s
        params = {p.name: p.suggest(trial) for p in s.params}
        self._admit(trial, params)
        seeds = [params.pop(SEED)] if SEED in params else s.seeds  # a grid over seeds
        overrides = s.overrides(params)
        self._describe(trial, overrides, seeds)
        trial_dir = s.out / "trials" / str(trial.number)
        if trial_dir.exists():
            trial.set_user_attr("fail_reason", f"{trial_dir} already exists (is --out shared "
                                "with another study?)")
            raise TrialFailed("trial directory exists")
        records, returns, started = [], [], time.monotonic()
        for index, seed in enumerate(seeds):
            run = self._seed(trial, index, seed, overrides, trial_dir)
            records.append(run.record(s.out))
            _keep(trial, records, started)
            self._check(trial, seed, run)
            returns.append(run.final_return)
            trial.set_user_attr("returns", returns)
        return statistics.mean(returns)

    def _admit(self, trial, params: dict) -> None:
        """TrialFailed (and the study stopped) past ``--max-total-trials`` or on a grid
        point another trial holds."""
        if self.cap is not None and not self.cap.admits(trial.study, trial):
            trial.set_user_attr("fail_reason", f"not run: the study already had "
                                f"{self.cap.n} trials (--max-total-trials)")
            trial.study.stop()
            raise TrialFailed("over --max-total-trials")
        if self.s.sampler == "grid":
            same = [t.number for t in trial.study.get_trials(deepcopy=False)
                    if t.number != trial.number and t.params == params
                    and t.state.name in ("RUNNING", "COMPLETE", "PRUNED")]
            if same:
                trial.set_user_attr("fail_reason", f"not run: trial {same[0]} has these "
                                    "parameters (the grid is done)")
                trial.study.stop()
                raise TrialFailed("grid point taken")

    def _describe(self, trial, overrides: dict, seeds: list[int]) -> None:
        """Where and how the trial runs, as its user attributes; TrialFailed for settings
        that do not resolve."""
        s = self.s
        for key, value in (("host", self.host), ("out", str(s.out.resolve())),
                           ("overrides", dict(overrides)), ("seeds", seeds),
                           ("budget_bytes", s.budget_bytes), ("profile", s.profile_arg)):
            trial.set_user_attr(key, value)
        try:
            s.resolve(overrides)
        except EdgeagError as e:
            trial.set_user_attr("fail_reason", f"invalid setting: {e}")
            raise TrialFailed(str(e)) from None

    def _seed(self, trial, index: int, seed: int, overrides: dict, trial_dir: Path):
        """One seed's child, reporting its training return to Optuna as it goes."""
        s, offset = self.s, index * self.steps_per_seed

        def on_return(steps, value) -> bool:
            trial.report(value, offset + steps)
            return trial.should_prune()

        cmd = train_command(env=s.env, algo=s.algo, optimizer=s.optimizer, seed=seed,
                            out=trial_dir / f"s{seed}", args=s.child_args(), sets=overrides)
        try:
            return run_seed(cmd, trial_dir / f"s{seed}", seed, threads=s.threads,
                            on_return=on_return)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", f"interrupted (Ctrl-C) during seed {seed}; "
                                "its child was stopped")
            raise

    def _check(self, trial, seed: int, run) -> None:
        """Pruned (budget, refusal, Optuna) or failed seeds end the trial."""
        import optuna

        if run.status in ("pruned", "refused", "budget"):
            trial.set_user_attr("pruned_reason", f"seed {seed}: {run.message}")
            raise optuna.TrialPruned(f"seed {seed}: {run.message}")
        if run.status != "done":
            trial.set_user_attr("fail_reason", f"seed {seed}: {run.message}")
            self.failures.append(trial.number)
            raise TrialFailed(run.message)


def _keep(trial, records: list, started: float) -> None:
    """The trial's runs so far, and their wall time and peaks, as user attributes."""
    trial.set_user_attr("runs", records)
    trial.set_user_attr("run_dirs", [r["run_dir"] for r in records])
    trial.set_user_attr("wall_seconds", round(time.monotonic() - started, 2))
    peaks = [r["peak_rss_bytes"] for r in records if r.get("peak_rss_bytes")]
    if peaks:
        trial.set_user_attr("peak_rss_bytes", max(peaks))
    states = [r["optimizer_state_bytes"] for r in records
              if r.get("optimizer_state_bytes") is not None]
    if states:
        trial.set_user_attr("optimizer_state_bytes", max(states))


def _line(trial, study=None) -> str:
    """A trial in one line: number, state, value or reason, parameters."""
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    state = trial.state.name
    if trial.state.name == "COMPLETE":
        seeds = trial.user_attrs.get("returns") or []
        what = f"{trial.value:.1f}" + (f" (seeds {' / '.join(f'{r:.1f}' for r in seeds)})"
                                       if len(seeds) > 1 else "")
    else:
        what = trial.user_attrs.get("pruned_reason") or trial.user_attrs.get("fail_reason") or ""
    secs = trial.user_attrs.get("wall_seconds")
    return (f"trial {trial.number} {state} {what}".rstrip() + (f"  {params}" if params else "")
            + (f"  ({secs:.1f} s)" if secs is not None else ""))


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else format_value(value)


def run_tune(s: TuneSettings, on_open=None) -> int:
    """Join or create the study, run this worker's trials, then write the results of
    the whole study (`write_results`). Returns the exit code: 0, or 1 when a trial of
    this worker failed because a child failed (the results are written all the same).
    Ctrl-C: the running trial is marked FAIL, its child stopped, KeyboardInterrupt
    raised. ``on_open()`` is called once the study is open (before any trial)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    steps_per_seed = s.resolve(s.overrides({})).total_steps
    study = load_or_create_study(s, steps_per_seed)
    if on_open is not None:
        on_open()
    cap = StudyCap(s.max_total_trials) if s.max_total_trials else None
    failures: list[int] = []
    n_before = {t.number for t in study.get_trials(deepcopy=False)}
    s.log(f"edgeag tune: study {s.study_name!r} in {s.storage.display} "
          f"({len(n_before)} trials so far); this worker: "
          + (f"{s.trials} trials" if s.trials else "until the grid is done")
          + (f", at most {cap.n} in the study" if cap else "")
          + f"; {s.sampler} sampler, {'median' if s.pruner == 'median' else 'no'} pruner; "
          f"{s.algo} {s.optimizer} on {s.env}, "
          + (f"seeds {','.join(map(str, s.seeds))}, " if s.seeds else "one seed per trial, ")
          + f"{steps_per_seed:,} steps each, {s.threads} thread(s)"
          + (f", budget {s.budget_bytes / 2**20:.1f} MiB ({s.budget_bytes:,} bytes)"
             if s.budget_bytes else "") + f"; runs in {s.out}/trials/")

    def progress(study, frozen) -> None:
        s.log(_line(frozen))

    def grid_done(study, frozen) -> None:
        if grid_left(study, s.params) == 0:
            study.stop()

    callbacks = [progress] + ([cap] if cap else []) + ([grid_done] if s.sampler == "grid" else [])
    if cap and cap.reached(study):
        s.log(f"the study already holds {cap.n} trials (--max-total-trials): none run here")
    elif s.sampler == "grid" and grid_left(study, s.params) == 0:
        s.log("every point of the grid has run or is running: none run here")
    else:
        try:
            study.optimize(make_objective(s, cap, steps_per_seed, failures), n_trials=s.trials,
                           catch=(TrialFailed,), callbacks=callbacks, gc_after_trial=False)
        except KeyboardInterrupt:
            s.log("edgeag tune: interrupted: the running trial is marked FAIL and its child "
                  "stopped; the study keeps every finished trial")
            raise
        except (EdgeagError, TrialFailed):
            raise
        except Exception as e:
            if type(e).__module__.startswith(("sqlalchemy", "psycopg", "optuna.exceptions")):
                raise EdgeagError(f"storage {s.storage.display}: "
                                  f"{s.storage.scrub(' '.join(str(e).split()))[:300]}") from None
            raise
    write_results(s, study)
    return 1 if failures else 0


def write_results(s: TuneSettings, study) -> None:
    """Print the best trial of the study; write ``best.toml`` (a preset `edgeag train
    --preset` reads), ``params.png`` and ``tune.json`` into ``--out``."""
    from optuna.trial import TrialState

    from edgeag.io import write_json, write_text

    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(1 for t in trials if t.state == state) for state in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    summary = {
        "format": FORMAT, "study": s.study_name, "storage": s.storage.display,
        "objective": s.objective(), "direction": "maximize",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
        "trials": counts,
        "best": None if best is None else {
            "number": best.number, "value": best.value, "params": best.params,
            "user_attrs": {k: v for k, v in best.user_attrs.items() if k != "runs"}},
    }
    paths = []
    if best is not None:
        preset = s.out / "best.toml"
        write_text(preset, best_preset(s, best))
        paths.append(preset)
        if s.params:
            png = s.out / "params.png"
            plot_params(s.params, complete, best.number, png)
            paths.append(png)
    write_json(s.out / "tune.json", summary)
    paths.append(s.out / "tune.json")
    print(f"study {s.study_name!r}: {len(trials)} trials (" +
          ", ".join(f"{n} {k}" for k, n in counts.items() if n) + f"); {s.storage.display}")
    if best is None:
        print("no trial has completed yet: no best trial")
    else:
        print("best " + _line(best))
        print(f"preset: {s.out / 'best.toml'}  (edgeag train --preset {s.out / 'best.toml'} "
              f"--algo {s.algo} --optimizer {s.optimizer})")
    print("results: " + ", ".join(str(p) for p in paths))


def best_preset(s: TuneSettings, best) -> str:
    """The best trial's configuration as a preset file: the env table holds every
    resolved setting the optimizers share, the optimizer's sub-table its own settings
    and the tuned ones; ``edgeag train --preset`` reproduces the trial exactly."""
    from edgeag.io import toml_dumps
    from edgeag.train.config import optimizer_family

    cfg = s.resolve(best.user_attrs.get("overrides") or s.overrides(best.params))
    values = cfg.as_dict()
    for key in ("env_id", "optimizer", "seed"):
        values.pop(key)
    if not values.get("env_kwargs"):
        values.pop("env_kwargs", None)
    own = [k for k in values if k in OPTIMIZER_KEYS or k in best.params]
    family = optimizer_family(s.optimizer)
    seeds = best.user_attrs.get("returns") or []
    header = [
        f"# edgeag tune: best trial {best.number} of study {s.study_name!r} "
        f"({s.storage.display})",
        f"# {s.algo} {s.optimizer} on {s.env}; value {best.value:.2f}: mean final evaluation "
        f"return over seeds {', '.join(map(str, best.user_attrs.get('seeds') or s.seeds))}"
        + (f" ({' / '.join(f'{r:.1f}' for r in seeds)})" if seeds else ""),
        "# tuned: " + ", ".join(f"{k} = {format_value(v)}" for k, v in best.params.items()),
        f"# edgeag train --preset best.toml --algo {s.algo} --env {s.env} "
        f"--optimizer {s.optimizer} --seed 1", "",
    ]
    body = toml_dumps({_key(s.env): {k: v for k, v in values.items() if k not in own},
                       f"{_key(s.env)}.{family}": {k: values[k] for k in own}})
    return "\n".join(header) + body


def _key(name: str) -> str:
    import json

    return json.dumps(name)


def _log_choices(p: Param) -> bool:
    """Listed positive numbers spanning 10x or more (alpha=1,4,16,64) read best on a log
    axis."""
    c = p.choices
    return bool(c) and p.kind in ("int", "float") and min(c) > 0 and max(c) >= 10 * min(c)


def plot_params(params: list[Param], trials: list, best_number: int, path: Path) -> None:
    """Final evaluation return against each tuned parameter, one point per seed of
    every completed trial; the best trial's points ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, p in zip(axes.flat, params):
        for t in trials:
            if p.name not in t.params:
                continue
            x = t.params[p.name]
            x = (p.choices.index(x) if p.kind == "str" else
                 int(x) if isinstance(x, bool) else float(x))
            ys = t.user_attrs.get("returns") or [t.value]
            best = t.number == best_number
            ax.scatter([x] * len(ys), ys, s=40 if best else 16, alpha=0.8,
                       color="tab:red" if best else "tab:blue", zorder=3 if best else 2,
                       edgecolors="black" if best else "none")
        if p.kind == "str":
            ax.set_xticks(range(len(p.choices)), list(p.choices))
            ax.set_xlim(-0.5, len(p.choices) - 0.5)
        elif p.log or _log_choices(p):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(p.name)
        ax.set_ylabel("final eval return")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    fig.suptitle(f"one point per seed of each completed trial ({len(trials)}); red: best "
                 f"trial {best_number}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def stderr_log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
