"""Optimizers for on-device training, and the one registry the CLI and plans use.

`AlphaGrad`, `Adam` and `SGD` here subclass `torch.optim.Optimizer` but never import
`torch._dynamo` (see `edgeag.optim._base`). ``torch-adam`` is `torch.optim.Adam`
itself, exactly as other libraries construct it, for comparisons; ``torch-adafactor``
(`torch.optim.Adafactor`) and ``lion`` (the lion-pytorch package, optional) are the
other memory-lean optimizers of the field, as their users run them.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from edgeag.optim._base import LeanOptimizer, state_bytes
from edgeag.optim.adam import Adam
from edgeag.optim.alphagrad import AlphaGrad, alphagrad, alphagrad_direction, fuse_into_backward
from edgeag.optim.sgd import SGD
from edgeag.optim_rules import adam_state_bytes, momentum_state_bytes

__all__ = ["AlphaGrad", "Adam", "SGD", "LeanOptimizer", "OPTIMIZERS", "OptimizerSpec",
           "alphagrad", "alphagrad_direction", "build_optimizer", "fuse_into_backward",
           "state_bytes", "supported_optimizers"]


def _no_state(p: torch.Tensor, momentum: float) -> int:
    return 0


def _momentum_buffer(p: torch.Tensor, momentum: float) -> int:
    """One buffer the size of the parameter when momentum > 0 (AlphaGrad, SGD)."""
    return momentum_state_bytes(p.numel(), p.element_size(), momentum)


def _adam_moments(p: torch.Tensor, momentum: float) -> int:
    """``exp_avg`` and ``exp_avg_sq`` (each the size of the parameter) and a float32
    ``step`` counter."""
    return adam_state_bytes(p.numel(), p.element_size())


def _adafactor_factors(p: torch.Tensor, momentum: float) -> int:
    """`torch.optim.Adafactor`: a float32 ``step``; for a parameter of 2 or more
    dimensions the row and column factors of the second moment (the shape with the
    last, respectively the second-to-last, dimension set to 1); for a vector the full
    ``variance``."""
    if p.dim() < 2:
        return p.numel() * p.element_size() + 4
    *batch, n_rows, n_cols = p.shape
    return math.prod(batch) * (n_rows + n_cols) * p.element_size() + 4


def _lion_momentum(p: torch.Tensor, momentum: float) -> int:
    """lion-pytorch's ``exp_avg``, the size of the parameter."""
    return p.numel() * p.element_size()


@dataclass(frozen=True)
class OptimizerSpec:
    """What edgeag needs to know about an optimizer to build it and to plan memory."""

    name: str
    help: str
    build: Callable[..., torch.optim.Optimizer]
    imports_dynamo: bool
    """True when building it imports `torch._dynamo` (~70 MiB of peak RSS)."""
    state_rule: Callable[[torch.Tensor, float], int] = _no_state
    """Bytes of state the optimizer keeps for one parameter, given the momentum."""
    temporaries: int = 1
    """Tensors the size of the largest parameter alive at once inside one update
    (Adam's ``denom`` and its ``sqrt``; Lion's ``clone`` and the sum)."""
    package: str | None = None
    """The distribution (pip name) it comes from when not torch or edgeag."""
    clips_gradients: bool = True
    """Training clips the global gradient norm before ``step()`` (every optimizer but
    AlphaGrad, whose per-element step is already bounded)."""

    def state_bytes(self, params: Iterable[torch.Tensor], momentum: float = 0.0) -> int:
        """Analytic bytes of optimizer state for ``params`` (what `state_bytes` measures
        after the first step)."""
        return sum(self.state_rule(p, momentum) for p in params if p.requires_grad)

    def missing_package(self) -> str | None:
        """The pip name of the package this optimizer needs, if it is not installed."""
        if self.package is None:
            return None
        module = self.package.replace("-", "_")
        return None if importlib.util.find_spec(module) is not None else self.package


def _torch_adam(params, *, lr, eps=1e-8, **_):
    return torch.optim.Adam(params, lr=lr, eps=eps)


def _torch_adafactor(params, *, lr, **_):
    return torch.optim.Adafactor(params, lr=lr)


def _lion(params, *, lr, **_):
    from lion_pytorch import Lion  # an optional package: imported only when asked for

    return Lion(params, lr=lr)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec for spec in (
        OptimizerSpec("alphagrad", "AlphaGrad (default; stateless with momentum 0)",
                      lambda params, *, lr, alpha=1.0, momentum=0.0, eps=1e-5,
                      alpha_scale="none", **_:
                      AlphaGrad(params, lr=lr, alpha=alpha, momentum=momentum, eps=eps,
                                alpha_scale=alpha_scale),
                      imports_dynamo=False, state_rule=_momentum_buffer, clips_gradients=False),
        OptimizerSpec("adam", "Adam, edgeag's lean implementation (no torch._dynamo import)",
                      lambda params, *, lr, eps=1e-8, **_: Adam(params, lr=lr, eps=eps),
                      imports_dynamo=False, state_rule=_adam_moments, temporaries=2),
        OptimizerSpec("torch-adam", "torch.optim.Adam as other libraries run it "
                      "(imports torch._dynamo, ~70 MiB)", _torch_adam, imports_dynamo=True,
                      state_rule=_adam_moments, temporaries=2),
        OptimizerSpec("sgd", "SGD, lean implementation (optional momentum)",
                      lambda params, *, lr, momentum=0.0, **_: SGD(params, lr=lr,
                                                                   momentum=momentum),
                      imports_dynamo=False, state_rule=_momentum_buffer),
        OptimizerSpec("torch-adafactor", "torch.optim.Adafactor: factored second moments "
                      "(imports torch._dynamo, ~70 MiB)", _torch_adafactor,
                      imports_dynamo=True, state_rule=_adafactor_factors),
        OptimizerSpec("lion", "Lion from the lion-pytorch package: one momentum buffer "
                      "(a torch.optim.Optimizer: imports torch._dynamo, ~70 MiB)", _lion,
                      imports_dynamo=True, state_rule=_lion_momentum, temporaries=2,
                      package="lion-pytorch"),
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
