"""What DQN and TD3 share: the training state and its checkpoint, the loop of one
iteration (a block of env steps, each stored in the replay buffer, with the gradient
steps that fall due), the optimizer step, target-network updates and the memory plan.

An algorithm supplies two functions: ``act(state, obs) -> env actions`` (after
``learning_starts``; before it actions are uniformly random, as in SB3) and
``learn(state, stats)`` (one gradient step, appending its figures to ``stats``).

Implementation details shared by both (sources: CleanRL ``dqn.py`` /
``td3_continuous_action.py``, Stable-Baselines3 ``off_policy_algorithm.py``):

- **time-limit truncation is not a terminal state**: the buffer stores the real final
  observation (``info["final_obs"]``, same-step autoreset) as ``next_obs`` and
  ``terminated`` only for true terminations, so the target bootstraps through a
  time-limit cut (SB3's ``handle_timeout_termination``);
- every random draw (random actions, epsilon, exploration and smoothing noise,
  minibatch indices) comes from one checkpointed `torch.Generator`, so a resumed run
  continues bit for bit;
- **deviation: no gradient clipping with AlphaGrad**, whose update runs inside
  ``backward()`` (`edgeag.optim.fuse_into_backward`): one gradient alive at a time.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeag.memory import RUNTIME_BYTES, MemoryPlan, PlanItem, largest_fitting, plan_training
from edgeag.optim import build_optimizer, fuse_into_backward, get_spec
from edgeag.train.buffers import ReplayBuffer
from edgeag.train.config import OffPolicyConfig, uses_fused_backward
from edgeag.train.envs import ObsNormalizer, check_spaces, env_state, set_env_state
from edgeag.train.networks import relu_mlp


@dataclass
class OffPolicyState:
    """Everything a checkpoint holds (the replay buffer in a file beside it)."""

    cfg: OffPolicyConfig
    envs: object
    nets: dict[str, nn.Module]
    """Online and target networks by name; ``nets[policy_name]`` acts."""
    optimizers: dict[str, torch.optim.Optimizer]
    policy_name: str
    buffer: ReplayBuffer
    generator: torch.Generator
    next_obs: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray
    recent: collections.deque
    obs_norm: ObsNormalizer
    """Disabled (observations are used raw, as in CleanRL and the RL Zoo); evaluation
    takes one."""
    global_step: int = 0
    iteration: int = 0
    n_updates: int = 0
    """Gradient steps taken (TD3 updates its actor every ``policy_frequency``-th)."""

    @property
    def policy(self) -> nn.Module:
        return self.nets[self.policy_name]

    def replay_file(self) -> str:
        return f"replay-{self.global_step}.npy"

    def checkpoint(self) -> dict:
        return {
            "config": self.cfg.as_dict(), "algo": self.cfg.algo, "arch": self.policy.arch,
            "policy": self.policy.state_dict(),
            "nets": {name: net.state_dict() for name, net in self.nets.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "envs": [env_state(e) for e in self.envs.envs],
            "next_obs": self.next_obs.copy(), "episode_return": self.episode_return.copy(),
            "episode_length": self.episode_length.copy(),
            "recent": [list(x) for x in self.recent],
            "global_step": self.global_step, "iteration": self.iteration,
            "n_updates": self.n_updates,
            "replay": {**self.buffer.state(), "file": self.replay_file()},
        }

    def checkpoint_files(self) -> dict:
        return {self.replay_file(): self.buffer.write}

    def restore(self, ckpt: dict) -> None:
        for name, net in self.nets.items():
            net.load_state_dict(ckpt["nets"][name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        self.generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        for env, layers in zip(self.envs.envs, ckpt["envs"]):
            set_env_state(env, layers)
        self.next_obs = ckpt["next_obs"]
        self.episode_return, self.episode_length = ckpt["episode_return"], ckpt["episode_length"]
        self.recent.extend(tuple(x) for x in ckpt["recent"])
        self.global_step, self.iteration = ckpt["global_step"], ckpt["iteration"]
        self.n_updates = ckpt["n_updates"]
        replay = ckpt["replay"]
        self.buffer.read(Path(ckpt["checkpoint_dir"]) / replay["file"], replay)


def build_state(cfg: OffPolicyConfig, envs, nets: dict[str, nn.Module],
                trained: dict[str, list[nn.Module]], policy_name: str) -> OffPolicyState:
    """The state around ``nets`` (built after ``torch.manual_seed(cfg.seed)``): one
    optimizer per entry of ``trained`` (name -> the modules it updates; with AlphaGrad
    each updates inside backward), an empty replay buffer, envs reset with the seed."""
    obs_dim, action_dim, discrete = check_spaces(cfg.env_id, envs.single_observation_space,
                                                 envs.single_action_space)
    optimizers = {}
    for name, modules in trained.items():
        params = [p for m in modules for p in m.parameters()]
        opt = build_optimizer(cfg.optimizer, params, lr=cfg.lr, alpha=cfg.alpha,
                              momentum=cfg.momentum, eps=cfg.eps)
        if uses_fused_backward(cfg):
            fuse_into_backward(params, opt)
        optimizers[name] = opt
    next_obs, _ = envs.reset(seed=cfg.seed)
    return OffPolicyState(
        cfg, envs, nets, optimizers, policy_name,
        ReplayBuffer(cfg.buffer_size, obs_dim, action_dim, discrete),
        torch.Generator().manual_seed(cfg.seed), next_obs, np.zeros(cfg.num_envs),
        np.zeros(cfg.num_envs, dtype=np.int64), collections.deque(maxlen=100),
        ObsNormalizer((obs_dim,), enabled=False))


def target_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of ``net`` (a target network)."""
    import copy
    target = copy.deepcopy(net)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- tau * online + (1 - tau) * target`` (tau = 1: a copy)."""
    for t, o in zip(target.parameters(), online.parameters()):
        if tau == 1.0:
            t.copy_(o)
        else:
            t.lerp_(o, tau)


def optimize(state: OffPolicyState, name: str, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss``. With AlphaGrad the step happens inside
    ``backward()`` (each tensor as soon as its gradient is complete); others clip at
    ``max_grad_norm`` when set, then step."""
    opt = state.optimizers[name]
    if uses_fused_backward(state.cfg):
        loss.backward()
        return
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if state.cfg.max_grad_norm > 0 and state.cfg.optimizer != "alphagrad":  # bounded already
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                       state.cfg.max_grad_norm)
    opt.step()


