"""Optimizers for on-device training, and the one registry the CLI and plans use.

`AlphaGrad`, `Adam` and `SGD` here subclass `torch.optim.Optimizer` but never import
`torch._dynamo` (see `edgeag.optim._base`). ``torch-adam`` is `torch.optim.Adam`
itself, exactly as other libraries construct it, for comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from edgeag.optim._base import LeanOptimizer, state_bytes
from edgeag.optim.adam import Adam
from edgeag.optim.alphagrad import (AlphaGrad, alphagrad, alphagrad_direction, alphagrad_segments_,
                                   flatten_parameters_, fuse_into_backward)
from edgeag.optim.sgd import SGD

__all__ = ["AlphaGrad", "Adam", "SGD", "LeanOptimizer", "OPTIMIZERS", "OptimizerSpec",
           "alphagrad", "alphagrad_direction", "alphagrad_segments_", "build_optimizer",
           "flatten_parameters_", "fuse_into_backward",
           "state_bytes", "supported_optimizers"]


@dataclass(frozen=True)
class OptimizerSpec:
    """What edgeag needs to know about an optimizer to build it and to plan memory."""

    name: str
    help: str
    build: Callable[..., torch.optim.Optimizer]
    imports_dynamo: bool
    """True when building it imports `torch._dynamo` (~70 MiB of peak RSS)."""

    def state_bytes(self, params: Iterable[torch.Tensor], momentum: float = 0.0) -> int:
        """Analytic bytes of optimizer state for ``params`` (what `state_bytes` measures
        after the first step)."""
        total = 0
        for p in params:
            if not p.requires_grad:
                continue
            nbytes = p.numel() * p.element_size()
            if self.name in ("adam", "torch-adam"):
                total += 2 * nbytes + 4  # exp_avg, exp_avg_sq, float32 step counter
            elif momentum > 0:
                total += nbytes  # one momentum buffer
        return total


def _torch_adam(params, *, lr, eps=1e-8, **_):
    return torch.optim.Adam(params, lr=lr, eps=eps)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec for spec in (
        OptimizerSpec("alphagrad", "AlphaGrad (default; stateless with momentum 0)",
                      lambda params, *, lr, alpha=1.0, momentum=0.0, eps=1e-5, **_:
                      AlphaGrad(params, lr=lr, alpha=alpha, momentum=momentum, eps=eps),
                      imports_dynamo=False),
        OptimizerSpec("adam", "Adam, edgeag's lean implementation (no torch._dynamo import)",
                      lambda params, *, lr, eps=1e-8, **_: Adam(params, lr=lr, eps=eps),
                      imports_dynamo=False),
        OptimizerSpec("torch-adam", "torch.optim.Adam as other libraries run it "
                      "(imports torch._dynamo, ~70 MiB)", _torch_adam, imports_dynamo=True),
        OptimizerSpec("sgd", "SGD, lean implementation (optional momentum)",
                      lambda params, *, lr, momentum=0.0, **_: SGD(params, lr=lr,
                                                                   momentum=momentum),
                      imports_dynamo=False),
    )
}


def supported_optimizers() -> list[str]:
    """Names accepted by `build_optimizer` and ``--optimizer``."""
    return list(OPTIMIZERS)


def get_spec(name: str) -> OptimizerSpec:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r} (accepted: "
                         f"{', '.join(supported_optimizers())})") from None


def build_optimizer(name: str, params, **options) -> torch.optim.Optimizer:
    """Build a registered optimizer by name; options a given optimizer does not use
    (``alpha`` for Adam, say) are ignored."""
    return get_spec(name).build(params, **options)
