"""Proximal Policy Optimization, readable top to bottom.

One iteration = `collect_rollout` (num_envs x num_steps transitions into a buffer
allocated once) -> `compute_gae` -> `update` (update_epochs passes of clipped-surrogate
minibatch steps). The loop in `train` stops only at iteration boundaries, where the
state is consistent: that is where checkpoints are written and where the budget guard
and Ctrl-C take effect.

Implementation details (sources: CleanRL ``ppo.py`` / ``ppo_continuous_action.py``,
Stable-Baselines3 ``ppo.py``, "The 37 Implementation Details of PPO"):

- separate actor and critic tanh MLPs, orthogonal init (output gains 0.01 / 1);
- GAE; advantages normalised per minibatch; clipped surrogate; optional clipped
  value loss; linear learning-rate annealing;
- observations normalised by running mean/std (clip +-10), statistics checkpointed
  and exported with the policy; rewards scaled by the discounted-return std for
  continuous control;
- **time-limit truncation is bootstrapped**: when an episode is cut by its time limit
  the reward gets ``gamma * V(final_obs)`` added (SB3 ``on_policy_algorithm.py``),
  instead of treating the cut as a terminal state (CleanRL's ``logical_or``);
- Gaussian actions are sampled unclipped (exact log-probabilities) and clipped to the
  action bounds only when sent to the env;
- **deviation: no global gradient clipping with AlphaGrad.** Its per-element step is
  bounded by ``lr * tanh(alpha)``, and dropping the clip lets the update run inside
  ``backward()`` (`edgeag.optim.fuse_into_backward`), so only one gradient tensor is
  alive at a time. Other optimizers clip at ``max_grad_norm`` (0.5).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from edgeag.memory import RUNTIME_BYTES, MemoryPlan, largest_fitting, plan_training
from edgeag.optim import build_optimizer, get_spec
from edgeag.train.config import PPOConfig
from edgeag.train.envs import ObsNormalizer, RewardScaler, check_spaces, env_state, set_env_state
from edgeag.train.networks import ActorCritic

EVAL_SEED_OFFSET = 10_000
"""Evaluation episodes use seeds seed + 10000, ... (never a training seed)."""


# --- rollout buffer -----------------------------------------------------------------

class Minibatch(NamedTuple):
    obs: Tensor
    actions: Tensor
    logprobs: Tensor
    advantages: Tensor
    returns: Tensor
    values: Tensor


class RolloutBuffer:
    """One iteration's transitions, ``[num_steps, num_envs, ...]``, allocated once and
    overwritten in place every iteration. ``dones[t]`` marks that ``obs[t]`` starts a
    new episode (CleanRL's convention)."""

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, action_dim: int,
                 discrete: bool):
        shape = (num_steps, num_envs)
        self.obs = torch.zeros(*shape, obs_dim)
        self.actions = torch.zeros(shape, dtype=torch.long) if discrete else \
            torch.zeros(*shape, action_dim)
        self.logprobs = torch.zeros(shape)
        self.rewards = torch.zeros(shape)
        self.dones = torch.zeros(shape)
        self.values = torch.zeros(shape)
        self.advantages = torch.zeros(shape)
        self.returns = torch.zeros(shape)

    def tensors(self) -> list[Tensor]:
        return [self.obs, self.actions, self.logprobs, self.rewards, self.dones, self.values,
                self.advantages, self.returns]

    @staticmethod
    def nbytes(num_steps: int, num_envs: int, obs_dim: int, action_dim: int, discrete: bool) -> int:
        """Bytes `__init__` allocates, without allocating them (for the memory plan)."""
        n = num_steps * num_envs
        return 4 * n * (obs_dim + 6) + (8 * n if discrete else 4 * n * action_dim)

    def minibatches(self, batch_size: int, generator: torch.Generator):
        """Shuffled minibatches of the flattened rollout (index tensors, no copies of
        the whole buffer)."""
        n = self.rewards.numel()
        flat = Minibatch(self.obs.reshape(n, -1), self.actions.reshape(n, *self.actions.shape[2:]),
                         self.logprobs.reshape(n), self.advantages.reshape(n),
                         self.returns.reshape(n), self.values.reshape(n))
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield Minibatch(*(t[idx] for t in flat))


