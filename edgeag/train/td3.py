"""Twin Delayed DDPG (Fujimoto et al., 2018) for continuous actions, readable top to
bottom.

One iteration = ``iteration_steps`` env steps with the actor's action plus Gaussian
exploration noise, each stored in the replay buffer; past ``learning_starts``, every
``train_frequency`` steps, ``gradient_steps`` critic updates, and every
``policy_frequency``-th of them an actor update followed by soft target updates. The
loop (`edgeag.train.offpolicy.run_iteration`) and the driver are shared with DQN and
PPO.

Everything here is numpy; the networks and their updates come from an engine
(``TD3Config.engine``): ``numpy`` (`edgeag.train.td3_numpy`, the default, no torch) or
``torch`` (`edgeag.train.td3_torch`: autograd, the reference).

Implementation details (sources: CleanRL ``td3_continuous_action.py``, the code
behind the AlphaGrad paper's TD3 runs; Stable-Baselines3 ``td3.py``):

- actor and twin critics are ReLU MLPs (256-256), torch's default initialisation;
  the actor's tanh output is scaled to the action bounds;
- **twin critics**: the target is ``r + gamma * (1 - terminated) * min(Q1', Q2')``;
  one optimizer updates both critics, another the actor (as in the paper's code);
- **target policy smoothing**: the target action is ``actor'(s') + clip(N(0,
  policy_noise), -noise_clip, noise_clip)`` (in units of the action scale), clipped
  to the bounds;
- **delayed policy updates**: the actor (loss ``-Q1(s, actor(s))``, its gradient
  through the critic to the action input; the critic's parameters are left alone) and
  the three target networks (by ``tau``) update every ``policy_frequency`` critic
  updates;
- uniformly random actions before ``learning_starts``; exploration noise N(0,
  ``exploration_noise`` x action scale), actions clipped to the bounds;
- time-limit truncation bootstraps (`edgeag.train.offpolicy`).
"""

from __future__ import annotations

import numpy as np

from edgeag.train import Algorithm, engine_class
from edgeag.train import offpolicy
from edgeag.train.config import TD3Config
from edgeag.train.envs import check_spaces
from edgeag.train.offpolicy import OffPolicyState

CLASSES = {"numpy": "edgeag.train.td3_numpy:NumpyTD3Networks",
           "torch": "edgeag.train.td3_torch:TorchTD3Networks"}
"""Each engine's networks class (`edgeag.train.engine_class`)."""


def nets_class(engine: str):
    """The networks class of ``engine`` (imports torch only for ``torch``)."""
    return engine_class(engine, CLASSES)


def build_nets(cfg: TD3Config, obs_dim: int, action_dim: int, low, high, dtype=np.float32,
               initialise: bool = True):
    return nets_class(cfg.engine)(cfg, obs_dim, action_dim, low, high, dtype=dtype,
                                  initialise=initialise)


def build_state(cfg: TD3Config, envs) -> OffPolicyState:
    obs_dim, action_dim, _ = check_spaces(cfg.env_id, envs.single_observation_space,
                                          envs.single_action_space)
    space = envs.single_action_space
    return offpolicy.build_state(cfg, envs, build_nets(cfg, obs_dim, action_dim, space.low,
                                                       space.high))


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


def plan(cfg: TD3Config, budget_bytes: int, floor_bytes: int, obs_dim: int, action_dim: int,
         discrete: bool):
    bound = np.ones(action_dim, np.float32)
    nets = build_nets(cfg, obs_dim, action_dim, -bound, bound, initialise=False)
    return offpolicy.plan_offpolicy(cfg, budget_bytes, floor_bytes, nets, obs_dim,
                                    action_dim, discrete)


def layer_sizes(cfg: TD3Config, obs_dim: int, action_dim: int) -> tuple[list[int], list[int]]:
    """The actor's and each critic's layer sizes."""
    return [obs_dim, *cfg.hidden, action_dim], [obs_dim + action_dim, *cfg.hidden, 1]


def describe(nets, cfg: TD3Config, obs_dim: int, action_dim: int, low, high) -> None:
    """What both engines' networks objects hold alike: ``arch`` (what a checkpoint and an
    export read), the action bounds, the actor's scale and bias in the networks' dtype,
    and the layer sizes."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    nets.arch = {"kind": "deterministic_actor", "obs_dim": obs_dim, "action_dim": action_dim,
                 "discrete": False, "hidden": list(cfg.hidden), "low": low.tolist(),
                 "high": high.tolist()}
    nets.action_low, nets.action_high = low, high
    nets.action_scale = ((high - low) / 2).astype(nets.dtype)
    nets.action_bias = ((high + low) / 2).astype(nets.dtype)
    nets.actor_sizes, nets.critic_sizes = layer_sizes(cfg, obs_dim, action_dim)


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
    name="td3", build_state=build_state, plan=plan,
    what_fits=lambda *args: offpolicy.what_fits(plan, *args),
    make_iteration=offpolicy.make_iteration(act, learn),
    prepare=lambda cfg, threads: nets_class(cfg.engine).prepare(threads),
    optimizer_state_bytes=lambda state: state.nets.optimizer_state_bytes(),
    parameter_count=lambda state: state.nets.parameter_count,
    act=lambda state: state.nets.deterministic,
    networks=lambda cfg, obs_space, action_space: build_nets(
        cfg, obs_space.shape[0], action_space.shape[0], action_space.low, action_space.high),
    discrete_actions=False,
    largest_buffer=lambda *args: offpolicy.largest_buffer(plan, *args))
