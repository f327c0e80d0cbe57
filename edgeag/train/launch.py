"""``edgeag train``: the flags made into a model of the Python API (`edgeag.api`: a new
run, a resumed one, or a new one from another run's weights), trained with its
``learn``, the outcome printed. Every user error is raised here, in the API or in the
planner, before anything is written. Also the kernel's hard cap (a cgroup child)."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeag.algos import ALGORITHMS, supported_algos
from edgeag.errors import EdgeagError
from edgeag.memory.hardcap import inherited_cgroup
from edgeag.train.device import HARD_CAPS  # noqa: F401 (the --hard-cap values, re-exported)
from edgeag.train.rundir import RunDir

EXPERIMENTAL = {("dqn", "alphagrad"): "AlphaGrad on DQN is experimental: the AlphaGrad paper "
                "reports it unstable against Adam"}
"""(algo, optimizer) pairs that train but are not recommended, and why."""


PARENT_ENV = "EDGEAG_PARENT_PID"
"""Set to its own pid by a parent that starts `edgeag train` itself (`edgeag.train.children`
ties the children it starts to their parent without it): the run stops when that parent
dies (`stop_with_parent`)."""


def stop_with_parent() -> None:
    """When `PARENT_ENV` names this process's parent, have Linux send SIGTERM to this
    process when the parent dies (`children.die_with_parent`), so a parent killed
    outright leaves no training run behind; exit at once if it is already gone."""
    pid = os.environ.pop(PARENT_ENV, None)
    if not pid or not pid.isdigit():
        return
    from edgeag.train.children import die_with_parent

    if not die_with_parent(int(pid)):
        raise EdgeagError(f"the process that started this run (pid {pid}) has exited")


@dataclass(frozen=True)
class TrainRequest:
    """What ``edgeag train`` was asked: its flags, as one object (`launch`)."""

    env: str | None = None
    algo: str | None = None
    optimizer: str | None = None
    overrides: dict = field(default_factory=dict)
    """``--set`` settings, by config field name."""
    profile: str | None = None
    budget: str | None = None
    threads: int | None = None
    hard_cap: str | None = None
    out: str | None = None
    resume: str | None = None
    init_from: str | None = None
    preset: str | None = None
    env_kwargs: list[str] | None = None
    eval_every: int | None = None
    stop_at_return: float | None = None
    tensorboard: bool = False
    dry_run: bool = False
    progress: bool = True
    shrink_buffer: bool = False
    argv: list[str] | None = None
    """The command line, re-run by a cgroup hard cap's child."""

    @property
    def device_flags(self) -> dict:
        return dict(profile=self.profile, budget=self.budget, threads=self.threads,
                    hard_cap=self.hard_cap)


def launch(request: TrainRequest) -> int:
    """``edgeag train``: a model of the Python API (`edgeag.api`) made from the flags,
    trained with its ``learn``, the outcome printed; returns the exit code. ``env`` and
    ``optimizer`` None: the algorithm's defaults. ``preset``: a preset file (the format of
    ``edgeag/algos/<algo>/presets.toml``) used instead of the shipped one."""
    stop_with_parent()
    env_kwargs = _check(request)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if request.resume:
        started = _resumed(request, env_kwargs, log)
    else:
        started = _new(request, env_kwargs, log)
    if started is None:
        return 0
    model, run, learn, created = started
    if model.device.hard_cap in ("auto", "cgroup") and inherited_cgroup() is None:
        code = _in_own_cgroup(request, model, run, created, log)
        if code is not None:
            return code
    try:
        learn()
    except BaseException:
        release(created)  # refused or failed before anything was written: leave no trace
        raise
    return _report(model, run)


