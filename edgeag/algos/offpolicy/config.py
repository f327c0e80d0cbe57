"""What DQN and TD3 share: replay, warm-up, update cadence, target networks."""

from __future__ import annotations

from dataclasses import dataclass

from edgeag.train.config import TrainConfig


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
