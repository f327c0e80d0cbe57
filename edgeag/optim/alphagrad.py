r"""AlphaGrad (Sane, 2025, arXiv 2504.16020): tensor-wise normalised, tanh-clipped SGD.

.. math::
    \tilde g = \frac{g}{\lVert g \rVert_2 + \epsilon}, \qquad
    u = \tanh(\alpha \tilde g), \qquad
    \theta \leftarrow \theta - \eta\, u

The norm is taken **per parameter tensor** (the weight and the bias of a layer are
normalised separately), never over all parameters at once, so each tensor can be
updated as soon as its own gradient is complete (see :func:`fuse_into_backward`).

Options, all per param group (so layer-wise alpha works through param groups):

- ``momentum`` (default 0): **0 keeps no state at all** (``optimizer.state`` stays
  empty). With ``momentum > 0`` one buffer per tensor, in the ``torch.optim.SGD``
  convention: ``b <- momentum * b + (1 - dampening) * u`` (``b = u`` on the first
  step), ``theta <- theta - lr * b`` (Nesterov: ``theta <- theta - lr * (u +
  momentum * b)``). This is the convention of the paper author's code, which every
  experiment in the paper ran with (momentum 0.9), and the one a torch user already
  knows. The paper's text writes ``v <- gamma v + lr u``; the two agree under a
  constant lr and differ slightly while lr is annealed.
- ``weight_decay``: decoupled, as in AdamW: ``theta <- theta (1 - lr * weight_decay)``
  before the update, so the decay is neither normalised nor squashed.
- ``maximize``: ascend instead of descend.
- ``alpha_scale`` (default ``none``): ``sqrt_numel`` updates each tensor with
  ``alpha * sqrt(numel)`` (`edgeag.optim.rules.tensor_alpha`), so alpha acts on
  ``g / rms(g)`` and means the same for a bias and a large weight.

Implementation note: ``tanh(x) = 2 (sigmoid(2x) - 1/2)`` exactly; on CPU ``torch.sigmoid``
costs about a quarter of ``torch.tanh`` per element, so the update computes the
right-hand side. A zero gradient gives ``sigmoid(0) - 1/2 = 0``, an update of exactly
0. In float32 the identity is accurate to about 1.2e-7 absolute in ``u``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from edgeag.optim._base import LeanOptimizer, momentum_
from edgeag.optim.rules import tensor_alpha
from edgeag.optim.rules import validate_alphagrad as _validate

__all__ = ["AlphaGrad", "alphagrad", "alphagrad_direction", "fuse_into_backward",
           "scaled_direction"]

TANH_MAX_NUMEL = 1024
"""Tensors up to this many elements call ``torch.tanh`` directly (one op fewer); larger
ones use the sigmoid identity (about 4x cheaper per element on CPU)."""


def scaled_direction(grad: Tensor, alpha: float, eps: float,
                     maximize: bool = False) -> tuple[Tensor, float]:
    """The rule, the one place the torch optimizer writes it. Returns a new tensor ``t``
    and a factor ``k`` with ``k * t == tanh(alpha * g / (||g||_2 + eps))`` exactly
    (``k`` is 1 or 2, and a factor of 2 is exact in floating point), so an update is
    ``p.add_(t, alpha=-lr*k)``.

    Small tensors get ``t = tanh(alpha g~)``, ``k = 1``; larger ones
    ``t = sigmoid(2 alpha g~) - 1/2``, ``k = 2``. ``grad`` is not modified; with
    ``maximize`` it is negated first.
    """
    c = alpha / (torch.linalg.vector_norm(grad).item() + eps)
    if maximize:
        c = -c
    if grad.numel() <= TANH_MAX_NUMEL:
        return torch.mul(grad, c).tanh_(), 1.0
    return torch.mul(grad, 2.0 * c).sigmoid_().sub_(0.5), 2.0


def alphagrad_direction(grad: Tensor, alpha: float, eps: float, maximize: bool = False) -> Tensor:
    """The AlphaGrad direction ``u = tanh(alpha * g / (||g||_2 + eps))``, a new tensor."""
    t, k = scaled_direction(grad, alpha, eps, maximize)
    return t if k == 1.0 else t.mul_(k)


def _check_dense(grad: Tensor) -> None:
    if grad.is_sparse:
        raise RuntimeError("AlphaGrad does not support sparse gradients; "
                           "use a dense gradient (for example nn.Embedding(sparse=False))")


def alphagrad(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None],
              *, lr: float, alpha: float, eps: float, momentum: float = 0.0,
              dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
              maximize: bool = False, alpha_scale: str = "none") -> None:
    """Functional AlphaGrad: updates ``params`` in place, one tensor at a time (one
    temporary of that tensor's size); fills ``momentum_buffers`` (entries ``None`` on the
    first step) when ``momentum > 0``.

    One loop for CPU: torch's foreach kernels loop over the tensors in C++ with the same
    per-tensor work, and ``scripts/bench_optim.py`` measured them within a few percent.
    """
    for i, (param, grad) in enumerate(zip(params, grads)):
        _check_dense(grad)
        t, k = scaled_direction(grad, tensor_alpha(alpha, grad.numel(), alpha_scale), eps,
                                maximize)
        if weight_decay != 0:
            param.mul_(1.0 - lr * weight_decay)
        if momentum == 0:
            param.add_(t, alpha=-lr * k)
        else:
            step, momentum_buffers[i] = momentum_(
                t if k == 1.0 else t.mul_(k), momentum_buffers[i], momentum=momentum,
                dampening=dampening, nesterov=nesterov, owns_direction=True)
            param.add_(step, alpha=-lr)
            del step
        del t  # free before the next tensor's temporary: peak = one tensor


class AlphaGrad(LeanOptimizer):
    """AlphaGrad with the `torch.optim.Optimizer` interface and no `torch._dynamo` import.

    Args:
        params: parameters or param groups.
        lr: learning rate; each element moves by at most ``lr * tanh(alpha)`` per step
            without momentum.
        alpha: steepness of the tanh; small alpha is normalised SGD, large alpha signSGD.
        eps: added to the norm (1e-5, as in the paper's runs).
        momentum, dampening, nesterov: `torch.optim.SGD` convention (see module doc).
        weight_decay: decoupled (AdamW-style) decay.
        maximize: ascend the objective.
        alpha_scale: ``none`` (alpha as given) or ``sqrt_numel`` (each tensor's alpha
            times the square root of its size).

    Example:
        >>> import torch
        >>> from edgeag.optim import AlphaGrad
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = AlphaGrad([w], lr=0.1, alpha=1.0)
        >>> w.sum().backward(); opt.step()
        >>> [round(x, 4) for x in w.tolist()]
        [2.9391, -4.0609]
        >>> len(opt.state)
        0
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, alpha: float = 1.0, eps: float = 1e-5,
                 momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, maximize: bool = False,
                 alpha_scale: str = "none") -> None:
        _validate(lr=lr, alpha=alpha, eps=eps, momentum=momentum, dampening=dampening,
                  nesterov=nesterov, weight_decay=weight_decay, alpha_scale=alpha_scale)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, dampening=dampening,
                        nesterov=nesterov, weight_decay=weight_decay, maximize=maximize,
                        alpha_scale=alpha_scale)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # a state_dict saved before alpha_scale existed
            group.setdefault("alpha_scale", "none")

    def add_param_group(self, param_group: dict) -> None:
        if any(k in param_group for k in _VALIDATED):
            _validate(**{k: param_group.get(k, self.defaults[k]) for k in _VALIDATED})
        super().add_param_group(param_group)

    @torch.no_grad()
    def update_param(self, param: Tensor, grad: Tensor) -> None:
        """Update ``param`` from ``grad`` now, by the same per-tensor rule as `step()`.

        For code that has one tensor's gradient at a time: the hooks of
        :func:`fuse_into_backward`, or a hand-written backward pass that updates each
        layer as soon as its gradient is complete.
        ``param.grad`` is neither read nor set.
        """
        group = self._group_of.get(id(param))
        if group is None:
            raise ValueError("update_param: the parameter is not in this optimizer")
        _update_one(self, group, param, grad)

    @property
    def _group_of(self) -> dict:
        """``id(param) -> its param group``, rebuilt when the groups change
        (`add_param_group`, `load_state_dict` replaces the group dicts)."""
        key = tuple((id(g), len(g["params"])) for g in self.param_groups)
        cached = self.__dict__.get("_group_cache")
        if cached is None or cached[0] != key:
            cached = (key, {id(p): g for g in self.param_groups for p in g["params"]})
            self.__dict__["_group_cache"] = cached
        return cached[1]

    def _init_group(self, group: dict, params: list[Tensor], grads: list[Tensor],
                    bufs: list[Tensor | None]) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            grads.append(p.grad)
            if group["momentum"] != 0:
                bufs.append(self.state[p].get("momentum_buffer"))

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            bufs: list[Tensor | None] = []
            self._init_group(group, params, grads, bufs)
            if not params:
                continue
            alphagrad(params, grads, bufs if group["momentum"] != 0 else [None] * len(params),
                      **_options(group))
            if group["momentum"] != 0:
                for p, buf in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = buf
        return loss


