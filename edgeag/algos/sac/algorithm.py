"""Soft Actor-Critic (Haarnoja et al., 2018) with the learned temperature of "Soft
Actor-Critic Algorithms and Applications" (Haarnoja et al., 2018b), for continuous
actions, readable top to bottom.

One iteration = ``iteration_steps`` env steps with actions sampled from the squashed
Gaussian actor, each stored in the replay buffer; past ``learning_starts``, every
``train_frequency`` steps, ``gradient_steps`` updates of the twin critics, the actor
and the temperature, with a soft update of the target critics every
``target_update_interval``-th of them. The loop
(`edgeag.algos.offpolicy.loop.run_iteration`) and the driver are shared with TD3, DQN
and PPO.

Everything here is numpy, every Gaussian draw included (from the run's generator, so
both engines consume the same stream); the networks and their updates come from an
engine (``SACConfig.engine``): ``numpy`` (`edgeag.algos.sac.numpy_engine`, the default,
no torch) or ``torch`` (`edgeag.algos.sac.torch_engine`: autograd, the reference).

Implementation details, with their sources and deviations: docs/algorithms/sac.md.
"""

from __future__ import annotations

import numpy as np

from edgeag.algos.base import Algorithm, PlanInputs, engine_class
from edgeag.algos.offpolicy import loop as offpolicy
from edgeag.algos.offpolicy.loop import OffPolicyState
from edgeag.algos.sac import EXPORT
from edgeag.algos.sac.config import SACConfig

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""The actor's log std is clipped to this range (SB3's ``LOG_STD_MIN`` / ``LOG_STD_MAX``);
outside it the clip passes no gradient."""
LOG_PROB_EPS = 1e-6
"""``log(scale * (1 - tanh(u)^2) + LOG_PROB_EPS)``: the tanh correction of the log
density stays finite where tanh saturates (CleanRL's form; SB3 and the paper's code
use the same epsilon)."""

CLASSES = {"numpy": "edgeag.algos.sac.numpy_engine:NumpySACNetworks",
           "torch": "edgeag.algos.sac.torch_engine:TorchSACNetworks"}
"""Each engine's networks class (`edgeag.algos.base.engine_class`)."""


def nets_class(engine: str):
    """The networks class of ``engine`` (imports torch only for ``torch``)."""
    return engine_class(engine, CLASSES)


def build_nets(cfg: SACConfig, obs_dim: int, action_dim: int, low, high, dtype=np.float32,
               initialise: bool = True):
    return nets_class(cfg.engine)(cfg, obs_dim, action_dim, low, high, dtype=dtype,
                                  initialise=initialise)


def build_state(cfg: SACConfig, envs) -> OffPolicyState:
    return offpolicy.build_state(cfg, envs, lambda obs_dim, action_dim, space: build_nets(
        cfg, obs_dim, action_dim, space.low, space.high))


def act(state: OffPolicyState, obs: np.ndarray) -> np.ndarray:
    """An action sampled from the actor: ``tanh(mean + std * eps)`` in the bounds."""
    nets = state.nets
    eps = state.rng.standard_normal((len(obs), nets.action_dim), dtype=np.float32)
    action = nets.sample_action(obs, eps)
    return np.clip(action, nets.action_low, nets.action_high).astype(np.float32, copy=False)


def learn(state: OffPolicyState, stats: dict) -> None:
    """One gradient step, in SB3's order of effect: the temperature alpha of this step is
    the one from before its own update, for the critics' target and for the actor's
    loss alike. The temperature steps last here, on the log-probabilities of the
    actor's update (the actor before its step, with the same noise), which is SB3's
    first step: nothing in between reads or changes them."""
    cfg, nets = state.cfg, state.nets
    batch = state.buffer.sample(cfg.batch_size, state.rng)
    next_eps = state.rng.standard_normal(batch.actions.shape, dtype=np.float32)
    eps = state.rng.standard_normal(batch.actions.shape, dtype=np.float32)
    alpha = nets.alpha
    next_actions, next_log_prob = nets.sample(batch.next_obs, next_eps)
    next_q = nets.target_q(batch.next_obs, next_actions) - alpha * next_log_prob
    target = batch.rewards + cfg.gamma * (1.0 - batch.terminated) * next_q
    critic_loss, q1_mean = nets.update_critics(batch.obs, batch.actions, target)
    actor_loss, log_prob = nets.update_actor(batch.obs, eps, alpha)
    ent_coef_loss = nets.update_temperature(log_prob, cfg.entropy_target(nets.action_dim))
    if state.n_updates % cfg.target_update_interval == 0:
        nets.update_targets(cfg.tau)
    stats["critic_loss"].append(critic_loss)
    stats["qf1_values"].append(q1_mean)
    stats["actor_loss"].append(actor_loss)
    stats["ent_coef"].append(alpha)
    stats["ent_coef_loss"].append(ent_coef_loss)


