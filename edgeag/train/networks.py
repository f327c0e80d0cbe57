"""Actor-critic MLPs and the action distributions PPO needs, written out by hand so
sampling takes an explicit `torch.Generator` (checkpointed, so a resumed run draws
the same actions)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgeag.optim.alphagrad import OUTER_BLOCK_NUMEL, flatten_parameters_

LOG_2PI = math.log(2 * math.pi)
_tanh_backward = torch.ops.aten.tanh_backward.default  # grad * (1 - y^2): one op, not three


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


TANH_MAX_NUMEL = 4096


def _tanh(x: Tensor) -> Tensor:
    """``tanh(x)``, in place on a fresh ``x``. Above `TANH_MAX_NUMEL` elements as
    ``2 sigmoid(2x) - 1`` (the same function, within 2e-7 in float32): on CPU
    ``torch.tanh`` costs ~3x ``torch.sigmoid`` per element (54 vs 31 us for a 256x64
    minibatch activation, one thread); below it, one op beats four."""
    if x.numel() <= TANH_MAX_NUMEL:
        return x.tanh_()
    return x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


def mlp_activations(linears: tuple[nn.Linear, ...], x: Tensor) -> list[Tensor]:
    """``[x, h_1, ..., h_{L-1}, out]`` of the tanh MLP made of ``linears``: the forward
    pass `mlp_backward` needs (run it under ``torch.no_grad()``)."""
    acts = [x]
    for layer in linears[:-1]:
        x = _tanh(F.linear(x, layer.weight, layer.bias))
        acts.append(x)
    acts.append(F.linear(x, linears[-1].weight, linears[-1].bias))
    return acts


def mlp_backward(linears: tuple[nn.Linear, ...], acts: list[Tensor], grad_out: Tensor,
                 sink, outer=None) -> None:
    """Backpropagate ``grad_out`` (d loss / d out, ``[batch, out]``) through the MLP by
    hand, last layer first; ``sink(param, grad)`` receives each weight's and bias's
    gradient as soon as it is complete and the layer's weight is no longer needed, so
    the sink may update the parameter in place (AlphaGrad's update in backward: one
    layer's gradients alive at a time). With ``outer``, weights larger than
    `OUTER_BLOCK_NUMEL` go to ``outer(weight, d, x)`` instead, their gradient as the
    factors ``d^T x`` (``AlphaGrad.update_param_outer``: no gradient of that size at all).

    Autograd does the same arithmetic with a graph node, saved tensors and a hook per
    op; for a 64-wide policy on a 256-sample minibatch that bookkeeping is most of the
    time. Tested equal to ``torch.autograd`` in float64.
    """
    d = grad_out
    for i in range(len(linears) - 1, -1, -1):
        layer = linears[i]
        factored = outer is not None and layer.weight.numel() > OUTER_BLOCK_NUMEL
        grad_w = None if factored else d.t().mm(acts[i])
        grad_b = d.sum(0)
        below = None
        if i > 0:  # the gradient for the layer below, from this layer's weight before any update
            below = _tanh_backward(d.mm(layer.weight), acts[i])
        if factored:
            outer(layer.weight, d, acts[i])
        else:
            sink(layer.weight, grad_w)
        del grad_w
        sink(layer.bias, grad_b)
        d = below


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

    def act(self, obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Sampled action, its log-probability, and the state value."""
        out = self._forward(self._actor, obs)
        if self.discrete:
            # inverse-CDF sampling: 4 small ops where torch.multinomial costs ~90 us
            log_probs = torch.log_softmax(out, dim=-1)
            u = torch.rand((out.shape[0], 1), generator=generator)
            action = (log_probs.exp().cumsum(-1) < u).sum(-1).clamp_(max=out.shape[-1] - 1)
            logp = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        else:
            std = self.log_std.exp()
            noise = torch.randn(out.shape, generator=generator)
            action = out + std * noise
            logp = (-0.5 * noise.square() - self.log_std - 0.5 * LOG_2PI).sum(-1)
        return action, logp, self.value(obs)

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


class FlatActorCritic:
    """An `ActorCritic` laid out for small policies, whose update costs op overhead
    rather than arithmetic (~4 us an op on CPU, a hundred ops a minibatch):

    - the parameters live end to end in one buffer, ``param``, and the backward pass
      writes every gradient into a second one, ``grad`` (per parameter: ``grads[p]``),
      so an optimizer can update all of them in a few ops
      (`edgeag.optim.alphagrad_segments_`, over the views ``segments``);
    - each actor hidden layer sits beside the critic's (same widths), so the two
      networks' hidden layers run as one batched matmul over a ``[2, out, in]`` view:
      half the ops of two passes.

    The module's parameters become views of ``param`` (values unchanged); the policy
    stays an ordinary `ActorCritic` for everything else. Tested equal to
    `mlp_activations` / `mlp_backward` on each network.
    """

    def __init__(self, policy: ActorCritic):
        actor, critic = policy._actor, policy._critic
        order = []
        for a, c in zip(actor[:-1], critic[:-1]):
            order += [a.weight, c.weight, a.bias, c.bias]
        order += [actor[-1].weight, actor[-1].bias, critic[-1].weight, critic[-1].bias]
        if not policy.discrete:
            order.append(policy.log_std)
        assert len(order) == len(list(policy.parameters()))
        self.policy, self.params = policy, order
        self.param = flatten_parameters_(order)
        self.grad = torch.zeros_like(self.param)
        self._offset, self.grads, offset = {}, {}, 0
        for p in order:
            self._offset[p] = offset
            self.grads[p] = self.grad[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        self.segments = list(self.grad.split([p.numel() for p in order]))
        self.hidden = []  # per hidden layer: weights [2, out, in], biases [2, 1, out], their grads
        for a, _ in zip(actor[:-1], critic[:-1]):
            n_out, n_in = a.weight.shape
            self.hidden.append((self._twin(self.param, a.weight, (2, n_out, n_in)),
                                self._twin(self.param, a.bias, (2, 1, n_out)),
                                self._twin(self.grad, a.weight, (2, n_out, n_in)),
                                self._twin(self.grad, a.bias, (2, n_out))))
        self.actor_out, self.critic_out = actor[-1], critic[-1]

    def _twin(self, buf: Tensor, first: Tensor, shape: tuple) -> Tensor:
        start = self._offset[first]
        return buf[start:start + math.prod(shape)].view(shape)

    def forward(self, obs: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """(activations ``[2, batch, width]`` per layer for `backward`, actor output,
        value); run under ``torch.no_grad()``."""
        h = obs.expand(2, *obs.shape)
        acts = [h]
        for weight, bias, _, _ in self.hidden:
            h = _tanh(torch.baddbmm(bias, h, weight.transpose(1, 2)))
            acts.append(h)
        out = F.linear(h[0], self.actor_out.weight, self.actor_out.bias)
        value = F.linear(h[1], self.critic_out.weight, self.critic_out.bias).squeeze(-1)
        return acts, out, value

    def backward(self, acts: list[Tensor], grad_out: Tensor, grad_value: Tensor,
                 grad_log_std: Tensor | None = None) -> None:
        """Write d loss / d every parameter into ``grad``, given d loss / d the actor
        output ``[batch, action_dim]`` and / d the value ``[batch]``."""
        a, c, g = self.actor_out, self.critic_out, self.grads
        h, grad_value = acts[-1], grad_value.unsqueeze(-1)
        torch.mm(grad_out.t(), h[0], out=g[a.weight])
        torch.sum(grad_out, 0, out=g[a.bias])
        torch.mm(grad_value.t(), h[1], out=g[c.weight])
        torch.sum(grad_value, 0, out=g[c.bias])
        if grad_log_std is not None:
            g[self.policy.log_std].copy_(grad_log_std)
        if not self.hidden:
            return
        d = torch.empty_like(h)
        torch.mm(grad_out, a.weight, out=d[0])
        torch.mm(grad_value, c.weight, out=d[1])
        d = _tanh_backward(d, h)
        for k in range(len(self.hidden) - 1, -1, -1):
            weight, _, grad_weight, grad_bias = self.hidden[k]
            torch.bmm(d.transpose(1, 2), acts[k], out=grad_weight)
            torch.sum(d, 1, out=grad_bias)
            if k > 0:
                d = _tanh_backward(torch.bmm(d, weight), acts[k])
# --- off-policy networks (DQN, TD3) -------------------------------------------------

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
