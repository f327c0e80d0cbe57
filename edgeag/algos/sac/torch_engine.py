"""SAC's actor, twin critics and temperature on torch: the textbook path and the numpy
engine's reference.

The updates are Stable-Baselines3's (``sac.py``) written as CleanRL writes them: the
squashed Gaussian through ``torch.distributions.Normal`` with CleanRL's tanh correction
``log(scale * (1 - tanh(u)^2) + 1e-6)``; ``0.5 * (mse_loss(Q1, y) + mse_loss(Q2, y))``
through autograd for the critics (one optimizer); ``(alpha * log pi - min(Q1, Q2)).mean()``
for the actor with the critics' parameters frozen (no critic gradient is computed, so
AlphaGrad's in-backward update of the critics cannot fire); SB3's
``-(log_alpha * (log pi + target_entropy).detach()).mean()`` for the temperature, with its
own optimizer; then `edgeag.algos.offpolicy.torch_engine.optimize`. Targets and noise
come from the algorithm's numpy code (`edgeag.algos.sac.algorithm.learn`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Normal

from edgeag.algos.offpolicy.loop import mlp_param_count
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
from edgeag.algos.sac.algorithm import (
    LOG_PROB_EPS,
    LOG_STD_MAX,
    LOG_STD_MIN,
    SACShapes,
    activation_bytes,
)
from edgeag.algos.sac.config import SACConfig
from edgeag.algos.td3.torch_engine import QCritic
from edgeag.algos.torch_runtime import relu_mlp
from edgeag.memory import PlanItem
from edgeag.optim.registry import get as get_spec
from edgeag.train.config import uses_fused_backward


def squashed_gaussian(out: Tensor, eps: Tensor, scale: Tensor,
                      bias: Tensor) -> tuple[Tensor, Tensor]:
    """The actor's outputs (means, then log stds, clipped as SB3 clips them) and the noise
    ``eps`` -> (action, log pi): ``u = mean + std * eps`` (the reparameterisation trick),
    ``action = tanh(u) * scale + bias``, ``log pi`` the Normal's log density of ``u`` less
    CleanRL's tanh correction, summed over the action's values."""
    mean, log_std = out.chunk(2, dim=-1)
    std = torch.clamp(log_std, LOG_STD_MIN, LOG_STD_MAX).exp()
    u = mean + std * eps
    t = torch.tanh(u)
    log_prob = Normal(mean, std).log_prob(u) - torch.log(scale * (1 - t.pow(2)) + LOG_PROB_EPS)
    return t * scale + bias, log_prob.sum(-1)


class SquashedGaussianActor(nn.Module):
    """``net(obs)`` = the Gaussian's means and log stds (one ``nn.Linear`` of
    ``2 * action_dim`` outputs last, as SB3's ``mu`` and ``log_std`` layers side by side);
    actions ``tanh(u) * scale + bias`` with ``u ~ N(mean, std)``."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], low, high):
        super().__init__()
        low = torch.as_tensor(low, dtype=torch.float32)
        high = torch.as_tensor(high, dtype=torch.float32)
        self.action_dim = action_dim
        self.net = relu_mlp([obs_dim, *hidden, 2 * action_dim])
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    def forward(self, obs: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """(action, log pi) for the noise ``eps`` (`squashed_gaussian`)."""
        return squashed_gaussian(self.net(obs), eps, self.action_scale, self.action_bias)

    def deterministic(self, obs: Tensor) -> Tensor:
        """``tanh(mean)`` scaled to the bounds."""
        mean = self.net(obs)[..., :self.action_dim]
        return torch.tanh(mean) * self.action_scale + self.action_bias


class Temperature(nn.Module):
    """``log_alpha``, SB3's ``log_ent_coef``: the temperature is ``exp(log_alpha)``."""

    def __init__(self, init: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((1,), math.log(init), dtype=torch.float64))


NETS = ("actor", "qf1", "qf2", "temperature")
TARGETS = ("qf1", "qf2")


class TorchSACNetworks(TorchTwinCritics, SACShapes):
    """`SquashedGaussianActor`, two `QCritic`\\ s (`TorchTwinCritics`, SB3's critic loss
    ``0.5 * (mse(Q1, y) + mse(Q2, y))``) and their targets, `Temperature`, and three
    `edgeag.optim` optimizers. ``parameter_count`` counts ``log_alpha`` too."""

    CRITIC_LOSS_WEIGHT = 0.5

    RUNTIME = RUNTIME
    prepare = staticmethod(prepare)

    def __init__(self, cfg: SACConfig, obs_dim: int, action_dim: int, low, high, *,
                 dtype=np.float32, initialise: bool = True):
        self.cfg, self.dtype = cfg, np.dtype(dtype)
        self.torch_dtype = DTYPES[self.dtype]
        self.describe(cfg, obs_dim, action_dim, low, high)
        if not initialise:  # planning: shapes only
            return
        torch.manual_seed(cfg.seed)
        self.nets = {"actor": SquashedGaussianActor(obs_dim, action_dim, cfg.hidden, low, high),
                     "qf1": QCritic(obs_dim, action_dim, cfg.hidden),
                     "qf2": QCritic(obs_dim, action_dim, cfg.hidden),
                     "temperature": Temperature(cfg.ent_coef_init)}
        for name in NETS:
            self.nets[name] = self.nets[name].to(self.torch_dtype)
        for name in TARGETS:
            self.nets[f"{name}_target"] = target_copy(self.nets[name])
        self.optimizers = {"actor": make_optimizer(cfg, [self.nets["actor"]]),
                           "critic": make_optimizer(cfg, [self.nets["qf1"], self.nets["qf2"]]),
                           "temperature": make_optimizer(cfg, [self.nets["temperature"]])}

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for name in NETS for p in self.nets[name].parameters())

    @property
    def alpha(self) -> float:
        return self.nets["temperature"].log_alpha.exp().item()

    @torch.no_grad()
    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        return self.nets["actor"].deterministic(self._tensor(obs)).numpy()

    @torch.no_grad()
    def sample_action(self, obs: np.ndarray, eps: np.ndarray) -> np.ndarray:
        return self.nets["actor"](self._tensor(obs), self._tensor(eps))[0].numpy()

    @torch.no_grad()
    def sample(self, obs: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        action, log_prob = self.nets["actor"](self._tensor(obs), self._tensor(eps))
        return action.numpy(), log_prob.numpy()

    def update_actor(self, obs, eps, alpha: float) -> tuple[float, np.ndarray]:
        obs = self._tensor(obs)
        critics = (self.nets["qf1"], self.nets["qf2"])
        for critic in critics:
            critic.requires_grad_(False)
        action, log_prob = self.nets["actor"](obs, self._tensor(eps))
        min_q = torch.min(self.nets["qf1"](obs, action), self.nets["qf2"](obs, action))
        loss = (alpha * log_prob - min_q).mean()
        optimize(self.cfg, self.optimizers["actor"], loss)
        for critic in critics:
            critic.requires_grad_(True)
        return loss.item(), log_prob.detach().numpy()

    def update_temperature(self, log_prob: np.ndarray, target_entropy: float) -> float:
        log_alpha = self.nets["temperature"].log_alpha
        loss = -(log_alpha * (self._tensor(log_prob) + target_entropy).detach()).mean()
        optimize(self.cfg, self.optimizers["temperature"], loss)
        return loss.item()

    def update_targets(self, tau: float) -> None:
        for name in TARGETS:
            soft_update(self.nets[f"{name}_target"], self.nets[name], tau)

    def optimizer_state_bytes(self) -> int:
        return optimizer_state_bytes(self.optimizers.values())

    def state_dict(self) -> dict:
        nets = {name: net.state_dict() for name, net in self.nets.items()}
        return {"policy": self.policy_arrays(nets["actor"]), "nets": nets,
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, ckpt: dict) -> None:
        for name, net in self.nets.items():
            net.load_state_dict({k: torch.as_tensor(v) for k, v in ckpt["nets"][name].items()})
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])

    def memory_items(self, batch: int) -> list:
        """`torch_items` of the actor and critics, with ``log_alpha`` (one value, its
        gradient, its optimizer's state) added."""
        itemsize = self.dtype.itemsize
        items = torch_items(self.cfg, [self.actor_sizes, self.critic_sizes, self.critic_sizes],
                            [self.critic_sizes, self.critic_sizes], itemsize,
                            activation_bytes(self.cfg, self.actor_sizes, self.critic_sizes,
                                             itemsize))
        spec = get_spec(self.cfg.optimizer)
        extra = {"parameters": itemsize,
                 "gradients": 0 if uses_fused_backward(self.cfg) else itemsize,
                 "optimizer state": spec.state_bytes([(1,)], itemsize, self.cfg.momentum)}
        count = mlp_param_count(self.actor_sizes) + 2 * mlp_param_count(self.critic_sizes) + 1
        return [PlanItem(i.name, i.nbytes + extra.get(i.name, 0),
                         f"{count:,} values" if i.name == "parameters" else i.note)
                for i in items]
