"""The numpy engine: MLP training without torch (numpy, and scipy for large inits only).

``import torch`` alone costs most of a 256 MiB budget; numpy and gymnasium cost a fifth
of it. This package is what a device trains MLP policies with. It never imports torch,
directly or through another edgeag module (tested in a fresh process); torch
(autograd and `edgeag.optim`) is the reference it is tested against in float64.

Layout and networks:

- `Layout` / `Segment` / `FlatBuffer` (`edgeag.engine.layout`): named tensors end to end
  in one float32 (or float64) buffer, a view per segment; ``layout.zeros()`` makes the
  parameter buffer and, for the flat path, a gradient buffer of the same layout.
- `MLP` (`edgeag.engine.mlp`): tanh or ReLU hidden layers, optional output tanh,
  weights ``[out, in]`` named like torch's ``nn.Sequential`` keys. ``forward(params, x)``
  returns the activations; ``backward(params, acts, grad_out, grads=... | sink=...,
  outer=..., input_grad=...)`` writes the gradient buffer, or hands each gradient to a
  sink as soon as it is complete, large weights as factors to ``outer``, and returns
  d loss / d input on request.
- `orthogonal_`, `lean_orthogonal_`, `init_orthogonal`, `init_linear_default`
  (`edgeag.engine.init`): torch's initialisation algorithms from a seeded
  `np.random.Generator`; large square weights factorised in their own memory.

Optimizers bound to the parameter buffer live in `edgeag.optim.flat` (`AlphaGrad`,
`Adam`, `SGD`, built by name with `edgeag.optim.flat.build`); this package never imports
them, so `edgeag.optim` may build on it.

Running and planning:

- `UpdatePath` (`edgeag.engine.update_path`): ``flat``, ``fused`` or ``factored``, chosen once
  (`UpdatePath.for_optimizer`, `choose_path` by size); runs backward to the right
  destination and prices the
  same choice (``memory_items``: params, grads, optimizer state, update temporaries,
  activations).
- `segment_norms`, `clip_grad_norm_` (`edgeag.engine.layout`): per-segment norms, and
  ``torch.nn.utils.clip_grad_norm_`` on a gradient buffer.
- `set_blas_threads` (`edgeag.engine.threads`): numpy's BLAS threads for the run.

A PPO-style update on the engine (the output gradients come from the algorithm)::

    >>> import numpy as np
    >>> from edgeag.engine import MLP, Layout, UpdatePath, init_orthogonal
    >>> from edgeag.optim import flat
    >>> actor = MLP((4, 64, 64, 2), prefix="actor")
    >>> critic = MLP((4, 64, 64, 1), prefix="critic")
    >>> layout = Layout.from_shapes(actor.shapes() + critic.shapes())
    >>> params, grads = layout.zeros(), layout.zeros()
    >>> rng = np.random.default_rng(0)
    >>> init_orthogonal(params, actor, rng, last_gain=0.01)
    >>> init_orthogonal(params, critic, rng, last_gain=1.0)
    >>> opt = flat.build("alphagrad", params, lr=2.5e-4)
    >>> path = UpdatePath.for_optimizer(opt, flat=True)
    >>> obs = rng.standard_normal((256, 4), dtype=np.float32)
    >>> acts_a, acts_c = actor.forward(params, obs), critic.forward(params, obs)
    >>> grad_logits, grad_value = acts_a[-1] / 256, (acts_c[-1] - 1.0) / 256
    >>> path.backward(actor, params, acts_a, grad_logits, opt, grads)
    >>> path.backward(critic, params, acts_c, grad_value, opt, grads)
    >>> path.finish(opt, grads, max_grad_norm=0.5)  # clips only for Adam and SGD
    >>> layout.size, opt.state_bytes()
    (9155, 0)
"""

from edgeag.engine.init import (
                                LEAN_ORTHOGONAL_NUMEL,
                                init_linear_default,
                                init_orthogonal,
                                lean_orthogonal_,
                                orthogonal_,
)
from edgeag.engine.layout import FlatBuffer, Layout, Segment, clip_grad_norm_, segment_norms
from edgeag.engine.mlp import MLP, OUTER_NUMEL
from edgeag.engine.threads import BlasThreads, blas_threads, set_blas_threads
from edgeag.engine.update_path import FLAT_MAX_BYTES, UpdatePath, activation_bytes, choose_path

__all__ = ["FLAT_MAX_BYTES", "LEAN_ORTHOGONAL_NUMEL", "OUTER_NUMEL", "BlasThreads",
           "FlatBuffer", "Layout", "MLP", "Segment", "UpdatePath", "activation_bytes",
           "blas_threads", "choose_path", "clip_grad_norm_", "init_linear_default",
           "init_orthogonal", "lean_orthogonal_", "orthogonal_", "segment_norms",
           "set_blas_threads"]
