"""Hyperparameters: one frozen dataclass per algorithm, per-environment presets, overrides.

A run's configuration is resolved in this order, later winning: the algorithm's
dataclass defaults (`PPOConfig`, `DQNConfig`, `TD3Config`), the preset table for the
environment (``presets/<algo>.toml``), the preset table for the environment and
optimizer family, then command-line overrides. The resolved configuration is written
to ``<run>/config.toml`` under ``[<algo>]``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import ClassVar

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from edgeag.errors import EdgeagError
from edgeag.optim_rules import ALPHA_SCALES


@dataclass(frozen=True)
class TrainConfig:
    """The settings every algorithm has; each algorithm's dataclass adds its own (and
    may change a default by declaring the field again)."""

    algo: ClassVar[str] = ""
    """Registered algorithm name (`edgeag.train.ALGORITHMS`); the config.toml table."""

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


@dataclass(frozen=True)
class PPOConfig(TrainConfig):
    """Everything that decides a PPO run's result (given the same machine and threads)."""

    algo: ClassVar[str] = "ppo"

    max_grad_norm: float = 0.5
    """Global gradient-norm clip for optimizers other than AlphaGrad; 0 disables it.
    AlphaGrad never clips: its step is already bounded per element."""
    num_envs: int = 8
    """Environments stepped in one `gymnasium.vector.SyncVectorEnv` (no subprocesses)."""
    num_steps: int = 32
    """Rollout length per environment per iteration; the batch is num_envs * num_steps."""
    batch_size: int = 256
    """Minibatch size of the update (must divide num_envs * num_steps)."""
    update_epochs: int = 20
    """Passes over the rollout per iteration."""
    gamma: float = 0.98
    """Discount factor."""
    gae_lambda: float = 0.8
    """GAE lambda."""
    clip_coef: float = 0.2
    """Surrogate clipping coefficient."""
    clip_vloss: bool = False
    """Clip the value loss around the old values too (CleanRL's default is True)."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    target_kl: float = 0.0
    """Stop an iteration's epochs early when the approximate KL exceeds it; 0 disables."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run."""
    norm_obs: bool = True
    """Normalise observations with running mean/std, clipped to +-10."""
    norm_reward: bool = False
    """Scale rewards by the running std of the discounted return (on for continuous
    control presets)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor and of the critic (separate tanh MLPs)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (continuous actions)."""
    eval_episodes: int = 10
    """Deterministic episodes for the final evaluation."""
    checkpoint_every: int = 50
    """Write a checkpoint every this many iterations (and always at the end)."""

    @property
    def batch(self) -> int:
        """Transitions per iteration."""
        return self.num_envs * self.num_steps

    @property
    def steps_per_iteration(self) -> int:
        return self.batch

    def checks(self) -> list[tuple[str, bool, str]]:
        return super().checks() + [
            ("num_envs", self.num_envs >= 1, "a positive integer"),
            ("num_steps", self.num_steps >= 1, "a positive integer"),
            ("batch_size", 1 <= self.batch_size <= self.batch and self.batch % self.batch_size == 0,
             f"a divisor of num_envs * num_steps = {self.batch}"),
            ("update_epochs", self.update_epochs >= 1, "a positive integer"),
            ("gamma", 0 <= self.gamma <= 1, "a number in [0, 1]"),
            ("gae_lambda", 0 <= self.gae_lambda <= 1, "a number in [0, 1]"),
            ("clip_coef", self.clip_coef > 0, "a positive number"),
            ("max_grad_norm", self.max_grad_norm >= 0, "0 (off) or a positive number"),
            ("target_kl", self.target_kl >= 0, "0 (off) or a positive number"),
        ]


