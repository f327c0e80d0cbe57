"""AlphaGrad as a plain loop: the readable reference both engines are tested equal to.

One tensor at a time, in the order of the paper's algorithm, with numpy in whatever
precision the arrays have (the parity tests use float64). Nothing here is fast or
memory-lean; `edgeag.optim.alphagrad` (torch) and `edgeag.optim.flat` (numpy) are, and
each writes the rule once (`scaled_direction`, `alphagrad_`).
"""

from __future__ import annotations

import numpy as np

from edgeag.optim.rules import ALPHAGRAD_DEFAULTS, tensor_alpha

__all__ = ["alphagrad_step"]


def alphagrad_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                   buffers: dict[str, np.ndarray], **hparams) -> None:
    """One AlphaGrad step of every tensor in ``params`` (updated in place) from
    ``grads``; ``buffers`` holds the momentum buffers between steps (empty at first).
    ``hparams``: `edgeag.optim.AlphaGrad`'s, defaults for those not given."""
    h = {**ALPHAGRAD_DEFAULTS, **hparams}
    for name, p in params.items():
        g = -grads[name] if h["maximize"] else grads[name]
        alpha = tensor_alpha(h["alpha"], g.size, h["alpha_scale"])
        u = np.tanh(alpha * g / (np.linalg.norm(g) + h["eps"]))
        p *= 1 - h["lr"] * h["weight_decay"]
        if h["momentum"]:
            if name in buffers:
                buffers[name] = h["momentum"] * buffers[name] + (1 - h["dampening"]) * u
            else:
                buffers[name] = u.copy()
            u = u + h["momentum"] * buffers[name] if h["nesterov"] else buffers[name]
        p -= h["lr"] * u
