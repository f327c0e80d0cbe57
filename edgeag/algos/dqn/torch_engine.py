"""DQN's Q-network on torch: the textbook path and the numpy engine's reference.

The update is CleanRL's: ``Q(s).gather(a)``, the TD loss (`F.mse_loss`, or
`F.smooth_l1_loss` for Huber), ``loss.backward()`` and an `edgeag.optim` optimizer
(`edgeag.algos.offpolicy.torch_engine.optimize`). The TD target comes from the algorithm's
numpy code (`edgeag.algos.dqn.algorithm.learn`), so both engines see the same minibatches.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgeag.algos.dqn.algorithm import activation_bytes
from edgeag.algos.dqn.config import DQNConfig
from edgeag.algos.offpolicy.torch_engine import (
    DTYPES,
    RUNTIME,
    as_tensor,
    make_optimizer,
    optimize,
    optimizer_state_bytes,
    prepare,
    soft_update,
    target_copy,
    torch_items,
)
from edgeag.algos.torch_runtime import relu_mlp


class QNetwork(nn.Module):
    """Q-values of every discrete action (DQN)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...] = (120, 84)):
        super().__init__()
        self.arch = {"kind": "q", "obs_dim": obs_dim, "action_dim": action_dim,
                     "discrete": True, "hidden": list(hidden)}
        self.discrete = True
        self.net = relu_mlp([obs_dim, *hidden, action_dim])

    @classmethod
    def from_arch(cls, arch: dict) -> QNetwork:
        return cls(arch["obs_dim"], arch["action_dim"], tuple(arch["hidden"]))

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs)

    def deterministic(self, obs: Tensor) -> Tensor:
        """The greedy action."""
        return self.net(obs).argmax(-1)


class TorchQNetworks:
    """`QNetwork`, its target copy, its `edgeag.optim` optimizer and the textbook update."""

    RUNTIME = RUNTIME
    prepare = staticmethod(prepare)

    def __init__(self, cfg: DQNConfig, obs_dim: int, n_actions: int, *, dtype=np.float32,
                 initialise: bool = True):
        self.cfg, self.dtype = cfg, np.dtype(dtype)
        self.torch_dtype = DTYPES[self.dtype]
        self.arch = {"kind": "q", "obs_dim": obs_dim, "action_dim": n_actions,
                     "discrete": True, "hidden": list(cfg.hidden)}
        self.sizes = [obs_dim, *cfg.hidden, n_actions]
        if not initialise:  # planning: shapes only
            return
        torch.manual_seed(cfg.seed)
        self.q = QNetwork(obs_dim, n_actions, cfg.hidden).to(self.torch_dtype)
        self.q_target = target_copy(self.q)
        self.optimizer = make_optimizer(cfg, [self.q])

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.q.parameters())

    def _tensor(self, x):
        return as_tensor(x, self.torch_dtype)

    @torch.no_grad()
    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return self.q(self._tensor(obs)).numpy()

    @torch.no_grad()
    def target_q_values(self, obs: np.ndarray) -> np.ndarray:
        return self.q_target(self._tensor(obs)).numpy()

    @torch.no_grad()
    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        return self.q.deterministic(self._tensor(obs)).numpy()

    def update(self, obs: np.ndarray, actions: np.ndarray, td_target: np.ndarray
               ) -> tuple[float, float]:
        q_taken = self.q(self._tensor(obs)).gather(
            -1, self._tensor(actions).unsqueeze(-1)).squeeze(-1)
        target = self._tensor(td_target)
        loss = F.mse_loss(q_taken, target) if self.cfg.td_loss == "mse" else \
            F.smooth_l1_loss(q_taken, target)
        optimize(self.cfg, self.optimizer, loss)
        return loss.item(), q_taken.mean().item()

    def update_target(self, tau: float) -> None:
        soft_update(self.q_target, self.q, tau)

    def optimizer_state_bytes(self) -> int:
        return optimizer_state_bytes([self.optimizer])

    def state_dict(self) -> dict:
        nets = {"q": self.q.state_dict(), "q_target": self.q_target.state_dict()}
        return {"policy": nets["q"], "nets": nets,
                "optimizers": {"q": self.optimizer.state_dict()}}

    def load_state_dict(self, ckpt: dict) -> None:
        for name, net in (("q", self.q), ("q_target", self.q_target)):
            net.load_state_dict({k: torch.as_tensor(v) for k, v in ckpt["nets"][name].items()})
        self.optimizer.load_state_dict(ckpt["optimizers"]["q"])

    def memory_items(self, batch: int) -> list:
        return torch_items(self.cfg, [self.sizes], [self.sizes], self.dtype.itemsize,
                           activation_bytes(self.cfg, self.sizes, self.dtype.itemsize))
