"""The update path, chosen once, and the memory it costs, priced from the same object.

`UpdatePath` says where `MLP.backward` sends the gradients and when the optimizer runs;
its memory methods read the layout, the networks and the optimizer that will run, so a
plan cannot drift from the code.

- ``flat``: every gradient into the gradient buffer, then (optionally clipped) ``step``.
  Gradient memory: the whole buffer.
- ``fused``: each gradient to ``optimizer.update`` as soon as it is complete. Gradient
  memory: the largest segment.
- ``factored``: as ``fused``, and weights above ``outer_numel`` values go to
  ``optimizer.update_outer`` as factors. Gradient memory: the largest segment that is
  not factored; the factored update adds its blocks (`outer_temporary_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeag.engine.layout import FlatBuffer, Layout, clip_grad_norm_
from edgeag.engine.mlp import MLP, OUTER_NUMEL

if TYPE_CHECKING:  # the optimizers live in edgeag.optim.flat, which imports this package
    from edgeag.optim.flat import EngineOptimizer

__all__ = ["FLAT_MAX_BYTES", "PATH_KINDS", "UpdatePath", "activation_bytes", "choose_path"]

PATH_KINDS = ("flat", "fused", "factored")

FLAT_MAX_BYTES = 4 * 2**20
"""A network of at most this many parameter bytes updates through the gradient buffer
(the flat step: a few ops for every segment); a larger one layer by layer inside the
backward pass when its optimizer allows it."""


def activation_bytes(mlps: list[MLP], batch: int, itemsize: int) -> int:
    """Bytes of the activations the forward passes of ``mlps`` keep for backward."""
    return sum(m.activation_bytes(batch, itemsize) for m in mlps)


@dataclass(frozen=True)
class UpdatePath:
    """How one minibatch update runs, and what memory it needs."""

    kind: str
    outer_numel: int = OUTER_NUMEL
    """``factored``: weights with more values than this are updated from factors."""

    def __post_init__(self) -> None:
        if self.kind not in PATH_KINDS:
            raise ValueError(f"Invalid update path: {self.kind!r} (accepted: "
                             f"{', '.join(PATH_KINDS)})")

    @classmethod
    def for_optimizer(cls, optimizer: EngineOptimizer, *, flat: bool,
                      outer_numel: int = OUTER_NUMEL) -> UpdatePath:
        """``flat`` when asked or when the optimizer cannot be fused into backward (it
        clips the global norm); otherwise ``factored`` when the optimizer updates from
        factors, else ``fused``."""
        if flat or not optimizer.fusable_into_backward:
            return cls("flat", outer_numel)
        return cls("factored" if optimizer.updates_from_factors else "fused", outer_numel)

    # --- running ----------------------------------------------------------------

    def backward(self, mlp: MLP, params: FlatBuffer, acts: list[np.ndarray],
                 grad_out: np.ndarray, optimizer: EngineOptimizer,
                 grads: FlatBuffer | None = None, input_grad: bool = False):
        """`MLP.backward` with this path's destination (``grads`` for ``flat``)."""
        if self.kind == "flat":
            if grads is None:
                raise ValueError("UpdatePath('flat').backward needs grads=")
            return mlp.backward(params, acts, grad_out, grads=grads, input_grad=input_grad)
        outer = optimizer.update_outer if self.kind == "factored" else None
        return mlp.backward(params, acts, grad_out, sink=optimizer.update, outer=outer,
                            outer_numel=self.outer_numel, input_grad=input_grad)

    def finish(self, optimizer: EngineOptimizer, grads: FlatBuffer | None = None,
               max_grad_norm: float | None = None) -> float | None:
        """After every backward of the minibatch: ``flat`` clips (when the optimizer's
        spec says it clips and ``max_grad_norm`` is given) and steps, returning the total
        norm it clipped from; the fused paths have nothing left to do."""
        if self.kind != "flat":
            return None
        total = None
        if max_grad_norm and optimizer.clips_gradients:
            total = clip_grad_norm_(grads, max_grad_norm)
        optimizer.step(grads)
        return total

    # --- pricing ----------------------------------------------------------------

    def factored_segments(self, mlps: list[MLP]) -> set[str]:
        """Names of the weights this path updates from factors."""
        if self.kind != "factored":
            return set()
        return {m.weight(i) for m in mlps for i in range(m.depth)
                if m.sizes[i] * m.sizes[i + 1] > self.outer_numel}

    def gradient_bytes(self, layout: Layout, mlps: list[MLP]) -> int:
        """Bytes of gradient alive at once: the buffer (flat), the largest gradient formed
        (fused, factored)."""
        if self.kind == "flat":
            return layout.nbytes
        factored = self.factored_segments(mlps)
        return max((seg.size * layout.dtype.itemsize for seg in layout
                    if seg.name not in factored), default=0)

    def update_temporary_bytes(self, optimizer: EngineOptimizer, mlps: list[MLP]) -> int:
        """The largest temporary the optimizer allocates inside one update on this path."""
        layout = optimizer.layout
        if self.kind == "flat":
            return optimizer.temporary_bytes(layout.size)
        factored = self.factored_segments(mlps)
        formed = max((optimizer.temporary_bytes(seg.size) for seg in layout
                      if seg.name not in factored), default=0)
        return max([formed] + [optimizer.outer_temporary_bytes(layout[name].size)
                               for name in factored])

    def memory_items(self, optimizer: EngineOptimizer, mlps: list[MLP], batch: int,
                     momentum: float | None = None) -> dict[str, int]:
        """The analytic bytes of one update: parameters, gradients, optimizer state,
        the update's temporaries and the activations of a ``batch``-sample minibatch."""
        layout = optimizer.layout
        return {
            "params": layout.nbytes,
            "grads": self.gradient_bytes(layout, mlps),
            "optimizer_state": optimizer.planned_state_bytes(momentum),
            "update_temporaries": self.update_temporary_bytes(optimizer, mlps),
            "activations": activation_bytes(mlps, batch, layout.dtype.itemsize),
        }


def choose_path(optimizer: EngineOptimizer, fuse_backward: bool,
                outer_numel: int = OUTER_NUMEL, flat_max_bytes: int | None = None) -> UpdatePath:
    """The one update path of a run's network: the decision, in one place. ``flat`` for
    parameters of at most `FLAT_MAX_BYTES` or with ``fuse_backward`` off, else whatever
    the optimizer allows (`UpdatePath.for_optimizer`)."""
    if flat_max_bytes is None:
        flat_max_bytes = FLAT_MAX_BYTES
    flat = optimizer.layout.nbytes <= flat_max_bytes or not fuse_backward
    return UpdatePath.for_optimizer(optimizer, flat=flat, outer_numel=outer_numel)
