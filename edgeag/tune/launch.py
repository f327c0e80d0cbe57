"""``edgeag tune``: check every input before anything is written or any study is
touched, then hand over to `edgeag.tune.study.run_tune`."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class TuneRequest:
    """What ``edgeag tune`` was asked: its flags, as one object (`launch_tune`)."""

    env: str | None = None
    algo: str = "ppo"
    optimizer: str | None = None
    trials: int | None = None
    max_total_trials: int | None = None
    storage: str | None = None
    storage_password_file: str | None = None
    study: str | None = None
    seeds: str | None = None
    total_steps: int | None = None
    profile: str | None = None
    budget: str | None = None
    threads: int | None = None
    space: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    sampler: str = "tpe"
    pruner: str = "median"
    prune_after: int = 0
    out: str | None = None
    heartbeat: int | None = None


def launch_tune(request: TuneRequest) -> int:
    """Run this worker's trials of the study; returns the exit code."""
    from edgeag.io import write_json
    from edgeag.tune.study import run_tune

    _check_flags(request)
    settings = _settings(request)
    marker = {"study": settings.study_name, "storage": settings.storage.display}
    return run_tune(settings, on_open=lambda: write_json(settings.out / "study.json", marker))


def _check_flags(r: TuneRequest) -> None:
    from edgeag.algos import ALGORITHMS, supported_algos

    for module in ("optuna", "sqlalchemy"):
        if importlib.util.find_spec(module) is None:
            raise EdgeagError(TUNE_MISSING)
    if r.algo not in ALGORITHMS:
        raise EdgeagError(f"unknown algo {r.algo!r} (accepted: {', '.join(supported_algos())})")
    if r.sampler not in SAMPLERS:
        raise EdgeagError(f"unknown --sampler {r.sampler!r} (accepted: {', '.join(SAMPLERS)})")
    if r.pruner not in PRUNERS:
        raise EdgeagError(f"unknown --pruner {r.pruner!r} (accepted: {', '.join(PRUNERS)})")
    for flag, value in (("--trials", r.trials), ("--max-total-trials", r.max_total_trials),
                        ("--total-steps", r.total_steps), ("--heartbeat", r.heartbeat)):
        _positive(flag, value)
    if r.prune_after < 0:
        raise EdgeagError(f"invalid --prune-after {r.prune_after}: expected 0 or a positive "
                          "integer")
    if r.optimizer is not None:
        from edgeag.optim.registry import OPTIMIZERS

        if r.optimizer not in OPTIMIZERS:
            raise EdgeagError(f"unknown optimizer {r.optimizer!r} (accepted: "
                              f"{', '.join(OPTIMIZERS)})")


def _settings(r: TuneRequest):
    """The study's settings from the flags: device, space, fixed settings, names."""
    from edgeag.optim.registry import check_available
    from edgeag.train.config import config_class, parse_seeds, parse_set
    from edgeag.train.device import resolve_device
    from edgeag.tune.space import SEED, grid, parse_space
    from edgeag.tune.storage import HEARTBEAT_SECONDS, resolve_storage
    from edgeag.tune.study import TuneSettings, stderr_log

    _, device = resolve_device(r.profile, r.budget, r.threads)
    cls = config_class(r.algo)
    env, optimizer = r.env or cls.env_id, r.optimizer or cls.optimizer
    check_available(optimizer)
    params = parse_space(r.space or [DEFAULT_SPACE], r.algo)
    seeds = parse_seeds(r.seeds or "1")
    if any(p.name == SEED for p in params):
        if r.sampler != "grid":
            raise EdgeagError("--space seed=...: a study over seeds needs --sampler grid "
                              "(each trial one seed's run)")
        if r.seeds is not None:
            raise EdgeagError(f"--seeds {r.seeds} and --space seed=...: give the seeds once "
                              "(in the space: one run per trial)")
        seeds = []
    overrides = parse_set(r.sets)
    for key in ("env_id", "optimizer", "seed", "total_steps"):
        if key in overrides:
            raise EdgeagError(f"--set {key}=... : {key} is set by the study itself (--env, "
                              "--optimizer, --seeds, --total-steps)")
    tuned = [p.name for p in params if p.name in overrides]
    if tuned:
        raise EdgeagError(f"--set {tuned[0]}=... and --space {tuned[0]}: a setting is either "
                          "fixed or tuned")
    if r.sampler == "grid":
        grid(params)
    name = r.study or default_study_name(env, r.algo, optimizer)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise EdgeagError(f"invalid --study {name!r}: expected letters, digits, '.', '_' "
                          "and '-' (it names files)")
    settings = TuneSettings(
        env=env, algo=r.algo, optimizer=optimizer, params=params, seeds=seeds, storage=None,
        study_name=name, out=Path("."), trials=r.trials if r.trials or r.sampler == "grid"
        else 20, max_total_trials=r.max_total_trials, total_steps=r.total_steps,
        sets=overrides, budget_bytes=device.budget_bytes, profile_arg=r.profile,
        threads=device.threads, sampler=r.sampler, pruner=r.pruner, prune_after=r.prune_after,
        log=stderr_log, heartbeat=r.heartbeat or HEARTBEAT_SECONDS)
    _check_settings(settings)
    settings.storage = resolve_storage(r.storage or f"results/tune/{name}.log",
                                       r.storage_password_file)
    settings.out = Path(r.out) if r.out else Path("results") / "tune" / name
    _check_out(settings.out, name, settings.storage.display)
    return settings


def _check_settings(settings) -> None:
    """Every trial's config resolves, on an engine installed here, with an evaluation."""
    from edgeag.train.envs import env_dims
    from edgeag.tune.space import check_values

    cfg = settings.resolve(settings.overrides({}))
    if cfg.engine == "torch":
        from edgeag.errors import require_torch
        from edgeag.train.config import torch_missing_message

        require_torch(torch_missing_message(cfg, settings.sets))
    if not getattr(cfg, "eval_episodes", 1):
        raise EdgeagError("--set eval_episodes=0: a trial's value is the final evaluation "
                          "return (expected eval_episodes >= 1)")
    check_values(settings.params, lambda extra: settings.resolve(settings.overrides(extra)))
    env_dims(settings.env)  # the env exists and its spaces are ones edgeag trains on


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