def due(before: int, after: int, start: int, every: int) -> int:
    """How many multiples of ``every`` past ``start`` the step count crossed going from
    ``before`` to ``after``: rounds of updates (or target updates) now due."""
    return max(0, after - start) // every - max(0, before - start) // every


def random_actions(state: OffPolicyState) -> np.ndarray:
    space, n = state.envs.single_action_space, state.cfg.num_envs
    if hasattr(space, "n"):
        return torch.randint(int(space.n), (n,), generator=state.generator).numpy()
    u = torch.rand((n, *space.shape), generator=state.generator).numpy()
    return (space.low + (space.high - space.low) * u).astype(np.float32)


def optimizer_state_bytes(state: OffPolicyState) -> int:
    from edgeag.optim import state_bytes
    return sum(state_bytes(o) for o in state.optimizers.values())


def parameter_count(state: OffPolicyState, names: tuple[str, ...]) -> int:
    return sum(p.numel() for name in names for p in state.nets[name].parameters())


def deterministic(state: OffPolicyState):
    """The acting network's greedy (DQN) or deterministic (TD3) action, numpy in and out."""
    policy = state.policy

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return policy.deterministic(torch.as_tensor(obs, dtype=torch.float32)).numpy()
    return act


def run_iteration(state: OffPolicyState, act, learn, after_step=None) -> tuple[list, dict]:
    """``iteration_steps`` env steps (fewer in a last iteration that reaches the
    total), each stored in the replay buffer, with the
    gradient steps that fall due after ``learning_starts``; ``after_step(state,
    step_before)`` runs after every env step's updates (DQN's target updates)."""
    cfg, envs = state.cfg, state.envs
    finished: list[tuple[float, int]] = []
    stats: dict[str, list[float]] = collections.defaultdict(list)
    remaining = max(cfg.num_envs, cfg.planned_steps - state.global_step)
    for _ in range(min(cfg.iteration_steps, remaining) // cfg.num_envs):
        obs = state.next_obs
        if state.global_step < cfg.learning_starts:
            actions = random_actions(state)
        else:
            with torch.no_grad():
                actions = act(state, torch.from_numpy(obs.astype(np.float32, copy=False)))
        next_obs, reward, terminated, truncated, info = envs.step(actions)
        real_next = next_obs
        done = terminated | truncated
        state.episode_return += reward
        state.episode_length += 1
        if done.any():
            real_next = next_obs.copy()
            for i in np.flatnonzero(done):
                real_next[i] = info["final_obs"][i]
                finished.append((float(state.episode_return[i]), int(state.episode_length[i])))
                state.episode_return[i], state.episode_length[i] = 0.0, 0
        state.buffer.add(obs, actions, reward, real_next, terminated)
        state.next_obs = next_obs
        before, state.global_step = state.global_step, state.global_step + cfg.num_envs
        for _ in range(due(before, state.global_step, cfg.learning_starts,
                           cfg.train_frequency) * cfg.gradient_steps):
            learn(state, stats)
            state.n_updates += 1
        if after_step is not None:
            after_step(state, before)
    state.recent.extend(finished)
    out = {f"train/{k}": float(np.mean(v)) for k, v in stats.items()}
    out["train/n_updates"] = state.n_updates
    out["train/learning_rate"] = cfg.lr
    return finished, out


def make_iteration(act, learn, after_step=None):
    """`edgeag.train.Algorithm.make_iteration` for an off-policy algorithm."""
    return lambda state: (lambda: run_iteration(state, act, learn, after_step))


# --- planning -----------------------------------------------------------------------

def mlp_params(sizes: list[int]) -> list[torch.Tensor]:
    """Parameters shaped like ``relu_mlp(sizes)``'s, on the meta device (no memory)."""
    with torch.device("meta"):
        return list(relu_mlp(sizes).parameters())


def mlp_activation_bytes(batch: int, sizes: list[int], backward: bool = True) -> int:
    """Float32 activations of one batch through a ReLU MLP: the input, each hidden
    layer's linear and ReLU outputs, the output; as many again for their gradients."""
    per_row = sizes[0] + 2 * sum(sizes[1:-1]) + sizes[-1]
    return 4 * batch * per_row * (2 if backward else 1)


def plan_offpolicy(cfg: OffPolicyConfig, budget_bytes: int, floor_bytes: int,
                   trained: list[list[int]], targets: list[list[int]], obs_dim: int,
                   action_dim: int, discrete: bool, activation_bytes: int) -> MemoryPlan:
    """The plan of an off-policy run: ``trained`` and ``targets`` are the layer sizes
    of the trained and the target networks; the replay buffer at full capacity."""
    params = [p for sizes in trained for p in mlp_params(sizes)]
    target_bytes = 4 * sum(p.numel() for sizes in targets for p in mlp_params(sizes))
    batch_bytes = ReplayBuffer.nbytes(cfg.batch_size, obs_dim, action_dim, discrete)
    return plan_training(
        budget_bytes=budget_bytes, floor_bytes=floor_bytes, params=params,
        optimizer_spec=get_spec(cfg.optimizer), momentum=cfg.momentum,
        fused_backward=uses_fused_backward(cfg),
        buffer_bytes=ReplayBuffer.nbytes(cfg.buffer_size, obs_dim, action_dim, discrete),
        buffer_name="replay buffer", activation_bytes=activation_bytes + batch_bytes,
        runtime_bytes=RUNTIME_BYTES,
        extra_items=(PlanItem("target networks", target_bytes, "copies, no gradients"),))


def largest_buffer(plan, cfg: OffPolicyConfig, budget_bytes: int, floor_bytes: int,
                   obs_dim: int, action_dim: int, discrete: bool) -> int | None:
    """The largest ``buffer_size`` (at least one minibatch) whose ``plan`` fits."""
    return largest_fitting(
        lambda n: plan(dataclasses.replace(cfg, buffer_size=n), budget_bytes, floor_bytes,
                       obs_dim, action_dim, discrete), cfg.batch_size, cfg.buffer_size)


def what_fits(plan, cfg: OffPolicyConfig, budget_bytes: int, floor_bytes: int, obs_dim: int,
              action_dim: int, discrete: bool) -> str:
    """A sentence naming settings that would fit: the lean optimizer instead of one
    that imports `torch._dynamo`, the largest replay buffer, the largest hidden width."""
    def fits(**change):
        return plan(dataclasses.replace(cfg, **change), budget_bytes, floor_bytes, obs_dim,
                    action_dim, discrete).fits

    parts = []
    if get_spec(cfg.optimizer).imports_dynamo and fits(optimizer="adam"):
        parts.append("--optimizer adam (the same Adam without the torch._dynamo import)")
    size = largest_buffer(plan, cfg, budget_bytes, floor_bytes, obs_dim, action_dim, discrete)
    if size is not None:
        parts.append(f"--set buffer_size={size} (or --shrink-buffer)")
    width = largest_fitting(lambda w: plan(dataclasses.replace(cfg, hidden=(w,) * len(cfg.hidden)),
                                           budget_bytes, floor_bytes, obs_dim, action_dim,
                                           discrete), 1, max(cfg.hidden))
    if width is not None:
        parts.append(f"--set hidden=[{', '.join([str(width)] * len(cfg.hidden))}]")
    if not parts:
        return "nothing fits: the measured floor and the smallest policy already exceed the budget"
    return "largest settings that fit: " + "; or ".join(parts)
