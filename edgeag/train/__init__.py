"""On-device training: algorithms, their presets, the run directory.

Algorithms are registered in `ALGORITHMS`; ``--algo`` validates against it. This
module imports nothing heavy (no torch): `get_algorithm` imports an algorithm's
module only when a run needs it, and PPO imports torch only for its torch engine.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

ALGORITHMS = {
    "ppo": "Proximal Policy Optimization (discrete and continuous actions)",
    "dqn": "Deep Q-Network (discrete actions; replay buffer, target network, epsilon-greedy)",
    "td3": "Twin Delayed DDPG (continuous actions; twin critics, delayed policy updates, "
           "target policy smoothing)",
}


def supported_algos() -> list[str]:
    return list(ALGORITHMS)


@dataclass(frozen=True)
class Algorithm:
    """What the run driver (`edgeag.train.run.train`) needs from an algorithm. Each
    algorithm module defines one as ``ALGORITHM``.

    The state that ``build_state`` returns has ``checkpoint()`` / ``restore(ckpt)``,
    ``global_step``, ``iteration``, ``recent`` (the last finished episodes' (return,
    length)) and ``obs_norm``; it may have ``checkpoint_files()`` (``{name: write(f)}``, written
    beside the checkpoint, such as a replay buffer).
    """

    name: str
    build_state: Callable
    """(cfg, envs) -> state: fresh networks, optimizers, buffers, all seeded."""
    plan: Callable
    """(cfg, budget_bytes, floor_bytes, obs_dim, action_dim, discrete) -> MemoryPlan."""
    what_fits: Callable
    """Same arguments as ``plan`` -> a sentence naming settings that would fit."""
    make_iteration: Callable
    """state -> a function running one iteration (a block of env steps and the updates
    due), returning (finished episodes' (return, length), ``train/*`` metrics)."""
    prepare: Callable
    """(cfg, threads) -> a description: the engine's threads and warm-up, run before
    the floor is measured (so what they map and allocate belongs to it)."""
    optimizer_state_bytes: Callable
    """state -> bytes held by its optimizers' state."""
    parameter_count: Callable
    """state -> values of its trained networks (not target networks)."""
    act: Callable
    """state -> the deterministic policy, raw numpy observations (normalised) to
    actions, for the final evaluation."""
    discrete_actions: bool | None = None
    """True: needs Discrete actions; False: needs a bounded Box; None: either."""
    largest_buffer: Callable | None = None
    """Same arguments as ``plan`` -> the largest replay buffer (``buffer_size``) that
    fits, or None; only for algorithms with a replay buffer (``--shrink-buffer``)."""
    networks: Callable | None = None
    """(cfg, observation_space, action_space) -> the engine's networks alone (no envs,
    no buffers): ``load_state_dict(checkpoint)`` then ``deterministic(obs)``, for
    evaluating a checkpoint (``edgeag eval``) and for ``predict``."""
    extend: Callable | None = None
    """(state, old_total_steps) -> None: the run's ``total_steps`` changed on resume; keep
    its schedules continuous (PPO's annealed learning rate, DQN's epsilon)."""


ENGINES = ("numpy", "torch")
"""What computes an algorithm's networks (``TrainConfig.engine``, once ``auto`` is resolved)."""


def engine_class(engine: str, classes: dict[str, str]):
    """The class ``classes[engine]`` names (``"module:Class"``), imported only now, so the
    numpy engine's process never imports the torch engine's module (and torch)."""
    if engine not in ENGINES:
        from edgeag.errors import EdgeagError
        raise EdgeagError(f"invalid engine {engine!r}: expected one of {', '.join(ENGINES)}")
    module, name = classes[engine].split(":")
    return getattr(importlib.import_module(module), name)


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm ``name`` (imports its module: torch and all)."""
    if name not in ALGORITHMS:
        from edgeag.errors import EdgeagError
        raise EdgeagError(f"unknown algo {name!r} (accepted: {', '.join(supported_algos())})")
    return importlib.import_module(f"edgeag.train.{name}").ALGORITHM