def plan(cfg: SACConfig, room: PlanInputs):
    bound = np.ones(room.action_dim, np.float32)
    nets = build_nets(cfg, room.obs_dim, room.action_dim, -bound, bound, initialise=False)
    return offpolicy.plan_offpolicy(cfg, room, nets)


def layer_sizes(cfg: SACConfig, obs_dim: int, action_dim: int) -> tuple[list[int], list[int]]:
    """The actor's (means, then log stds) and each critic's layer sizes."""
    return [obs_dim, *cfg.hidden, 2 * action_dim], [obs_dim + action_dim, *cfg.hidden, 1]


class SACShapes:
    """The base of both engines' SAC networks: what they hold alike."""

    dtype: np.dtype

    def describe(self, cfg: SACConfig, obs_dim: int, action_dim: int, low, high) -> None:
        """Set ``arch`` (what a checkpoint and an export read), the action bounds, the
        actor's scale and bias in the networks' dtype, and the layer sizes."""
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.arch = {"kind": EXPORT.arch_kind, "obs_dim": obs_dim, "action_dim": action_dim,
                     "discrete": False, "hidden": list(cfg.hidden),
                     "low": low.tolist(), "high": high.tolist()}
        self.action_dim = action_dim
        self.action_low, self.action_high = low, high
        self.action_scale = ((high - low) / 2).astype(self.dtype)
        self.action_bias = ((high + low) / 2).astype(self.dtype)
        self.actor_sizes, self.critic_sizes = layer_sizes(cfg, obs_dim, action_dim)

    def policy_arrays(self, actor: dict) -> dict:
        """The exported policy from the actor's arrays (numpy arrays or tensors, by torch's
        ``net.{2i}.weight`` names): every layer, the last one's mean rows only (views)."""
        last = f"{EXPORT.prefix}.{2 * (len(self.actor_sizes) - 2)}."
        return {k: v[:self.action_dim] if k.startswith(last) else v for k, v in actor.items()
                if k.startswith(f"{EXPORT.prefix}.")}


GAUSSIAN_ARRAYS = 12
"""``[batch, action_dim]`` arrays the squashed Gaussian and its backward hold at once
(noise, std, pre-tanh and tanh values, the log density's terms and their gradients)."""


def activation_bytes(cfg: SACConfig, actor: list[int], critic: list[int], itemsize: int) -> int:
    """The larger step's activations: the critic update (both critics forward and
    backward; the actor and both target critics forward on the next observations) or
    the actor update (the actor, the squashed Gaussian and both critics forward and
    backward)."""
    mlp, b = offpolicy.mlp_activation_bytes, cfg.batch_size
    gaussian = GAUSSIAN_ARRAYS * b * (actor[-1] // 2) * itemsize
    critic_step = 2 * mlp(b, critic, itemsize=itemsize) + mlp(b, actor, False, itemsize) + \
        gaussian + 2 * mlp(b, critic, False, itemsize)
    actor_step = mlp(b, actor, itemsize=itemsize) + gaussian + 2 * mlp(b, critic, itemsize=itemsize)
    return max(critic_step, actor_step)


ALGORITHM = Algorithm(
    name="sac", export=EXPORT, build_state=build_state, plan=plan,
    what_fits=lambda *args: offpolicy.what_fits(plan, *args),
    make_iteration=offpolicy.make_iteration(act, learn),
    prepare=lambda cfg, threads: nets_class(cfg.engine).prepare(threads),
    networks=lambda cfg, obs_space, action_space: build_nets(
        cfg, obs_space.shape[0], action_space.shape[0], action_space.low, action_space.high),
    discrete_actions=False,
    largest_buffer=lambda *args: offpolicy.largest_buffer(plan, *args))