def _check(request: TrainRequest) -> dict | None:
    """The one-line refusals of flags that cannot go together; the parsed
    ``--env-kwargs``."""
    from edgeag.train.config import coerce_env_kwargs, coerce_setting, config_class

    r = request
    if r.algo is not None and r.algo not in ALGORITHMS:
        raise EdgeagError(f"unknown algo {r.algo!r} (accepted: {', '.join(supported_algos())})")
    if r.tensorboard:
        from edgeag.train import tblog
        tblog.require()
    if r.eval_every is not None and r.eval_every < 1:
        raise EdgeagError(f"invalid --eval-every {r.eval_every}: expected a positive number of "
                          "env steps")
    if r.stop_at_return is not None and (r.eval_every is None
                                         or not math.isfinite(r.stop_at_return)):
        raise EdgeagError(f"invalid --stop-at-return {r.stop_at_return}: expected a number, "
                          "with --eval-every N (it stops when a periodic evaluation reaches it)")
    kwargs = coerce_env_kwargs(r.env_kwargs, "--env-kwargs") if r.env_kwargs else None
    for name, value in r.overrides.items():  # the CLI knows edgeag's names only (not SB3's)
        coerce_setting(name, value, "override", config_class(r.algo or "ppo"))
    if r.resume and r.init_from:
        raise EdgeagError("--resume continues a run; --init-from starts a new one from a "
                          "run's weights: give one of them")
    if (r.resume or r.init_from) and r.preset:
        raise EdgeagError("--preset is for a new run; --resume and --init-from start from a "
                          "run's own settings")
    return kwargs


def _callbacks(request: TrainRequest) -> list:
    from edgeag import api

    if request.eval_every is None:
        return []
    stop = None if request.stop_at_return is None else \
        api.StopTrainingOnRewardThreshold(request.stop_at_return)
    return [api.EvalCallback(request.eval_every, callback_on_new_best=stop)]


def _resumed(request: TrainRequest, env_kwargs: dict | None, log):
    """The model of ``--resume``: its own settings, checked against the flags given; None
    when the run is finished and no longer total was asked for."""
    from edgeag import api

    r = request
    run = RunDir(r.resume)
    given = dict(r.overrides)
    given.update({k: v for k, v in (("env_id", r.env), ("algo", r.algo),
                                    ("optimizer", r.optimizer), ("env_kwargs", env_kwargs))
                  if v is not None})
    model = api.load(r.resume, _purpose="resume", verbose=1, tensorboard=r.tensorboard,
                     shrink_buffer=r.shrink_buffer, **r.device_flags)
    api.check_resume_overrides(model.cfg, given, "cannot resume")
    total = _coerced_total(r.overrides, model.cfg)
    if model._ckpt is not None and total is None and \
            model.num_timesteps >= model.cfg.planned_steps:
        model._policy()  # the checkpoint fits its config (one-line refusal if not)
        print(f"run: {run.path} is finished (step {model.num_timesteps:,} of "
              f"{model.cfg.planned_steps:,}): nothing to do. Evaluate it with edgeag eval "
              f"{run.path}; train it further with --total-steps N (more than "
              f"{model.num_timesteps:,})")
        return None
    _header(log, model, model.origin,
            dataclasses.replace(model.cfg, total_steps=total) if total else None)
    hooks = _callbacks(r)
    return (model, run, lambda: model._continue(total or model.cfg.total_steps, hooks,
                                                r.progress), [])


def _new(request: TrainRequest, env_kwargs: dict | None, log):
    """The model of a new run (``--init-from``: another run's weights); None after a dry
    run."""
    from edgeag import api

    r = request
    if r.init_from:
        model, cfg, origin = _initialised(r, env_kwargs)
    else:
        model = api.MODELS[r.algo or "ppo"](
            r.env, optimizer=r.optimizer, preset=r.preset, verbose=1, tensorboard=r.tensorboard,
            shrink_buffer=r.shrink_buffer, env_kwargs=env_kwargs, run_dir=r.out,
            **r.device_flags, **r.overrides)
        cfg, origin = model.cfg, model.origin
    run = RunDir(r.out or api.default_run_dir(cfg))
    model.run_dir = model._new_run_dir = run
    if not r.dry_run and (run.config.exists() or run.checkpoint.exists()):
        raise EdgeagError(f"{run.path} already holds a run: continue it with --resume "
                          f"{run.path}, or choose another --out")
    _header(log, model, origin, cfg)
    if r.dry_run:
        if r.init_from:
            model.cfg = cfg
        print("dry run: plan fits" if model.plan().fits else "dry run")
        return None
    hooks = _callbacks(r)
    created = claim_run_dir(run.path)
    return model, run, lambda: model.learn(cfg.total_steps, hooks, progress_bar=r.progress), \
        created


