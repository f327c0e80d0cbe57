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
  bounded by ``lr * tanh(alpha)``, and dropping the clip lets each tensor be updated
  on its own: inside the backward pass, layer by layer, for large policies (one
  layer's gradients alive at a time), or all at once in ~10 ops for small ones.
  Other optimizers clip at ``max_grad_norm`` (0.5).

How the update is computed (same result as ``loss.backward(); optimizer.step()``,
which `update(..., reference=True)` runs and the tests compare against): the loss's
gradient with respect to the network outputs is written out by hand
(`output_grads`), then backpropagated by hand through the tanh MLPs, because on a
small policy autograd's per-op bookkeeping costs more than the arithmetic. Policies
up to `FLAT_MAX_BYTES` use `FlatActorCritic` (actor and critic hidden layers batched,
all gradients in one buffer); larger ones `mlp_backward` per network.
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
from edgeag.optim import alphagrad_segments_, build_optimizer, get_spec
from edgeag.optim.alphagrad import OUTER_BLOCK_NUMEL, outer_temporary_bytes
from edgeag.train.config import PPOConfig, uses_fused_backward
from edgeag.train.envs import ObsNormalizer, RewardScaler, check_spaces, env_state, set_env_state
from edgeag.train.networks import (LOG_2PI, ActorCritic, FlatActorCritic, mlp_activations,
                                   mlp_backward)

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
        the whole buffer); the whole rollout as it is when it is a single minibatch."""
        n = self.rewards.numel()
        flat = Minibatch(self.obs.reshape(n, -1), self.actions.reshape(n, *self.actions.shape[2:]),
                         self.logprobs.reshape(n), self.advantages.reshape(n),
                         self.returns.reshape(n), self.values.reshape(n))
        if batch_size >= n:  # one minibatch: the order of its rows changes nothing
            yield flat
            return
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
    # numpy on the tensors' memory: ~1 us an op on [num_envs] rows, where torch takes ~4
    r, v, d = rewards.numpy(), values.numpy(), dones.numpy()
    advantages = torch.zeros_like(rewards)
    adv = advantages.numpy()
    last = np.zeros_like(v[0])
    for t in reversed(range(r.shape[0])):
        if t == r.shape[0] - 1:
            not_done, following = 1.0 - next_done.numpy(), next_value.numpy()
        else:
            not_done, following = 1.0 - d[t + 1], v[t + 1]
        delta = r[t] + gamma * following * not_done - v[t]
        last = delta + gamma * gae_lambda * not_done * last
        adv[t] = last
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
    flat: FlatActorCritic | None = None
    """The small-policy layout when it applies (`uses_flat_layout`; not checkpointed:
    rebuilt by `build_state`)."""

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
    param_bytes = sum(p.numel() * p.element_size() for p in policy.parameters())
    flat = FlatActorCritic(policy) if uses_flat_layout(param_bytes) else None
    generator = torch.Generator().manual_seed(cfg.seed)
    next_obs, _ = envs.reset(seed=cfg.seed)
    return PPOState(cfg, policy, optimizer, ObsNormalizer((obs_dim,), cfg.norm_obs),
                    RewardScaler(cfg.num_envs, cfg.gamma, cfg.norm_reward), generator, envs,
                    next_obs, np.zeros(cfg.num_envs, dtype=bool), np.zeros(cfg.num_envs),
                    np.zeros(cfg.num_envs, dtype=np.int64), collections.deque(maxlen=100),
                    flat=flat)


FLAT_MAX_BYTES = 4 * 2**20
"""A policy of at most this many parameter bytes trains through `FlatActorCritic`
(all gradients in one buffer, updated together: with AlphaGrad ~10 ops for the whole
policy); a larger one through `mlp_backward` per network, where AlphaGrad updates each
layer as soon as its gradient is complete, so at most one layer's gradients are alive."""


def uses_flat_layout(param_bytes: int) -> bool:
    return param_bytes <= FLAT_MAX_BYTES


# --- one iteration ------------------------------------------------------------------

