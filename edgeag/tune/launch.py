"""``edgeag tune``: check every input before anything is written or any study is
touched, then hand over to `edgeag.tune.study.run_tune`."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from edgeag.errors import EdgeagError

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DEFAULT_SPACE = "alpha"
TUNE_MISSING = ("edgeag tune needs optuna (and SQLAlchemy, which it brings): "
                "pip install 'edgeag[tune]'")


def default_study_name(env: str, algo: str, optimizer: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{env}-{algo}-{optimizer}")


def _positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise EdgeagError(f"invalid {flag} {value}: expected a positive integer")


def launch_tune(*, env: str | None, algo: str, optimizer: str | None, trials: int | None,
                max_total_trials: int | None, storage: str | None,
                storage_password_file: str | None, study: str | None, seeds: str | None,
                total_steps: int | None, profile: str | None, budget: str | None,
                threads: int | None, space: list[str], sets: list[str], sampler: str,
                pruner: str, prune_after: int, out: str | None,
                heartbeat: int | None = None) -> int:
    """Run this worker's trials of the study; returns the exit code."""
    from edgeag.report.runs import parse_seeds
    from edgeag.train import ALGORITHMS, supported_algos
    from edgeag.train.config import config_class, parse_set
    from edgeag.train.device import resolve_device

    for module in ("optuna", "sqlalchemy"):
        if importlib.util.find_spec(module) is None:
            raise EdgeagError(TUNE_MISSING)
    if algo not in ALGORITHMS:
        raise EdgeagError(f"unknown algo {algo!r} (accepted: {', '.join(supported_algos())})")
    if sampler not in SAMPLERS:
        raise EdgeagError(f"unknown --sampler {sampler!r} (accepted: {', '.join(SAMPLERS)})")
    if pruner not in PRUNERS:
        raise EdgeagError(f"unknown --pruner {pruner!r} (accepted: {', '.join(PRUNERS)})")
    _positive("--trials", trials)
    _positive("--max-total-trials", max_total_trials)
    _positive("--total-steps", total_steps)
    _positive("--heartbeat", heartbeat)
    if prune_after < 0:
        raise EdgeagError(f"invalid --prune-after {prune_after}: expected 0 or a positive integer")
    seed_list = parse_seeds(seeds or "1")
    prof, device = resolve_device(profile, budget, threads)
    budget_bytes, threads = device.budget_bytes, device.threads

    cls = config_class(algo)
    env = env or cls.env_id
    if optimizer is not None:
        from edgeag.optim_rules import OPTIMIZER_NAMES

        if optimizer not in OPTIMIZER_NAMES:
            raise EdgeagError(f"unknown optimizer {optimizer!r} (accepted: "
                              f"{', '.join(OPTIMIZER_NAMES)})")
    optimizer = optimizer or cls.optimizer
    from edgeag.train.launch import check_optimizer_available

    check_optimizer_available(optimizer)

    from edgeag.report.compare import env_dims
    from edgeag.tune.space import check_values, parse_space
    from edgeag.tune.storage import HEARTBEAT_SECONDS, resolve_storage
    from edgeag.tune.study import TuneSettings, run_tune, stderr_log

    params = parse_space(space or [DEFAULT_SPACE], algo)
    overrides = parse_set(sets)
    for key in ("env_id", "optimizer", "seed", "total_steps"):
        if key in overrides:
            raise EdgeagError(f"--set {key}=... : {key} is set by the study itself (--env, "
                              "--optimizer, --seeds, --total-steps)")
    tuned = [p.name for p in params if p.name in overrides]
    if tuned:
        raise EdgeagError(f"--set {tuned[0]}=... and --space {tuned[0]}: a setting is either "
                          "fixed or tuned")
    if sampler == "grid":
        from edgeag.tune.space import grid

        grid(params)
    name = study or default_study_name(env, algo, optimizer)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise EdgeagError(f"invalid --study {name!r}: expected letters, digits, '.', '_' "
                          "and '-' (it names files)")
    settings = TuneSettings(env=env, algo=algo, optimizer=optimizer, params=params,
                            seeds=seed_list, storage=None, study_name=name, out=Path("."),
                            trials=trials if trials or sampler == "grid" else 20,
                            max_total_trials=max_total_trials, total_steps=total_steps,
                            sets=overrides, budget_bytes=budget_bytes, profile_arg=profile,
                            threads=threads, sampler=sampler, pruner=pruner,
                            prune_after=prune_after, log=stderr_log,
                            heartbeat=heartbeat or HEARTBEAT_SECONDS)
    cfg = settings.resolve(settings.overrides({}))
    if cfg.engine == "torch":
        from edgeag.errors import require_torch
        from edgeag.train.launch import torch_missing_message

        require_torch(torch_missing_message(cfg, overrides))
    if not getattr(cfg, "eval_episodes", 1):
        raise EdgeagError("--set eval_episodes=0: a trial's value is the final evaluation "
                          "return (expected eval_episodes >= 1)")
    check_values(params, lambda extra: settings.resolve(settings.overrides(extra)))
    env_dims(env)  # the env exists and its spaces are ones edgeag trains on

    settings.storage = resolve_storage(storage or f"results/tune/{name}.log",
                                       storage_password_file)
    settings.out = Path(out) if out else Path("results") / "tune" / name
    _check_out(settings.out, name, settings.storage.display)

    from edgeag.train.rundir import write_json

    marker = {"study": name, "storage": settings.storage.display}
    return run_tune(settings, on_open=lambda: write_json(settings.out / "study.json", marker))


def _check_out(out: Path, name: str, storage: str) -> None:
    marker = out / "study.json"
    if out.exists() and not out.is_dir():
        raise EdgeagError(f"invalid --out {str(out)!r}: a file (expected a directory)")
    if marker.exists():
        try:
            theirs = json.loads(marker.read_text())
        except (OSError, ValueError):
            theirs = {}
        if (theirs.get("study"), theirs.get("storage")) != (name, storage):
            raise EdgeagError(f"--out {str(out)!r} holds the runs of study "
                              f"{theirs.get('study')!r} in {theirs.get('storage')}: "
                              "choose another --out")
    elif (out / "trials").exists():
        raise EdgeagError(f"--out {str(out)!r} holds trials of no known study (no "
                          "study.json): choose another --out")
