"""Twin Delayed DDPG (Fujimoto et al., 2018) for continuous actions, readable top to
bottom.

One iteration = ``iteration_steps`` env steps with the actor's action plus Gaussian
exploration noise, each stored in the replay buffer; past ``learning_starts``, every
``train_frequency`` steps, ``gradient_steps`` critic updates, and every
``policy_frequency``-th of them an actor update followed by soft target updates. The
loop (`edgeag.train.offpolicy.run_iteration`) and the driver are shared with DQN and
PPO.

Implementation details (sources: CleanRL ``td3_continuous_action.py``, the code
behind the AlphaGrad paper's TD3 runs; Stable-Baselines3 ``td3.py``):

- actor and twin critics are ReLU MLPs (256-256), torch's default initialisation;
  the actor's tanh output is scaled to the action bounds;
- **twin critics**: the target is ``r + gamma * (1 - terminated) * min(Q1', Q2')``;
  one optimizer updates both critics, another the actor (as in the paper's code);
- **target policy smoothing**: the target action is ``actor'(s') + clip(N(0,
  policy_noise), -noise_clip, noise_clip)`` (in units of the action scale), clipped
  to the bounds;
- **delayed policy updates**: the actor (loss ``-Q1(s, actor(s))``) and the three
  target networks (by ``tau``) update every ``policy_frequency`` critic updates; the
  critics' parameters are frozen during the actor's backward pass, so no critic
  gradient is computed (and AlphaGrad's in-backward update of the critics cannot fire);
- uniformly random actions before ``learning_starts``; exploration noise N(0,
  ``exploration_noise`` x action scale), actions clipped to the bounds;
- time-limit truncation bootstraps (`edgeag.train.offpolicy`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from edgeag.train import Algorithm
from edgeag.train import offpolicy
from edgeag.train.config import TD3Config
from edgeag.train.envs import check_spaces
from edgeag.train.networks import prepare_torch, DeterministicActor, QCritic
from edgeag.train.offpolicy import OffPolicyState, optimize, soft_update, target_copy


def build_state(cfg: TD3Config, envs) -> OffPolicyState:
    torch.manual_seed(cfg.seed)
    obs_dim, action_dim, _ = check_spaces(cfg.env_id, envs.single_observation_space,
                                          envs.single_action_space)
    space = envs.single_action_space
    actor = DeterministicActor(obs_dim, action_dim, cfg.hidden, space.low, space.high)
    qf1, qf2 = QCritic(obs_dim, action_dim, cfg.hidden), QCritic(obs_dim, action_dim, cfg.hidden)
    nets = {"actor": actor, "qf1": qf1, "qf2": qf2, "actor_target": target_copy(actor),
            "qf1_target": target_copy(qf1), "qf2_target": target_copy(qf2)}
    return offpolicy.build_state(cfg, envs, nets, {"actor": [actor], "critic": [qf1, qf2]},
                                 policy_name="actor")


def act(state: OffPolicyState, obs: torch.Tensor) -> np.ndarray:
    actor = state.policy
    action = actor(obs)
    noise = torch.randn(action.shape, generator=state.generator)
    action = action + noise * (actor.action_scale * state.cfg.exploration_noise)
    low, high = actor.action_bias - actor.action_scale, actor.action_bias + actor.action_scale
    return torch.clamp(action, low, high).numpy()


def learn(state: OffPolicyState, stats: dict) -> None:
    cfg, nets = state.cfg, state.nets
    actor = nets["actor"]
    batch = state.buffer.sample(cfg.batch_size, state.generator)
    with torch.no_grad():
        noise = torch.randn(batch.actions.shape, generator=state.generator)
        noise = noise.mul_(cfg.policy_noise).clamp_(-cfg.noise_clip, cfg.noise_clip)
        low = actor.action_bias - actor.action_scale
        high = actor.action_bias + actor.action_scale
        next_actions = torch.clamp(nets["actor_target"](batch.next_obs) +
                                   noise * actor.action_scale, low, high)
        next_q = torch.min(nets["qf1_target"](batch.next_obs, next_actions),
                           nets["qf2_target"](batch.next_obs, next_actions))
        target = batch.rewards + cfg.gamma * (1.0 - batch.terminated) * next_q
    q1 = nets["qf1"](batch.obs, batch.actions)
    q2 = nets["qf2"](batch.obs, batch.actions)
    critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    optimize(state, "critic", critic_loss)
    stats["critic_loss"].append(critic_loss.item())
    stats["qf1_values"].append(q1.mean().item())

    if (state.n_updates + 1) % cfg.policy_frequency == 0:
        critics = (nets["qf1"], nets["qf2"])
        for critic in critics:
            critic.requires_grad_(False)
        actor_loss = -nets["qf1"](batch.obs, actor(batch.obs)).mean()
        optimize(state, "actor", actor_loss)
        for critic in critics:
            critic.requires_grad_(True)
        stats["actor_loss"].append(actor_loss.item())
        for name in ("actor", "qf1", "qf2"):
            soft_update(nets[f"{name}_target"], nets[name], cfg.tau)


def plan(cfg: TD3Config, budget_bytes: int, floor_bytes: int, obs_dim: int, action_dim: int,
         discrete: bool):
    actor = [obs_dim, *cfg.hidden, action_dim]
    critic = [obs_dim + action_dim, *cfg.hidden, 1]
    mlp_bytes = offpolicy.mlp_activation_bytes
    b = cfg.batch_size
    # critic update: both critics forward + backward, target actor and critics forward
    critic_step = 2 * mlp_bytes(b, critic) + mlp_bytes(b, actor, False) + \
        2 * mlp_bytes(b, critic, False)
    actor_step = mlp_bytes(b, actor) + mlp_bytes(b, critic)
    return offpolicy.plan_offpolicy(
        cfg, budget_bytes, floor_bytes, [actor, critic, critic], [actor, critic, critic],
        obs_dim, action_dim, discrete, activation_bytes=max(critic_step, actor_step))


ALGORITHM = Algorithm(
    name="td3", build_state=build_state, plan=plan,
    what_fits=lambda *args: offpolicy.what_fits(plan, *args),
    make_iteration=offpolicy.make_iteration(act, learn),
    prepare=lambda cfg, threads: prepare_torch(threads),
    optimizer_state_bytes=offpolicy.optimizer_state_bytes,
    parameter_count=lambda state: offpolicy.parameter_count(state, ("actor", "qf1", "qf2")),
    act=offpolicy.deterministic,
    discrete_actions=False,
    largest_buffer=lambda *args: offpolicy.largest_buffer(plan, *args))
