"""TD3's actor and twin critics on the numpy engine (`edgeag.engine`): what `edgeag train
--algo td3` runs by default, and what a device without torch runs.

Two `edgeag.algos.offpolicy.numpy_engine.NetGroup`\\ s, each with its optimizer and target
copy: the actor (a ReLU MLP with an output tanh, scaled to the action bounds), and
both critics (ReLU MLPs on ``[obs, action]``) in one buffer, as the paper's code puts
both under one optimizer. Arrays are named as torch's ``DeterministicActor`` /
``QCritic`` ``state_dict`` keys (``net.0.weight``, ...).

- critic update: both critics forward, the MSE gradients ``2 (Q - target) / n`` by
  hand, `MLP.backward` of each to the critics' update path, one step;
- actor update: the actor forward, the action into critic 1, then `MLP.backward`
  through critic 1 for d loss / d input only (the critics' parameters get no
  gradient), the action columns times the action scale into the actor's backward
  (whose output tanh `MLP` differentiates), one step.
"""

from __future__ import annotations

import numpy as np

from edgeag.algos.numpy_runtime import RUNTIME, prepare
from edgeag.algos.offpolicy.numpy_engine import NetGroup, TwinCritics, group_items
from edgeag.algos.td3.algorithm import TD3Shapes, activation_bytes
from edgeag.algos.td3.config import TD3Config
from edgeag.engine import MLP, init_linear_default


class NumpyTD3Networks(TwinCritics, TD3Shapes):
    """Actor, twin critics (`TwinCritics`: the critic loss ``mse(Q1, y) + mse(Q2, y)``),
    their targets, optimizers and update paths."""

    RUNTIME = RUNTIME
    prepare = staticmethod(prepare)

    def __init__(self, cfg: TD3Config, obs_dim: int, action_dim: int, low, high, *,
                 dtype=np.float32, initialise: bool = True):
        self.cfg, self.dtype, self.obs_dim = cfg, np.dtype(dtype), obs_dim
        self.describe(cfg, obs_dim, action_dim, low, high)
        self.actor_mlp = MLP(self.actor_sizes, "relu", output="tanh", prefix="actor.net")
        self.qf1 = MLP(self.critic_sizes, "relu", prefix="qf1.net")
        self.qf2 = MLP(self.critic_sizes, "relu", prefix="qf2.net")
        self.actor = NetGroup(cfg, {"actor": self.actor_mlp}, self.dtype)
        self.critic = NetGroup(cfg, {"qf1": self.qf1, "qf2": self.qf2}, self.dtype)
        if initialise:
            rng = np.random.default_rng(cfg.seed)
            init_linear_default(self.actor.params, self.actor_mlp, rng)
            init_linear_default(self.critic.params, self.qf1, rng)
            init_linear_default(self.critic.params, self.qf2, rng)
            self.actor.sync_target()
            self.critic.sync_target()

    @property
    def parameter_count(self) -> int:
        return self.actor.layout.count + self.critic.layout.count

    def _action(self, params, obs: np.ndarray) -> np.ndarray:
        return self.actor_mlp.forward(params, obs)[-1] * self.action_scale + self.action_bias

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        """The actor's action, inside the bounds."""
        return self._action(self.actor.params, obs)

    def target_action(self, obs: np.ndarray) -> np.ndarray:
        return self._action(self.actor.target, obs)

    def update_actor(self, obs) -> float:
        """One actor step on ``-mean(Q1(s, actor(s)))``; returns the loss."""
        acts = self.actor_mlp.forward(self.actor.params, obs)
        action = acts[-1] * self.action_scale + self.action_bias
        x = self._critic_input(acts[0], action)
        acts_q = self.qf1.forward(self.critic.params, x)
        n = x.shape[0]
        grad_x = self.qf1.backward(self.critic.params, acts_q,
                                   np.full((n, 1), -1.0 / n, self.dtype), input_grad=True)
        self.actor.backward(self.actor_mlp, acts, grad_x[:, self.obs_dim:] * self.action_scale)
        self.actor.step()
        return -float(acts_q[-1].mean())

    def update_targets(self, tau: float) -> None:
        self.actor.soft_update(tau)
        self.critic.soft_update(tau)

    def optimizer_state_bytes(self) -> int:
        return self.actor.optimizer.state_bytes() + self.critic.optimizer.state_bytes()

    def state_dict(self) -> dict:
        """Online and target arrays (views) under torch's names, and both optimizers'
        state."""
        nets = {**self.actor.arrays(self.actor.params), **self.critic.arrays(self.critic.params)}
        for group in (self.actor, self.critic):
            nets.update({f"{name}_target": arrays
                         for name, arrays in group.arrays(group.target).items()})
        return {"policy": nets["actor"], "nets": nets,
                "optimizers": {"actor": self.actor.optimizer.state_dict(copy=False),
                               "critic": self.critic.optimizer.state_dict(copy=False)}}

    def load_state_dict(self, ckpt: dict) -> None:
        nets = ckpt["nets"]
        for group, names in ((self.actor, ("actor",)), (self.critic, ("qf1", "qf2"))):
            group.load_arrays(group.params, {n: nets[n] for n in names})
            group.load_arrays(group.target, {n: nets[f"{n}_target"] for n in names})
        self.actor.optimizer.load_state_dict(ckpt["optimizers"]["actor"])
        self.critic.optimizer.load_state_dict(ckpt["optimizers"]["critic"])

    def memory_items(self, batch: int) -> list:
        return group_items([self.actor, self.critic], self.cfg, batch,
                           activation_bytes(self.cfg, self.actor_sizes, self.critic_sizes,
                                            self.dtype.itemsize),
                           "the larger of the critic and the actor step")
