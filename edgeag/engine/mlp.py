"""MLPs with a hand-written backward pass, on `FlatBuffer` parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeag.engine.layout import FlatBuffer

__all__ = ["ACTIVATIONS", "MLP", "OUTER_NUMEL", "OUTPUTS", "Outer", "Sink"]

ACTIVATIONS = ("tanh", "relu")
OUTPUTS = ("identity", "tanh")

OUTER_NUMEL = 1 << 20
"""Weights with more values than this go to ``outer`` (when one is given) as the factors
of their gradient instead of the gradient itself."""

Sink = Callable[[str, np.ndarray], None]
"""``sink(name, grad)``: receives a finished gradient; it may overwrite ``grad``."""
Outer = Callable[[str, np.ndarray, np.ndarray], None]
"""``outer(name, d, x)``: receives a weight's gradient as the factors ``d^T x``."""


@dataclass(frozen=True)
class MLP:
    """A stack of linear layers, ``activation`` between them and ``output`` after the last.

    Segment names follow torch's ``nn.Sequential`` of ``nn.Linear`` and activation
    modules: layer ``i`` is ``{prefix}.{2 i}.weight`` (``[out, in]``) and
    ``{prefix}.{2 i}.bias``, so a torch ``state_dict`` loads by name
    (`FlatBuffer.load_state_dict`).
    """

    sizes: tuple[int, ...]
    activation: str = "tanh"
    output: str = "identity"
    prefix: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(int(n) for n in self.sizes))
        if len(self.sizes) < 2 or any(n < 1 for n in self.sizes):
            raise ValueError(f"Invalid sizes value: {self.sizes} (accepted: two or more "
                             f"positive widths, input first)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Invalid activation value: {self.activation!r} (accepted: "
                             f"{', '.join(ACTIVATIONS)})")
        if self.output not in OUTPUTS:
            raise ValueError(f"Invalid output value: {self.output!r} (accepted: "
                             f"{', '.join(OUTPUTS)})")
        # (weight name, bias name, what follows) per layer: the forward pass of a small
        # batch is mostly Python, so its names are worked out once
        last = self.depth - 1
        object.__setattr__(self, "_layers", tuple(
            (self.weight(i), self.bias(i), self.activation if i < last else self.output)
            for i in range(self.depth)))

    @property
    def depth(self) -> int:
        """Number of linear layers."""
        return len(self.sizes) - 1

    def weight(self, i: int) -> str:
        return f"{self.prefix}.{2 * i}.weight" if self.prefix else f"{2 * i}.weight"

    def bias(self, i: int) -> str:
        return f"{self.prefix}.{2 * i}.bias" if self.prefix else f"{2 * i}.bias"

    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every parameter, weight then bias, input layer first."""
        out = []
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            out += [(self.weight(i), (n_out, n_in)), (self.bias(i), (n_out,))]
        return out

    def activation_bytes(self, batch: int, itemsize: int) -> int:
        """Bytes of the activations `forward` returns (every layer's output; the input
        is the caller's)."""
        return batch * sum(self.sizes[1:]) * itemsize

    def forward(self, params: FlatBuffer, x: np.ndarray) -> list[np.ndarray]:
        """``[x, h_1, ..., h_{L-1}, out]``: the input of every layer and the output, what
        `backward` needs. ``x`` is ``[batch, sizes[0]]``."""
        x = np.asarray(x, dtype=params.layout.dtype)
        acts, h, views = [x], x, params.views
        for w_name, b_name, kind in self._layers:
            z = np.matmul(h, views[w_name].T)
            z += views[b_name]
            if kind == "tanh":
                np.tanh(z, out=z)
            elif kind == "relu":
                np.maximum(z, 0, out=z)
            acts.append(z)
            h = z
        return acts

    def backward(self, params: FlatBuffer, acts: list[np.ndarray], grad_out: np.ndarray, *,
                 grads: FlatBuffer | None = None, sink: Sink | None = None,
                 outer: Outer | None = None, outer_numel: int = OUTER_NUMEL,
                 input_grad: bool = False) -> np.ndarray | None:
        """Backpropagate ``grad_out`` (d loss / d out, ``[batch, out]``), last layer first.

        At most one destination: ``grads`` (the gradient buffer, every gradient written
        in place), or ``sink(name, grad)``, which receives each weight's then bias's
        gradient as soon as it is complete and the layer's weight is no longer needed,
        so it may update the parameter in place (one layer's gradient alive at a time).
        With ``outer``, weights of more than ``outer_numel`` values go to
        ``outer(name, d, x)`` as the factors of their gradient ``d^T x`` instead.
        With neither, only d loss / d the input is computed (``input_grad`` must be set):
        a loss that reaches another network through this one (TD3's actor loss through
        its critic) leaves this network's parameters alone.
        Returns d loss / d the input with ``input_grad``, else None.
        """
        if grads is not None and sink is not None:
            raise ValueError("backward: pass at most one of grads= or sink=")
        if grads is None and sink is None and not input_grad:
            raise ValueError("backward: pass grads= or sink=, or ask for input_grad=True")
        if outer is not None and sink is None:
            raise ValueError("backward: outer= needs sink=")
        d = np.asarray(grad_out, dtype=params.layout.dtype)
        if self.output == "tanh":
            d = d * _tanh_derivative(acts[-1])
        for i in range(self.depth - 1, -1, -1):
            x, w_name, b_name = acts[i], self.weight(i), self.bias(i)
            weight = params[w_name]
            factored = outer is not None and weight.size > outer_numel
            if grads is not None:
                np.matmul(d.T, x, out=grads[w_name])
                np.sum(d, axis=0, out=grads[b_name])
                grad_w = grad_b = None
            elif sink is not None:
                grad_w = None if factored else np.matmul(d.T, x)
                grad_b = d.sum(axis=0)
            below = None
            if i > 0 or input_grad:  # from the weight before any update
                below = np.matmul(d, weight)
                if i > 0:
                    if self.activation == "tanh":
                        below *= _tanh_derivative(x)
                    else:
                        below *= x > 0
            if sink is not None:
                if factored:
                    outer(w_name, d, x)
                else:
                    sink(w_name, grad_w)
                del grad_w
                sink(b_name, grad_b)
            d = below
        return d if input_grad else None


def _tanh_derivative(y: np.ndarray) -> np.ndarray:
    """``1 - y^2`` for ``y = tanh(z)``: d tanh / d z, a new array."""
    out = np.multiply(y, y)
    np.subtract(1.0, out, out=out)
    return out