def compute_gae(rewards: Tensor, values: Tensor, dones: Tensor, next_value: Tensor,
                next_done: Tensor, gamma: float, gae_lambda: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over ``[num_steps, num_envs]`` tensors.

    ``dones[t]`` = 1 when ``obs[t]`` begins a new episode; ``next_done`` likewise for
    the observation after the last step, whose value is ``next_value``. Truncation is
    already folded into ``rewards`` (bootstrapped), so a done always cuts the trace.
    Returns (advantages, returns = advantages + values).
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            not_done, following = 1.0 - next_done, next_value
        else:
            not_done, following = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * following * not_done - values[t]
        last = delta + gamma * gae_lambda * not_done * last
        advantages[t] = last
    return advantages, advantages + values


# --- the training state -------------------------------------------------------------

@dataclass
class PPOState:
    """Everything a checkpoint holds; `train` resumes from it bit for bit."""

    cfg: PPOConfig
    policy: ActorCritic
    optimizer: torch.optim.Optimizer
    obs_norm: ObsNormalizer
    reward_scaler: RewardScaler
    generator: torch.Generator
    envs: object
    next_obs: np.ndarray
    next_done: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray
    recent: collections.deque
    global_step: int = 0
    iteration: int = 0

    def checkpoint(self) -> dict:
        return {
            "config": self.cfg.as_dict(), "arch": self.policy.arch,
            "policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
            "obs_norm": self.obs_norm.state(), "reward_scaler": self.reward_scaler.state(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "envs": [env_state(e) for e in self.envs.envs],
            "next_obs": self.next_obs.copy(), "next_done": self.next_done.copy(),
            "episode_return": self.episode_return.copy(),
            "episode_length": self.episode_length.copy(),
            "recent": [list(x) for x in self.recent],
            "global_step": self.global_step, "iteration": self.iteration,
        }

    def restore(self, ckpt: dict) -> None:
        self.policy.load_state_dict(ckpt["policy"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.obs_norm.load(ckpt["obs_norm"])
        self.reward_scaler.load(ckpt["reward_scaler"])
        self.generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        for env, layers in zip(self.envs.envs, ckpt["envs"]):
            set_env_state(env, layers)
        self.next_obs, self.next_done = ckpt["next_obs"], ckpt["next_done"]
        self.episode_return, self.episode_length = ckpt["episode_return"], ckpt["episode_length"]
        self.recent.extend(tuple(x) for x in ckpt["recent"])
        self.global_step, self.iteration = ckpt["global_step"], ckpt["iteration"]


def build_state(cfg: PPOConfig, envs) -> PPOState:
    """Fresh policy, optimizer and normalisers for ``envs``, all seeded from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    obs_dim, action_dim, discrete = check_spaces(cfg.env_id, envs.single_observation_space,
                                                 envs.single_action_space)
    policy = ActorCritic(obs_dim, action_dim, discrete, cfg.hidden, cfg.log_std_init)
    optimizer = build_optimizer(cfg.optimizer, policy.parameters(), lr=cfg.lr, alpha=cfg.alpha,
                                momentum=cfg.momentum, eps=cfg.eps)
    generator = torch.Generator().manual_seed(cfg.seed)
    next_obs, _ = envs.reset(seed=cfg.seed)
    return PPOState(cfg, policy, optimizer, ObsNormalizer((obs_dim,), cfg.norm_obs),
                    RewardScaler(cfg.num_envs, cfg.gamma, cfg.norm_reward), generator, envs,
                    next_obs, np.zeros(cfg.num_envs, dtype=bool), np.zeros(cfg.num_envs),
                    np.zeros(cfg.num_envs, dtype=np.int64), collections.deque(maxlen=100))


def uses_fused_backward(cfg: PPOConfig) -> bool:
    """AlphaGrad updates inside backward (unless ``fuse_backward`` is off): nothing
    needs all gradients at once."""
    return cfg.optimizer == "alphagrad" and cfg.fuse_backward


# --- one iteration ------------------------------------------------------------------

def collect_rollout(state: PPOState, buf: RolloutBuffer) -> list[tuple[float, int]]:
    """Step the envs num_steps times, filling ``buf``; returns finished episodes'
    (raw return, length)."""
    cfg, envs, policy = state.cfg, state.envs, state.policy
    space = envs.single_action_space
    low, high = (None, None) if policy.discrete else (space.low, space.high)
    finished = []
    for t in range(cfg.num_steps):
        obs = torch.from_numpy(state.obs_norm(state.next_obs, update=True))
        with torch.no_grad():
            action, logp, value = policy.act(obs, state.generator)
        buf.obs[t] = obs
        buf.dones[t] = torch.from_numpy(state.next_done.astype(np.float32))
        buf.actions[t], buf.logprobs[t], buf.values[t] = action, logp, value

        env_action = action.numpy() if low is None else np.clip(action.numpy(), low, high)
        next_obs, reward, terminated, truncated, info = envs.step(env_action)
        done = terminated | truncated
        state.episode_return += reward
        state.episode_length += 1
        for i in np.flatnonzero(done):
            finished.append((float(state.episode_return[i]), int(state.episode_length[i])))
        state.episode_return[done] = 0.0
        state.episode_length[done] = 0

        reward = state.reward_scaler(reward.astype(np.float64), done)
        cut = truncated & ~terminated
        if cut.any():  # bootstrap a time-limit cut from the real final observation
            final = np.stack([info["final_obs"][i] for i in np.flatnonzero(cut)])
            with torch.no_grad():
                final_value = policy.value(torch.from_numpy(state.obs_norm(final)))
            reward[cut] += cfg.gamma * final_value.numpy()
        buf.rewards[t] = torch.from_numpy(reward.astype(np.float32))
        state.next_obs, state.next_done = next_obs, done
        state.global_step += cfg.num_envs
    state.recent.extend(finished)
    return finished


def update(state: PPOState, buf: RolloutBuffer, lr: float) -> dict:
    """``update_epochs`` passes of minibatch steps on the clipped PPO objective."""
    cfg, policy, optimizer = state.cfg, state.policy, state.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    clip_norm = 0.0 if cfg.optimizer == "alphagrad" else cfg.max_grad_norm
    stats = collections.defaultdict(list)
    for epoch in range(cfg.update_epochs):
        # The train/* figures describe the last epoch (or every epoch with target_kl,
        # which needs the KL): computing them costs ~10 small ops per minibatch.
        record = bool(cfg.target_kl) or epoch == cfg.update_epochs - 1
        if record:
            stats.clear()
        for mb in buf.minibatches(cfg.batch_size, state.generator):
            logp, entropy, value = policy.evaluate(mb.obs, mb.actions)
            log_ratio = logp - mb.logprobs
            ratio = log_ratio.exp()
            adv = mb.advantages
            if cfg.norm_adv and adv.numel() > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg_loss = torch.max(-adv * ratio,
                                -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
            if cfg.clip_vloss:
                clipped = mb.values + (value - mb.values).clamp(-cfg.clip_coef, cfg.clip_coef)
                v_loss = 0.5 * torch.max((value - mb.returns).square(),
                                         (clipped - mb.returns).square()).mean()
            else:
                v_loss = 0.5 * (value - mb.returns).square().mean()
            entropy_loss = entropy.mean()
            loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss

            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # with AlphaGrad fused, the parameters are updated here
            if clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), clip_norm)
            optimizer.step()

            if record:
                with torch.no_grad():
                    stats["approx_kl"].append(((ratio - 1) - log_ratio).mean().item())
                    stats["clip_fraction"].append(
                        ((ratio - 1).abs() > cfg.clip_coef).float().mean().item())
                    stats["policy_gradient_loss"].append(pg_loss.item())
                    stats["value_loss"].append(v_loss.item())
                    stats["entropy_loss"].append(-entropy_loss.item())
        if cfg.target_kl and stats["approx_kl"][-1] > cfg.target_kl:
            break
    values, returns = buf.values.flatten(), buf.returns.flatten()
    var = returns.var().item()
    out = {f"train/{k}": float(np.mean(v)) for k, v in stats.items()}
    out["train/explained_variance"] = float("nan") if var == 0 else \
        1 - (returns - values).var().item() / var
    out["train/learning_rate"] = lr
    if not policy.discrete:
        out["train/std"] = policy.log_std.exp().mean().item()
    return out


# --- planning -----------------------------------------------------------------------

def _meta_params(obs_dim: int, action_dim: int, discrete: bool, hidden) -> list[Tensor]:
    """Tensors shaped like `ActorCritic`'s parameters, on the meta device (no memory)."""
    shapes = []
    for out_dim in (1, action_dim):
        sizes = [obs_dim, *hidden, out_dim]
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            shapes += [(n_out, n_in), (n_out,)]
    if not discrete:
        shapes.append((action_dim,))
    return [torch.empty(s, device="meta", requires_grad=True) for s in shapes]


def activation_bytes(cfg: PPOConfig, obs_dim: int, action_dim: int) -> int:
    """Forward activations saved for backward plus their gradients, for one minibatch
    through both networks (float32): per network, the input, each hidden layer's
    linear output and tanh output, and the output."""
    per_row = 2 * (obs_dim + 2 * sum(cfg.hidden)) + 1 + action_dim
    return 2 * 4 * cfg.batch_size * per_row


def plan_ppo(cfg: PPOConfig, budget_bytes: int, floor_bytes: int, obs_dim: int,
             action_dim: int, discrete: bool) -> MemoryPlan:
    params = _meta_params(obs_dim, action_dim, discrete, cfg.hidden)
    return plan_training(
        budget_bytes=budget_bytes, floor_bytes=floor_bytes, params=params,
        optimizer_spec=get_spec(cfg.optimizer), momentum=cfg.momentum,
        fused_backward=uses_fused_backward(cfg),
        buffer_bytes=RolloutBuffer.nbytes(cfg.num_steps, cfg.num_envs, obs_dim, action_dim,
                                          discrete),
        activation_bytes=activation_bytes(cfg, obs_dim, action_dim), runtime_bytes=RUNTIME_BYTES)


def what_fits(cfg: PPOConfig, budget_bytes: int, floor_bytes: int, obs_dim: int,
              action_dim: int, discrete: bool) -> str:
    """A sentence naming settings that would fit: the lean optimizer instead of one
    that imports `torch._dynamo`, the largest rollout length, the largest hidden width."""
    import dataclasses

    def plan_with(**change):
        return plan_ppo(dataclasses.replace(cfg, **change), budget_bytes, floor_bytes,
                        obs_dim, action_dim, discrete)

    def rollout(n):  # rollout length n; the minibatch shrinks with it when it must
        return {"num_steps": n, "batch_size": min(cfg.batch_size, n * cfg.num_envs)}

    parts = []
    if cfg.optimizer == "torch-adam" and plan_with(optimizer="adam").fits:
        parts.append("--optimizer adam (the same Adam without the torch._dynamo import)")
    steps = largest_fitting(lambda n: plan_with(**rollout(n)), 1, cfg.num_steps)
    if steps is not None and steps * cfg.num_envs > cfg.batch_size:
        per_env = cfg.batch_size // math.gcd(cfg.batch_size, cfg.num_envs)
        steps -= steps % per_env  # so that the minibatch divides the rollout (fits: smaller)
    if steps:
        parts.append(" ".join(f"--set {k}={v}" for k, v in rollout(steps).items()))
    width = largest_fitting(lambda w: plan_with(hidden=(w,) * len(cfg.hidden)), 1, max(cfg.hidden))
    if width is not None:
        parts.append(f"--set hidden=[{', '.join([str(width)] * len(cfg.hidden))}]")
    if not parts:
        return "nothing fits: the measured floor and the smallest policy already exceed the budget"
    return "largest settings that fit: " + "; or ".join(parts)
