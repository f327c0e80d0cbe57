r"""AlphaGrad, Adam and SGD over a `FlatBuffer`'s segments, with `edgeag.optim`'s semantics.

Each optimizer is bound to the parameters it updates and offers three entry points:

- ``step(grads)``: every segment from the gradient buffer, in a few whole-buffer
  operations (the flat path);
- ``update(name, grad)``: one segment as soon as its gradient is complete (a
  `MLP.backward` sink: the update inside backward, one layer's gradient alive at a time);
- ``update_outer(name, d, x)``: one weight from its gradient's factors ``d^T x``
  (stateless AlphaGrad updates in row blocks, its norm from `edgeag.optim.factored`;
  every other configuration forms the gradient and calls ``update``).

All three overwrite the gradient they are given. Hyperparameters, defaults, validation
and error messages are the torch optimizers' (both take them from `edgeag.optim.rules`);
state is created only when a rule needs it (none for stateless AlphaGrad) and
`state_bytes()` equals the registry's analytic rule (`layout_state_bytes`).

AlphaGrad, per tensor (the norm is per segment, never global):

.. math::
    u = \tanh\!\Big(\alpha \frac{g}{\lVert g \rVert_2 + \epsilon}\Big), \qquad
    \theta \leftarrow \theta - \eta\, u

with ``momentum`` in `torch.optim.SGD`'s convention (``b = u`` on the first step, then
``b <- momentum b + (1 - dampening) u``; the step is ``b``, or ``u + momentum b`` with
Nesterov), decoupled ``weight_decay`` (``theta <- theta (1 - lr weight_decay)`` first)
and ``maximize`` (the gradient negated). `alphagrad_` is the rule, the one place this
engine writes it: the flat step, the per-segment update and the factored update all
call it.
"""

from __future__ import annotations

import math

import numpy as np

from edgeag.engine.layout import FlatBuffer, Layout, segment_norms
from edgeag.optim import registry
from edgeag.optim.factored import OUTER_BLOCK_NUMEL, outer_norm, outer_temporary_bytes, row_blocks
from edgeag.optim.rules import (
    ADAM_DEFAULTS,
    ALPHAGRAD_DEFAULTS,
    SGD_DEFAULTS,
    tensor_alpha,
    validate_adam,
    validate_alphagrad,
    validate_sgd,
)

__all__ = ["Adam", "AlphaGrad", "EngineOptimizer", "SGD", "alphagrad_", "alphagrad_outer_",
           "build", "layout_state_bytes"]


# --- the rule -----------------------------------------------------------------------

def alphagrad_(g: np.ndarray, norm: float, alpha: float, eps: float,
               maximize: bool = False) -> np.ndarray:
    """The rule, in place: ``g`` becomes ``tanh(alpha * g / (norm + eps))`` (negated
    inside the tanh with ``maximize``) and is returned. ``norm`` is the 2-norm of the
    whole tensor's gradient, of which ``g`` may be a block. A zero gradient gives 0."""
    c = alpha / (norm + eps)
    g *= -c if maximize else c
    np.tanh(g, out=g)
    return g


def alphagrad_outer_(weight: np.ndarray, d: np.ndarray, x: np.ndarray, *, lr: float,
                     alpha: float, eps: float, maximize: bool = False,
                     block_numel: int = OUTER_BLOCK_NUMEL) -> None:
    """Stateless AlphaGrad on ``weight`` (``[out, in]``) whose gradient is ``d^T x``,
    without forming it: the norm from the factors (`edgeag.optim.factored.outer_norm`),
    then `alphagrad_` on one row block of ``g`` at a time, in one reused block."""
    norm = outer_norm(d, x, block_numel)
    n_out, n_in = weight.shape
    block = np.empty(min(block_numel, n_out * n_in) or 1, dtype=weight.dtype)
    for r0, r1 in row_blocks(n_out, n_in, block_numel):
        g = block[:(r1 - r0) * n_in].reshape(r1 - r0, n_in)
        np.matmul(d[:, r0:r1].T, x, out=g)
        alphagrad_(g, norm, alpha, eps, maximize)
        g *= -lr
        weight[r0:r1] += g


