"""PPO's hyperparameters: `PPOConfig`, the ``[ppo]`` table of ``config.toml``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgeag.train.config import TrainConfig


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


CONFIG = PPOConfig
