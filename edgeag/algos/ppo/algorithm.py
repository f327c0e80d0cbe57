"""Proximal Policy Optimization, readable top to bottom, written once for both engines.

One iteration = `collect_rollout` (num_envs x num_steps transitions into a buffer
allocated once) -> `compute_gae` -> `update` (update_epochs passes of clipped-surrogate
minibatch steps). The loop in `edgeag.train.run.train` stops only at iteration
boundaries, where the state is consistent: that is where checkpoints are written and
where the budget guard and Ctrl-C take effect.

Everything here is numpy: the rollout, the sampling (from the run's seeded
`np.random.Generator`), GAE, minibatches. The policy's forward pass and its update
come from an engine (`PPOConfig.engine`):

- ``numpy`` (`edgeag.algos.ppo.numpy_engine`, the default): what a device runs, no torch.
  The loss's gradient with respect to the network outputs is written out by hand
  (`output_grads`), then backpropagated through the MLPs by `edgeag.engine`, to a
  gradient buffer or straight into the optimizer (`edgeag.engine.UpdatePath`);
- ``torch`` (`edgeag.algos.ppo.torch_engine`): the textbook path, `ppo_loss` then
  ``loss.backward()`` and an `edgeag.optim` optimizer (AlphaGrad fused into backward
  by its hooks). It is the reference the numpy engine is tested against in float64.

Implementation details, with their sources and deviations: docs/algorithms/ppo.md.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from edgeag.algos.base import PlanInputs, engine_class
from edgeag.algos.loop_state import LoopState
from edgeag.algos.ppo.config import PPOConfig
from edgeag.memory import MemoryPlan, PlanItem, largest_fitting
from edgeag.train.envs import ObsNormalizer, RewardScaler, check_spaces
from edgeag.train.observations import observed, sample_item

LOG_2PI = math.log(2 * math.pi)


# --- rollout buffer -----------------------------------------------------------------

class Minibatch(NamedTuple):
    obs: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray
    values: np.ndarray


class RolloutBuffer:
    """One iteration's transitions, ``[num_steps, num_envs, ...]``, allocated once and
    overwritten in place every iteration. ``dones[t]`` marks that ``obs[t]`` starts a
    new episode (CleanRL's convention)."""

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, action_dim: int,
                 discrete: bool, dtype=np.float32):
        shape = (num_steps, num_envs)
        self.obs = np.zeros((*shape, obs_dim), dtype)
        self.actions = np.zeros(shape, np.int64) if discrete else \
            np.zeros((*shape, action_dim), dtype)
        self.logprobs = np.zeros(shape, dtype)
        self.rewards = np.zeros(shape, dtype)
        self.dones = np.zeros(shape, dtype)
        self.values = np.zeros(shape, dtype)
        self.advantages = np.zeros(shape, dtype)
        self.returns = np.zeros(shape, dtype)

    @staticmethod
    def nbytes(num_steps: int, num_envs: int, obs_dim: int, action_dim: int, discrete: bool,
               itemsize: int = 4) -> int:
        """Bytes `__init__` allocates, without allocating them (for the memory plan)."""
        n = num_steps * num_envs
        return itemsize * n * (obs_dim + 6) + (8 * n if discrete else itemsize * n * action_dim)

    def minibatches(self, batch_size: int, rng: np.random.Generator):
        """Shuffled minibatches of the flattened rollout; the whole rollout as it is
        when it is a single minibatch (the order of its rows changes nothing)."""
        n = self.rewards.size
        flat = Minibatch(self.obs.reshape(n, -1), self.actions.reshape(n, *self.actions.shape[2:]),
                         self.logprobs.reshape(n), self.advantages.reshape(n),
                         self.returns.reshape(n), self.values.reshape(n))
        if batch_size >= n:
            yield flat
            return
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield Minibatch(*(a[idx] for a in flat))