def collect_rollout(state: PPOState, buf: RolloutBuffer) -> list[tuple[float, int]]:
    """Step the envs num_steps times, filling ``buf``; returns finished episodes'
    (raw return, length)."""
    cfg, envs, policy = state.cfg, state.envs, state.policy
    space = envs.single_action_space
    low, high = (None, None) if policy.discrete else (space.low, space.high)
    # the buffer's rows written through numpy views of its tensors: ~1 us a row, where
    # torch indexing costs ~5 (a few hundred of these per rollout)
    obs_rows, done_rows, reward_rows = buf.obs.numpy(), buf.dones.numpy(), buf.rewards.numpy()
    action_rows, logp_rows, value_rows = buf.actions.numpy(), buf.logprobs.numpy(), buf.values.numpy()
    finished = []
    with torch.no_grad():
        for t in range(cfg.num_steps):
            obs = state.obs_norm(state.next_obs, update=True)
            obs_rows[t], done_rows[t] = obs, state.next_done
            action, logp, value = policy.act(torch.from_numpy(obs), state.generator)
            action = action.numpy()
            action_rows[t], logp_rows[t], value_rows[t] = action, logp.numpy(), value.numpy()

            env_action = action if low is None else np.clip(action, low, high)
            next_obs, reward, terminated, truncated, info = envs.step(env_action)
            done = terminated | truncated
            state.episode_return += reward
            state.episode_length += 1
            for i in np.flatnonzero(done):
                finished.append((float(state.episode_return[i]), int(state.episode_length[i])))
                state.episode_return[i], state.episode_length[i] = 0.0, 0

            reward = state.reward_scaler(reward.astype(np.float64), done)
            cut = truncated & ~terminated
            if cut.any():  # bootstrap a time-limit cut from the real final observation
                final = np.stack([info["final_obs"][i] for i in np.flatnonzero(cut)])
                final_value = policy.value(torch.from_numpy(state.obs_norm(final)))
                reward[cut] += cfg.gamma * final_value.numpy()
            reward_rows[t] = reward
            state.next_obs, state.next_done = next_obs, done
            state.global_step += cfg.num_envs
    state.recent.extend(finished)
    return finished


class OutputGrads(NamedTuple):
    """d loss / d (policy outputs) for one minibatch, and the loss terms for logging."""
    out: Tensor          # d loss / d actor output (logits or Gaussian mean), [batch, action_dim]
    value: Tensor        # d loss / d value, [batch]
    log_std: Tensor | None  # d loss / d log_std (continuous actions)
    losses: dict         # pg_loss, v_loss, entropy, ratio, log_ratio (0-dim / [batch] tensors)


def normalised_advantages(adv: Tensor, cfg: PPOConfig) -> Tensor:
    if cfg.norm_adv and adv.numel() > 1:
        return (adv - adv.mean()) / (adv.std() + 1e-8)
    return adv


def output_grads(policy: ActorCritic, cfg: PPOConfig, out: Tensor, value: Tensor,
                 mb: Minibatch, losses: bool = True) -> OutputGrads:
    """The PPO loss ``pg_loss - ent_coef * entropy + vf_coef * v_loss`` of `ppo_loss`,
    differentiated by hand with respect to the network outputs. Where autograd meets a
    tie in ``max`` it splits the gradient; the masks below do the same, so the result
    equals autograd's (tested in float64). The loss values themselves are computed only
    with ``losses`` (``OutputGrads.losses`` is empty otherwise)."""
    adv = normalised_advantages(mb.advantages, cfg)
    n = adv.shape[0]
    c = cfg.clip_coef
    if policy.discrete:
        log_probs = torch.log_softmax(out, dim=-1)
        probs = log_probs.exp()
        logp = log_probs.gather(-1, mb.actions.unsqueeze(-1)).squeeze(-1)
        entropy = -(probs * log_probs).sum(-1) if cfg.ent_coef or losses else None
    else:
        inv_std = torch.exp(-policy.log_std)
        z = (mb.actions - out) * inv_std
        logp = (-0.5 * z.square() - policy.log_std - 0.5 * LOG_2PI).sum(-1)
        entropy = (0.5 + 0.5 * LOG_2PI + policy.log_std).sum().expand(n)
    log_ratio = logp - mb.logprobs
    ratio = log_ratio.exp()
    surr, surr_clipped = -adv * ratio, -adv * ratio.clamp(1 - c, 1 + c)
    # d max(surr, surr_clipped) / d logp = surr where the unclipped term is the larger
    # (a tie: the ratio is inside the clip range, where the two halves add up to it),
    # 0 where the clipped term is larger (the ratio is outside, where clamp passes none)
    g_logp = torch.where(surr >= surr_clipped, surr, 0.0).div_(n)

    if policy.discrete:  # d logp / d logits = onehot(action) - probs
        g_out = probs * -g_logp.unsqueeze(-1)
        g_out.scatter_add_(-1, mb.actions.unsqueeze(-1), g_logp.unsqueeze(-1))
        if cfg.ent_coef:  # d entropy / d logits = -probs * (log_probs + entropy)
            g_out += (cfg.ent_coef / n) * probs * (log_probs + entropy.unsqueeze(-1))
        g_log_std = None
    else:  # d logp / d mean = z / std, d logp / d log_std = z^2 - 1, d entropy / d log_std = 1
        g_out = g_logp.unsqueeze(-1) * z * inv_std
        g_log_std = (g_logp.unsqueeze(-1) * (z.square() - 1)).sum(0) - cfg.ent_coef

    diff = value - mb.returns
    if cfg.clip_vloss:
        delta = value - mb.values
        diff_clipped = mb.values + delta.clamp(-c, c) - mb.returns
        sq, sq_clipped = diff.square(), diff_clipped.square()
        # the larger term takes the gradient; the clipped one only inside the clip range
        # (a tie: inside the range the two terms are the same; outside it has probability 0)
        inside = (delta >= -c) & (delta <= c)
        g_value = torch.where(sq >= sq_clipped, diff, diff_clipped * inside) * (cfg.vf_coef / n)
    else:
        g_value = diff * (cfg.vf_coef / n)
    if not losses:
        return OutputGrads(g_out, g_value, g_log_std, {})
    v_loss = 0.5 * (torch.max(sq, sq_clipped) if cfg.clip_vloss else diff.square()).mean()
    return OutputGrads(g_out, g_value, g_log_std, {
        "pg_loss": torch.max(surr, surr_clipped).mean(), "v_loss": v_loss,
        "entropy": entropy.mean(), "ratio": ratio, "log_ratio": log_ratio})