def _initialised(r: TrainRequest, env_kwargs: dict | None):
    from edgeag import api

    model = api.load(r.init_from, env=r.env, env_kwargs=env_kwargs, verbose=1,
                     tensorboard=r.tensorboard, shrink_buffer=r.shrink_buffer, run_dir=r.out,
                     _purpose="initialise from", **r.device_flags,
                     **({} if r.optimizer is None else {"optimizer": r.optimizer}),
                     **r.overrides)
    if r.algo is not None and r.algo != model.algo:
        raise EdgeagError(f"--algo {r.algo}: {r.init_from} is a {model.algo} run; --init-from "
                          "keeps its algorithm and network")
    if model._ckpt is None:
        raise EdgeagError(f"cannot initialise from {r.init_from}: it has no checkpoint yet")
    cfg = model._fine_tune if getattr(model, "_fine_tune", None) else model.cfg
    return model, cfg, f"initialised from {model._source.checkpoint}"


def _in_own_cgroup(request: TrainRequest, model, run, created: list, log) -> int | None:
    """``--hard-cap auto|cgroup``: train in a child inside a cgroup of its own; its exit
    code, or None where no cgroup can be made (``auto``: RLIMIT_DATA instead)."""
    from edgeag.memory.hardcap import make_cgroup

    budget_bytes = model.device.budget_bytes
    group = make_cgroup(budget_bytes, f"edgeag-train-{os.getpid()}")
    if group is None and model.device.hard_cap == "cgroup":
        release(created)
        raise EdgeagError("--hard-cap cgroup: no cgroup memory controller can be used here "
                          "(needs cgroup v2 with the memory controller, or v1's memory "
                          "hierarchy, writable); --hard-cap rlimit works everywhere")
    if group is None:
        log("hard cap: no cgroup memory controller here; RLIMIT_DATA instead")
        return None
    log(f"hard cap: training in {group.description} = {budget_bytes:,} bytes, no swap")
    try:
        return _train_in_cgroup(group, request.argv or sys.argv[1:], run,
                                bool(request.resume or request.out), budget_bytes)
    finally:
        release(created)  # a child refused before writing leaves no empty directory


def _coerced_total(overrides: dict, cfg) -> int | None:
    if "total_steps" not in overrides:
        return None
    from edgeag.train.config import coerce_setting, config_class

    total = coerce_setting("total_steps", overrides["total_steps"], "override",
                           config_class(cfg.algo))
    return dataclasses.replace(cfg, total_steps=total).validate().total_steps


def _header(log, model, origin: str, cfg=None) -> None:
    cfg = cfg or model.cfg
    steps = f"{cfg.planned_steps:,} steps"
    if cfg.planned_steps != cfg.total_steps:
        steps += (f" ({cfg.total_steps:,} asked, rounded up to whole iterations of "
                  f"{cfg.steps_per_iteration:,})")
    env = cfg.env_id + (f" {cfg.env_kwargs}" if cfg.env_kwargs else "")
    log(f"edgeag train: {cfg.algo} on {env} with {cfg.optimizer} on the {cfg.engine} "
        f"engine ({origin}); {steps}, seed {cfg.seed}, {model.device.describe()}")
    if (cfg.algo, cfg.optimizer) in EXPERIMENTAL:
        log(f"note: {EXPERIMENTAL[cfg.algo, cfg.optimizer]}")


def _report(model, run) -> int:
    from edgeag.memory import MiB

    summary, budget_bytes = model.summary, model.device.budget_bytes
    ev = summary["final_eval_return"]
    print(f"run: {run.path}")
    print(f"stopped: {summary['stopped']} at step {summary['steps']:,} after "
          f"{summary['wall_seconds']:.1f} s ({summary['steps_per_second']} steps/s)")
    if summary.get("best_eval_return") is not None:
        print(f"best evaluation return: {summary['best_eval_return']:.1f} "
              f"({summary['best_checkpoint']})")
    if ev is not None:
        print(f"final eval return: {ev['mean']:.1f} +- {ev['std']:.1f} over {ev['episodes']} "
              "deterministic episodes")
    print(f"peak anonymous memory: {summary['peak_anon_bytes'] / MiB:.1f} MiB "
          f"({summary['peak_anon_bytes']:,} bytes; floor {summary['floor_anon_bytes'] / MiB:.1f} "
          f"MiB, plan {summary['plan_total_bytes'] / MiB:.1f} MiB"
          + (f", budget {budget_bytes / MiB:.1f} MiB" if budget_bytes else "") + ")")
    print(f"peak RSS: {summary['peak_rss_bytes'] / MiB:.1f} MiB ({summary['peak_rss_bytes']:,} "
          f"bytes, VmHWM; floor {summary['floor_bytes'] / MiB:.1f} MiB, of which mapped files "
          f"{summary['floor_file_bytes'] / MiB:.1f} MiB)")
    print(f"optimizer state: {summary['optimizer_state_bytes']:,} bytes")
    if summary.get("buffer_shrunk_from"):
        print(f"replay buffer: shrunk to {summary['buffer_size']:,} transitions to fit the budget "
              f"(requested {summary['buffer_shrunk_from']:,})")
    if summary["stopped"] == "budget":
        print(f"stopped to respect the budget; continue with: edgeag train --resume {run.path} "
              "--budget <larger>", file=sys.stderr)
    elif summary["stopped"] == "write_failed":
        print(f"edgeag: error: cannot write to {run.path}: {summary['write_error']}; the last "
              f"checkpoint (step {summary['steps']:,}) is intact: make room and continue with "
              f"edgeag train --resume {run.path}", file=sys.stderr)
    elif summary["stopped"] == "interrupted":
        print(f"interrupted; continue with: edgeag train --resume {run.path}", file=sys.stderr)
    return model.exit_code


