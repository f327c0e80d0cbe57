"""What DQN and TD3 share: the training state and its checkpoint, the loop of one
iteration (a block of env steps, each stored in the replay buffer, with the gradient
steps that fall due), and the memory plan.

Everything here is numpy, written once for both engines: the loop, the replay buffer,
every random draw. The networks and their updates come from an engine object
(``state.nets``), chosen by ``cfg.engine``:

- ``numpy`` (`edgeag.algos.dqn.numpy_engine`, `edgeag.algos.td3.numpy_engine`, on `edgeag.engine`):
  the default for the optimizers it runs; no torch on the training path;
- ``torch`` (`edgeag.algos.dqn.torch_engine`, `edgeag.algos.td3.torch_engine`): the textbook
  autograd path with `edgeag.optim`, and the reference the numpy engine is tested
  against in float64.

An algorithm supplies two functions: ``act(state, obs) -> env actions`` (after
``learning_starts``; before it actions are uniformly random, as in SB3) and
``learn(state, stats)`` (one gradient step, appending its figures to ``stats``).

Implementation details, with their sources and deviations: docs/algorithms/dqn.md and td3.md.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeag.algos.base import PlanInputs
from edgeag.algos.loop_state import LoopState, due
from edgeag.algos.offpolicy.buffers import ReplayBuffer
from edgeag.algos.offpolicy.config import OffPolicyConfig
from edgeag.memory import MemoryPlan, PlanItem, largest_fitting
from edgeag.train.envs import ObsNormalizer, check_spaces
from edgeag.train.observations import observed, sample_item


@dataclass(kw_only=True)
class OffPolicyState(LoopState):
    """DQN's and TD3's loop state: the shared one (`LoopState`; observations are used
    raw, as in CleanRL and the RL Zoo: ``obs_norm`` is disabled), the replay buffer (in a
    file beside the checkpoint) and the update counters."""

    cfg: OffPolicyConfig
    buffer: ReplayBuffer
    n_updates: int = 0
    """Gradient steps taken (TD3 updates its actor every ``policy_frequency``-th)."""
    schedule_total: int | None = None
    """The total_steps DQN's epsilon schedule spans (None: ``cfg.total_steps``); kept
    when a resumed run's total changes (`edgeag.algos.dqn.algorithm.extend`)."""

    def replay_file(self) -> str:
        return f"replay-{self.global_step}.npy"

    def checkpoint_files(self) -> dict:
        return {self.replay_file(): self.buffer.write}

    def _checkpoint_extra(self) -> dict:
        return {"n_updates": self.n_updates, "schedule_total": self.schedule_total,
                "replay": {**self.buffer.state(), "file": self.replay_file()}}

    def _restore_extra(self, ckpt: dict) -> None:
        self.n_updates = ckpt["n_updates"]
        self.schedule_total = ckpt.get("schedule_total")
        replay = ckpt["replay"]
        self.buffer.read(Path(ckpt["checkpoint_dir"]) / replay["file"], replay)


def build_state(cfg: OffPolicyConfig, envs, make_nets) -> OffPolicyState:
    """The state around the engine's freshly initialised networks, ``make_nets(obs_dim,
    action_dim, action_space)`` once the spaces are checked: an empty replay buffer, the
    run's generator, envs reset with the seed."""
    obs_dim, action_dim, discrete = check_spaces(cfg.env_id, envs.single_observation_space,
                                                 envs.single_action_space)
    nets = make_nets(obs_dim, action_dim, envs.single_action_space)
    next_obs, _ = envs.reset(seed=cfg.seed)
    return OffPolicyState(
        cfg=cfg, envs=envs, nets=nets, rng=np.random.default_rng(cfg.seed), next_obs=next_obs,
        episode_return=np.zeros(cfg.num_envs),
        episode_length=np.zeros(cfg.num_envs, dtype=np.int64),
        obs_norm=ObsNormalizer((obs_dim,), enabled=False), recent=collections.deque(maxlen=100),
        sample=observed(obs_dim, cfg.seed, next_obs),
        buffer=ReplayBuffer(cfg.buffer_size, obs_dim, action_dim, discrete))


def random_actions(state: OffPolicyState) -> np.ndarray:
    space, n = state.envs.single_action_space, state.cfg.num_envs
    if hasattr(space, "n"):
        return state.rng.integers(int(space.n), size=n)
    u = state.rng.random((n, *space.shape), dtype=np.float32)
    return (space.low + (space.high - space.low) * u).astype(np.float32)


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
            actions = act(state, obs.astype(np.float32, copy=False))
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
        state.sample.add(next_obs)
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

def mlp_param_count(sizes: list[int]) -> int:
    """Values of a linear-layer stack of ``sizes`` (weights and biases)."""
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def mlp_activation_bytes(batch: int, sizes: list[int], backward: bool = True,
                         itemsize: int = 4) -> int:
    """Activations of one batch through a ReLU MLP: the input, each hidden layer's
    linear and ReLU outputs, the output; as many again for their gradients."""
    per_row = sizes[0] + 2 * sum(sizes[1:-1]) + sizes[-1]
    return itemsize * batch * per_row * (2 if backward else 1)


def plan_offpolicy(cfg: OffPolicyConfig, room: PlanInputs, nets) -> MemoryPlan:
    """The plan of an off-policy run, priced by the engine's own networks object (built
    without touching its memory): what it holds (``nets.memory_items``), the replay
    buffer at full capacity and one sampled minibatch."""
    dims = (room.obs_dim, room.action_dim, room.discrete)
    items = [PlanItem("floor", room.floor_bytes, "measured anonymous memory after the imports"),
             *nets.memory_items(cfg.batch_size),
             PlanItem("replay buffer", ReplayBuffer.nbytes(cfg.buffer_size, *dims)),
             PlanItem("minibatch", ReplayBuffer.nbytes(cfg.batch_size, *dims),
                      "sampled transitions"),
             sample_item(room.obs_dim)]
    above = sum(item.nbytes for item in items[1:])
    items.append(PlanItem("allocator slack", int(above * 0.10), "10% of the above"))
    items.append(nets.RUNTIME)
    return MemoryPlan(room.budget_bytes, tuple(items))


def largest_buffer(plan, cfg: OffPolicyConfig, room: PlanInputs) -> int | None:
    """The largest ``buffer_size`` (at least one minibatch) whose ``plan`` fits."""
    return largest_fitting(lambda n: plan(dataclasses.replace(cfg, buffer_size=n), room),
                           cfg.batch_size, cfg.buffer_size)


def what_fits(plan, cfg: OffPolicyConfig, room: PlanInputs) -> str:
    """A sentence naming settings that would fit: the numpy engine's Adam instead of
    `torch.optim`'s, the largest replay buffer, the largest hidden width."""
    def fits(**change):
        return plan(dataclasses.replace(cfg, **change), room).fits

    parts = []
    if cfg.optimizer == "torch-adam" and fits(optimizer="adam", engine="numpy"):
        parts.append("--optimizer adam (the same Adam, on the numpy engine)")
    size = largest_buffer(plan, cfg, room)
    if size is not None:
        parts.append(f"--set buffer_size={size} (or --shrink-buffer)")
    width = largest_fitting(lambda w: plan(dataclasses.replace(cfg, hidden=(w,) * len(cfg.hidden)),
                                           room), 1, max(cfg.hidden))
    if width is not None:
        parts.append(f"--set hidden={','.join([str(width)] * len(cfg.hidden))}")  # pastes unquoted
    if not parts:
        return "nothing fits: the measured floor and the smallest policy already exceed the budget"
    return "largest settings that fit: " + "; or ".join(parts)
