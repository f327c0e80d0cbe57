"""Optimizers for on-device training: one registry, one rule per engine.

- `edgeag.optim.registry`: the one registry (names, engines, defaults, validation,
  state rule, clipping, fusability, packages), read without torch.
- `edgeag.optim.rules`: defaults, ranges and state sizes shared by both engines.
- `edgeag.optim.alphagrad`, `.adam`, `.sgd` (torch): `torch.optim.Optimizer` subclasses
  that never import `torch._dynamo` (`edgeag.optim._base`).
- `edgeag.optim.flat` (numpy): the same optimizers over the numpy engine's flat
  parameter buffer, and `edgeag.optim.factored`, the norm of a gradient given as factors.
- `edgeag.optim.reference`: AlphaGrad written as a plain loop, the oracle both engines
  are tested equal to in float64.

``from edgeag.optim import AlphaGrad`` is the torch optimizer; importing this package
imports torch only when a torch name is asked for.
"""

from __future__ import annotations

import importlib

from edgeag.optim.registry import OPTIMIZERS, OptimizerInfo

__all__ = ["AlphaGrad", "Adam", "SGD", "LeanOptimizer", "OPTIMIZERS", "OptimizerInfo",
           "alphagrad", "alphagrad_direction", "build_optimizer", "fuse_into_backward",
           "state_bytes", "supported_optimizers"]

_TORCH_NAMES = {
    "AlphaGrad": "edgeag.optim.alphagrad", "alphagrad": "edgeag.optim.alphagrad",
    "alphagrad_direction": "edgeag.optim.alphagrad",
    "fuse_into_backward": "edgeag.optim.alphagrad", "Adam": "edgeag.optim.adam",
    "SGD": "edgeag.optim.sgd", "LeanOptimizer": "edgeag.optim._base",
    "state_bytes": "edgeag.optim._base",
}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module 'edgeag.optim' has no attribute {name!r}")


def supported_optimizers() -> list[str]:
    """Names accepted by `build_optimizer` and ``--optimizer``."""
    return list(OPTIMIZERS)


def build_optimizer(name: str, params, **options):
    """Build a registered torch optimizer by name; options a given optimizer does not
    take (``alpha`` for Adam, say) are ignored."""
    from edgeag.optim.registry import get

    return get(name).build_torch(params, **options)
