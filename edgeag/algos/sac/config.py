"""SAC's hyperparameters: `SACConfig`, the ``[sac]`` table of ``config.toml``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from edgeag.algos.offpolicy.config import OffPolicyConfig


@dataclass(frozen=True)
class SACConfig(OffPolicyConfig):
    """Everything that decides a SAC run's result. Defaults: Stable-Baselines3's ``SAC``
    (learned temperature, ``ent_coef="auto"``), with CleanRL's 1M steps."""

    algo: ClassVar[str] = "sac"

    env_id: str = "Pendulum-v1"
    total_steps: int = 1_000_000
    optimizer: str = "adam"
    learning_starts: int = 100
    """Environment steps of uniformly random actions before the first update (SB3's
    100; CleanRL waits 5,000)."""
    target_update_interval: int = 1
    """Gradient steps between two soft updates of the target critics (SB3's meaning: in
    gradient steps, not env steps)."""
    ent_coef_init: float = 1.0
    """Initial temperature alpha (the entropy coefficient), learned from there as
    ``log_alpha`` (SB3's ``ent_coef="auto"`` starts at 1.0, ``"auto_0.1"`` at 0.1)."""
    target_entropy: str = "auto"
    """Entropy the temperature steers the policy towards: ``auto`` is -action_dim
    (SB3's and the paper's), or a number such as ``-0.5``."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and of each of the twin critics (ReLU MLPs)."""
    eval_episodes: int = 10
    """Deterministic episodes (``tanh`` of the actor's mean, no sampling) for the final
    evaluation."""
    checkpoint_every: int = 50
    """Write a checkpoint every this many iterations (and always at the end)."""

    def entropy_target(self, action_dim: int) -> float:
        """The target entropy for actions of ``action_dim`` values."""
        if self.target_entropy == "auto":
            return -float(action_dim)
        return float(self.target_entropy)

    def checks(self) -> list[tuple[str, bool, str]]:
        return super().checks() + [
            ("target_update_interval", self.target_update_interval >= 1, "a positive integer"),
            ("ent_coef_init", math.isfinite(self.ent_coef_init) and self.ent_coef_init > 0,
             "a positive number (the initial temperature)"),
            ("target_entropy", _entropy_ok(self.target_entropy),
             "auto (-action_dim) or a number such as -0.5"),
        ]


def _entropy_ok(value: str) -> bool:
    if value == "auto":
        return True
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


CONFIG = SACConfig
