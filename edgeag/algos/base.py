"""The interfaces every algorithm implements, declared once.

- `Algorithm`: what the run driver (`edgeag.train.run.Trainer`) needs from an algorithm;
  each algorithm's ``algorithm.py`` defines one as ``ALGORITHM``.
- `Networks`: what an engine's networks provide (numpy and torch alike), so the driver,
  the plan, checkpoints and evaluation treat both engines the same way.
- `PlanInputs`: the budget and the env's sizes that every plan is a function of.
- `ExportSpec`: how an algorithm's checkpoint becomes an exported policy, read by
  `edgeag.export.spec` (which then knows no algorithm by name).
- `engine_class`: an engine's networks class, imported only when asked for.

Imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

__all__ = ["Algorithm", "ENGINES", "ExportSpec", "NORM_EPS", "Networks", "OBS_CLIP",
           "PlanInputs", "engine_class"]

OBS_CLIP = 10.0
"""Normalised observations are clipped to +-this, in training and in every exported policy."""
NORM_EPS = 1e-8
"""Added to the running variance before its square root (training and export alike)."""

ENGINES = ("numpy", "torch")
"""What computes an algorithm's networks (``TrainConfig.engine``, once ``auto`` is resolved)."""


@dataclass(frozen=True)
class PlanInputs:
    """What a memory plan is computed from, besides the config."""

    budget_bytes: int
    """The budget the plan must fit (room for the driver's own items already taken)."""
    floor_bytes: int
    """Anonymous memory measured after the imports and the engine's warm-up."""
    obs_dim: int
    action_dim: int
    """The number of actions (discrete) or the action vector's length (continuous)."""
    discrete: bool


@runtime_checkable
class Networks(Protocol):
    """An engine's networks of one algorithm: what they run on, what they hold, what
    they cost. `edgeag.algos.ppo.numpy_engine.NumpyActorCritic` and
    `edgeag.algos.ppo.torch_engine.TorchActorCritic` are two of them."""

    RUNTIME: ClassVar[Any]
    """The engine's runtime as a plan item (`edgeag.memory.PlanItem`)."""
    arch: dict
    """The architecture, saved in checkpoints: ``obs_dim``, ``action_dim``,
    ``discrete``, ``hidden`` (and ``kind`` for all but PPO's actor-critic)."""

    @property
    def parameter_count(self) -> int:
        """Values of the trained networks (not target networks)."""

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic policy's actions for normalised observations."""

    def state_dict(self) -> dict:
        """The checkpoint's arrays: ``policy`` (and the algorithm's other networks) and
        ``optimizer`` state, plain numpy arrays or tensors."""

    def load_state_dict(self, ckpt: dict) -> None:
        """Restore what `state_dict` returned."""

    def memory_items(self, batch: int) -> list:
        """The plan items of these networks for updates of ``batch`` samples."""

    def optimizer_state_bytes(self) -> int:
        """Bytes held by the optimizers' state now."""


@dataclass(frozen=True)
class ExportSpec:
    """How a checkpoint of this algorithm becomes an exported policy: the policy MLP's
    arrays, its activation, its head, and what its output means."""

    arch_kind: str | None
    """The checkpoint's ``arch["kind"]`` that names this algorithm (None for PPO)."""
    prefix: str
    """The ``policy`` state-dict prefix of the exported MLP (``actor.0.weight``, ...)."""
    activation: str
    """Between layers: ``tanh`` or ``relu``."""
    heads: dict
    """``{discrete: head}`` for the action spaces it supports (`edgeag.export.spec.HEADS`)."""
    meanings: dict
    """``{head: what the action is}`` (``policy.json``'s ``contract.output.meaning``)."""
    outputs: dict
    """``{discrete: what the last layer computes}``: logits, Q-values, means, ..."""
    contents: str
    """What the exported file holds, in a few words (the export summary)."""
    raw_obs_note: str
    """Why the policy takes raw observations when it does (``policy.json``)."""
    normalises_obs: bool = False
    """The checkpoint's ``obs_norm`` is part of the policy (when ``config.norm_obs``)."""
    bounds_in_arch: bool = False
    """The action bounds are saved in ``arch`` (``low``, ``high``), not taken from the env."""


@dataclass(frozen=True)
class Algorithm:
    """What the run driver needs from an algorithm.

    The state that ``build_state`` returns has ``checkpoint()`` / ``restore(ckpt)``,
    ``global_step``, ``iteration``, ``recent`` (the last finished episodes' (return,
    length)) and ``obs_norm`` (`edgeag.algos.loop_state.LoopState`); it may have
    ``checkpoint_files()`` (``{name: write(f)}``, written beside the checkpoint, such as
    a replay buffer).
    """

    name: str
    build_state: Callable
    """(cfg, envs) -> state: fresh networks, optimizers, buffers, all seeded."""
    plan: Callable
    """(cfg, PlanInputs) -> `edgeag.memory.MemoryPlan`."""
    what_fits: Callable
    """(cfg, PlanInputs) -> a sentence naming settings that would fit."""
    make_iteration: Callable
    """state -> a function running one iteration (a block of env steps and the updates
    due), returning (finished episodes' (return, length), ``train/*`` metrics)."""
    prepare: Callable
    """(cfg, threads) -> a description: the engine's threads and warm-up, run before
    the floor is measured (so what they map and allocate belongs to it)."""
    networks: Callable
    """(cfg, observation_space, action_space) -> the engine's `Networks` alone (no envs,
    no buffers): ``load_state_dict(checkpoint)`` then ``deterministic(obs)``, for
    evaluating a checkpoint (``edgeag eval``) and for ``predict``."""
    export: ExportSpec
    """How its checkpoints export."""
    discrete_actions: bool | None = None
    """True: needs Discrete actions; False: needs a bounded Box; None: either."""
    largest_buffer: Callable | None = None
    """(cfg, PlanInputs) -> the largest replay buffer (``buffer_size``) that fits, or
    None; only for algorithms with a replay buffer (``--shrink-buffer``)."""
    extend: Callable | None = None
    """(state, old_total_steps) -> None: the run's ``total_steps`` changed on resume; keep
    its schedules continuous (PPO's annealed learning rate, DQN's epsilon)."""

    def act(self, state) -> Callable:
        """The deterministic policy of ``state``: normalised observations to actions (the
        caller normalises with ``state.obs_norm``), for evaluation."""
        return state.nets.deterministic

    def optimizer_state_bytes(self, state) -> int:
        return state.nets.optimizer_state_bytes()

    def parameter_count(self, state) -> int:
        return state.nets.parameter_count


def engine_class(engine: str, classes: dict[str, str]):
    """The class ``classes[engine]`` names (``"module:Class"``), imported only now, so the
    numpy engine's process never imports the torch engine's module (and torch)."""
    if engine not in ENGINES:
        from edgeag.errors import EdgeagError
        raise EdgeagError(f"invalid engine {engine!r}: expected one of {', '.join(ENGINES)}")
    module, name = classes[engine].split(":")
    return getattr(importlib.import_module(module), name)