# --- the optimizers -----------------------------------------------------------------

class EngineOptimizer:
    """Base of the engine's optimizers: bound to ``params``, hyperparameters in
    ``hparams`` (validated; change the learning rate with `set_lr`), state arrays the
    size of the buffer in ``state`` (created on the first update that needs them)."""

    name = ""
    defaults: dict = {}

    def __init__(self, params: FlatBuffer, **hparams) -> None:
        self.params = params
        self.layout: Layout = params.layout
        self.hparams = {**self.defaults, **hparams}
        self._validate(self.hparams)
        self.state: dict[str, np.ndarray] = {}
        self._index = {seg.name: i for i, seg in enumerate(self.layout)}

    @staticmethod
    def _validate(hparams: dict) -> None:
        raise NotImplementedError

    @property
    def info(self) -> registry.OptimizerInfo:
        """Its registry entry: clipping, fusability, state rule."""
        return registry.get(self.name)

    @property
    def clips_gradients(self) -> bool:
        """Training clips the global gradient norm before `step` (needs every gradient)."""
        return self.info.clips_gradients

    @property
    def fusable_into_backward(self) -> bool:
        """Each segment can be updated as soon as its own gradient is complete."""
        return self.info.fusable and not self.info.clips_gradients

    @property
    def lr(self) -> float:
        return self.hparams["lr"]

    def set_lr(self, lr: float) -> None:
        """Set the learning rate (a schedule's value), validated like the constructor's."""
        self._validate({**self.hparams, "lr": lr})
        self.hparams["lr"] = lr

    @property
    def updates_from_factors(self) -> bool:
        """True when `update_outer` updates without forming the gradient."""
        return False

    def step(self, grads: FlatBuffer) -> None:
        """Update every segment from ``grads`` (same layout; overwritten)."""
        if grads.layout is not self.layout and grads.layout != self.layout:
            raise ValueError("step: the gradient buffer's layout is not the parameters' layout")
        self._step(grads)

    def update(self, name: str, grad: np.ndarray) -> None:
        """Update segment ``name`` from its gradient now (``grad`` is overwritten)."""
        i = self._segment(name)
        seg = self.layout.segments[i]
        if grad.shape != seg.shape:
            raise ValueError(f"update: gradient of {name!r} has shape {grad.shape} "
                             f"(accepted: {seg.shape})")
        if not grad.flags.c_contiguous:
            grad = np.ascontiguousarray(grad)
        self._update(i, grad.reshape(-1))

    def update_outer(self, name: str, d: np.ndarray, x: np.ndarray) -> None:
        """Update weight ``name`` from its gradient given as the factors ``d^T x``. Here:
        the gradient is formed and handed to `update`."""
        self.update(name, np.matmul(d.T, x))

    def outer_temporary_bytes(self, numel: int) -> int:
        """The most `update_outer` allocates at once for a weight of ``numel`` values:
        here the formed gradient and its update's temporaries."""
        return numel * self.layout.dtype.itemsize + self.temporary_bytes(numel)

    def _segment(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ValueError(f"update: {name!r} is not a segment of this optimizer's "
                             f"parameters") from None

    def _step(self, grads: FlatBuffer) -> None:
        raise NotImplementedError

    def _update(self, i: int, grad: np.ndarray) -> None:
        raise NotImplementedError

    def state_bytes(self) -> int:
        """Bytes held by the state arrays."""
        return sum(v.nbytes for v in self.state.values())

    def planned_state_bytes(self, momentum: float | None = None) -> int:
        """What `state_bytes` will be once every segment has stepped, by the registry's
        rule (``momentum`` defaults to this optimizer's)."""
        if momentum is None:
            momentum = self.hparams.get("momentum", 0.0)
        return layout_state_bytes(self.name, self.layout, momentum)

    def temporary_bytes(self, numel: int) -> int:
        """Bytes of the temporary arrays one update of ``numel`` values allocates (beyond
        a few scalars): ``step`` updates ``layout.size`` values, ``update`` one segment."""
        return 0

    def state_dict(self, copy: bool = True) -> dict:
        """The state arrays (copies; the arrays themselves with ``copy=False``) and the
        hyperparameters, plain numpy arrays and JSON-able scalars:
        ``{"state": {...}, "hparams": {...}, "extra": {...}}``."""
        return {"state": {k: v.copy() if copy else v for k, v in self.state.items()},
                "hparams": {k: list(v) if isinstance(v, tuple) else v
                            for k, v in self.hparams.items()},
                "extra": self._extra_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned (the same layout)."""
        hparams = {k: tuple(v) if isinstance(self.defaults.get(k), tuple) else v
                   for k, v in state["hparams"].items()}
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            raise ValueError(f"Invalid hyperparameters: {sorted(unknown)} (accepted: "
                             f"{', '.join(self.defaults)})")
        self._validate({**self.defaults, **hparams})
        arrays = {}
        for k, v in state["state"].items():
            expected = self._state_shape(k)
            if expected is None or np.shape(v) != expected:
                raise ValueError(f"Invalid state array {k!r} of shape {np.shape(v)} (accepted: "
                                 f"{self._state_shape(k)})")
            arrays[k] = np.array(v, dtype=self._state_dtype(k), copy=True)
        self.hparams = {**self.defaults, **hparams}
        self.state = arrays
        self._load_extra(state.get("extra", {}))

    def _state_shape(self, key: str) -> tuple | None:
        return None

    def _state_dtype(self, key: str) -> np.dtype:
        return self.layout.dtype

    def _extra_state(self) -> dict:
        return {}

    def _load_extra(self, extra: dict) -> None:
        pass


class _MomentumOptimizer(EngineOptimizer):
    """Shared by AlphaGrad and SGD: one ``momentum_buffer`` the size of the buffer when
    momentum > 0, and which segments have started it (``b = update`` on a segment's
    first step, as `torch.optim.SGD` clones it)."""

    def __init__(self, params: FlatBuffer, **hparams) -> None:
        super().__init__(params, **hparams)
        self._started = [False] * len(self.layout)

    def _buffer(self) -> np.ndarray:
        buf = self.state.get("momentum_buffer")
        if buf is None:
            buf = self.state["momentum_buffer"] = np.zeros(self.layout.size, self.layout.dtype)
        return buf

    def _state_shape(self, key: str) -> tuple | None:
        return (self.layout.size,) if key == "momentum_buffer" else None

    def _extra_state(self) -> dict:
        return {"momentum_started": list(self._started)}

    def _load_extra(self, extra: dict) -> None:
        started = extra.get("momentum_started", [False] * len(self.layout))
        if len(started) != len(self.layout):
            raise ValueError(f"Invalid momentum_started of length {len(started)} (accepted: "
                             f"{len(self.layout)}, one per segment)")
        self._started = [bool(s) for s in started]

    def temporary_bytes(self, numel: int) -> int:
        return numel * self.layout.dtype.itemsize if self._needs_scratch() else 0

    def _needs_scratch(self) -> bool:
        return self.hparams["momentum"] != 0

    def _apply_all(self, grads: FlatBuffer) -> None:
        """The momentum and update part of `_apply` over the whole buffer when every
        segment is at the same stage, else segment by segment."""
        if self.hparams["momentum"] == 0 or all(self._started) or not any(self._started):
            self._apply(self.params.data, grads.data,
                        self._buffer() if self.hparams["momentum"] else None,
                        first=not any(self._started))
            self._started = [self.hparams["momentum"] != 0] * len(self.layout)
            return
        for i, g in enumerate(grads.flat_views):
            self._apply_segment(i, g)

    def _apply_segment(self, i: int, g: np.ndarray) -> None:
        seg = self.layout.segments[i]
        buf = self._buffer()[seg.offset:seg.stop] if self.hparams["momentum"] else None
        self._apply(self.params.flat_views[i], g, buf, first=not self._started[i])
        self._started[i] = self.hparams["momentum"] != 0

    def _apply(self, p: np.ndarray, u: np.ndarray, buf: np.ndarray | None, first: bool) -> None:
        raise NotImplementedError


def _momentum_(p: np.ndarray, u: np.ndarray, buf: np.ndarray | None, *, first: bool, lr: float,
               momentum: float, dampening: float, nesterov: bool) -> None:
    """``p -= lr * step`` with `torch.optim.SGD`'s momentum on the direction ``u``
    (overwritten): the part AlphaGrad and SGD share."""
    if momentum == 0:
        u *= -lr
        p += u
        return
    if first:
        buf[...] = u
    else:
        buf *= momentum
        if dampening:
            scratch = np.multiply(u, 1.0 - dampening)
            buf += scratch
            del scratch
        else:
            buf += u
    if nesterov:
        scratch = np.multiply(buf, momentum)
        u += scratch
        del scratch
        u *= -lr
        p += u
    else:
        scratch = np.multiply(buf, -lr)
        p += scratch


class AlphaGrad(_MomentumOptimizer):
    """`edgeag.optim.AlphaGrad` on a flat buffer (see the module docstring for the rule).

    Args: ``lr``, ``alpha`` (> 0), ``eps`` (> 0, 1e-5), ``momentum``, ``dampening``,
    ``nesterov``, ``weight_decay`` (decoupled), ``maximize``, ``alpha_scale`` (``none``
    or ``sqrt_numel``: `edgeag.optim.rules.tensor_alpha`): `edgeag.optim.AlphaGrad`'s
    names, defaults and ranges; ``block_numel`` the row-block size of `update_outer`.
    """

    name = "alphagrad"
    defaults = dict(ALPHAGRAD_DEFAULTS)

    def __init__(self, params: FlatBuffer, lr: float = ALPHAGRAD_DEFAULTS["lr"],
                 alpha: float = ALPHAGRAD_DEFAULTS["alpha"],
                 eps: float = ALPHAGRAD_DEFAULTS["eps"],
                 momentum: float = ALPHAGRAD_DEFAULTS["momentum"],
                 dampening: float = ALPHAGRAD_DEFAULTS["dampening"],
                 nesterov: bool = ALPHAGRAD_DEFAULTS["nesterov"],
                 weight_decay: float = ALPHAGRAD_DEFAULTS["weight_decay"],
                 maximize: bool = ALPHAGRAD_DEFAULTS["maximize"],
                 alpha_scale: str = ALPHAGRAD_DEFAULTS["alpha_scale"], *,
                 block_numel: int = OUTER_BLOCK_NUMEL) -> None:
        if not isinstance(block_numel, int) or block_numel < 1:
            raise ValueError(f"Invalid block_numel value: {block_numel!r} (accepted: an "
                             f"integer >= 1)")
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                         dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
                         maximize=maximize, alpha_scale=alpha_scale)
        self.block_numel = block_numel

    @staticmethod
    def _validate(h: dict) -> None:
        validate_alphagrad(lr=h["lr"], alpha=h["alpha"], eps=h["eps"], momentum=h["momentum"],
                           dampening=h["dampening"], nesterov=h["nesterov"],
                           weight_decay=h["weight_decay"], alpha_scale=h["alpha_scale"])

    def _alpha(self, numel: int) -> float:
        """This optimizer's alpha for a tensor of ``numel`` values (`tensor_alpha`)."""
        return tensor_alpha(self.hparams["alpha"], numel, self.hparams["alpha_scale"])

    @property
    def updates_from_factors(self) -> bool:
        return self.hparams["momentum"] == 0

    def _step(self, grads: FlatBuffer) -> None:
        h = self.hparams
        for v, norm in zip(grads.flat_views, segment_norms(grads).tolist()):
            alphagrad_(v, norm, self._alpha(v.size), h["eps"], h["maximize"])
        if h["weight_decay"] != 0:
            self.params.data *= 1.0 - h["lr"] * h["weight_decay"]
        self._apply_all(grads)

    def _update(self, i: int, grad: np.ndarray) -> None:
        h = self.hparams
        alphagrad_(grad, math.sqrt(float(np.dot(grad, grad))), self._alpha(grad.size), h["eps"],
                   h["maximize"])
        if h["weight_decay"] != 0:
            self.params.flat_views[i] *= 1.0 - h["lr"] * h["weight_decay"]
        self._apply_segment(i, grad)

    def _apply(self, p, u, buf, first) -> None:
        h = self.hparams
        _momentum_(p, u, buf, first=first, lr=h["lr"], momentum=h["momentum"],
                   dampening=h["dampening"], nesterov=h["nesterov"])

    def update_outer(self, name: str, d: np.ndarray, x: np.ndarray) -> None:
        """Stateless: the update from the factors in row blocks (`alphagrad_outer_`, no
        array the size of the weight). With momentum the gradient is formed."""
        h = self.hparams
        if not self.updates_from_factors:
            super().update_outer(name, d, x)
            return
        self._segment(name)
        weight = self.params[name]
        if weight.ndim != 2 or weight.shape != (d.shape[1], x.shape[1]):
            raise ValueError(f"update_outer: {name!r} has shape {weight.shape}, the factors "
                             f"give ({d.shape[1]}, {x.shape[1]})")
        if h["weight_decay"] != 0:
            weight *= 1.0 - h["lr"] * h["weight_decay"]
        alphagrad_outer_(weight, d, x, lr=h["lr"], alpha=self._alpha(weight.size), eps=h["eps"],
                         maximize=h["maximize"], block_numel=self.block_numel)

    def outer_temporary_bytes(self, numel: int) -> int:
        """Stateless: the row blocks of `alphagrad_outer_`, whatever ``numel``."""
        if not self.updates_from_factors:
            return super().outer_temporary_bytes(numel)
        return outer_temporary_bytes(self.layout.dtype.itemsize, self.block_numel)


class SGD(_MomentumOptimizer):
    """`edgeag.optim.SGD` (`torch.optim.SGD`'s algorithm) on a flat buffer: L2
    ``weight_decay`` added to the gradient, optional (Nesterov) momentum, ``maximize``."""

    name = "sgd"
    defaults = dict(SGD_DEFAULTS)

    def __init__(self, params: FlatBuffer, lr: float = SGD_DEFAULTS["lr"],
                 momentum: float = SGD_DEFAULTS["momentum"],
                 dampening: float = SGD_DEFAULTS["dampening"],
                 weight_decay: float = SGD_DEFAULTS["weight_decay"],
                 nesterov: bool = SGD_DEFAULTS["nesterov"],
                 maximize: bool = SGD_DEFAULTS["maximize"]) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)

    @staticmethod
    def _validate(h: dict) -> None:
        validate_sgd(lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                     weight_decay=h["weight_decay"], nesterov=h["nesterov"])

    def _needs_scratch(self) -> bool:
        return self.hparams["momentum"] != 0 or self.hparams["weight_decay"] != 0

    def _direction(self, p: np.ndarray, g: np.ndarray) -> None:
        h = self.hparams
        if h["maximize"]:
            np.negative(g, out=g)
        if h["weight_decay"] != 0:
            scratch = np.multiply(p, h["weight_decay"])
            g += scratch

    def _step(self, grads: FlatBuffer) -> None:
        self._direction(self.params.data, grads.data)
        self._apply_all(grads)

    def _update(self, i: int, grad: np.ndarray) -> None:
        self._direction(self.params.flat_views[i], grad)
        self._apply_segment(i, grad)

    def _apply(self, p, u, buf, first) -> None:
        h = self.hparams
        _momentum_(p, u, buf, first=first, lr=h["lr"], momentum=h["momentum"],
                   dampening=h["dampening"], nesterov=h["nesterov"])


class Adam(EngineOptimizer):
    """`edgeag.optim.Adam` (`torch.optim.Adam`'s for-loop algorithm, ``amsgrad=False``)
    on a flat buffer: ``exp_avg`` and ``exp_avg_sq`` the size of the buffer, a float32
    step count per segment (as torch keeps one per tensor), bias correction, L2
    ``weight_decay`` added to the gradient, ``maximize``."""

    name = "adam"
    defaults = dict(ADAM_DEFAULTS)

    def __init__(self, params: FlatBuffer, lr: float = ADAM_DEFAULTS["lr"],
                 betas: tuple[float, float] = ADAM_DEFAULTS["betas"],
                 eps: float = ADAM_DEFAULTS["eps"],
                 weight_decay: float = ADAM_DEFAULTS["weight_decay"],
                 maximize: bool = ADAM_DEFAULTS["maximize"]) -> None:
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                         maximize=maximize)

    @staticmethod
    def _validate(h: dict) -> None:
        validate_adam(lr=h["lr"], betas=h["betas"], eps=h["eps"], weight_decay=h["weight_decay"])

    def _init_state(self) -> None:
        if not self.state:
            n, dtype = self.layout.size, self.layout.dtype
            self.state = {"step": np.zeros(len(self.layout), np.float32),
                          "exp_avg": np.zeros(n, dtype), "exp_avg_sq": np.zeros(n, dtype)}

    def _state_shape(self, key: str) -> tuple | None:
        if key == "step":
            return (len(self.layout),)
        return (self.layout.size,) if key in ("exp_avg", "exp_avg_sq") else None

    def _state_dtype(self, key: str) -> np.dtype:
        return np.dtype(np.float32) if key == "step" else self.layout.dtype

    def temporary_bytes(self, numel: int) -> int:
        return numel * self.layout.dtype.itemsize

    def _step(self, grads: FlatBuffer) -> None:
        self._init_state()
        steps = self.state["step"]
        if len(steps) and np.all(steps == steps[0]):
            steps += 1
            self._apply(self.params.data, grads.data, self.state["exp_avg"],
                        self.state["exp_avg_sq"], float(steps[0]))
            return
        for i, g in enumerate(grads.flat_views):
            self._update(i, g)

    def _update(self, i: int, grad: np.ndarray) -> None:
        self._init_state()
        seg = self.layout.segments[i]
        steps = self.state["step"]
        steps[i] += 1
        self._apply(self.params.flat_views[i], grad, self.state["exp_avg"][seg.offset:seg.stop],
                    self.state["exp_avg_sq"][seg.offset:seg.stop], float(steps[i]))

    def _apply(self, p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray,
               step: float) -> None:
        h = self.hparams
        beta1, beta2 = h["betas"]
        if h["maximize"]:
            np.negative(g, out=g)
        scratch = np.empty_like(p)
        if h["weight_decay"] != 0:
            np.multiply(p, h["weight_decay"], out=scratch)
            g += scratch
        np.subtract(g, m, out=scratch)            # exp_avg.lerp_(g, 1 - beta1)
        scratch *= 1 - beta1
        m += scratch
        v *= beta2                                # exp_avg_sq * beta2 + (1 - beta2) g^2
        np.multiply(g, g, out=scratch)
        scratch *= 1 - beta2
        v += scratch
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        np.sqrt(v, out=scratch)                   # denom = sqrt(v) / sqrt(bc2) + eps
        scratch /= bias_correction2 ** 0.5
        scratch += h["eps"]
        np.divide(m, scratch, out=scratch)
        scratch *= -(h["lr"] / bias_correction1)
        p += scratch


# --- building and pricing ------------------------------------------------------------

def build(name: str, params: FlatBuffer, **options) -> EngineOptimizer:
    """The registered optimizer ``name`` on ``params``; options it does not take
    (``alpha`` for Adam) are ignored, as `edgeag.optim.build_optimizer` ignores them."""
    if name not in registry.numpy_names():
        raise ValueError(f"unknown optimizer {name!r} (accepted: "
                         f"{', '.join(registry.numpy_names())})")
    return registry.get(name).build_numpy(params, **options)


def layout_state_bytes(name: str, layout: Layout, momentum: float = 0.0) -> int:
    """Analytic state bytes of optimizer ``name`` on ``layout`` after a step of every
    segment: the registry's rule per segment, and the alignment gaps between segments
    (state arrays span the whole buffer)."""
    rule = registry.get(name).state_rule
    itemsize = layout.dtype.itemsize
    per_segment = sum(rule(seg.shape, itemsize, momentum) for seg in layout)
    gaps = layout.size - layout.count
    if not gaps:
        return per_segment
    return per_segment + rule((gaps,), itemsize, momentum) - rule((0,), itemsize, momentum)
