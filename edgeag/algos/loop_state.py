"""The training loop's state, and the checkpointing every algorithm shares.

`due` counts the steps of a cadence (updates, target updates, evaluations) that a block
of env steps crossed. `LoopState` holds what any algorithm's loop carries between
iterations (the config, envs, networks, the run's generator, the current observations,
episode statistics, counters, the observation normaliser, the sample of observations
export verifies on) and writes and restores it.
An algorithm's state subclasses it and adds its own fields through ``_checkpoint_extra``
and ``_restore_extra`` (PPO's reward scaler and learning-rate anchor; the off-policy
replay buffer).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from edgeag.train import observations
from edgeag.train.envs import ObsNormalizer, env_state, set_env_state
from edgeag.train.observations import ObservationSample

__all__ = ["LoopState", "due"]


def due(before: int, after: int, start: int, every: int) -> int:
    """How many multiples of ``every`` past ``start`` the step count crossed going from
    ``before`` to ``after``: rounds of updates (or target updates) now due."""
    return max(0, after - start) // every - max(0, before - start) // every


@dataclass(kw_only=True)
class LoopState:
    """Everything a checkpoint holds that every algorithm has; a resumed run continues
    from it bit for bit."""

    cfg: object
    envs: object
    nets: object
    """The engine's networks (`edgeag.algos.base.Networks`)."""
    rng: np.random.Generator
    next_obs: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray
    obs_norm: ObsNormalizer
    recent: collections.deque
    """The last finished episodes' (return, length)."""
    sample: ObservationSample | None = None
    """A uniform sample of the raw observations seen (`edgeag.train.observations`):
    what ``edgeag export`` verifies on. The loop offers it every ``next_obs``."""
    global_step: int = 0
    iteration: int = 0

    def checkpoint(self) -> dict:
        return {
            "config": self.cfg.as_dict(), "algo": self.cfg.algo, "arch": self.nets.arch,
            "engine": self.cfg.engine, **self.nets.state_dict(),
            "obs_norm": self.obs_norm.state(), "rng": self.rng.bit_generator.state,
            "envs": [env_state(e) for e in self.envs.envs],
            "next_obs": self.next_obs.copy(), "episode_return": self.episode_return.copy(),
            "episode_length": self.episode_length.copy(),
            "recent": [list(x) for x in self.recent],
            "global_step": self.global_step, "iteration": self.iteration,
            **({observations.KEY: self.sample.state()} if self.sample is not None else {}),
            **self._checkpoint_extra(),
        }

    def restore(self, ckpt: dict) -> None:
        if ckpt.get("engine", "torch") != self.cfg.engine or "rng" not in ckpt:
            raise ValueError(f"the checkpoint was written by the {ckpt.get('engine', 'torch')} "
                             f"engine of an older edgeag, not the {self.cfg.engine} engine")
        self.nets.load_state_dict(ckpt)
        if "obs_norm" in ckpt:
            self.obs_norm.load(ckpt["obs_norm"])
        self.rng.bit_generator.state = ckpt["rng"]
        for env, layers in zip(self.envs.envs, ckpt["envs"]):
            set_env_state(env, layers)
        self.next_obs = ckpt["next_obs"]
        self.episode_return, self.episode_length = ckpt["episode_return"], ckpt["episode_length"]
        self.recent.extend(tuple(x) for x in ckpt["recent"])
        self.global_step, self.iteration = ckpt["global_step"], ckpt["iteration"]
        if self.sample is not None and observations.KEY in ckpt:  # older runs kept none
            self.sample.load(ckpt[observations.KEY])
        self._restore_extra(ckpt)

    def checkpoint_files(self) -> dict:
        """Files written beside the checkpoint, ``{name: write(f)}`` (none here)."""
        return {}

    def _checkpoint_extra(self) -> dict:
        return {}

    def _restore_extra(self, ckpt: dict) -> None:
        pass