def compute_gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray,
                next_value: np.ndarray, next_done: np.ndarray, gamma: float,
                gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over ``[num_steps, num_envs]`` arrays.

    ``dones[t]`` = 1 when ``obs[t]`` begins a new episode; ``next_done`` likewise for
    the observation after the last step, whose value is ``next_value``. Truncation is
    already folded into ``rewards`` (bootstrapped), so a done always cuts the trace.
    Returns (advantages, returns = advantages + values).
    """
    advantages = np.zeros_like(rewards)
    last = np.zeros_like(values[0])
    for t in reversed(range(rewards.shape[0])):
        if t == rewards.shape[0] - 1:
            not_done, following = 1.0 - next_done, next_value
        else:
            not_done, following = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * following * not_done - values[t]
        last = delta + gamma * gae_lambda * not_done * last
        advantages[t] = last
    return advantages, advantages + values


# --- sampling -----------------------------------------------------------------------

def log_softmax(out: np.ndarray) -> np.ndarray:
    z = out - out.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def sample(out: np.ndarray, log_std: np.ndarray | None, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """An action per row of the actor's output and its log-probability: categorical
    over logits by inverse CDF, or the diagonal Gaussian ``out + std * noise``."""
    if log_std is None:  # softmax's CDF; u in [0, 1) picks the first bin it falls below
        z = out - out.max(axis=-1, keepdims=True)
        cdf = np.exp(z).cumsum(-1)
        total = cdf[:, -1:]
        u = rng.random((out.shape[0], 1))
        action = np.minimum((cdf < u * total).sum(-1), out.shape[-1] - 1)
        rows = np.arange(out.shape[0])
        return action, z[rows, action] - np.log(total[:, 0])
    noise = rng.standard_normal(out.shape).astype(out.dtype, copy=False)
    action = out + np.exp(log_std) * noise
    return action, (-0.5 * noise * noise - log_std - 0.5 * LOG_2PI).sum(-1)


def deterministic(out: np.ndarray, discrete: bool) -> np.ndarray:
    """The greedy action: argmax of the logits, or the Gaussian mean (unclipped)."""
    return out.argmax(-1) if discrete else out


# --- the loss and its gradient ------------------------------------------------------

class OutputGrads(NamedTuple):
    """d loss / d (policy outputs) for one minibatch, and the loss terms for logging."""
    out: np.ndarray              # d loss / d actor output (logits or mean), [batch, action_dim]
    value: np.ndarray            # d loss / d value, [batch]
    log_std: np.ndarray | None   # d loss / d log_std (continuous actions)
    losses: dict                 # pg_loss, v_loss, entropy (floats), ratio, log_ratio ([batch])


def normalised_advantages(adv, cfg: PPOConfig):
    """Per-minibatch advantage normalisation (numpy or torch arrays alike; the std is
    the unbiased one, as torch's)."""
    n = adv.shape[0]
    if cfg.norm_adv and n > 1:
        mean = adv.mean()
        std = ((adv - mean) ** 2).sum() / (n - 1)
        return (adv - mean) / (std ** 0.5 + 1e-8)
    return adv


def output_grads(cfg: PPOConfig, out: np.ndarray, value: np.ndarray,
                 log_std: np.ndarray | None, mb: Minibatch, losses: bool = True) -> OutputGrads:
    """The PPO loss ``pg_loss - ent_coef * entropy + vf_coef * v_loss`` (`ppo_torch.ppo_loss`),
    differentiated by hand with respect to the network outputs. Where autograd meets a
    tie in ``max`` it splits the gradient; the masks below do the same, so the result
    equals autograd's (tested in float64). The loss values themselves are computed only
    with ``losses`` (``OutputGrads.losses`` is empty otherwise)."""
    adv = normalised_advantages(mb.advantages, cfg)
    n = adv.shape[0]
    c = cfg.clip_coef
    discrete = log_std is None
    if discrete:
        log_probs = log_softmax(out)
        probs = np.exp(log_probs)
        logp = log_probs[np.arange(n), mb.actions]
        entropy = -(probs * log_probs).sum(-1) if cfg.ent_coef or losses else None
    else:
        inv_std = np.exp(-log_std)
        z = (mb.actions - out) * inv_std
        logp = (-0.5 * z * z - log_std - 0.5 * LOG_2PI).sum(-1)
        entropy = np.full(n, (0.5 + 0.5 * LOG_2PI + log_std).sum(), out.dtype)
    log_ratio = logp - mb.logprobs
    ratio = np.exp(log_ratio)
    surr, surr_clipped = -adv * ratio, -adv * np.clip(ratio, 1 - c, 1 + c)
    # d max(surr, surr_clipped) / d logp = surr where the unclipped term is the larger
    # (a tie: the ratio is inside the clip range, where the two halves add up to it),
    # 0 where the clipped term is larger (the ratio is outside, where clip passes none)
    g_logp = np.where(surr >= surr_clipped, surr, 0.0).astype(out.dtype, copy=False) / n

    if discrete:  # d logp / d logits = onehot(action) - probs
        g_out = probs * -g_logp[:, None]
        np.add.at(g_out, (np.arange(n), mb.actions), g_logp)
        if cfg.ent_coef:  # d entropy / d logits = -probs * (log_probs + entropy)
            g_out += (cfg.ent_coef / n) * probs * (log_probs + entropy[:, None])
        g_log_std = None
    else:  # d logp / d mean = z / std, d logp / d log_std = z^2 - 1, d entropy / d log_std = 1
        g_out = g_logp[:, None] * z * inv_std
        g_log_std = (g_logp[:, None] * (z * z - 1)).sum(0) - cfg.ent_coef

    diff = value - mb.returns
    if cfg.clip_vloss:
        delta = value - mb.values
        diff_clipped = mb.values + np.clip(delta, -c, c) - mb.returns
        sq, sq_clipped = diff * diff, diff_clipped * diff_clipped
        # the larger term takes the gradient; the clipped one only inside the clip range
        inside = (delta >= -c) & (delta <= c)
        g_value = np.where(sq >= sq_clipped, diff, diff_clipped * inside) * (cfg.vf_coef / n)
    else:
        g_value = diff * (cfg.vf_coef / n)
    g_value = g_value.astype(out.dtype, copy=False)
    if not losses:
        return OutputGrads(g_out, g_value, g_log_std, {})
    v_loss = 0.5 * (np.maximum(sq, sq_clipped) if cfg.clip_vloss else diff * diff).mean()
    return OutputGrads(g_out, g_value, g_log_std, {
        "pg_loss": float(np.maximum(surr, surr_clipped).mean()), "v_loss": float(v_loss),
        "entropy": float(entropy.mean()), "ratio": ratio, "log_ratio": log_ratio})


def record_losses(stats: dict, losses: dict, clip_coef: float) -> None:
    """Append one minibatch's ``train/*`` figures (losses of numpy arrays and floats)."""
    ratio, log_ratio = losses["ratio"], losses["log_ratio"]
    stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
    stats["clip_fraction"].append(float((np.abs(ratio - 1) > clip_coef).mean()))
    stats["policy_gradient_loss"].append(losses["pg_loss"])
    stats["value_loss"].append(losses["v_loss"])
    stats["entropy_loss"].append(-losses["entropy"])


# --- engines ------------------------------------------------------------------------

CLASSES = {"numpy": "edgeag.algos.ppo.numpy_engine:NumpyActorCritic",
           "torch": "edgeag.algos.ppo.torch_engine:TorchActorCritic"}
"""Each engine's networks class (`edgeag.train.engine_class`)."""


def policy_class(engine: str):
    """The actor-critic class of ``engine`` (imports torch only for ``torch``)."""
    return engine_class(engine, CLASSES)


def build_policy(cfg: PPOConfig, obs_dim: int, action_dim: int, discrete: bool,
                 dtype=np.float32, initialise: bool = True):
    return policy_class(cfg.engine)(cfg, obs_dim, action_dim, discrete, dtype=dtype,
                                    initialise=initialise)


# --- the training state -------------------------------------------------------------

@dataclass(kw_only=True)
class PPOState(LoopState):
    """PPO's loop state: the shared one (`LoopState`, ``nets`` being the engine's
    actor-critic), the reward scaler, the episode ends and the learning rate's anchor."""

    cfg: PPOConfig
    reward_scaler: RewardScaler
    next_done: np.ndarray
    lr_anchor: tuple | None = None
    """(iteration, lr) the annealed learning rate runs down from (to 0 at the last
    iteration); None: (0, cfg.lr). Moved by `extend` when total_steps changes."""

    def _checkpoint_extra(self) -> dict:
        return {"reward_scaler": self.reward_scaler.state(), "next_done": self.next_done.copy(),
                "lr_anchor": None if self.lr_anchor is None else list(self.lr_anchor)}

    def _restore_extra(self, ckpt: dict) -> None:
        self.reward_scaler.load(ckpt["reward_scaler"])
        self.next_done = ckpt["next_done"]
        anchor = ckpt.get("lr_anchor")
        self.lr_anchor = None if anchor is None else (int(anchor[0]), float(anchor[1]))


def learning_rate(cfg: PPOConfig, iteration: int, anchor: tuple | None = None) -> float:
    """The learning rate of ``iteration``: constant, or (``anneal_lr``) falling linearly
    from ``anchor`` = (iteration, lr), by default (0, cfg.lr), to 0 after the last
    iteration (CleanRL ``ppo.py``)."""
    if not cfg.anneal_lr:
        return cfg.lr
    start, lr = anchor or (0, cfg.lr)
    return lr * (1 - (iteration - start) / (cfg.num_iterations - start))


def extend(state: PPOState, old_total: int) -> None:
    """total_steps changed on resume: the annealed learning rate falls on a straight line
    from the rate of the last iteration that ran (under the old total) to 0 at the new
    end, so it never jumps up; a run that had annealed to its end trains on at rates
    below its last one. With the total unchanged the line is the old schedule."""
    old = dataclasses.replace(state.cfg, total_steps=old_total)
    last = max(state.iteration - 1, 0)
    state.lr_anchor = (last, learning_rate(old, last, state.lr_anchor))


def build_state(cfg: PPOConfig, envs) -> PPOState:
    """Fresh policy, optimizer and normalisers for ``envs``, all seeded from ``cfg.seed``."""
    obs_dim, action_dim, discrete = check_spaces(cfg.env_id, envs.single_observation_space,
                                                 envs.single_action_space)
    nets = build_policy(cfg, obs_dim, action_dim, discrete)
    next_obs, _ = envs.reset(seed=cfg.seed)
    return PPOState(
        cfg=cfg, envs=envs, nets=nets, rng=np.random.default_rng(cfg.seed), next_obs=next_obs,
        episode_return=np.zeros(cfg.num_envs),
        episode_length=np.zeros(cfg.num_envs, dtype=np.int64),
        obs_norm=ObsNormalizer((obs_dim,), cfg.norm_obs), recent=collections.deque(maxlen=100),
        sample=observed(obs_dim, cfg.seed, next_obs),
        reward_scaler=RewardScaler(cfg.num_envs, cfg.gamma, cfg.norm_reward),
        next_done=np.zeros(cfg.num_envs, dtype=bool))


# --- one iteration ------------------------------------------------------------------

def collect_rollout(state: PPOState, buf: RolloutBuffer) -> list[tuple[float, int]]:
    """Step the envs num_steps times, filling ``buf``; returns finished episodes'
    (raw return, length)."""
    cfg, envs, policy = state.cfg, state.envs, state.nets
    space = envs.single_action_space
    low, high = (None, None) if policy.discrete else (space.low, space.high)
    finished = []
    for t in range(cfg.num_steps):
        obs = state.obs_norm(state.next_obs, update=True)
        buf.obs[t], buf.dones[t] = obs, state.next_done
        out, value = policy.forward(buf.obs[t])
        action, logp = sample(out, policy.log_std, state.rng)
        buf.actions[t], buf.logprobs[t], buf.values[t] = action, logp, value

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
            reward[cut] += cfg.gamma * policy.value(state.obs_norm(final))
        buf.rewards[t] = reward
        state.next_obs, state.next_done = next_obs, done
        state.sample.add(next_obs)
        state.global_step += cfg.num_envs
    state.recent.extend(finished)
    return finished


def update(state: PPOState, buf: RolloutBuffer, lr: float) -> dict:
    """``update_epochs`` passes of minibatch steps on the clipped PPO objective, each
    minibatch through the engine's one update path (``policy.update``)."""
    cfg, policy = state.cfg, state.nets
    policy.set_lr(lr)
    stats = collections.defaultdict(list)
    for epoch in range(cfg.update_epochs):
        # The train/* figures describe the last epoch (or every epoch with target_kl,
        # which needs the KL): computing them costs ~10 small ops per minibatch.
        record = bool(cfg.target_kl) or epoch == cfg.update_epochs - 1
        if record:
            stats.clear()
        for mb in buf.minibatches(cfg.batch_size, state.rng):
            losses = policy.update(mb, record)
            if record:
                record_losses(stats, losses, cfg.clip_coef)
        if cfg.target_kl and stats["approx_kl"][-1] > cfg.target_kl:
            break
    values, returns = buf.values.ravel(), buf.returns.ravel()
    var = float(returns.var())
    out = {f"train/{k}": float(np.mean(v)) for k, v in stats.items()}
    out["train/explained_variance"] = float("nan") if var == 0 else \
        1 - float((returns - values).var()) / var
    out["train/learning_rate"] = lr
    if not policy.discrete:
        out["train/std"] = float(np.exp(policy.log_std).mean())
    return out


# --- planning -----------------------------------------------------------------------

def plan_ppo(cfg: PPOConfig, room: PlanInputs) -> MemoryPlan:
    """The run's memory, priced by the engine's own policy object (built without
    touching its memory: `build_policy(..., initialise=False)`), so the plan counts
    exactly the update path that will run."""
    dims = (room.obs_dim, room.action_dim, room.discrete)
    policy = build_policy(cfg, *dims, initialise=False)
    items = [PlanItem("floor", room.floor_bytes, "measured anonymous memory after the imports"),
             *policy.memory_items(cfg.batch_size),
             PlanItem("rollout buffer", RolloutBuffer.nbytes(cfg.num_steps, cfg.num_envs, *dims)),
             sample_item(room.obs_dim)]
    del policy
    above = sum(item.nbytes for item in items[1:])
    items.append(PlanItem("allocator slack", int(above * 0.10), "10% of the above"))
    items.append(policy_class(cfg.engine).RUNTIME)
    return MemoryPlan(room.budget_bytes, tuple(items))


def what_fits(cfg: PPOConfig, room: PlanInputs) -> str:
    """A sentence naming settings that would fit: the lean optimizer instead of one
    that imports `torch._dynamo`, the largest rollout length, the largest hidden width."""
    def plan_with(**change):
        return plan_ppo(dataclasses.replace(cfg, **change), room)

    def rollout(n):  # rollout length n; the minibatch shrinks with it when it must
        return {"num_steps": n, "batch_size": min(cfg.batch_size, n * cfg.num_envs)}

    parts = []
    if cfg.optimizer == "torch-adam" and plan_with(optimizer="adam", engine="numpy").fits:
        parts.append("--optimizer adam (the same Adam, on the numpy engine)")
    steps = largest_fitting(lambda n: plan_with(**rollout(n)), 1, cfg.num_steps)
    if steps is not None and steps * cfg.num_envs > cfg.batch_size:
        per_env = cfg.batch_size // math.gcd(cfg.batch_size, cfg.num_envs)
        steps -= steps % per_env  # so that the minibatch divides the rollout (fits: smaller)
    if steps:
        parts.append(" ".join(f"--set {k}={v}" for k, v in rollout(steps).items()))
    width = largest_fitting(lambda w: plan_with(hidden=(w,) * len(cfg.hidden)), 1, max(cfg.hidden))
    if width is not None:
        parts.append(f"--set hidden={','.join([str(width)] * len(cfg.hidden))}")  # pastes unquoted
    if not parts:
        return "nothing fits: the measured floor and the smallest policy already exceed the budget"
    return "largest settings that fit: " + "; or ".join(parts)


def parameter_count(obs_dim: int, action_dim: int, discrete: bool, hidden) -> int:
    """Parameters of the actor-critic for ``hidden`` (without building it)."""
    count = 0
    for out_dim in (1, action_dim):
        sizes = [obs_dim, *hidden, out_dim]
        count += sum(n_out * n_in + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    return count + (0 if discrete else action_dim)


# --- the run driver's interface (`edgeag.train.Algorithm`) ---------------------------

def make_iteration(state: PPOState):
    """One PPO iteration at a time: the rollout buffer (allocated once), the annealed
    lr, `collect_rollout`, `compute_gae` from the value of the last observation, then
    `update`."""
    cfg = state.cfg
    obs_dim, action_dim, discrete = check_spaces(cfg.env_id, state.envs.single_observation_space,
                                                 state.envs.single_action_space)
    buf = RolloutBuffer(cfg.num_steps, cfg.num_envs, obs_dim, action_dim, discrete,
                        state.nets.dtype)

    def iteration():
        lr = learning_rate(cfg, state.iteration, state.lr_anchor)
        finished = collect_rollout(state, buf)
        next_value = state.nets.value(state.obs_norm(state.next_obs))
        adv, ret = compute_gae(buf.rewards, buf.values, buf.dones, next_value,
                               state.next_done.astype(buf.rewards.dtype), cfg.gamma,
                               cfg.gae_lambda)
        buf.advantages[...] = adv
        buf.returns[...] = ret
        return finished, update(state, buf, lr)

    return iteration


def prepare(cfg: PPOConfig, threads: int) -> str:
    """The engine's threads and warm-up, before the floor is measured."""
    return policy_class(cfg.engine).prepare(threads)


from edgeag.algos.base import Algorithm  # noqa: E402  (the interface, below the code it names)
from edgeag.algos.ppo import EXPORT  # noqa: E402

ALGORITHM = Algorithm(
    name="ppo", export=EXPORT, build_state=build_state, plan=plan_ppo, what_fits=what_fits,
    make_iteration=make_iteration, prepare=prepare,
    networks=lambda cfg, obs_space, action_space: build_policy(
        cfg, *check_spaces(cfg.env_id, obs_space, action_space)),
    extend=extend)
