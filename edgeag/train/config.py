"""Hyperparameters: one frozen dataclass per algorithm, per-environment presets, overrides.

A run's configuration is resolved in this order, later winning: the algorithm's
dataclass defaults (each algorithm's ``config.py``: `edgeag.algos.ppo.config.PPOConfig`,
...), the preset table for the environment (``edgeag/algos/<algo>/presets.toml``), the
preset table for the environment and
optimizer family, then command-line overrides. The resolved configuration is written
to ``<run>/config.toml`` under ``[<algo>]``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import ClassVar

from edgeag.errors import EdgeagError
from edgeag.io import tomllib
from edgeag.optim.rules import ALPHA_SCALES


@dataclass(frozen=True)
class TrainConfig:
    """The settings every algorithm has; each algorithm's dataclass adds its own (and
    may change a default by declaring the field again)."""

    algo: ClassVar[str] = ""
    """Registered algorithm name (`edgeag.algos.ALGORITHMS`); the config.toml table."""

    env_id: str = "CartPole-v1"
    """Gymnasium environment id."""
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    """Keyword arguments of ``gymnasium.make(env_id, **env_kwargs)``, such as ``{g = 11.0}``
    for Pendulum-v1 (``--env-kwargs g=11.0``): part of what is trained."""
    seed: int = 1
    """Seeds torch, the environments (env i gets seed + i) and all sampling."""
    total_steps: int = 100_000
    """Environment steps to train for, summed over the vector envs."""
    optimizer: str = "alphagrad"
    """Registered optimizer name (`edgeag.optim.OPTIMIZERS`)."""
    lr: float = 3e-4
    """Learning rate (PPO: the initial one, annealed linearly to 0 when ``anneal_lr``)."""
    alpha: float = 1.0
    """AlphaGrad steepness: per-element step is lr * tanh(alpha * g / ||g||)."""
    alpha_scale: str = "none"
    """AlphaGrad: ``none`` uses ``alpha`` on every tensor (the paper's rule);
    ``sqrt_numel`` uses ``alpha * sqrt(numel)`` on each, so alpha acts on g / rms(g)."""
    momentum: float = 0.0
    """Momentum of AlphaGrad or SGD (0: stateless)."""
    eps: float = 1e-5
    """Optimizer epsilon (AlphaGrad's norm guard, Adam's denominator guard)."""
    fuse_backward: bool = True
    """AlphaGrad only: update each parameter inside ``backward()`` as soon as its
    gradient is complete, so one gradient tensor is alive at a time; false runs the
    usual ``backward()`` then ``step()`` (all gradients alive at once)."""
    engine: str = "auto"
    """What computes the networks and their updates: ``numpy`` (`edgeag.engine`: no
    torch on the training path), ``torch`` (the textbook autograd path with
    `edgeag.optim`: the reference, and the engine of `torch.optim` optimizers) or
    ``auto``: numpy for alphagrad, adam and sgd, torch for the others."""

    engines: ClassVar[tuple[str, ...]] = ("numpy", "torch", "auto")
    """The engines this algorithm runs on."""

    @property
    def steps_per_iteration(self) -> int:
        """Environment steps between two iteration boundaries (where the run can stop)."""
        raise NotImplementedError

    def __post_init__(self) -> None:
        """``engine = auto`` is decided at once: numpy for the optimizers the numpy engine
        runs (where the algorithm has it), else torch."""
        if self.engine == "auto":
            numpy_ok = "numpy" in self.engines and self.optimizer in _numpy_optimizers()
            object.__setattr__(self, "engine", "numpy" if numpy_ok else "torch")

    @property
    def num_iterations(self) -> int:
        """Iterations to run: enough for at least ``total_steps`` (a last, partial
        iteration counts), as Stable-Baselines3's ``learn`` trains at least the steps
        asked for."""
        return max(1, -(-self.total_steps // self.steps_per_iteration))

    @property
    def planned_steps(self) -> int:
        """The env steps the run will take: ``total_steps`` rounded up to what an
        iteration can stop at (PPO: whole rollouts; off-policy: whole vector steps)."""
        return self.num_iterations * self.steps_per_iteration

    def checks(self) -> list[tuple[str, bool, str]]:
        """(field, valid?, what is accepted) for every constrained field."""
        return [
            ("total_steps", self.total_steps >= 1, "a positive integer"),
            ("seed", 0 <= self.seed < 2**32, "an integer in [0, 2**32)"),
            ("engine", self.engine in self.engines, " or ".join(self.engines)),
            ("engine", self.engine != "numpy" or self.optimizer in _numpy_optimizers(),
             f"torch for --optimizer {self.optimizer} (the numpy engine runs "
             f"{', '.join(_numpy_optimizers())})"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a positive number"),
            ("alpha", math.isfinite(self.alpha) and self.alpha > 0, "a positive number"),
            ("alpha_scale", self.alpha_scale in ALPHA_SCALES, " or ".join(ALPHA_SCALES)),
            ("momentum", 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("eps", self.eps > 0, "a positive number"),
            ("hidden", len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
             "one or more positive widths such as 64,64 or [64, 64]"),
            ("eval_episodes", self.eval_episodes >= 0, "0 or a positive integer"),
            ("checkpoint_every", self.checkpoint_every >= 1, "a positive integer"),
        ]

    @property
    def update_macs(self) -> int:
        """Multiply-adds of one update's largest matmul: a minibatch through the widest
        pair of consecutive hidden layers (the one layer's square when there is one),
        what decides the threads (`edgeag.engine.threads.workload_threads`)."""
        h = self.hidden
        widest = max((a * b for a, b in zip(h[:-1], h[1:])), default=h[0] * h[0])
        return self.batch_size * widest

    def validate(self):
        for name, ok, accepted in self.checks():
            if not ok:
                raise EdgeagError(f"invalid {name} {getattr(self, name)!r}: expected {accepted}")
        return self

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        out["env_kwargs"] = dict(self.env_kwargs)
        return out


def _numpy_optimizers() -> tuple[str, ...]:
    from edgeag.optim.registry import numpy_names
    return tuple(numpy_names())


def uses_fused_backward(cfg: TrainConfig) -> bool:
    """AlphaGrad updates each tensor on its own, inside the backward pass (unless
    ``fuse_backward`` is off): nothing needs all gradients at once. Every algorithm
    asks this one question."""
    from edgeag.optim.registry import get
    return get(cfg.optimizer).fusable and cfg.fuse_backward




def config_class(algo: str) -> type[TrainConfig]:
    """The config dataclass of a registered algorithm (`edgeag.algos.get_config_class`)."""
    from edgeag.algos import get_config_class
    return get_config_class(algo)


def coerce_setting(name: str, value, source: str, cls: type[TrainConfig] | None = None):
    """``value`` as the type of ``cls``'s field ``name``; EdgeagError naming the source
    otherwise."""
    fields = {f.name: f for f in dataclasses.fields(cls or config_class("ppo"))}
    if name not in fields:
        raise EdgeagError(f"{source}: unknown setting {name!r} (accepted: {', '.join(fields)})")
    if name == "env_kwargs":
        return coerce_env_kwargs(value, source)
    default = fields[name].default
    accepted = _accepted(default)
    if isinstance(value, str) and isinstance(default, tuple) and \
            re.fullmatch(r"\s*-?\d+(\s*,\s*-?\d+)*\s*,?\s*", value):
        value = [int(v) for v in value.split(",") if v.strip()]  # 64,64: no brackets to quote
    elif isinstance(value, str) and not isinstance(default, str):
        try:
            value = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            raise EdgeagError(f"{source}: invalid {name} {value!r}: expected {accepted}") from None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                             for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise EdgeagError(f"{source}: invalid {name} {value!r}: expected {accepted}")
    return value


def _accepted(default) -> str:
    """What a field of ``default``'s type accepts, in words (for error messages)."""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, tuple):
        return "a list of integers such as 64,64 or [64, 64]"
    return "a string"


def coerce_env_kwargs(value, source: str = "env_kwargs") -> dict:
    """``env_kwargs`` as a dict of names to TOML values: a dict, a TOML inline table
    (``{g = 11.0}``) or ``["g=11.0", ...]`` (``--env-kwargs``, each value read as TOML, a
    bare word as a string)."""
    if isinstance(value, str):
        try:
            value = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            raise EdgeagError(f"{source}: invalid env_kwargs {value!r}: expected a table "
                              f"such as {{g = 11.0}}") from None
    if isinstance(value, (list, tuple)):
        out = {}
        for item in value:
            key, sep, text = str(item).partition("=")
            if not sep or not key.strip().isidentifier():
                raise EdgeagError(f"invalid --env-kwargs {item!r}: expected NAME=VALUE, "
                                  f"e.g. g=11.0")
            try:
                out[key.strip()] = tomllib.loads(f"v = {text.strip()}")["v"]
            except tomllib.TOMLDecodeError:
                out[key.strip()] = text.strip()
        value = out
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.isidentifier()
                                              for k in value):
        raise EdgeagError(f"{source}: invalid env_kwargs {value!r}: expected a table of "
                          f"keyword arguments such as {{g = 11.0}}")
    plain = (bool, int, float, str)
    for key, item in value.items():
        if not isinstance(item, plain) and not (isinstance(item, list)
                                                and all(isinstance(v, plain) for v in item)):
            raise EdgeagError(f"{source}: invalid env_kwargs {key} = {item!r}: expected a "
                              "number, a string, true/false or a list of them")
    return dict(value)


def load_presets(algo: str = "ppo") -> dict:
    """``edgeag/algos/<algo>/presets.toml``: per-environment tables."""
    with resources.files(f"edgeag.algos.{algo}").joinpath("presets.toml").open("rb") as f:
        return tomllib.load(f)


def optimizer_family(optimizer: str) -> str:
    """Preset table used for an optimizer: ``adam`` and ``torch-adam`` share one."""
    return "adam" if optimizer in ("adam", "torch-adam") else optimizer


def load_preset_file(path, algo: str = "ppo", families=None) -> dict:
    """A preset file of one's own, in the format of ``presets/<algo>.toml`` (what
    ``edgeag train --preset FILE`` reads and ``edgeag tune`` writes): a table per
    environment with the settings every optimizer shares, and a sub-table per optimizer
    family. Every key of every table is checked against the ``algo`` config's fields
    and types; with ``families`` (the accepted sub-table names), so are the sub-tables'
    names. EdgeagError naming the file, table, key and what is accepted."""
    cls = config_class(algo)
    try:
        with open(path, "rb") as f:
            tables = tomllib.load(f)
    except FileNotFoundError:
        raise EdgeagError(f"invalid --preset {str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise EdgeagError(f"invalid --preset {str(path)!r}: a directory (expected a TOML "
                          f"file like edgeag/algos/*/presets.toml{algo}.toml)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise EdgeagError(f"invalid --preset {str(path)!r}: not readable TOML "
                          f"({str(e).splitlines()[0][:120]})") from None
    if not tables:
        raise EdgeagError(f"invalid --preset {str(path)!r}: no environment table (expected "
                          f"tables like [\"CartPole-v1\"] and [\"CartPole-v1\".alphagrad])")
    for env_id, table in tables.items():
        if not isinstance(table, dict):
            raise EdgeagError(f"invalid --preset {str(path)!r}: {env_id} = {table!r} is not a "
                              f"table (expected a table per environment, e.g. [\"{env_id}\"])")
        for key, value in table.items():
            if not isinstance(value, dict) or key == "env_kwargs":  # a setting, not a family
                coerce_setting(key, value, f"preset {path} [{env_id}]", cls)
                continue
            if families is not None and key not in families:
                raise EdgeagError(f"invalid --preset {str(path)!r}: table [{env_id}.{key}]: "
                                  f"unknown optimizer family {key!r} (accepted: "
                                  f"{', '.join(families)})")
            for sub_key, sub_value in value.items():
                coerce_setting(sub_key, sub_value, f"preset {path} [{env_id}.{key}]", cls)
    return tables


def preset_env(tables: dict, env_id: str | None, source: str) -> str:
    """The environment a preset file is for: ``env_id`` if given (it must have a
    table), else the file's only environment."""
    if env_id is None:
        if len(tables) > 1:
            raise EdgeagError(f"--preset {source!r} has tables for several envs "
                              f"({', '.join(tables)}): choose one with --env")
        return next(iter(tables))
    if env_id not in tables:
        raise EdgeagError(f"invalid --preset {source!r}: no table for env {env_id!r} "
                          f"(it has: {', '.join(tables)})")
    return env_id


def resolve_config(env_id: str | None, optimizer: str | None, overrides: dict,
                   algo: str = "ppo", presets: dict | None = None,
                   preset_source: str | None = None) -> tuple[TrainConfig, str]:
    """The ``algo`` configuration for ``env_id`` and ``optimizer`` (None: the
    algorithm's defaults) with ``overrides`` applied, and a one-line description of
    where it came from. ``presets`` (from `load_preset_file`, read from
    ``preset_source``) replaces the shipped ``presets/<algo>.toml``."""
    cls = config_class(algo)
    if presets is not None:
        env_id = preset_env(presets, env_id, preset_source)
    env_id = env_id or cls.env_id
    optimizer = optimizer or cls.optimizer
    name = f"preset {preset_source} " if presets is not None else "preset "
    table = (load_presets(algo) if presets is None else presets).get(env_id, {})
    values: dict = {}
    for key, value in table.items():
        if not isinstance(value, dict) or key == "env_kwargs":
            values[key] = coerce_setting(key, value, f"{name}{env_id}", cls)
    family = optimizer_family(optimizer)
    for key, value in table.get(family, {}).items():
        values[key] = coerce_setting(key, value, f"{name}{env_id}.{family}", cls)
    origin = (f"{name}{env_id}.{family}" if family in table else
              f"{name}{env_id} (no {family} table)" if table else
              f"{algo.upper()} defaults (no preset for {env_id})")
    for key, value in overrides.items():
        values[key] = coerce_setting(key, value, "override", cls)
    values.update(env_id=env_id, optimizer=optimizer)
    return cls(**values).validate(), origin


def config_from_dict(data: dict, source: str, algo: str = "ppo") -> TrainConfig:
    cls = config_class(algo)
    values = {k: coerce_setting(k, v, source, cls) for k, v in data.items()}
    return cls(**values).validate()


def parse_set(items: list[str]) -> dict:
    """``["num_steps=64", "hidden=[128, 128]"]`` -> ``{"num_steps": "64", ...}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EdgeagError(f"invalid --set {item!r}: expected NAME=VALUE, e.g. num_steps=64")
        out[key.strip()] = value.strip()
    return out


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 1, 2, 3; ``"1,7,9"`` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",")]
            ok = len(set(seeds)) == len(seeds) and all(s >= 0 for s in seeds)
        else:
            seeds = list(range(1, int(text) + 1))
            ok = bool(seeds)
    except ValueError:
        ok = False
    if not ok:
        raise EdgeagError(f"invalid --seeds {text!r}: expected a count such as 3 (seeds 1-3) "
                          "or distinct non-negative seeds such as 1,7,9")
    return seeds


def torch_missing_message(cfg, overrides: dict) -> str:
    """The one-line refusal of a new run on the torch engine where torch is not
    installed, naming the flag that put it there: ``--algo``, ``--engine`` (or ``--set
    engine=torch``) or an optimizer that only the torch engine runs."""
    from edgeag.errors import TORCH_INSTALL
    from edgeag.optim.registry import get, numpy_names

    numpy_optimizers = numpy_names()
    without = (f"{', '.join(numpy_optimizers[:-1])} and {numpy_optimizers[-1]} "
               "train without it on the numpy engine")
    if overrides.get("engine") == "torch":
        return ("--engine torch needs torch, which is not installed: "
                f"{TORCH_INSTALL} (the default numpy engine trains without it)")
    package = get(cfg.optimizer).package
    if package:
        return (f"--optimizer {cfg.optimizer} runs on the torch engine only and needs torch "
                f"and the {package} package, which are not installed: {TORCH_INSTALL} "
                f"{package} ({without})")
    return (f"--optimizer {cfg.optimizer} runs on the torch engine only and needs torch, "
            f"which is not installed: {TORCH_INSTALL} ({without})")