def _train_in_cgroup(group, argv: list[str], run, has_dir: bool, budget_bytes: int) -> int:
    """Run this same ``edgeag train`` in a child process inside ``group`` and wait for it.
    The child trains as usual (its guard stops it at an iteration boundary, exit 3); if
    the kernel kills it at the limit between two boundaries, say so, write
    ``summary.json`` with ``"stopped": "budget"`` and exit 3: the last checkpoint it
    wrote is complete (every file is written to a temporary name first)."""
    import signal

    from edgeag.io import write_json
    from edgeag.memory import BUDGET_COUNTS
    from edgeag.memory.hardcap import BUDGET_KILLED, IN_CGROUP_ENV
    from edgeag.train import children
    from edgeag.train.run import BudgetRefused

    cmd = [sys.executable, "-m", "edgeag.cli", *argv]
    if not has_dir:
        cmd += ["--out", str(run.path)]
    spec = children.ChildSpec(cmd, env={IN_CGROUP_ENV: f"{group.description} = "
                                                       f"{budget_bytes:,} bytes"},
                              preexec=lambda: group.add(os.getpid()))
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child itself
    try:
        code = children.run(spec).exit_code
    finally:
        signal.signal(signal.SIGINT, old)
    try:
        if code == -signal.SIGKILL and group.oom_kills():
            if not run.config.exists():  # killed while starting, before the plan: nothing ran
                raise BudgetRefused(
                    f"budget {budget_bytes / 2**20:.1f} MiB ({budget_bytes:,} bytes): the kernel "
                    f"killed edgeag train at the hard cap while it started (Python and its "
                    f"imports need more), before anything was trained")
            kept = (f"the last checkpoint is intact: continue with edgeag train --resume "
                    f"{run.path} --budget <larger>" if run.checkpoint.exists() else
                    "no checkpoint had been written yet: train again with a larger --budget")
            print(f"edgeag train: the kernel stopped training at the hard cap ({group.description} "
                  f"= {budget_bytes:,} bytes, {BUDGET_KILLED}); {kept}", file=sys.stderr)
            if run.path.is_dir():
                write_json(run.summary, {
                    "stopped": "budget", "stopped_by": "kernel", "budget_bytes": budget_bytes,
                    "budget_counts": BUDGET_COUNTS, "hard_cap": group.description,
                    "checkpoint": str(run.checkpoint.relative_to(run.path))
                    if run.checkpoint.exists() else None})
            return 3
        return code if code >= 0 else 128 - code
    finally:
        group.remove()


def claim_run_dir(path: Path) -> list[Path]:
    """Create the run directory (and its missing parents) now, before the floor is
    measured, so an ``--out`` that cannot be written is refused at once; returns the
    directories created, for `release`."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise EdgeagError(f"invalid --out {str(path)!r}: cannot create it ({existing} is a "
                          "file, not a directory)")
    created: list[Path] = []
    for d in reversed([p for p in (path, *path.parents) if p not in (existing, *existing.parents)]):
        try:
            d.mkdir()
        except OSError as e:
            release(created)
            raise EdgeagError(f"invalid --out {str(path)!r}: cannot create {d} "
                              f"({e.strerror or type(e).__name__})") from None
        created.append(d)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        release(created)
        raise EdgeagError(f"invalid --out {str(path)!r}: cannot write there "
                          f"({e.strerror or type(e).__name__})") from None
    return created


def release(created: list[Path]) -> None:
    """Remove the directories `claim_run_dir` created, if nothing was written in them."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return