def ppo_loss(policy: ActorCritic, cfg: PPOConfig, mb: Minibatch) -> tuple[Tensor, dict]:
    """The clipped PPO objective through autograd: the reference `output_grads` and
    `update` are tested against."""
    logp, entropy, value = policy.evaluate(mb.obs, mb.actions)
    log_ratio = logp - mb.logprobs
    ratio = log_ratio.exp()
    adv = normalised_advantages(mb.advantages, cfg)
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
    return loss, {"pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy_loss,
                  "ratio": ratio, "log_ratio": log_ratio}


def update(state: PPOState, buf: RolloutBuffer, lr: float, reference: bool = False) -> dict:
    """``update_epochs`` passes of minibatch steps on the clipped PPO objective.

    The gradients are written out by hand (`output_grads`, then
    `FlatActorCritic.backward` for a small policy or `mlp_backward` through each network
    of a large one); with stateless AlphaGrad a small policy is then updated in ~10 ops
    (`edgeag.optim.alphagrad_segments_`), a large one tensor by tensor as soon as each
    gradient is complete (``AlphaGrad.update_param``); other optimizers clip and step.
    ``reference=True`` takes the same steps the textbook way, `ppo_loss`, then
    ``loss.backward()`` and ``optimizer.step()``; tests check the two equal.
    """
    cfg, policy, optimizer = state.cfg, state.policy, state.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    fused = uses_fused_backward(cfg)  # AlphaGrad: no clipping, each tensor updated on its own
    clip_norm = 0.0 if cfg.optimizer == "alphagrad" else cfg.max_grad_norm
    flat = None if reference else state.flat
    segments = flat is not None and fused and cfg.momentum == 0  # the whole update in ~10 ops
    updated_in_backward = not reference and fused and (segments or flat is None)
    outer = None
    if updated_in_backward and not segments:
        sink = optimizer.update_param
        outer = optimizer.update_param_outer  # large weights: no gradient of their size
    else:
        def sink(param: Tensor, grad: Tensor) -> None:
            param.grad = grad
    stats = collections.defaultdict(list)
    for epoch in range(cfg.update_epochs):
        # The train/* figures describe the last epoch (or every epoch with target_kl,
        # which needs the KL): computing them costs ~10 small ops per minibatch.
        record = bool(cfg.target_kl) or epoch == cfg.update_epochs - 1
        if record:
            stats.clear()
        for mb in buf.minibatches(cfg.batch_size, state.generator):
            if reference:
                loss, losses = ppo_loss(policy, cfg, mb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            elif flat is not None:
                with torch.no_grad():
                    acts, out, value = flat.forward(mb.obs)
                    grads = output_grads(policy, cfg, out, value, mb, losses=record)
                    flat.backward(acts, grads.out, grads.value, grads.log_std)
                    if segments:
                        group = optimizer.param_groups[0]
                        alphagrad_segments_(flat.param, flat.grad, flat.segments, lr=group["lr"],
                                            alpha=group["alpha"], eps=group["eps"],
                                            maximize=group["maximize"])
                    else:
                        for param, grad in flat.grads.items():
                            sink(param, grad)
                losses = grads.losses
            else:
                with torch.no_grad():
                    actor = mlp_activations(policy._actor, mb.obs)
                    critic = mlp_activations(policy._critic, mb.obs)
                    grads = output_grads(policy, cfg, actor[-1], critic[-1].squeeze(-1), mb,
                                         losses=record)
                    mlp_backward(policy._critic, critic, grads.value.unsqueeze(-1), sink, outer)
                    mlp_backward(policy._actor, actor, grads.out, sink, outer)
                    if grads.log_std is not None:
                        sink(policy.log_std, grads.log_std)
                losses = grads.losses
            if not updated_in_backward:
                if clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), clip_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if record:
                _record(stats, losses, cfg.clip_coef)
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


