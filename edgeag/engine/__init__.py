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

Optimizers (`edgeag.engine.optim`), bound to the parameter buffer:

- `AlphaGrad`, `Adam`, `SGD`: `edgeag.optim`'s hyperparameters, defaults, messages and
  state rules (`edgeag.optim_rules`). ``step(grads)`` (flat), ``update(name, grad)``
  (a backward sink), ``update_outer(name, d, x)`` (factors), ``state_bytes()``,
  ``state_dict()`` / ``load_state_dict()``, ``set_lr(lr)``.
- `ENGINE_OPTIMIZERS`, `supported_engine_optimizers`, `build_engine_optimizer`: the
  registry, with ``clips_gradients`` and ``fusable_into_backward`` per optimizer.
- `clip_grad_norm_`: ``torch.nn.utils.clip_grad_norm_`` on a gradient buffer.
- `alphagrad_outer_`, `outer_norm` (`edgeag.engine.outer`): the factored update.

Running and planning:

- `UpdatePath` (`edgeag.engine.plan`): ``flat``, ``fused`` or ``factored``, chosen once
  (`UpdatePath.for_optimizer`, `choose_path` by size); runs backward to the right destination and prices the
  same choice (``memory_items``: params, grads, optimizer state, update temporaries,
  activations).
- `set_blas_threads` (`edgeag.engine.threads`): numpy's BLAS threads for the run.

A PPO-style update on the engine (the output gradients come from the algorithm)::

    >>> import numpy as np
    >>> from edgeag.engine import (MLP, Layout, UpdatePath, build_engine_optimizer,
    ...                            init_orthogonal)
    >>> actor = MLP((4, 64, 64, 2), prefix="actor")
    >>> critic = MLP((4, 64, 64, 1), prefix="critic")
    >>> layout = Layout.from_shapes(actor.shapes() + critic.shapes())
    >>> params, grads = layout.zeros(), layout.zeros()
    >>> rng = np.random.default_rng(0)
    >>> init_orthogonal(params, actor, rng, last_gain=0.01)
    >>> init_orthogonal(params, critic, rng, last_gain=1.0)
    >>> opt = build_engine_optimizer("alphagrad", params, lr=2.5e-4)
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

from edgeag.engine.init import (LEAN_ORTHOGONAL_NUMEL, init_linear_default, init_orthogonal,
                                lean_orthogonal_, orthogonal_)
from edgeag.engine.layout import FlatBuffer, Layout, Segment
from edgeag.engine.mlp import MLP, OUTER_NUMEL
from edgeag.engine.optim import (ENGINE_OPTIMIZERS, SGD, Adam, AlphaGrad, EngineOptimizer,
                                 EngineOptimizerSpec, alphagrad_direction_,
                                 build_engine_optimizer, clip_grad_norm_, get_engine_spec,
                                 segment_norms, supported_engine_optimizers)
from edgeag.engine.outer import OUTER_BLOCK_NUMEL, alphagrad_outer_, outer_norm
from edgeag.engine.plan import FLAT_MAX_BYTES, UpdatePath, activation_bytes, choose_path
from edgeag.engine.threads import BlasThreads, blas_threads, set_blas_threads

__all__ = ["ENGINE_OPTIMIZERS", "FLAT_MAX_BYTES", "LEAN_ORTHOGONAL_NUMEL", "OUTER_BLOCK_NUMEL", "OUTER_NUMEL",
           "SGD", "Adam", "AlphaGrad", "BlasThreads", "EngineOptimizer", "EngineOptimizerSpec",
           "FlatBuffer", "Layout", "MLP", "Segment", "UpdatePath", "activation_bytes",
           "alphagrad_direction_", "alphagrad_outer_", "blas_threads", "build_engine_optimizer",
           "choose_path", "clip_grad_norm_", "get_engine_spec", "init_linear_default", "init_orthogonal",
           "lean_orthogonal_", "orthogonal_", "outer_norm", "segment_norms",
           "set_blas_threads", "supported_engine_optimizers"]
