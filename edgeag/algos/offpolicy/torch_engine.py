"""What DQN, TD3 and SAC share on the torch engine: the textbook optimizer step, target
copies and their soft update, TD3's and SAC's twin critics, threads, and the memory the
torch path holds.

The update is what a torch user writes (CleanRL's ``dqn.py`` / ``td3_continuous_action.py``):
the loss through autograd, ``loss.backward()``, then the optimizer. For AlphaGrad
(``fuse_backward``, the default) the step runs inside ``backward()`` through
`edgeag.optim.fuse_into_backward`'s hooks; other optimizers clip at ``max_grad_norm``
when set, then ``step()``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgeag.algos.torch_runtime import DTYPES, RUNTIME, prepare  # noqa: F401  (re-exported to DQN and TD3)
from edgeag.memory import DYNAMO_IMPORT_BYTES, PlanItem
from edgeag.optim import build_optimizer, fuse_into_backward, state_bytes
from edgeag.optim.registry import get as get_spec
from edgeag.train.config import uses_fused_backward


def as_tensor(x: np.ndarray, dtype) -> torch.Tensor:
    """A numpy array as a torch tensor of the networks' dtype (float arrays), sharing
    memory where it can; int64 actions stay int64."""
    x = np.ascontiguousarray(x)
    t = torch.from_numpy(x)
    return t if t.dtype == torch.int64 else t.to(dtype)


def make_optimizer(cfg, modules: list[nn.Module]) -> torch.optim.Optimizer:
    """An `edgeag.optim` optimizer over ``modules``' parameters; AlphaGrad steps inside
    backward (`fuse_into_backward`) unless ``fuse_backward`` is off."""
    params = [p for m in modules for p in m.parameters()]
    opt = build_optimizer(cfg.optimizer, params, **get_spec(cfg.optimizer).options(cfg))
    if uses_fused_backward(cfg):
        fuse_into_backward(params, opt)
    return opt


def optimize(cfg, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss``: with AlphaGrad inside ``backward()``; others clip
    at ``max_grad_norm`` when set (AlphaGrad never clips), then step."""
    if uses_fused_backward(cfg):
        loss.backward()
        return
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.max_grad_norm > 0 and get_spec(cfg.optimizer).clips_gradients:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                       cfg.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)


def target_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of ``net`` (a target network)."""
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


def torch_items(cfg, trained: list[list[int]], targets: list[list[int]], itemsize: int,
                activations: int) -> list[PlanItem]:
    """The torch path's memory above the floor for ReLU MLPs of layer sizes ``trained``
    (and target copies ``targets``): every gradient (or the largest, AlphaGrad updating
    inside backward), the optimizer's state by its own rule, its temporaries, the
    activations, the `torch._dynamo` import of `torch.optim` optimizers."""
    spec, fused = get_spec(cfg.optimizer), uses_fused_backward(cfg)
    shapes = [s for sizes in trained for n_in, n_out in zip(sizes[:-1], sizes[1:])
              for s in ((n_out, n_in), (n_out,))]
    meta = [torch.empty(s, device="meta", requires_grad=True) for s in shapes]
    count = sum(p.numel() for p in meta)
    largest = max(p.numel() for p in meta) * itemsize
    target_count = sum(n_in * n_out + n_out for sizes in targets
                       for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    items = [
        PlanItem("parameters", count * itemsize, f"{count:,} values"),
        PlanItem("gradients", largest if fused else count * itemsize,
                 "one tensor (fused into backward)" if fused else "one per parameter"),
        PlanItem("optimizer state", spec.state_bytes(shapes, itemsize, cfg.momentum),
                 cfg.optimizer +
                 (f", momentum {cfg.momentum}" if cfg.momentum else "")),
        PlanItem("update temporaries", largest * spec.temporaries,
                 f"{spec.temporaries} x largest tensor"),
        PlanItem("activations", activations, "autograd, largest step"),
        PlanItem("target networks", target_count * itemsize, "copies, no gradients"),
    ]
    if spec.imports_dynamo:
        items.append(PlanItem("torch._dynamo import", DYNAMO_IMPORT_BYTES, "torch.optim"))
    return items


class TorchTwinCritics:
    """What TD3's and SAC's torch networks share: ``nets["qf1"]``, ``nets["qf2"]`` and
    their ``_target`` copies, the clipped double-Q target and the critics' step under
    ``optimizers["critic"]`` (`edgeag.algos.offpolicy.numpy_engine.TwinCritics` on the
    numpy engine, tested equal). A subclass sets ``nets``, ``optimizers``, ``cfg``,
    ``torch_dtype`` and `CRITIC_LOSS_WEIGHT`."""

    CRITIC_LOSS_WEIGHT = 1.0
    """The critic loss is this times ``mse(Q1, y) + mse(Q2, y)`` (TD3: 1, SAC: SB3's 0.5)."""

    def _tensor(self, x):
        return as_tensor(x, self.torch_dtype)

    @torch.no_grad()
    def target_q(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        obs, actions = self._tensor(obs), self._tensor(actions)
        return torch.min(self.nets["qf1_target"](obs, actions),
                         self.nets["qf2_target"](obs, actions)).numpy()

    def update_critics(self, obs, actions, target) -> tuple[float, float]:
        obs, actions, target = self._tensor(obs), self._tensor(actions), self._tensor(target)
        q1 = self.nets["qf1"](obs, actions)
        q2 = self.nets["qf2"](obs, actions)
        loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        if self.CRITIC_LOSS_WEIGHT != 1.0:
            loss = self.CRITIC_LOSS_WEIGHT * loss
        optimize(self.cfg, self.optimizers["critic"], loss)
        return loss.item(), q1.mean().item()


def optimizer_state_bytes(optimizers) -> int:
    return sum(state_bytes(o) for o in optimizers)