@dataclass(frozen=True)
class OffPolicyConfig(TrainConfig):
    """Settings DQN and TD3 share: the replay buffer, when and how often to update,
    and the block of environment steps that makes one iteration."""

    num_envs: int = 1
    """Environments stepped in one `gymnasium.vector.SyncVectorEnv` (no subprocesses)."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions (the largest item of the memory plan;
    ``--shrink-buffer`` lowers it to what the budget holds)."""
    batch_size: int = 256
    """Transitions sampled from the replay buffer per gradient step."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Target network update rate: target <- tau * online + (1 - tau) * target."""
    learning_starts: int = 25_000
    """Environment steps of uniformly random actions before the first update."""
    train_frequency: int = 1
    """Environment steps (summed over the envs) between two rounds of gradient steps."""
    gradient_steps: int = 1
    """Gradient steps per round."""
    max_grad_norm: float = 0.0
    """Global gradient-norm clip for optimizers other than AlphaGrad; 0 disables it.
    AlphaGrad never clips: its step is already bounded per element."""
    iteration_steps: int = 1000
    """Environment steps per iteration: the block after which metrics are logged and
    where the budget guard, Ctrl-C and checkpoints take effect."""

    @property
    def steps_per_iteration(self) -> int:
        return self.iteration_steps

    @property
    def planned_steps(self) -> int:
        return -(-self.total_steps // self.num_envs) * self.num_envs

    def checks(self) -> list[tuple[str, bool, str]]:
        return super().checks() + [
            ("num_envs", self.num_envs >= 1, "a positive integer"),
            ("batch_size", self.batch_size >= 1, "a positive integer"),
            ("buffer_size", self.buffer_size >= self.batch_size,
             f"an integer >= batch_size ({self.batch_size})"),
            ("gamma", 0 <= self.gamma <= 1, "a number in [0, 1]"),
            ("tau", 0 < self.tau <= 1, "a number in (0, 1]"),
            ("learning_starts", self.learning_starts >= 0, "0 or a positive integer"),
            # the run's updates: (planned_steps - learning_starts) // train_frequency
            ("total_steps", self.num_envs < 1 or  # (num_envs is refused above)
             self.planned_steps >= self.learning_starts + self.train_frequency,
             (f"more than learning_starts ({self.learning_starts})" if self.train_frequency == 1
              else f"at least learning_starts + train_frequency = "
                   f"{self.learning_starts + self.train_frequency}")
             + ", or the run makes no update: raise --total-steps or lower "
               "--set learning_starts=N"),
            ("train_frequency", self.train_frequency >= 1, "a positive integer"),
            ("gradient_steps", self.gradient_steps >= 1, "a positive integer"),
            ("max_grad_norm", self.max_grad_norm >= 0, "0 (off) or a positive number"),
            ("iteration_steps", self.iteration_steps >= 1 and
             (self.num_envs < 1 or self.iteration_steps % self.num_envs == 0),
             f"a positive multiple of num_envs ({self.num_envs})"),
        ]


@dataclass(frozen=True)
class DQNConfig(OffPolicyConfig):
    """Everything that decides a DQN run's result. Defaults: CleanRL ``dqn.py`` as the
    AlphaGrad paper ran it (Adam eps 1e-5)."""

    algo: ClassVar[str] = "dqn"

    total_steps: int = 500_000
    optimizer: str = "adam"
    lr: float = 2.5e-4
    buffer_size: int = 10_000
    batch_size: int = 128
    tau: float = 1.0
    learning_starts: int = 10_000
    train_frequency: int = 10
    target_update_interval: int = 500
    """Environment steps between two target network updates (by ``tau``; 1 = a copy)."""
    td_loss: str = "mse"
    """The TD loss: ``mse`` (CleanRL's and the AlphaGrad paper's) or ``huber`` (SB3's
    smooth L1, delta 1)."""
    exploration_initial_eps: float = 1.0
    """Epsilon of epsilon-greedy exploration at the start."""
    exploration_final_eps: float = 0.05
    """Epsilon once the linear decay is over."""
    exploration_fraction: float = 0.5
    """Fraction of total_steps over which epsilon decays linearly."""
    hidden: tuple[int, ...] = (120, 84)
    """Hidden layer widths of the Q-network (ReLU MLP)."""
    eval_episodes: int = 10
    """Deterministic (greedy) episodes for the final evaluation."""
    checkpoint_every: int = 50
    """Write a checkpoint every this many iterations (and always at the end)."""

    def checks(self) -> list[tuple[str, bool, str]]:
        return super().checks() + [
            ("target_update_interval", self.target_update_interval >= 1, "a positive integer"),
            ("td_loss", self.td_loss in ("mse", "huber"), "mse or huber"),
            ("exploration_initial_eps", 0 <= self.exploration_initial_eps <= 1,
             "a number in [0, 1]"),
            ("exploration_final_eps", 0 <= self.exploration_final_eps <= 1, "a number in [0, 1]"),
            ("exploration_fraction", 0 < self.exploration_fraction <= 1, "a number in (0, 1]"),
        ]


@dataclass(frozen=True)
class TD3Config(OffPolicyConfig):
    """Everything that decides a TD3 run's result. Defaults: CleanRL
    ``td3_continuous_action.py`` as the AlphaGrad paper ran it (500k steps)."""

    algo: ClassVar[str] = "td3"

    env_id: str = "Pendulum-v1"
    total_steps: int = 500_000
    optimizer: str = "adam"
    policy_frequency: int = 2
    """Critic updates per actor (and target) update: TD3's delayed policy update."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise, in units of the action scale."""
    noise_clip: float = 0.5
    """Clip of the target policy smoothing noise, in units of the action scale."""
    exploration_noise: float = 0.1
    """Std of the Gaussian exploration noise, in units of the action scale."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and of each of the twin critics (ReLU MLPs)."""
    eval_episodes: int = 10
    """Deterministic episodes (the actor's action, no noise) for the final evaluation."""
    checkpoint_every: int = 50
    """Write a checkpoint every this many iterations (and always at the end)."""

    def checks(self) -> list[tuple[str, bool, str]]:
        return super().checks() + [
            ("policy_frequency", self.policy_frequency >= 1, "a positive integer"),
            ("policy_noise", self.policy_noise >= 0, "0 or a positive number"),
            ("noise_clip", self.noise_clip >= 0, "0 or a positive number"),
            ("exploration_noise", self.exploration_noise >= 0, "0 or a positive number"),
        ]


def _numpy_optimizers() -> tuple[str, ...]:
    from edgeag.optim_rules import NUMPY_ENGINE_OPTIMIZERS
    return NUMPY_ENGINE_OPTIMIZERS


def uses_fused_backward(cfg: TrainConfig) -> bool:
    """AlphaGrad updates each tensor on its own, inside the backward pass (unless
    ``fuse_backward`` is off): nothing needs all gradients at once. Every algorithm
    asks this one question."""
    return cfg.optimizer == "alphagrad" and cfg.fuse_backward


CONFIGS: dict[str, type[TrainConfig]] = {c.algo: c for c in (PPOConfig, DQNConfig, TD3Config)}
"""Configuration dataclass of each algorithm in `edgeag.train.ALGORITHMS`."""


def config_class(algo: str) -> type[TrainConfig]:
    try:
        return CONFIGS[algo]
    except KeyError:
        raise EdgeagError(f"unknown algo {algo!r} (accepted: {', '.join(CONFIGS)})") from None


def _coerce(name: str, value, source: str, cls: type[TrainConfig] = PPOConfig):
    """``value`` as the type of ``cls``'s field ``name``; EdgeagError naming the source
    otherwise."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
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
    """``presets/<algo>.toml``: per-environment tables."""
    with resources.files("edgeag.train").joinpath(f"presets/{algo}.toml").open("rb") as f:
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
                          f"file like edgeag/train/presets/{algo}.toml)") from None
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
                _coerce(key, value, f"preset {path} [{env_id}]", cls)
                continue
            if families is not None and key not in families:
                raise EdgeagError(f"invalid --preset {str(path)!r}: table [{env_id}.{key}]: "
                                  f"unknown optimizer family {key!r} (accepted: "
                                  f"{', '.join(families)})")
            for sub_key, sub_value in value.items():
                _coerce(sub_key, sub_value, f"preset {path} [{env_id}.{key}]", cls)
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
            values[key] = _coerce(key, value, f"{name}{env_id}", cls)
    family = optimizer_family(optimizer)
    for key, value in table.get(family, {}).items():
        values[key] = _coerce(key, value, f"{name}{env_id}.{family}", cls)
    origin = (f"{name}{env_id}.{family}" if family in table else
              f"{name}{env_id} (no {family} table)" if table else
              f"{algo.upper()} defaults (no preset for {env_id})")
    for key, value in overrides.items():
        values[key] = _coerce(key, value, "override", cls)
    values.update(env_id=env_id, optimizer=optimizer)
    return cls(**values).validate(), origin


def config_from_dict(data: dict, source: str, algo: str = "ppo") -> TrainConfig:
    cls = config_class(algo)
    values = {k: _coerce(k, v, source, cls) for k, v in data.items()}
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


def toml_dumps(tables: dict[str, dict]) -> str:
    """TOML for ``{table: {key: scalar or list}}``: what config.toml holds."""
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    return json.dumps(str(value))
