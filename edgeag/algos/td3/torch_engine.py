"""TD3's actor and twin critics on torch: the textbook path and the numpy engine's
reference.

The updates are CleanRL's: ``mse_loss(Q1, y) + mse_loss(Q2, y)`` through autograd for
the critics (one optimizer), ``-Q1(s, actor(s)).mean()`` for the actor with the critics'
parameters frozen (no critic gradient is computed, so AlphaGrad's in-backward update of
the critics cannot fire), then `edgeag.algos.offpolicy.torch_engine.optimize`. Targets and
noise come from the algorithm's numpy code (`edgeag.algos.td3.algorithm.learn`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from edgeag.algos.offpolicy.torch_engine import (
    DTYPES,
    RUNTIME,
    TorchTwinCritics,
    make_optimizer,
    optimize,
    optimizer_state_bytes,
    prepare,
    soft_update,
    target_copy,
    torch_items,
)
from edgeag.algos.td3.algorithm import TD3Shapes, activation_bytes
from edgeag.algos.td3.config import TD3Config
from edgeag.algos.torch_runtime import relu_mlp


class DeterministicActor(nn.Module):
    """``low + (high - low) * (tanh(mlp(obs)) + 1) / 2``: a deterministic policy inside
    the action bounds (TD3; CleanRL's ``action_scale`` / ``action_bias``)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], low, high):
        super().__init__()
        low = torch.as_tensor(low, dtype=torch.float32)
        high = torch.as_tensor(high, dtype=torch.float32)
        self.arch = {"kind": "deterministic_actor", "obs_dim": obs_dim,
                     "action_dim": action_dim, "discrete": False, "hidden": list(hidden),
                     "low": low.tolist(), "high": high.tolist()}
        self.discrete = False
        self.net = relu_mlp([obs_dim, *hidden, action_dim])
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    @classmethod
    def from_arch(cls, arch: dict) -> DeterministicActor:
        return cls(arch["obs_dim"], arch["action_dim"], tuple(arch["hidden"]), arch["low"],
                   arch["high"])

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.net(obs)) * self.action_scale + self.action_bias

    def deterministic(self, obs: Tensor) -> Tensor:
        return self(obs)


class QCritic(nn.Module):
    """Q(obs, action) for continuous actions (one of TD3's twin critics)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = relu_mlp([obs_dim + action_dim, *hidden, 1])

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        return self.net(torch.cat([obs, action], -1)).squeeze(-1)


NETS = ("actor", "qf1", "qf2")


class TorchTD3Networks(TorchTwinCritics, TD3Shapes):
    """`DeterministicActor`, two `QCritic`\\ s (`TorchTwinCritics`), their targets and
    `edgeag.optim` optimizers."""

    RUNTIME = RUNTIME
    prepare = staticmethod(prepare)

    def __init__(self, cfg: TD3Config, obs_dim: int, action_dim: int, low, high, *,
                 dtype=np.float32, initialise: bool = True):
        self.cfg, self.dtype = cfg, np.dtype(dtype)
        self.torch_dtype = DTYPES[self.dtype]
        self.describe(cfg, obs_dim, action_dim, low, high)
        if not initialise:  # planning: shapes only
            return
        torch.manual_seed(cfg.seed)
        self.nets = {"actor": DeterministicActor(obs_dim, action_dim, cfg.hidden, low, high),
                     "qf1": QCritic(obs_dim, action_dim, cfg.hidden),
                     "qf2": QCritic(obs_dim, action_dim, cfg.hidden)}
        for name in NETS:
            self.nets[name] = self.nets[name].to(self.torch_dtype)
            self.nets[f"{name}_target"] = target_copy(self.nets[name])
        self.optimizers = {"actor": make_optimizer(cfg, [self.nets["actor"]]),
                           "critic": make_optimizer(cfg, [self.nets["qf1"], self.nets["qf2"]])}

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for name in NETS for p in self.nets[name].parameters())

    @torch.no_grad()
    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        return self.nets["actor"](self._tensor(obs)).numpy()

    @torch.no_grad()
    def target_action(self, obs: np.ndarray) -> np.ndarray:
        return self.nets["actor_target"](self._tensor(obs)).numpy()

    def update_actor(self, obs) -> float:
        obs = self._tensor(obs)
        critics = (self.nets["qf1"], self.nets["qf2"])
        for critic in critics:
            critic.requires_grad_(False)
        loss = -self.nets["qf1"](obs, self.nets["actor"](obs)).mean()
        optimize(self.cfg, self.optimizers["actor"], loss)
        for critic in critics:
            critic.requires_grad_(True)
        return loss.item()

    def update_targets(self, tau: float) -> None:
        for name in NETS:
            soft_update(self.nets[f"{name}_target"], self.nets[name], tau)

    def optimizer_state_bytes(self) -> int:
        return optimizer_state_bytes(self.optimizers.values())

    def state_dict(self) -> dict:
        nets = {name: net.state_dict() for name, net in self.nets.items()}
        return {"policy": nets["actor"], "nets": nets,
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, ckpt: dict) -> None:
        for name, net in self.nets.items():
            net.load_state_dict({k: torch.as_tensor(v) for k, v in ckpt["nets"][name].items()})
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])

    def memory_items(self, batch: int) -> list:
        trained = [self.actor_sizes, self.critic_sizes, self.critic_sizes]
        return torch_items(self.cfg, trained, trained, self.dtype.itemsize,
                           activation_bytes(self.cfg, self.actor_sizes, self.critic_sizes,
                                            self.dtype.itemsize))
