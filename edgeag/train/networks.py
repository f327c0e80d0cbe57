"""torch networks: PPO's actor-critic (the reference engine, and what export
builds), DQN's and TD3's MLPs, and the orthogonal initialisation they share."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


LOG_2PI = math.log(2 * math.pi)


LEAN_ORTHOGONAL_NUMEL = 1 << 20
"""Square weights above this many values are initialised by `lean_orthogonal_`."""


def orthogonal_(weight: Tensor, gain: float) -> Tensor:
    """``nn.init.orthogonal_``, with the same values; a large square weight goes through
    `lean_orthogonal_`, which needs ~0.3x the matrix of extra memory where torch's QR
    takes ~3x (8192 x 8192: +67 MiB against +818 MiB) and would set a large policy's
    peak RSS."""
    rows, cols = weight.shape
    if rows == cols and weight.numel() > LEAN_ORTHOGONAL_NUMEL:
        return lean_orthogonal_(weight, gain)
    return nn.init.orthogonal_(weight, gain)


@torch.no_grad()
def lean_orthogonal_(weight: Tensor, gain: float) -> Tensor:
    """``nn.init.orthogonal_(weight, gain)`` for a square ``weight``, computed in the
    weight's own memory: the same normal draw, the QR factorisation in place (LAPACK
    geqrf then orgqr on the weight viewed column-major, with in-place square
    transposes around it), the same sign correction ``Q diag(sign(diag R))``. Tested
    equal to ``nn.init.orthogonal_`` under the same seed."""
    n = weight.shape[0]
    if weight.shape != (n, n) or not weight.is_contiguous():
        raise ValueError(f"lean_orthogonal_: needs a contiguous square matrix, got "
                         f"{tuple(weight.shape)}")
    weight.normal_(0, 1)             # G, row-major: torch's draw
    _transpose_square_(weight)       # storage holds G column-major
    a = weight.t()                   # G, Fortran-contiguous: LAPACK works on it in place
    tau = weight.new_empty(n)
    torch.geqrf(a, out=(a, tau))     # R above the diagonal, reflectors below
    sign = a.diagonal().sign()
    torch.linalg.householder_product(a, tau, out=a)  # Q
    a.mul_(sign)                     # Q diag(sign(diag R)): columns
    _transpose_square_(weight)       # back to row-major
    return weight.mul_(gain)


def _transpose_square_(m: Tensor, block: int = 512) -> None:
    """Transpose a square matrix in place, one block pair at a time."""
    n = m.shape[0]
    for i in range(0, n, block):
        diag = m[i:i + block, i:i + block]
        diag.copy_(diag.t().clone())
        for j in range(i + block, n, block):
            upper, lower = m[i:i + block, j:j + block], m[j:j + block, i:i + block]
            tmp = upper.clone()
            upper.copy_(lower.t())
            lower.copy_(tmp.t())


def prepare_torch(threads: int) -> str:
    """torch's threads for the run, then one forward/backward big enough to start its
    thread pool and its matmul kernels: the first autograd call maps code and allocates
    pools and per-thread buffers that belong in the floor, not in the plan."""
    torch.set_num_threads(threads)
    layer = nn.Linear(256, 256)
    torch.tanh(layer(torch.zeros(256, 256))).sum().backward()
    return f"torch engine ({threads} thread{'s' if threads != 1 else ''})"


def mlp(sizes: list[int], last_std: float) -> nn.Sequential:
    """Tanh MLP with orthogonal initialisation (gain sqrt(2) for hidden layers,
    ``last_std`` for the output), zero biases: CleanRL's and SB3's PPO initialisation."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        linear = nn.Linear(n_in, n_out)
        orthogonal_(linear.weight, last_std if last else math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs on (normalised) observations.

    Discrete actions: categorical over ``action_dim`` logits. Continuous: diagonal
    Gaussian with a state-independent log-std; the sampled action is returned
    unclipped (its log-probability is exact) and clipped to the bounds by the caller.
    """

    def __init__(self, obs_dim: int, action_dim: int, discrete: bool,
                 hidden: tuple[int, ...] = (64, 64), log_std_init: float = 0.0):
        super().__init__()
        self.arch = {"obs_dim": obs_dim, "action_dim": action_dim, "discrete": discrete,
                     "hidden": list(hidden), "log_std_init": log_std_init}
        self.discrete = discrete
        self.critic = mlp([obs_dim, *hidden, 1], last_std=1.0)
        self.actor = mlp([obs_dim, *hidden, action_dim], last_std=0.01)
        self._critic = tuple(m for m in self.critic if isinstance(m, nn.Linear))
        self._actor = tuple(m for m in self.actor if isinstance(m, nn.Linear))
        if not discrete:
            self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    @staticmethod
    def _forward(linears: tuple[nn.Linear, ...], x: Tensor) -> Tensor:
        """The MLP (tanh between ``linears``) without nn.Module call overhead, ~4 us
        per layer: a tenth of a small policy's forward pass. Tested equal to
        ``self.actor(x)`` / ``self.critic(x)``."""
        for layer in linears[:-1]:
            x = torch.tanh(F.linear(x, layer.weight, layer.bias))
        return F.linear(x, linears[-1].weight, linears[-1].bias)

    @classmethod
    def from_arch(cls, arch: dict) -> "ActorCritic":
        return cls(arch["obs_dim"], arch["action_dim"], arch["discrete"],
                   tuple(arch["hidden"]), arch["log_std_init"])

    def value(self, obs: Tensor) -> Tensor:
        return self._forward(self._critic, obs).squeeze(-1)

    def evaluate(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log-probability of ``action``, the policy's entropy, and the state value."""
        out = self._forward(self._actor, obs)
        if self.discrete:
            log_probs = torch.log_softmax(out, dim=-1)
            logp = log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
        else:
            z = (action - out) * torch.exp(-self.log_std)
            logp = (-0.5 * z.square() - self.log_std - 0.5 * LOG_2PI).sum(-1)
            entropy = (0.5 + 0.5 * LOG_2PI + self.log_std).sum().expand(obs.shape[0])
        return logp, entropy, self.value(obs)

    def deterministic(self, obs: Tensor) -> Tensor:
        """The greedy action: argmax of the logits, or the Gaussian mean (unclipped)."""
        out = self._forward(self._actor, obs)
        return out.argmax(-1) if self.discrete else out


def relu_mlp(sizes: list[int]) -> nn.Sequential:
    """ReLU MLP with torch's default initialisation: the Q-network of CleanRL's and
    SB3's DQN and the actor and critics of their TD3."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    """Q-values of every discrete action (DQN)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...] = (120, 84)):
        super().__init__()
        self.arch = {"kind": "q", "obs_dim": obs_dim, "action_dim": action_dim,
                     "discrete": True, "hidden": list(hidden)}
        self.discrete = True
        self.net = relu_mlp([obs_dim, *hidden, action_dim])

    @classmethod
    def from_arch(cls, arch: dict) -> "QNetwork":
        return cls(arch["obs_dim"], arch["action_dim"], tuple(arch["hidden"]))

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs)

    def deterministic(self, obs: Tensor) -> Tensor:
        """The greedy action."""
        return self.net(obs).argmax(-1)


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
    def from_arch(cls, arch: dict) -> "DeterministicActor":
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
