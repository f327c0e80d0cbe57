"""PPO hyperparameters: one frozen dataclass, per-environment presets, overrides.

A run's configuration is resolved in this order, later winning:
the `PPOConfig` defaults, the preset table for the environment (``presets/ppo.toml``),
the preset table for the environment and optimizer family, then command-line
overrides. The resolved configuration is written to ``<run>/config.toml``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from edgeag.errors import EdgeagError


@dataclass(frozen=True)
class PPOConfig:
    """Everything that decides a PPO run's result (given the same machine and threads)."""

    env_id: str = "CartPole-v1"
    """Gymnasium environment id."""
    seed: int = 1
    """Seeds torch, the environments (env i gets seed + i) and minibatch shuffling."""
    total_steps: int = 100_000
    """Environment steps to train for, summed over the vector envs."""
    optimizer: str = "alphagrad"
    """Registered optimizer name (`edgeag.optim.OPTIMIZERS`)."""
    lr: float = 3e-4
    """Initial learning rate (annealed linearly to 0 when ``anneal_lr``)."""
    alpha: float = 1.0
    """AlphaGrad steepness: per-element step is lr * tanh(alpha * g / ||g||)."""
    momentum: float = 0.0
    """Momentum of AlphaGrad or SGD (0: stateless)."""
    eps: float = 1e-5
    """Optimizer epsilon (AlphaGrad's norm guard, Adam's denominator guard)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip for optimizers other than AlphaGrad; 0 disables it.
    AlphaGrad never clips: its step is already bounded per element."""
    fuse_backward: bool = True
    """AlphaGrad only: update each parameter inside ``backward()`` as soon as its
    gradient is complete, so one gradient tensor is alive at a time; false runs the
    usual ``backward()`` then ``step()`` (all gradients alive at once)."""
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
    def num_iterations(self) -> int:
        return max(1, self.total_steps // self.batch)

    def validate(self) -> "PPOConfig":
        checks = [
            ("total_steps", self.total_steps >= 1, "a positive integer"),
            ("num_envs", self.num_envs >= 1, "a positive integer"),
            ("num_steps", self.num_steps >= 1, "a positive integer"),
            ("batch_size", 1 <= self.batch_size <= self.batch and self.batch % self.batch_size == 0,
             f"a divisor of num_envs * num_steps = {self.batch}"),
            ("update_epochs", self.update_epochs >= 1, "a positive integer"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a positive number"),
            ("alpha", math.isfinite(self.alpha) and self.alpha > 0, "a positive number"),
            ("momentum", 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("eps", self.eps > 0, "a positive number"),
            ("gamma", 0 <= self.gamma <= 1, "a number in [0, 1]"),
            ("gae_lambda", 0 <= self.gae_lambda <= 1, "a number in [0, 1]"),
            ("clip_coef", self.clip_coef > 0, "a positive number"),
            ("max_grad_norm", self.max_grad_norm >= 0, "0 (off) or a positive number"),
            ("target_kl", self.target_kl >= 0, "0 (off) or a positive number"),
            ("hidden", len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
             "one or more positive widths such as [64, 64]"),
            ("eval_episodes", self.eval_episodes >= 0, "0 or a positive integer"),
            ("checkpoint_every", self.checkpoint_every >= 1, "a positive integer"),
        ]
        for name, ok, accepted in checks:
            if not ok:
                raise EdgeagError(f"invalid {name} {getattr(self, name)!r}: expected {accepted}")
        return self

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out


FIELDS = {f.name: f for f in dataclasses.fields(PPOConfig)}


def _coerce(name: str, value, source: str):
    """``value`` as the type of field ``name``; EdgeagError naming the source otherwise."""
    if name not in FIELDS:
        raise EdgeagError(f"{source}: unknown setting {name!r} (accepted: {', '.join(FIELDS)})")
    default = FIELDS[name].default
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            raise EdgeagError(f"{source}: invalid {name} {value!r}: expected "
                              f"{type(default).__name__}") from None
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
        raise EdgeagError(f"{source}: invalid {name} {value!r}: expected "
                          f"{'a list of integers' if isinstance(default, tuple) else type(default).__name__}")
    return value


def load_presets() -> dict:
    with resources.files("edgeag.train").joinpath("presets/ppo.toml").open("rb") as f:
        return tomllib.load(f)


def optimizer_family(optimizer: str) -> str:
    """Preset table used for an optimizer: ``adam`` and ``torch-adam`` share one."""
    return "adam" if optimizer in ("adam", "torch-adam") else optimizer


def resolve_config(env_id: str, optimizer: str, overrides: dict) -> tuple[PPOConfig, str]:
    """The configuration for ``env_id`` and ``optimizer`` with ``overrides`` applied,
    and a one-line description of where it came from."""
    presets = load_presets()
    table = presets.get(env_id, {})
    values: dict = {}
    for key, value in table.items():
        if not isinstance(value, dict):
            values[key] = _coerce(key, value, f"preset {env_id}")
    family = optimizer_family(optimizer)
    for key, value in table.get(family, {}).items():
        values[key] = _coerce(key, value, f"preset {env_id}.{family}")
    origin = (f"preset {env_id}.{family}" if family in table else
              f"preset {env_id} (no {family} table)" if table else
              f"PPO defaults (no preset for {env_id})")
    for key, value in overrides.items():
        values[key] = _coerce(key, value, "override")
    values.update(env_id=env_id, optimizer=optimizer)
    return PPOConfig(**values).validate(), origin


def config_from_dict(data: dict, source: str) -> PPOConfig:
    values = {k: _coerce(k, v, source) for k, v in data.items()}
    return PPOConfig(**values).validate()


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
    return json.dumps(str(value))
