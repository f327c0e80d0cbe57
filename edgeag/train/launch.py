"""``edgeag train``: validate every input, resolve the configuration and the run
directory, then hand over to `edgeag.train.run.train`. Every user error is raised
here or in the planner, before anything is written."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

from edgeag.errors import TORCH_INSTALL, EdgeagError, require_torch, torch_available
from edgeag.hardcap import inherited_cgroup
from edgeag.train import ALGORITHMS, supported_algos

RESUME_OPTIONS = {"total_steps"}
"""Settings a resumed run may change (besides profile, budget, threads, hard cap)."""


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


def launch(*, env: str | None, algo: str, optimizer: str | None, overrides: dict,
           profile: str | None, budget: str | None, out: str | None, resume: str | None,
           threads: int | None, tensorboard: bool = False, hard_cap: str | None = None,
           dry_run: bool = False, progress: bool = True, shrink_buffer: bool = False,
           argv: list[str] | None = None, preset: str | None = None) -> int:
    """Train (or resume) and print the outcome; returns the exit code. ``env`` and
    ``optimizer`` None: the algorithm's defaults. ``preset``: a preset file (the
    format of ``edgeag/train/presets/<algo>.toml``) used instead of the shipped one."""
    stop_with_parent()
    if algo not in ALGORITHMS:
        raise EdgeagError(f"unknown algo {algo!r} (accepted: {', '.join(supported_algos())})")
    prof, budget_bytes, threads = resolve_device(profile, budget, threads)
    if tensorboard and not torch_available():
        raise EdgeagError("--tensorboard logs through torch.utils.tensorboard and needs torch "
                          "and the tensorboard package, which are not installed: "
                          f"{TORCH_INSTALL} tensorboard")
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise EdgeagError("--tensorboard needs the tensorboard package (pip install tensorboard)")
    if hard_cap not in (None, *HARD_CAPS):
        raise EdgeagError(f"invalid --hard-cap {hard_cap!r}: expected one of {', '.join(HARD_CAPS)}")
    if hard_cap and budget_bytes is None:
        raise EdgeagError("--hard-cap needs a budget (--budget or --profile)")

    from edgeag.train.config import resolve_config
    from edgeag.train.rundir import RunDir

    if resume and preset:
        raise EdgeagError("--resume continues a run with its own settings; --preset is for "
                          "a new run")
    if resume:
        run = RunDir(resume)
        extra = set(overrides) - RESUME_OPTIONS
        if extra:
            raise EdgeagError(f"--resume continues a run with its own settings; cannot change "
                              f"{', '.join(sorted(extra))} (accepted: --total-steps, --profile, "
                              "--budget, --threads, --hard-cap)")
        cfg = _resumed_config(run, overrides)
        if cfg.engine == "torch":
            require_torch(f"cannot resume {run.path}: it trains on the torch engine ({cfg.algo} "
                          f"with {cfg.optimizer}), which needs torch, not installed here: "
                          f"{TORCH_INSTALL}")
        algo = cfg.algo
        origin = f"resumed from {run.checkpoint}"
    else:
        from edgeag.optim_rules import OPTIMIZER_NAMES

        if optimizer is not None and optimizer not in OPTIMIZER_NAMES:
            raise EdgeagError(f"unknown optimizer {optimizer!r} (accepted: "
                              f"{', '.join(OPTIMIZER_NAMES)})")
        presets = load_user_preset(preset, algo) if preset else None
        cfg, origin = resolve_config(env, optimizer, overrides, algo, presets, preset)
        if cfg.engine == "torch":
            require_torch(torch_missing_message(cfg, overrides))
            check_optimizer_available(cfg.optimizer)
        run = RunDir(out or default_run_dir(cfg))
        if not dry_run and (run.config.exists() or run.checkpoint.exists()):
            raise EdgeagError(f"{run.path} already holds a run: continue it with --resume "
                              f"{run.path}, or choose another --out")

    from edgeag.memory import MiB
    from edgeag.train.run import RunOptions, train

    log = lambda text: print(text, file=sys.stderr, flush=True)
    steps = f"{cfg.planned_steps:,} steps"
    if cfg.planned_steps != cfg.total_steps:
        steps += (f" ({cfg.total_steps:,} asked, rounded up to whole iterations of "
                  f"{cfg.steps_per_iteration:,})")
    log(f"edgeag train: {cfg.algo} on {cfg.env_id} with {cfg.optimizer} on the {cfg.engine} "
        f"engine ({origin}); "
        f"{steps}, seed {cfg.seed}, {threads} thread(s)"
        + (f"; profile {prof.name}" if prof else "")
        + (f"; budget {budget_bytes / MiB:.1f} MiB ({budget_bytes:,} bytes)" if budget_bytes else
           "; no budget"))
    if (cfg.algo, cfg.optimizer) in EXPERIMENTAL:
        log(f"note: {EXPERIMENTAL[cfg.algo, cfg.optimizer]}")
    opts = RunOptions(budget_bytes=budget_bytes, threads=threads,
                      profile=prof.name if prof else None, resume=bool(resume),
                      progress=progress, tensorboard=tensorboard, hard_cap=bool(hard_cap),
                      dry_run=dry_run, shrink_buffer=shrink_buffer)
    created = [] if resume else claim_run_dir(run.path)
    if hard_cap in ("auto", "cgroup") and not dry_run and inherited_cgroup() is None:
        from edgeag.hardcap import make_cgroup

        group = make_cgroup(budget_bytes, f"edgeag-train-{os.getpid()}")
        if group is None and hard_cap == "cgroup":
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
        code, summary = train(cfg, run, opts, log=log)
    except BaseException:
        release(created)  # refused or failed before anything was written: leave no trace
        raise
    if dry_run:
        release(created)
        print("dry run: plan fits" if summary["plan"]["fits"] else "dry run")
        return code
    ev = summary["final_eval_return"]
    print(f"run: {run.path}")
    print(f"stopped: {summary['stopped']} at step {summary['steps']:,} after "
          f"{summary['wall_seconds']:.1f} s ({summary['steps_per_second']} steps/s)")
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
    return code


def resolve_device(profile: str | None, budget: str | None, threads: int | None):
    """(profile or None, budget in bytes or None, torch threads) from the flags: the
    budget is ``--budget``, else the profile's default, else none; threads are
    ``--threads``, else the profile's (at most this machine's cores), else 1."""
    from edgeag.profiles import load_profile, parse_size, resolve_budget

    prof = load_profile(profile) if profile else None
    budget_bytes = (resolve_budget(prof, budget) if prof else
                    parse_size(budget) if budget is not None else None)
    if threads is not None and threads < 1:
        raise EdgeagError(f"invalid --threads {threads}: expected a positive integer")
    if threads is None:
        threads = min(prof.threads, os.cpu_count() or 1) if prof else 1
    return prof, budget_bytes, threads


def load_user_preset(path: str, algo: str) -> dict:
    """``--preset FILE`` read and checked: every key against the ``algo`` config, every
    sub-table against the optimizer families of the registry."""
    from edgeag.optim_rules import OPTIMIZER_NAMES as supported
    from edgeag.train.config import load_preset_file, optimizer_family

    families = sorted({optimizer_family(name) for name in supported})
    return load_preset_file(path, algo, families)


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


HARD_CAPS = ("auto", "cgroup", "rlimit")
"""``--hard-cap`` values: auto is a cgroup where one can be made, else RLIMIT_DATA."""


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


def default_run_dir(cfg) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    env = cfg.env_id.replace("/", "_").replace(":", "_")  # namespace/Id, module:Id
    return Path("runs") / f"{env}-{cfg.algo}-{cfg.optimizer}-s{cfg.seed}-{stamp}"


def _resumed_config(run, overrides: dict):
    from edgeag.train.config import config_from_dict, tomllib

    if not run.path.is_dir():
        raise EdgeagError(f"cannot resume: {run.path} is not a directory")
    try:
        with open(run.config, "rb") as f:
            tables = tomllib.load(f)
        algo = tables.get("run", {}).get("algo", "ppo")
        data = tables[algo]
    except (OSError, KeyError, AttributeError, tomllib.TOMLDecodeError) as e:
        raise EdgeagError(f"cannot resume: {run.config} is not a readable edgeag config "
                          f"({type(e).__name__})") from None
    data.update(overrides)
    return config_from_dict(data, str(run.config), algo)
