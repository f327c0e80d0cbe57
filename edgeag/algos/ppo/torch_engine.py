"""PPO's actor-critic on torch: the textbook path and the numpy engine's reference.

The minibatch update is what a torch user writes (CleanRL's ``ppo.py``): the clipped
objective through autograd (`ppo_loss`), ``loss.backward()``, then the optimizer. For
AlphaGrad (``fuse_backward``, the default) the step runs inside ``backward()`` through
`edgeag.optim.fuse_into_backward`'s hooks, one gradient alive at a time; other
optimizers clip the global gradient norm and ``step()``. Sampling, GAE and minibatches
are the algorithm's own numpy code (`edgeag.algos.ppo.algorithm`), so both engines see the same
rollout for the same parameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgeag.algos.ppo.algorithm import Minibatch, normalised_advantages, parameter_count
from edgeag.algos.ppo.config import PPOConfig
from edgeag.algos.torch_runtime import DTYPES, RUNTIME, mlp, prepare
from edgeag.memory import DYNAMO_IMPORT_BYTES, PlanItem
from edgeag.optim import build_optimizer, fuse_into_backward, state_bytes
from edgeag.optim.registry import get as get_spec
from edgeag.train.config import uses_fused_backward

LOG_2PI = math.log(2 * math.pi)


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
        self.critic_layers = tuple(m for m in self.critic if isinstance(m, nn.Linear))
        self.actor_layers = tuple(m for m in self.actor if isinstance(m, nn.Linear))
        if not discrete:
            self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    @staticmethod
    def forward_layers(linears: tuple[nn.Linear, ...], x: Tensor) -> Tensor:
        """The MLP (tanh between ``linears``) without nn.Module call overhead, ~4 us
        per layer: a tenth of a small policy's forward pass. Tested equal to
        ``self.actor(x)`` / ``self.critic(x)``."""
        for layer in linears[:-1]:
            x = torch.tanh(F.linear(x, layer.weight, layer.bias))
        return F.linear(x, linears[-1].weight, linears[-1].bias)

    @classmethod
    def from_arch(cls, arch: dict) -> ActorCritic:
        return cls(arch["obs_dim"], arch["action_dim"], arch["discrete"],
                   tuple(arch["hidden"]), arch["log_std_init"])

    def value(self, obs: Tensor) -> Tensor:
        return self.forward_layers(self.critic_layers, obs).squeeze(-1)

    def evaluate(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log-probability of ``action``, the policy's entropy, and the state value."""
        out = self.forward_layers(self.actor_layers, obs)
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
        out = self.forward_layers(self.actor_layers, obs)
        return out.argmax(-1) if self.discrete else out


