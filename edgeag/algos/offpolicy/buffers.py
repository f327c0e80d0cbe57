"""The replay buffer of DQN and TD3: transitions in numpy arrays allocated once, sampled
uniformly with the run's seeded `np.random.Generator`, saved and restored without a
second copy in memory. No torch: both engines read the same numpy minibatches.

The arrays come from ``np.zeros``, whose pages the kernel maps only when first
written, so a buffer's resident memory grows as it fills and reaches what the memory
plan counts (`ReplayBuffer.nbytes`) once it is full.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib import format as npy

from edgeag.errors import EdgeagError


class Transitions(NamedTuple):
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    """1.0 where the episode ended in a terminal state; a time-limit cut is 0.0, so
    the target bootstraps from ``next_obs`` (the real final observation)."""


class ReplayBuffer:
    """A ring of ``capacity`` transitions (SB3's ``ReplayBuffer`` without
    ``optimize_memory_usage``: ``next_obs`` is stored beside ``obs``)."""

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, discrete: bool):
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros(capacity, np.int64) if discrete else \
            np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.pos = 0
        self.full = False

    @staticmethod
    def nbytes(capacity: int, obs_dim: int, action_dim: int, discrete: bool) -> int:
        """Bytes of a full buffer, without allocating it (for the memory plan)."""
        return capacity * (4 * (2 * obs_dim + 2) + (8 if discrete else 4 * action_dim))

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
            next_obs: np.ndarray, terminated: np.ndarray) -> None:
        """One row per environment; the oldest rows are overwritten once full."""
        for i in range(len(obs)):
            p = self.pos
            self.obs[p], self.actions[p], self.rewards[p] = obs[i], actions[i], rewards[i]
            self.next_obs[p], self.terminated[p] = next_obs[i], terminated[i]
            self.pos = (p + 1) % self.capacity
            self.full = self.full or self.pos == 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> Transitions:
        """``batch_size`` transitions drawn uniformly with replacement (copies)."""
        idx = rng.integers(len(self), size=batch_size)
        return Transitions(*(getattr(self, name)[idx] for name in self.FIELDS))

    # --- checkpointing: the filled rows, written straight from the arrays -----------

    def state(self) -> dict:
        return {"size": len(self), "pos": self.pos, "full": self.full}

    def write(self, f) -> None:
        """The filled rows of every array as consecutive ``.npy`` records (no copy:
        numpy writes a contiguous array with ``tofile``)."""
        for name in self.FIELDS:
            npy.write_array(f, getattr(self, name)[:len(self)], allow_pickle=False)

    def read(self, path, state: dict) -> None:
        """Fill the arrays from a file `write` made, reading each record straight into
        the array's memory (no second copy of the buffer)."""
        size = state["size"]
        if size > self.capacity:
            raise EdgeagError(f"cannot resume: {path} holds {size:,} transitions, more than "
                              f"the buffer's {self.capacity:,}")
        try:
            with open(path, "rb") as f:
                for name in self.FIELDS:
                    dest = getattr(self, name)[:size]
                    version = npy.read_magic(f)
                    shape, _, dtype = (npy.read_array_header_1_0(f) if version == (1, 0)
                                       else npy.read_array_header_2_0(f))
                    if shape != dest.shape or dtype != dest.dtype:
                        raise ValueError(f"{name}: {shape} {dtype}, expected {dest.shape} "
                                         f"{dest.dtype}")
                    if f.readinto(memoryview(dest).cast("B")) != dest.nbytes:
                        raise ValueError(f"{name}: file ends early")
        except (OSError, ValueError) as e:
            raise EdgeagError(f"cannot resume: {path} is not a readable replay buffer "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
        self.pos, self.full = state["pos"], state["full"]