_OPTIONS = ("lr", "alpha", "eps", "momentum", "dampening", "nesterov", "weight_decay",
            "alpha_scale", "maximize")
_VALIDATED = _OPTIONS[:-1]  # every option but maximize has a range


def _options(group: dict) -> dict:
    return {k: group[k] for k in _OPTIONS}


class FusedBackward:
    """Handle returned by :func:`fuse_into_backward`; ``remove()`` restores `step()`."""

    def __init__(self, handles: list) -> None:
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def fuse_into_backward(params_or_module, optimizer: AlphaGrad) -> FusedBackward:
    """Update each parameter inside ``backward()``, as soon as its gradient is complete.

    A post-accumulate-grad hook on every parameter of ``optimizer`` runs the same
    per-tensor rule as `step()` and then frees the gradient, so at most one gradient
    tensor is alive at a time. ``optimizer.step()`` then finds no gradients and does
    nothing; ``optimizer.zero_grad()`` stays harmless. The group's current ``lr`` is
    read at every call, so `torch.optim.lr_scheduler` keeps working. Only valid
    because AlphaGrad normalises per tensor: nothing (such as a global gradient-norm
    clip) may need all gradients at once.

    Pass the module (or its parameters) that ``optimizer`` optimises; every one of its
    parameters must belong to ``optimizer``.
    """
    if not isinstance(optimizer, AlphaGrad):
        raise TypeError(f"fuse_into_backward needs an AlphaGrad optimizer, got "
                        f"{type(optimizer).__name__}")
    params = list(params_or_module.parameters() if isinstance(params_or_module, torch.nn.Module)
                  else params_or_module)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    handles = []
    for p in params:
        if not p.requires_grad:
            continue
        group = group_of.get(id(p))
        if group is None:
            raise ValueError("fuse_into_backward: a parameter of the module is not in the "
                             "optimizer")
        handles.append(p.register_post_accumulate_grad_hook(_make_hook(optimizer, group)))
    return FusedBackward(handles)


def _make_hook(optimizer: AlphaGrad, group: dict):
    def hook(param: Tensor) -> None:
        if torch.is_grad_enabled():  # backward(create_graph=True); plain backward runs without
            with torch.no_grad():
                _update_one(optimizer, group, param, param.grad)
        else:
            _update_one(optimizer, group, param, param.grad)
        param.grad = None
    return hook


def _update_one(optimizer: AlphaGrad, group: dict, param: Tensor, grad: Tensor) -> None:
    if group["momentum"] == 0 and group["weight_decay"] == 0:
        # stateless: the pure rule, no optimizer.state entry (the common, fast case)
        _check_dense(grad)
        alpha = tensor_alpha(group["alpha"], grad.numel(), group["alpha_scale"])
        t, k = scaled_direction(grad, alpha, group["eps"], group["maximize"])
        param.add_(t, alpha=-group["lr"] * k)
        return
    bufs = [optimizer.state[param].get("momentum_buffer")] if group["momentum"] else [None]
    alphagrad([param], [grad], bufs, **_options(group))
    if group["momentum"]:
        optimizer.state[param]["momentum_buffer"] = bufs[0]
