"""DQN's hyperparameters: `DQNConfig`, the ``[dqn]`` table of ``config.toml``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgeag.algos.offpolicy.config import OffPolicyConfig


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


CONFIG = DQNConfig