def _record(stats: dict, losses: dict, clip_coef: float) -> None:
    with torch.no_grad():
        ratio, log_ratio = losses["ratio"], losses["log_ratio"]
        stats["approx_kl"].append(((ratio - 1) - log_ratio).mean().item())
        stats["clip_fraction"].append(((ratio - 1).abs() > clip_coef).float().mean().item())
        stats["policy_gradient_loss"].append(losses["pg_loss"].item())
        stats["value_loss"].append(losses["v_loss"].item())
        stats["entropy_loss"].append(-losses["entropy"].item())


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


def activation_bytes(cfg: PPOConfig, obs_dim: int, action_dim: int, flat: bool = True) -> int:
    """Forward activations kept for the backward pass plus the backward's own tensors,
    for one minibatch through both networks (float32).

    The flat layout (small policies): per network the input, each hidden layer's
    linear output and tanh output and the output, twice (their gradients). The
    per-network passes of a large policy (`mlp_activations`, `mlp_backward`): the input,
    each hidden layer's output (tanh in place) and both outputs are kept, and the
    backward holds three ``[batch, width]`` tensors at a time (the incoming gradient,
    its product with the weight, the result)."""
    if flat:
        per_row = 2 * (obs_dim + 2 * sum(cfg.hidden)) + 1 + action_dim
        return 2 * 4 * cfg.batch_size * per_row
    per_row = obs_dim + 2 * sum(cfg.hidden) + 1 + action_dim + 3 * max(cfg.hidden, default=0)
    return 4 * cfg.batch_size * per_row


def plan_ppo(cfg: PPOConfig, budget_bytes: int, floor_bytes: int, obs_dim: int,
             action_dim: int, discrete: bool) -> MemoryPlan:
    params = _meta_params(obs_dim, action_dim, discrete, cfg.hidden)
    param_bytes = 4 * sum(p.numel() for p in params)
    flat = uses_flat_layout(param_bytes)
    stateless = uses_fused_backward(cfg) and cfg.momentum == 0
    segments = flat and stateless
    # Large weights of a large policy are updated from their gradient's factors
    # (`mlp_backward`'s ``outer``): no gradient of their size, one block of temporaries.
    outer = [p for p in params if p.dim() == 2 and p.numel() > OUTER_BLOCK_NUMEL] \
        if stateless and not flat else []
    formed = max(4 * p.numel() for p in params if not any(p is q for q in outer))
    temporaries = None
    if segments:
        temporaries = 0  # norms and scales: one value per tensor
    elif outer:
        temporaries = max(formed, outer_temporary_bytes())
    return plan_training(
        budget_bytes=budget_bytes, floor_bytes=floor_bytes, params=params,
        optimizer_spec=get_spec(cfg.optimizer), momentum=cfg.momentum,
        fused_backward=uses_fused_backward(cfg) and not flat,
        gradient_bytes=formed if outer else None, temporary_bytes=temporaries,
        buffer_bytes=RolloutBuffer.nbytes(cfg.num_steps, cfg.num_envs, obs_dim, action_dim,
                                          discrete),
        activation_bytes=activation_bytes(cfg, obs_dim, action_dim, flat),
        runtime_bytes=RUNTIME_BYTES)


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


# --- the run driver's interface (`edgeag.train.Algorithm`) ---------------------------

def make_iteration(state: PPOState):
    """One PPO iteration at a time: the rollout buffer (allocated once), the annealed
    lr, `collect_rollout`, `compute_gae` from the value of the last observation, then
    `update`."""
    cfg = state.cfg
    obs_dim, action_dim, discrete = check_spaces(cfg.env_id, state.envs.single_observation_space,
                                                 state.envs.single_action_space)
    buf = RolloutBuffer(cfg.num_steps, cfg.num_envs, obs_dim, action_dim, discrete)

    def iteration():
        lr = cfg.lr * (1 - state.iteration / cfg.num_iterations) if cfg.anneal_lr else cfg.lr
        finished = collect_rollout(state, buf)
        with torch.no_grad():
            next_value = state.policy.value(torch.from_numpy(state.obs_norm(state.next_obs)))
            next_done = torch.from_numpy(state.next_done.astype(np.float32))
            adv, ret = compute_gae(buf.rewards, buf.values, buf.dones, next_value, next_done,
                                   cfg.gamma, cfg.gae_lambda)
            buf.advantages.copy_(adv)
            buf.returns.copy_(ret)
        return finished, update(state, buf, lr)

    return iteration


from edgeag.train import Algorithm  # noqa: E402  (the interface, below the code it names)

ALGORITHM = Algorithm(
    name="ppo", build_state=build_state, plan=plan_ppo, what_fits=what_fits,
    make_iteration=make_iteration, optimizers=lambda state: [state.optimizer],
    trained=lambda state: [state.policy])
