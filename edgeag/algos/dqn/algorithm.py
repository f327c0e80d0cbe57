"""Deep Q-Network (Mnih et al., 2015) for discrete actions, readable top to bottom.

One iteration = ``iteration_steps`` env steps with epsilon-greedy actions, each
stored in the replay buffer; every ``train_frequency`` steps past ``learning_starts``,
``gradient_steps`` minibatch steps on the TD error; every ``target_update_interval``
steps the target network moves to the online one (by ``tau``; 1 = a copy). The loop
(`edgeag.algos.offpolicy.loop.run_iteration`) and the driver are shared with TD3 and PPO.

Everything here is numpy; the Q-network, its target and its update come from an
engine (``DQNConfig.engine``): ``numpy`` (`edgeag.algos.dqn.numpy_engine`, the default, no
torch) or ``torch`` (`edgeag.algos.dqn.torch_engine`: autograd, the reference).

Implementation details, with their sources and deviations: docs/algorithms/dqn.md.
"""

from __future__ import annotations

import numpy as np

from edgeag.algos.base import Algorithm, PlanInputs, engine_class
from edgeag.algos.dqn import EXPORT
from edgeag.algos.dqn.config import DQNConfig
from edgeag.algos.loop_state import due
from edgeag.algos.offpolicy import loop as offpolicy
from edgeag.algos.offpolicy.loop import OffPolicyState

CLASSES = {"numpy": "edgeag.algos.dqn.numpy_engine:NumpyQNetworks",
           "torch": "edgeag.algos.dqn.torch_engine:TorchQNetworks"}
"""Each engine's networks class (`edgeag.train.engine_class`)."""


def nets_class(engine: str):
    """The Q-networks class of ``engine`` (imports torch only for ``torch``)."""
    return engine_class(engine, CLASSES)


def build_nets(cfg: DQNConfig, obs_dim: int, n_actions: int, dtype=np.float32,
               initialise: bool = True):
    return nets_class(cfg.engine)(cfg, obs_dim, n_actions, dtype=dtype, initialise=initialise)


def td_loss(kind: str, diff: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean TD loss of ``diff = Q(s, a) - target`` and its gradient with respect to
    ``Q(s, a)``: MSE (``mean(diff^2)``) or Huber with delta 1 (torch's
    ``smooth_l1_loss``: ``0.5 diff^2`` inside [-1, 1], ``|diff| - 0.5`` outside)."""
    n = diff.shape[0]
    if kind == "mse":
        return float(np.mean(diff * diff)), diff * (2.0 / n)
    small = np.abs(diff) < 1.0
    loss = np.where(small, 0.5 * diff * diff, np.abs(diff) - 0.5)
    return float(np.mean(loss)), np.clip(diff, -1.0, 1.0) / n


def epsilon(cfg: DQNConfig, step: int, total: int | None = None) -> float:
    """Linear decay over the first ``exploration_fraction * total`` steps (``total``: the
    run's total_steps as first planned, `extend`)."""
    span = cfg.exploration_fraction * (total or cfg.total_steps)
    frac = min(1.0, step / span)
    return cfg.exploration_initial_eps + frac * (cfg.exploration_final_eps -
                                                 cfg.exploration_initial_eps)


def build_state(cfg: DQNConfig, envs) -> OffPolicyState:
    return offpolicy.build_state(cfg, envs, lambda obs_dim, n_actions, _: build_nets(
        cfg, obs_dim, n_actions))


def act(state: OffPolicyState, obs: np.ndarray) -> np.ndarray:
    """Epsilon-greedy: both draws are taken every step, so the generator advances the
    same way whichever branch wins."""
    n = obs.shape[0]
    explore = state.rng.random(n) < epsilon(state.cfg, state.global_step, state.schedule_total)
    random = state.rng.integers(state.nets.arch["action_dim"], size=n)
    return np.where(explore, random, state.nets.deterministic(obs))


def learn(state: OffPolicyState, stats: dict) -> None:
    cfg, nets = state.cfg, state.nets
    batch = state.buffer.sample(cfg.batch_size, state.rng)
    next_max = nets.target_q_values(batch.next_obs).max(-1)
    td_target = batch.rewards + cfg.gamma * next_max * (1.0 - batch.terminated)
    loss, q_mean = nets.update(batch.obs, batch.actions, td_target)
    stats["loss"].append(loss)
    stats["q_values"].append(q_mean)
    stats["exploration_rate"].append(epsilon(cfg, state.global_step, state.schedule_total))


def after_step(state: OffPolicyState, before: int) -> None:
    """Past ``learning_starts``, every ``target_update_interval`` env steps: the target
    network moves to the online one."""
    cfg = state.cfg
    if state.global_step > cfg.learning_starts and \
            due(before, state.global_step, 0, cfg.target_update_interval):
        state.nets.update_target(cfg.tau)


def plan(cfg: DQNConfig, room: PlanInputs):
    nets = build_nets(cfg, room.obs_dim, room.action_dim, initialise=False)
    return offpolicy.plan_offpolicy(cfg, room, nets)


def activation_bytes(cfg: DQNConfig, sizes: list[int], itemsize: int) -> int:
    """One update's activations: the online forward kept for backward (and the
    gradients beside it), and the target network's forward."""
    b = cfg.batch_size
    return offpolicy.mlp_activation_bytes(b, sizes, itemsize=itemsize) + \
        offpolicy.mlp_activation_bytes(b, sizes, backward=False, itemsize=itemsize)


def extend(state: OffPolicyState, old_total: int) -> None:
    """total_steps changed on resume: epsilon's decay keeps the span in env steps it had
    (``exploration_fraction`` of the total first planned), so epsilon does not jump."""
    state.schedule_total = state.schedule_total or old_total


ALGORITHM = Algorithm(
    name="dqn", export=EXPORT, build_state=build_state, plan=plan,
    what_fits=lambda *args: offpolicy.what_fits(plan, *args),
    make_iteration=offpolicy.make_iteration(act, learn, after_step),
    prepare=lambda cfg, threads: nets_class(cfg.engine).prepare(threads),
    discrete_actions=True,
    networks=lambda cfg, obs_space, action_space: build_nets(
        cfg, obs_space.shape[0], int(action_space.n)),
    extend=extend,
    largest_buffer=lambda *args: offpolicy.largest_buffer(plan, *args))
