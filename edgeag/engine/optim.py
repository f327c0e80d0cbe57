r"""AlphaGrad, Adam and SGD over a `FlatBuffer`'s segments, with `edgeag.optim`'s semantics.

Each optimizer is bound to the parameters it updates and offers three entry points:

- ``step(grads)``: every segment from the gradient buffer, in a few whole-buffer
  operations (the flat path);
- ``update(name, grad)``: one segment as soon as its gradient is complete (a
  `MLP.backward` sink: the update inside backward, one layer's gradient alive at a time);
- ``update_outer(name, d, x)``: one weight from its gradient's factors ``d^T x``
  (stateless AlphaGrad updates in row blocks, `edgeag.engine.outer`; every other
  configuration forms the gradient and calls ``update``).

All three overwrite the gradient they are given. Hyperparameters, defaults, validation
and error messages are `edgeag.optim`'s (both validate through `edgeag.optim_rules`);
state is created only when a rule needs it (none for stateless AlphaGrad) and
`state_bytes()` equals `edgeag.optim_rules`' analytic rule.

AlphaGrad, per tensor (the norm is per segment, never global):

.. math::
    u = \tanh\!\Big(\alpha \frac{g}{\lVert g \rVert_2 + \epsilon}\Big), \qquad
    \theta \leftarrow \theta - \eta\, u

with ``momentum`` in `torch.optim.SGD`'s convention (``b = u`` on the first step, then
``b <- momentum b + (1 - dampening) u``; the step is ``b``, or ``u + momentum b`` with
Nesterov), decoupled ``weight_decay`` (``theta <- theta (1 - lr weight_decay)`` first)
and ``maximize`` (the gradient negated).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeag.engine.layout import FlatBuffer, Layout
from edgeag.engine.outer import OUTER_BLOCK_NUMEL, alphagrad_outer_, outer_temporary_bytes
from edgeag.optim_rules import (ADAM_DEFAULTS, ALPHAGRAD_DEFAULTS, SGD_DEFAULTS,
                                adam_state_bytes, momentum_state_bytes, tensor_alpha,
                                validate_adam, validate_alphagrad, validate_sgd)

__all__ = ["Adam", "AlphaGrad", "ENGINE_OPTIMIZERS", "EngineOptimizer", "EngineOptimizerSpec",
           "SGD", "alphagrad_direction_", "build_engine_optimizer", "clip_grad_norm_",
           "get_engine_spec", "segment_norms", "supported_engine_optimizers"]


# --- the rule -----------------------------------------------------------------------

def alphagrad_direction_(grad: np.ndarray, alpha: float, eps: float,
                         maximize: bool = False) -> np.ndarray:
    """The pure per-tensor rule, in place: ``grad`` becomes
    ``tanh(alpha * g / (||g||_2 + eps))`` (``g`` negated first with ``maximize``) and is
    returned. An all-zero gradient gives exactly 0. The flat path computes the same per
    segment (`segment_norms`, then one ``tanh`` over the buffer)."""
    g = grad.reshape(-1)
    c = _factor(math.sqrt(float(np.dot(g, g))), alpha, eps, maximize)
    grad *= c
    np.tanh(grad, out=grad)
    return grad


def _factor(norm: float, alpha: float, eps: float, maximize: bool) -> float:
    c = alpha / (norm + eps)
    return -c if maximize else c


NORM_METHODS = ("views", "reduceat")


def segment_norms(buf: FlatBuffer, method: str = "views") -> np.ndarray:
    """The 2-norm of every segment of ``buf`` (float64, one per segment, 0 for an empty one).

    ``views``: a dot product per segment view, no temporary. ``reduceat``: one
    ``np.add.reduceat`` over the squared buffer, a temporary the size of the buffer.
    ``scripts/bench_engine.py`` times both.
    """
    if method == "views":
        return np.sqrt(np.array([np.dot(v, v) for v in buf.flat_views], dtype=np.float64))
    if method == "reduceat":
        out = np.zeros(len(buf.layout), dtype=np.float64)
        nonempty = [i for i, seg in enumerate(buf.layout) if seg.size]
        if nonempty:
            starts = [buf.layout.segments[i].offset for i in nonempty]
            out[nonempty] = np.add.reduceat(np.square(buf.data), starts)
        return np.sqrt(out)
    raise ValueError(f"Invalid method value: {method!r} (accepted: {', '.join(NORM_METHODS)})")


def clip_grad_norm_(grads: FlatBuffer, max_norm: float) -> float:
    """``torch.nn.utils.clip_grad_norm_`` on a gradient buffer: the total norm (the 2-norm
    of the per-segment norms), and every gradient scaled by
    ``max_norm / (total_norm + 1e-6)`` when that factor is below 1. Returns the total norm."""
    total = float(np.sqrt(np.sum(np.square(segment_norms(grads)))))
    factor = max_norm / (total + 1e-6)
    if factor < 1.0:
        grads.data *= factor
    return total


# --- the optimizers -----------------------------------------------------------------

class EngineOptimizer:
    """Base of the engine's optimizers: bound to ``params``, hyperparameters in
    ``hparams`` (validated; change the learning rate with `set_lr`), state arrays the
    size of the buffer in ``state`` (created on the first update that needs them)."""

    name = ""
    defaults: dict = {}
    fusable_into_backward = False
    """True when a segment can be updated from its own gradient alone (no global clip)."""

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
    or ``sqrt_numel``: `edgeag.optim_rules.tensor_alpha`): `edgeag.optim.AlphaGrad`'s
    names, defaults and ranges; ``block_numel`` the row-block size of `update_outer`;
    ``norm_method`` how `step` takes the per-segment norms (`segment_norms`).
    """

    name = "alphagrad"
    defaults = dict(ALPHAGRAD_DEFAULTS)
    fusable_into_backward = True

    def __init__(self, params: FlatBuffer, lr: float = ALPHAGRAD_DEFAULTS["lr"],
                 alpha: float = ALPHAGRAD_DEFAULTS["alpha"],
                 eps: float = ALPHAGRAD_DEFAULTS["eps"],
                 momentum: float = ALPHAGRAD_DEFAULTS["momentum"],
                 dampening: float = ALPHAGRAD_DEFAULTS["dampening"],
                 nesterov: bool = ALPHAGRAD_DEFAULTS["nesterov"],
                 weight_decay: float = ALPHAGRAD_DEFAULTS["weight_decay"],
                 maximize: bool = ALPHAGRAD_DEFAULTS["maximize"],
                 alpha_scale: str = ALPHAGRAD_DEFAULTS["alpha_scale"], *,
                 block_numel: int = OUTER_BLOCK_NUMEL, norm_method: str = "views") -> None:
        if norm_method not in NORM_METHODS:
            raise ValueError(f"Invalid norm_method value: {norm_method!r} (accepted: "
                             f"{', '.join(NORM_METHODS)})")
        if not isinstance(block_numel, int) or block_numel < 1:
            raise ValueError(f"Invalid block_numel value: {block_numel!r} (accepted: an "
                             f"integer >= 1)")
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                         dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
                         maximize=maximize, alpha_scale=alpha_scale)
        self.block_numel, self.norm_method = block_numel, norm_method

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

    def temporary_bytes(self, numel: int) -> int:
        extra = numel * self.layout.dtype.itemsize if self.norm_method == "reduceat" else 0
        return super().temporary_bytes(numel) + extra

    def _step(self, grads: FlatBuffer) -> None:
        h = self.hparams
        norms = segment_norms(grads, self.norm_method)
        scale = np.add(norms, h["eps"], out=norms)
        alphas = h["alpha"] if h["alpha_scale"] == "none" else \
            np.array([self._alpha(seg.size) for seg in self.layout.segments])
        np.divide(-alphas if h["maximize"] else alphas, scale, out=scale)
        for v, c in zip(grads.flat_views, scale.tolist()):
            v *= c
        np.tanh(grads.data, out=grads.data)
        if h["weight_decay"] != 0:
            self.params.data *= 1.0 - h["lr"] * h["weight_decay"]
        self._apply_all(grads)

    def _update(self, i: int, grad: np.ndarray) -> None:
        h = self.hparams
        alphagrad_direction_(grad, self._alpha(grad.size), h["eps"], h["maximize"])
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


