"""TD3's hyperparameters: `TD3Config`, the ``[td3]`` table of ``config.toml``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgeag.algos.offpolicy.config import OffPolicyConfig


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


CONFIG = TD3Config
