"""Lean SGD: `torch.optim.SGD`'s for-loop algorithm without `torch._dynamo`."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from edgeag.optim._base import LeanOptimizer, momentum_
from edgeag.optim.rules import validate_sgd

__all__ = ["SGD"]


class SGD(LeanOptimizer):
    """SGD with optional momentum, in the `torch.optim.SGD` convention."""

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        validate_sgd(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                     nesterov=nesterov)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one SGD update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad if not group["maximize"] else -param.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(param, alpha=group["weight_decay"])
                if mu != 0:
                    state = self.state[param]
                    grad, state["momentum_buffer"] = momentum_(
                        grad, state.get("momentum_buffer"), momentum=mu,
                        dampening=group["dampening"], nesterov=group["nesterov"],
                        owns_direction=False)
                param.add_(grad, alpha=-lr)
        return loss
