"""Twin Delayed DDPG (Fujimoto et al., 2018) for continuous actions, readable top to
bottom.

One iteration = ``iteration_steps`` env steps with the actor's action plus Gaussian
exploration noise, each stored in the replay buffer; past ``learning_starts``, every
``train_frequency`` steps, ``gradient_steps`` critic updates, and every
``policy_frequency``-th of them an actor update followed by soft target updates. The
loop (`edgeag.algos.offpolicy.loop.run_iteration`) and the driver are shared with DQN and
PPO.

Everything here is numpy; the networks and their updates come from an engine
(``TD3Config.engine``): ``numpy`` (`edgeag.algos.td3.numpy_engine`, the default, no torch) or
``torch`` (`edgeag.algos.td3.torch_engine`: autograd, the reference).

Implementation details, with their sources and deviations: docs/algorithms/td3.md.
"""

from __future__ import annotations

import numpy as np

from edgeag.algos.base import Algorithm, PlanInputs, engine_class
from edgeag.algos.offpolicy import loop as offpolicy
from edgeag.algos.offpolicy.loop import OffPolicyState
from edgeag.algos.td3 import EXPORT
from edgeag.algos.td3.config import TD3Config

CLASSES = {"numpy": "edgeag.algos.td3.numpy_engine:NumpyTD3Networks",
           "torch": "edgeag.algos.td3.torch_engine:TorchTD3Networks"}
"""Each engine's networks class (`edgeag.train.engine_class`)."""


def nets_class(engine: str):
    """The networks class of ``engine`` (imports torch only for ``torch``)."""
    return engine_class(engine, CLASSES)


def build_nets(cfg: TD3Config, obs_dim: int, action_dim: int, low, high, dtype=np.float32,
               initialise: bool = True):
    return nets_class(cfg.engine)(cfg, obs_dim, action_dim, low, high, dtype=dtype,
                                  initialise=initialise)


def build_state(cfg: TD3Config, envs) -> OffPolicyState:
    return offpolicy.build_state(cfg, envs, lambda obs_dim, action_dim, space: build_nets(
        cfg, obs_dim, action_dim, space.low, space.high))


def act(state: OffPolicyState, obs: np.ndarray) -> np.ndarray:
    nets = state.nets
    action = nets.deterministic(obs)
    noise = state.rng.standard_normal(action.shape, dtype=np.float32)
    action = action + noise * (nets.action_scale * state.cfg.exploration_noise)
    return np.clip(action, nets.action_low, nets.action_high).astype(np.float32, copy=False)


def learn(state: OffPolicyState, stats: dict) -> None:
    cfg, nets = state.cfg, state.nets
    batch = state.buffer.sample(cfg.batch_size, state.rng)
    noise = state.rng.standard_normal(batch.actions.shape, dtype=np.float32)
    noise = np.clip(noise * cfg.policy_noise, -cfg.noise_clip, cfg.noise_clip)
    next_actions = np.clip(nets.target_action(batch.next_obs) + noise * nets.action_scale,
                           nets.action_low, nets.action_high)
    next_q = nets.target_q(batch.next_obs, next_actions)
    target = batch.rewards + cfg.gamma * (1.0 - batch.terminated) * next_q
    critic_loss, q1_mean = nets.update_critics(batch.obs, batch.actions, target)
    stats["critic_loss"].append(critic_loss)
    stats["qf1_values"].append(q1_mean)

    if (state.n_updates + 1) % cfg.policy_frequency == 0:
        stats["actor_loss"].append(nets.update_actor(batch.obs))
        nets.update_targets(cfg.tau)


def plan(cfg: TD3Config, room: PlanInputs):
    bound = np.ones(room.action_dim, np.float32)
    nets = build_nets(cfg, room.obs_dim, room.action_dim, -bound, bound, initialise=False)
    return offpolicy.plan_offpolicy(cfg, room, nets)


def layer_sizes(cfg: TD3Config, obs_dim: int, action_dim: int) -> tuple[list[int], list[int]]:
    """The actor's and each critic's layer sizes."""
    return [obs_dim, *cfg.hidden, action_dim], [obs_dim + action_dim, *cfg.hidden, 1]


class TD3Shapes:
    """The base of both engines' TD3 networks: what they hold alike."""

    dtype: np.dtype

    def describe(self, cfg: TD3Config, obs_dim: int, action_dim: int, low, high) -> None:
        """Set ``arch`` (what a checkpoint and an export read), the action bounds, the
        actor's scale and bias in the networks' dtype, and the layer sizes."""
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.arch = {"kind": "deterministic_actor", "obs_dim": obs_dim,
                     "action_dim": action_dim, "discrete": False, "hidden": list(cfg.hidden),
                     "low": low.tolist(), "high": high.tolist()}
        self.action_low, self.action_high = low, high
        self.action_scale = ((high - low) / 2).astype(self.dtype)
        self.action_bias = ((high + low) / 2).astype(self.dtype)
        self.actor_sizes, self.critic_sizes = layer_sizes(cfg, obs_dim, action_dim)


def activation_bytes(cfg: TD3Config, actor: list[int], critic: list[int], itemsize: int) -> int:
    """The larger step's activations: the critic update (both critics forward and
    backward; the target actor and critics forward) or the actor update (actor and one
    critic forward and backward)."""
    mlp, b = offpolicy.mlp_activation_bytes, cfg.batch_size
    critic_step = 2 * mlp(b, critic, itemsize=itemsize) + \
        mlp(b, actor, False, itemsize) + 2 * mlp(b, critic, False, itemsize)
    actor_step = mlp(b, actor, itemsize=itemsize) + mlp(b, critic, itemsize=itemsize)
    return max(critic_step, actor_step)


ALGORITHM = Algorithm(
    name="td3", export=EXPORT, build_state=build_state, plan=plan,
    what_fits=lambda *args: offpolicy.what_fits(plan, *args),
    make_iteration=offpolicy.make_iteration(act, learn),
    prepare=lambda cfg, threads: nets_class(cfg.engine).prepare(threads),
    networks=lambda cfg, obs_space, action_space: build_nets(
        cfg, obs_space.shape[0], action_space.shape[0], action_space.low, action_space.high),
    discrete_actions=False,
    largest_buffer=lambda *args: offpolicy.largest_buffer(plan, *args))
