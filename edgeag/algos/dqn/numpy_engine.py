"""DQN's Q-network on the numpy engine (`edgeag.engine`): what `edgeag train --algo dqn`
runs by default, and what a device without torch runs.

The Q-network is a ReLU MLP named as `edgeag.algos.dqn.torch_engine.QNetwork`'s ``state_dict``
(``net.0.weight``, ...), initialised as torch initialises ``nn.Linear`` (from the
run's seed, with numpy's generator), in one flat buffer with its target copy
(`edgeag.algos.offpolicy.numpy_engine.NetGroup`). One update: forward the minibatch, the TD
loss's gradient with respect to Q(s, a) by hand (`edgeag.algos.dqn.algorithm.td_loss`: only the
taken action's Q-value gets one), `MLP.backward` to the group's update path.
"""

from __future__ import annotations

import numpy as np

from edgeag.algos.dqn.algorithm import activation_bytes, td_loss
from edgeag.algos.dqn.config import DQNConfig
from edgeag.algos.numpy_runtime import RUNTIME, prepare
from edgeag.algos.offpolicy.numpy_engine import NetGroup, group_items
from edgeag.engine import MLP, init_linear_default


class NumpyQNetworks:
    """The online Q-network, its target, its optimizer and update path."""

    RUNTIME = RUNTIME
    prepare = staticmethod(prepare)

    def __init__(self, cfg: DQNConfig, obs_dim: int, n_actions: int, *, dtype=np.float32,
                 initialise: bool = True):
        self.cfg, self.dtype = cfg, np.dtype(dtype)
        self.arch = {"kind": "q", "obs_dim": obs_dim, "action_dim": n_actions,
                     "discrete": True, "hidden": list(cfg.hidden)}
        self.sizes = [obs_dim, *cfg.hidden, n_actions]
        self.q = MLP(self.sizes, activation="relu", prefix="q.net")
        self.group = NetGroup(cfg, {"q": self.q}, self.dtype)
        if initialise:
            init_linear_default(self.group.params, self.q, np.random.default_rng(cfg.seed))
            self.group.sync_target()

    @property
    def parameter_count(self) -> int:
        return self.group.layout.count

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return self.q.forward(self.group.params, obs)[-1]

    def target_q_values(self, obs: np.ndarray) -> np.ndarray:
        return self.q.forward(self.group.target, obs)[-1]

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        """The greedy action."""
        return self.q_values(obs).argmax(-1)

    def update(self, obs: np.ndarray, actions: np.ndarray, td_target: np.ndarray
               ) -> tuple[float, float]:
        """One gradient step on the TD loss; returns (loss, mean Q(s, a))."""
        acts = self.q.forward(self.group.params, obs)
        q = acts[-1]
        rows = np.arange(q.shape[0])
        q_taken = q[rows, actions]
        loss, grad = td_loss(self.cfg.td_loss, q_taken - td_target.astype(self.dtype))
        grad_out = np.zeros_like(q)
        grad_out[rows, actions] = grad
        self.group.backward(self.q, acts, grad_out)
        self.group.step()
        return loss, float(q_taken.mean())

    def update_target(self, tau: float) -> None:
        self.group.soft_update(tau)

    def optimizer_state_bytes(self) -> int:
        return self.group.optimizer.state_bytes()

    def state_dict(self) -> dict:
        """Online and target arrays (views: the checkpoint is written from them at once)
        under torch's names, and the optimizer's state."""
        nets = self.group.arrays(self.group.params)
        nets["q_target"] = self.group.arrays(self.group.target)["q"]
        return {"policy": nets["q"], "nets": nets,
                "optimizers": {"q": self.group.optimizer.state_dict(copy=False)}}

    def load_state_dict(self, ckpt: dict) -> None:
        self.group.load_arrays(self.group.params, {"q": ckpt["nets"]["q"]})
        self.group.load_arrays(self.group.target, {"q": ckpt["nets"]["q_target"]})
        self.group.optimizer.load_state_dict(ckpt["optimizers"]["q"])

    def memory_items(self, batch: int) -> list:
        return group_items([self.group], self.cfg, batch,
                           activation_bytes(self.cfg, self.sizes, self.dtype.itemsize),
                           "one minibatch: online forward + backward, target forward")