def ppo_loss(policy: ActorCritic, cfg: PPOConfig, mb: Minibatch) -> tuple[Tensor, dict]:
    """The clipped PPO objective ``pg_loss - ent_coef * entropy + vf_coef * v_loss``."""
    logp, entropy, value = policy.evaluate(mb.obs, mb.actions)
    log_ratio = logp - mb.logprobs
    ratio = log_ratio.exp()
    adv = normalised_advantages(mb.advantages, cfg)
    pg_loss = torch.max(-adv * ratio,
                        -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    if cfg.clip_vloss:
        clipped = mb.values + (value - mb.values).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * torch.max((value - mb.returns).square(),
                                 (clipped - mb.returns).square()).mean()
    else:
        v_loss = 0.5 * (value - mb.returns).square().mean()
    entropy_loss = entropy.mean()
    loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
    return loss, {"pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy_loss,
                  "ratio": ratio, "log_ratio": log_ratio}


class TorchActorCritic:
    """`ActorCritic`, its `edgeag.optim` optimizer, and the textbook update."""

    RUNTIME = RUNTIME

    def __init__(self, cfg: PPOConfig, obs_dim: int, action_dim: int, discrete: bool, *,
                 dtype=np.float32, initialise: bool = True):
        self.cfg, self.discrete, self.dtype = cfg, discrete, np.dtype(dtype)
        self.arch = {"obs_dim": obs_dim, "action_dim": action_dim, "discrete": discrete,
                     "hidden": list(cfg.hidden), "log_std_init": cfg.log_std_init}
        self.spec = get_spec(cfg.optimizer)
        self.fused = uses_fused_backward(cfg)
        self.net = self.optimizer = None
        if not initialise:  # planning: shapes only
            return
        torch.manual_seed(cfg.seed)
        self.net = ActorCritic(obs_dim, action_dim, discrete, cfg.hidden,
                               cfg.log_std_init).to(DTYPES[self.dtype])
        self.optimizer = build_optimizer(cfg.optimizer, self.net.parameters(),
                                         **self.spec.options(cfg))
        if self.fused:
            fuse_into_backward(self.net, self.optimizer)

    prepare = staticmethod(prepare)

    @property
    def log_std(self) -> np.ndarray | None:
        return None if self.discrete else self.net.log_std.detach().numpy()

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    @torch.no_grad()
    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.asarray(obs, self.dtype))
        out = self.net.forward_layers(self.net.actor_layers, x)
        return out.numpy(), self.net.value(x).numpy()

    @torch.no_grad()
    def value(self, obs: np.ndarray) -> np.ndarray:
        return self.net.value(torch.from_numpy(np.asarray(obs, self.dtype))).numpy()

    @torch.no_grad()
    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        return self.net.deterministic(torch.from_numpy(np.asarray(obs, self.dtype))).numpy()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def update(self, mb: Minibatch, record: bool) -> dict:
        """``loss.backward()`` (AlphaGrad steps inside it), else clip and ``step()``."""
        batch = Minibatch(*(torch.from_numpy(np.ascontiguousarray(a)) for a in mb))
        loss, losses = ppo_loss(self.net, self.cfg, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not self.fused:
            if self.spec.clips_gradients and self.cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if not record:
            return {}
        return {"pg_loss": losses["pg_loss"].item(), "v_loss": losses["v_loss"].item(),
                "entropy": losses["entropy"].item(),
                "ratio": losses["ratio"].detach().numpy(),
                "log_ratio": losses["log_ratio"].detach().numpy()}

    def optimizer_state_bytes(self) -> int:
        return state_bytes(self.optimizer)

    def state_dict(self) -> dict:
        return {"policy": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, ckpt: dict) -> None:
        self.net.load_state_dict({k: torch.as_tensor(v) for k, v in ckpt["policy"].items()})
        self.optimizer.load_state_dict(ckpt["optimizer"])

    def memory_items(self, batch: int) -> list[PlanItem]:
        """The textbook path's memory above the floor: every gradient (or the largest,
        AlphaGrad updating inside backward), the optimizer's state by its own rule, its
        temporaries, autograd's saved activations, the `torch._dynamo` import of
        `torch.optim` optimizers."""
        a = self.arch
        shapes = []
        for out_dim in (1, a["action_dim"]):
            sizes = [a["obs_dim"], *a["hidden"], out_dim]
            shapes += [s for n_in, n_out in zip(sizes[:-1], sizes[1:])
                       for s in ((n_out, n_in), (n_out,))]
        if not a["discrete"]:
            shapes.append((a["action_dim"],))
        item = self.dtype.itemsize
        meta = [torch.empty(s, device="meta", requires_grad=True) for s in shapes]
        largest = max(p.numel() for p in meta) * item
        count = parameter_count(a["obs_dim"], a["action_dim"], a["discrete"], a["hidden"])
        # autograd keeps each layer's input and output (and tanh's), and backward their
        # gradients: ~2 x (input + 2 per hidden unit + outputs) values per sample
        per_row = 2 * (a["obs_dim"] + 2 * sum(a["hidden"])) + 1 + a["action_dim"]
        items = [
            PlanItem("parameters", count * item, f"{count:,} values"),
            PlanItem("gradients", largest if self.fused else count * item,
                     "one tensor (fused into backward)" if self.fused else "one per parameter"),
            PlanItem("optimizer state", self.spec.state_bytes(shapes, item, self.cfg.momentum),
                     self.cfg.optimizer + (f", momentum {self.cfg.momentum}"
                                           if self.cfg.momentum else "")),
            PlanItem("update temporaries", largest * self.spec.temporaries,
                     f"{self.spec.temporaries} x largest tensor"),
            PlanItem("activations", 2 * item * batch * per_row, "autograd, one minibatch"),
        ]
        if self.spec.imports_dynamo:
            items.append(PlanItem("torch._dynamo import", DYNAMO_IMPORT_BYTES, "torch.optim"))
        return items
