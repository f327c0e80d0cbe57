"""Deep Q-Network (Mnih et al., 2015) for discrete actions, readable top to bottom.

One iteration = ``iteration_steps`` env steps with epsilon-greedy actions, each
stored in the replay buffer; every ``train_frequency`` steps past ``learning_starts``,
``gradient_steps`` minibatch steps on the TD error; every ``target_update_interval``
steps the target network moves to the online one (by ``tau``; 1 = a copy). The loop
(`edgeag.train.offpolicy.run_iteration`) and the driver are shared with TD3 and PPO.

Implementation details (sources: CleanRL ``dqn.py``, the code behind the AlphaGrad
paper's DQN runs; Stable-Baselines3 ``dqn.py``):

- ReLU MLP Q-network (120-84 as in CleanRL), torch's default initialisation;
- MSE loss between Q(s, a) and ``r + gamma * (1 - terminated) * max_a' Q_target(s', a')``;
- epsilon decays linearly from ``exploration_initial_eps`` to
  ``exploration_final_eps`` over ``exploration_fraction`` of the run; actions are
  uniformly random before ``learning_starts`` (SB3; CleanRL uses epsilon there too);
- time-limit truncation bootstraps (`edgeag.train.offpolicy`);
- **AlphaGrad on DQN is experimental**: the paper reports it unstable against Adam.
  Adam (eps 1e-5, as in the paper's runs) is DQN's default optimizer.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from edgeag.train import Algorithm
from edgeag.train import offpolicy
from edgeag.train.config import DQNConfig
from edgeag.train.envs import check_spaces
from edgeag.train.networks import prepare_torch, QNetwork
from edgeag.train.offpolicy import OffPolicyState, due, optimize, soft_update, target_copy


def epsilon(cfg: DQNConfig, step: int) -> float:
    """Linear decay over the first ``exploration_fraction * total_steps`` steps."""
    span = cfg.exploration_fraction * cfg.total_steps
    frac = min(1.0, step / span)
    return cfg.exploration_initial_eps + frac * (cfg.exploration_final_eps -
                                                 cfg.exploration_initial_eps)


def build_state(cfg: DQNConfig, envs) -> OffPolicyState:
    torch.manual_seed(cfg.seed)
    obs_dim, n_actions, _ = check_spaces(cfg.env_id, envs.single_observation_space,
                                         envs.single_action_space)
    q = QNetwork(obs_dim, n_actions, cfg.hidden)
    return offpolicy.build_state(cfg, envs, {"q": q, "q_target": target_copy(q)},
                                 {"q": [q]}, policy_name="q")


def act(state: OffPolicyState, obs: torch.Tensor):
    """Epsilon-greedy: both draws are taken every step, so the generator advances the
    same way whichever branch wins."""
    n = obs.shape[0]
    explore = torch.rand(n, generator=state.generator) < epsilon(state.cfg, state.global_step)
    random = torch.randint(state.policy.arch["action_dim"], (n,), generator=state.generator)
    return torch.where(explore, random, state.policy.deterministic(obs)).numpy()


def learn(state: OffPolicyState, stats: dict) -> None:
    cfg, q, target = state.cfg, state.nets["q"], state.nets["q_target"]
    batch = state.buffer.sample(cfg.batch_size, state.generator)
    with torch.no_grad():
        next_max = target(batch.next_obs).max(-1).values
        td_target = batch.rewards + cfg.gamma * next_max * (1.0 - batch.terminated)
    q_taken = q(batch.obs).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    loss = F.mse_loss(q_taken, td_target)
    optimize(state, "q", loss)
    stats["loss"].append(loss.item())
    stats["q_values"].append(q_taken.mean().item())
    stats["exploration_rate"].append(epsilon(cfg, state.global_step))


def after_step(state: OffPolicyState, before: int) -> None:
    """Past ``learning_starts``, every ``target_update_interval`` env steps: the target
    network moves to the online one."""
    cfg = state.cfg
    if state.global_step > cfg.learning_starts and \
            due(before, state.global_step, 0, cfg.target_update_interval):
        soft_update(state.nets["q_target"], state.nets["q"], cfg.tau)


def plan(cfg: DQNConfig, budget_bytes: int, floor_bytes: int, obs_dim: int, action_dim: int,
         discrete: bool):
    sizes = [obs_dim, *cfg.hidden, action_dim]
    return offpolicy.plan_offpolicy(
        cfg, budget_bytes, floor_bytes, [sizes], [sizes], obs_dim, action_dim, discrete,
        activation_bytes=offpolicy.mlp_activation_bytes(cfg.batch_size, sizes) +
        offpolicy.mlp_activation_bytes(cfg.batch_size, sizes, backward=False))


ALGORITHM = Algorithm(
    name="dqn", build_state=build_state, plan=plan,
    what_fits=lambda *args: offpolicy.what_fits(plan, *args),
    make_iteration=offpolicy.make_iteration(act, learn, after_step),
    prepare=lambda cfg, threads: prepare_torch(threads),
    optimizer_state_bytes=offpolicy.optimizer_state_bytes,
    parameter_count=lambda state: offpolicy.parameter_count(state, ("q",)),
    act=offpolicy.deterministic, discrete_actions=True,
    largest_buffer=lambda *args: offpolicy.largest_buffer(plan, *args))