# --- the registry -------------------------------------------------------------------

@dataclass(frozen=True)
class EngineOptimizerSpec:
    """What a trainer and a memory plan need to know about an engine optimizer."""

    name: str
    help: str
    cls: type[EngineOptimizer]
    clips_gradients: bool
    """Training clips the global gradient norm (`clip_grad_norm_`) before `step`, which
    needs every gradient at once: such an optimizer cannot be fused into backward."""
    state_rule: Callable[[int, int, float], int]
    """Analytic state bytes of one tensor, ``(numel, itemsize, momentum)`` (the rule of
    `edgeag.optim_rules` the torch side plans with)."""

    @property
    def fusable_into_backward(self) -> bool:
        """Each tensor can be updated as soon as its gradient is complete."""
        return self.cls.fusable_into_backward and not self.clips_gradients

    def options(self) -> list[str]:
        """The hyperparameter names its constructor accepts."""
        return [n for n in inspect.signature(self.cls).parameters if n != "params"]

    def build(self, params: FlatBuffer, **options) -> EngineOptimizer:
        """The optimizer on ``params``; options it does not take (``alpha`` for Adam)
        are ignored, as `edgeag.optim.build_optimizer` ignores them."""
        accepted = set(self.options())
        return self.cls(params, **{k: v for k, v in options.items() if k in accepted})

    def state_bytes(self, layout: Layout, momentum: float = 0.0) -> int:
        """Analytic state bytes for ``layout`` after a step of every segment (state arrays
        span the whole buffer, alignment gaps between segments included)."""
        per_segment = sum(self.state_rule(seg.size, layout.dtype.itemsize, momentum)
                          for seg in layout)
        gaps = layout.size - layout.count
        return per_segment + (self.state_rule(gaps, layout.dtype.itemsize, momentum)
                              - self.state_rule(0, layout.dtype.itemsize, momentum) if gaps else 0)


ENGINE_OPTIMIZERS: dict[str, EngineOptimizerSpec] = {
    spec.name: spec for spec in (
        EngineOptimizerSpec("alphagrad", "AlphaGrad (stateless with momentum 0)", AlphaGrad,
                            clips_gradients=False, state_rule=momentum_state_bytes),
        EngineOptimizerSpec("adam", "Adam (torch.optim.Adam's algorithm)", Adam,
                            clips_gradients=True,
                            state_rule=lambda numel, itemsize, momentum:
                            adam_state_bytes(numel, itemsize)),
        EngineOptimizerSpec("sgd", "SGD (optional momentum)", SGD, clips_gradients=True,
                            state_rule=momentum_state_bytes),
    )
}


def supported_engine_optimizers() -> list[str]:
    """Names `build_engine_optimizer` accepts."""
    return list(ENGINE_OPTIMIZERS)


def get_engine_spec(name: str) -> EngineOptimizerSpec:
    try:
        return ENGINE_OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r} (accepted: "
                         f"{', '.join(supported_engine_optimizers())})") from None


def build_engine_optimizer(name: str, params: FlatBuffer, **options) -> EngineOptimizer:
    """Build a registered engine optimizer by name."""
    return get_engine_spec(name).build(params, **options)
