"""``edgeag train``: the flags made into a model of the Python API (`edgeag.api`: a new
run, a resumed one, or a new one from another run's weights), trained with its
``learn``, the outcome printed. Every user error is raised here, in the API or in the
planner, before anything is written. Also the kernel's hard cap (a cgroup child)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import sys
import tempfile
from pathlib import Path

from edgeag.errors import TORCH_INSTALL, EdgeagError, torch_available
from edgeag.hardcap import inherited_cgroup
from edgeag.train import ALGORITHMS, supported_algos
from edgeag.train.device import HARD_CAPS  # noqa: F401 (the --hard-cap values, re-exported)
from edgeag.train.rundir import RunDir


EXPERIMENTAL = {("dqn", "alphagrad"): "AlphaGrad on DQN is experimental: the AlphaGrad paper "
                "reports it unstable against Adam"}
"""(algo, optimizer) pairs that train but are not recommended, and why."""


PARENT_ENV = "EDGEAG_PARENT_PID"
"""Set by a parent that watches its training children (an `edgeag tune` worker) to its
own pid: the child stops when that parent dies (`stop_with_parent`)."""


def stop_with_parent() -> None:
    """When `PARENT_ENV` names this process's parent, have Linux send SIGTERM to this
    process when the parent dies (``prctl(PR_SET_PDEATHSIG)``), so a worker killed
    outright leaves no training run behind; exit at once if it is already gone."""
    pid = os.environ.pop(PARENT_ENV, None)
    if not pid or not pid.isdigit():
        return
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(pid):
        raise EdgeagError(f"the process that started this run (pid {pid}) has exited")


def launch(*, env: str | None, algo: str | None, optimizer: str | None, overrides: dict,
           profile: str | None, budget: str | None, out: str | None, resume: str | None,
           threads: int | None, tensorboard: bool = False, hard_cap: str | None = None,
           dry_run: bool = False, progress: bool = True, shrink_buffer: bool = False,
           argv: list[str] | None = None, preset: str | None = None,
           init_from: str | None = None, env_kwargs: list[str] | None = None,
           eval_every: int | None = None, stop_at_return: float | None = None) -> int:
    """``edgeag train``: a model of the Python API (`edgeag.api`) made from the flags,
    trained with its ``learn``, the outcome printed; returns the exit code. ``env`` and
    ``optimizer`` None: the algorithm's defaults. ``preset``: a preset file (the format of
    ``edgeag/train/presets/<algo>.toml``) used instead of the shipped one."""
    from edgeag import api
    from edgeag.train.config import _coerce, coerce_env_kwargs, config_class

    stop_with_parent()
    if algo is not None and algo not in ALGORITHMS:
        raise EdgeagError(f"unknown algo {algo!r} (accepted: {', '.join(supported_algos())})")
    if tensorboard:
        from edgeag.train import tblog
        tblog.require()
    if eval_every is not None and eval_every < 1:
        raise EdgeagError(f"invalid --eval-every {eval_every}: expected a positive number of "
                          "env steps")
    if stop_at_return is not None and (eval_every is None or not math.isfinite(stop_at_return)):
        raise EdgeagError(f"invalid --stop-at-return {stop_at_return}: expected a number, with "
                          "--eval-every N (it stops when a periodic evaluation reaches it)")
    kwargs = coerce_env_kwargs(env_kwargs, "--env-kwargs") if env_kwargs else None
    for name, value in overrides.items():  # the CLI knows edgeag's names only (not SB3's)
        _coerce(name, value, "override", config_class(algo or "ppo"))
    if sum(x is not None for x in (resume, init_from)) > 1:
        raise EdgeagError("--resume continues a run; --init-from starts a new one from a "
                          "run's weights: give one of them")
    if (resume or init_from) and preset:
        raise EdgeagError("--preset is for a new run; --resume and --init-from start from a "
                          "run's own settings")
    device_flags = dict(profile=profile, budget=budget, threads=threads, hard_cap=hard_cap)
    log = lambda text: print(text, file=sys.stderr, flush=True)
    hooks = []
    if eval_every is not None:
        hooks.append(api.EvalCallback(eval_every, callback_on_new_best=None if stop_at_return
                                      is None else api.StopTrainingOnRewardThreshold(stop_at_return)))
    if resume:
        run = RunDir(resume)
        given = dict(overrides)
        given.update({k: v for k, v in (("env_id", env), ("algo", algo),
                                        ("optimizer", optimizer), ("env_kwargs", kwargs))
                      if v is not None})
        model = api.load(resume, _purpose="resume", verbose=1, tensorboard=tensorboard,
                         shrink_buffer=shrink_buffer, **device_flags)
        api.check_resume_overrides(model.cfg, given, "cannot resume")
        total = _coerced_total(overrides, model.cfg)
        if model._ckpt is not None and total is None and \
                model.num_timesteps >= model.cfg.planned_steps:
            model._policy()  # the checkpoint fits its config (one-line refusal if not)
            print(f"run: {run.path} is finished (step {model.num_timesteps:,} of "
                  f"{model.cfg.planned_steps:,}): nothing to do. Evaluate it with edgeag eval "
                  f"{run.path}; train it further with --total-steps N (more than "
                  f"{model.num_timesteps:,})")
            return 0
        _header(log, model, model.origin,
                dataclasses.replace(model.cfg, total_steps=total) if total else None)
        created: list[Path] = []
        def learn():
            return model._continue(total or model.cfg.total_steps, hooks, progress)
    else:
        if init_from:
            model = api.load(init_from, env=env, env_kwargs=kwargs, verbose=1,
                             tensorboard=tensorboard, shrink_buffer=shrink_buffer, run_dir=out,
                             _purpose="initialise from", **device_flags,
                             **({} if optimizer is None else {"optimizer": optimizer}),
                             **overrides)
            if algo is not None and algo != model.algo:
                raise EdgeagError(f"--algo {algo}: {init_from} is a {model.algo} run; --init-from "
                                  "keeps its algorithm and network")
            cfg = model._fine_tune if getattr(model, "_fine_tune", None) else model.cfg
            origin = f"initialised from {model._source.checkpoint}"
            if model._ckpt is None:
                raise EdgeagError(f"cannot initialise from {init_from}: it has no checkpoint yet")
        else:
            model = api.MODELS[algo or "ppo"](env, optimizer=optimizer, preset=preset, verbose=1,
                                              tensorboard=tensorboard,
                                              shrink_buffer=shrink_buffer, env_kwargs=kwargs,
                                              run_dir=out, **device_flags, **overrides)
            cfg, origin = model.cfg, model.origin
        run = RunDir(out or api.default_run_dir(cfg))
        model.run_dir = model._new_run_dir = run
        if not dry_run and (run.config.exists() or run.checkpoint.exists()):
            raise EdgeagError(f"{run.path} already holds a run: continue it with --resume "
                              f"{run.path}, or choose another --out")
        _header(log, model, origin, cfg)
        if dry_run:
            if init_from:
                model.cfg = cfg
            plan = model.plan()
            print("dry run: plan fits" if plan.fits else "dry run")
            return 0
        created = claim_run_dir(run.path)
        def learn():
            return model.learn(cfg.total_steps, hooks, progress_bar=progress)
    budget_bytes = model.device.budget_bytes
    if model.device.hard_cap in ("auto", "cgroup") and inherited_cgroup() is None:
        from edgeag.hardcap import make_cgroup

        group = make_cgroup(budget_bytes, f"edgeag-train-{os.getpid()}")
        if group is None and model.device.hard_cap == "cgroup":
            release(created)
            raise EdgeagError("--hard-cap cgroup: no cgroup memory controller can be used here "
                              "(needs cgroup v2 with the memory controller, or v1's memory "
                              "hierarchy, writable); --hard-cap rlimit works everywhere")
        if group is not None:
            log(f"hard cap: training in {group.description} = {budget_bytes:,} bytes, no swap")
            try:
                return _train_in_cgroup(group, argv or sys.argv[1:], run, bool(resume or out),
                                        budget_bytes)
            finally:
                release(created)  # a child refused before writing leaves no empty directory
        log("hard cap: no cgroup memory controller here; RLIMIT_DATA instead")
    try:
        learn()
    except BaseException:
        release(created)  # refused or failed before anything was written: leave no trace
        raise
    return _report(model, run)


def _coerced_total(overrides: dict, cfg) -> int | None:
    if "total_steps" not in overrides:
        return None
    from edgeag.train.config import _coerce, config_class

    total = _coerce("total_steps", overrides["total_steps"], "override", config_class(cfg.algo))
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


def torch_missing_message(cfg, overrides: dict) -> str:
    """The one-line refusal of a new run on the torch engine where torch is not
    installed, naming the flag that put it there: ``--algo``, ``--engine`` (or ``--set
    engine=torch``) or an optimizer that only the torch engine runs."""
    from edgeag.optim_rules import NUMPY_ENGINE_OPTIMIZERS, OPTIMIZER_PACKAGES

    without = (f"{', '.join(NUMPY_ENGINE_OPTIMIZERS[:-1])} and {NUMPY_ENGINE_OPTIMIZERS[-1]} "
               "train without it on the numpy engine")
    if overrides.get("engine") == "torch":
        return ("--engine torch needs torch, which is not installed: "
                f"{TORCH_INSTALL} (the default numpy engine trains without it)")
    package = OPTIMIZER_PACKAGES.get(cfg.optimizer)
    if package:
        return (f"--optimizer {cfg.optimizer} runs on the torch engine only and needs torch "
                f"and the {package} package, which are not installed: {TORCH_INSTALL} "
                f"{package} ({without})")
    return (f"--optimizer {cfg.optimizer} runs on the torch engine only and needs torch, "
            f"which is not installed: {TORCH_INSTALL} ({without})")


def check_optimizer_available(optimizer: str) -> None:
    """EdgeagError naming the pip package a registered optimizer needs besides torch, if
    missing (with torch's pinned extra too where torch is missing). Imports no torch."""
    from edgeag.optim_rules import OPTIMIZER_PACKAGES

    package = OPTIMIZER_PACKAGES.get(optimizer)
    if package and importlib.util.find_spec(package.replace("-", "_")) is None:
        install = f"pip install {package}" if torch_available() else f"{TORCH_INSTALL} {package}"
        raise EdgeagError(f"--optimizer {optimizer} needs the {package} package ({install})")




def _train_in_cgroup(group, argv: list[str], run, has_dir: bool, budget_bytes: int) -> int:
    """Run this same ``edgeag train`` in a child process inside ``group`` and wait for it.
    The child trains as usual (its guard stops it at an iteration boundary, exit 3); if
    the kernel kills it at the limit between two boundaries, say so, write
    ``summary.json`` with ``"stopped": "budget"`` and exit 3: the last checkpoint it
    wrote is complete (every file is written to a temporary name first)."""
    import signal
    import subprocess

    from edgeag.hardcap import BUDGET_KILLED, IN_CGROUP_ENV
    from edgeag.memory import BUDGET_COUNTS
    from edgeag.train.rundir import write_json
    from edgeag.train.run import BudgetRefused

    cmd = [sys.executable, "-m", "edgeag.cli", *argv]
    if not has_dir:
        cmd += ["--out", str(run.path)]
    env = {**os.environ, IN_CGROUP_ENV: f"{group.description} = {budget_bytes:,} bytes"}
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child itself
    try:
        proc = subprocess.Popen(cmd, env=env, preexec_fn=lambda: group.add(os.getpid()))
        code = proc.wait()
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
