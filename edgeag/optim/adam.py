"""Lean Adam: `torch.optim.Adam`'s default (for-loop) algorithm without `torch._dynamo`.

Same update, same state layout (``step``, ``exp_avg``, ``exp_avg_sq``) and the same
state_dict as `torch.optim.Adam` with ``amsgrad=False``, so a comparison against
AlphaGrad separates what the algorithm saves (two moment buffers per parameter) from
what torch.optim's import costs (~70 MiB of `torch._dynamo`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from edgeag.optim._base import LeanOptimizer
from edgeag.optim.rules import validate_adam

__all__ = ["Adam"]


class Adam(LeanOptimizer):
    """Adam (Kingma & Ba, 2015) with L2 ``weight_decay`` as in `torch.optim.Adam`."""

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, maximize: bool = False) -> None:
        validate_adam(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        maximize=maximize)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one Adam update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("Adam does not support sparse gradients")
                if group["maximize"]:
                    grad = -grad
                state = self.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param,
                                                           memory_format=torch.preserve_format)
                _adam_update(param, grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
                             lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=wd)
        return loss


def _adam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
                 step_t: Tensor, *, lr: float, beta1: float, beta2: float, eps: float,
                 weight_decay: float) -> None:
    step_t += 1
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step = step_t.item()
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)
