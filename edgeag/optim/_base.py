"""A `torch.optim.Optimizer` base that never imports `torch._dynamo`.

`torch.optim.Optimizer` wraps `add_param_group`, `zero_grad`, `state_dict` and
`load_state_dict` in `torch._disable_dynamo`, which imports `torch._dynamo` on
first call and raises the process's peak RSS by about 70 MiB. Training under a
256 MiB budget cannot afford that, so edgeag's optimizers call torch's own
undecorated method bodies (kept by `functools.wraps` as `__wrapped__`). The
behaviour is torch's; only the import is skipped. `isinstance(opt,
torch.optim.Optimizer)` still holds, so `torch.optim.lr_scheduler` works.
"""

from __future__ import annotations

import functools
from itertools import chain
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim import optimizer as _torch_optimizer


def _undecorated(name: str):
    method = getattr(Optimizer, name)
    return getattr(method, "__wrapped__", method)


_add_param_group = _undecorated("add_param_group")
_zero_grad = _undecorated("zero_grad")
_state_dict = _undecorated("state_dict")
_load_state_dict = _undecorated("load_state_dict")


def _with_step_hooks(step):
    """Run registered step pre/post hooks around ``step`` (torch's own wrapper also
    opens a profiler ``record_function``, which costs ~35 us per call on CPU: more
    than the whole update of a small policy)."""

    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        pre = chain(_torch_optimizer._global_optimizer_pre_hooks.values(),
                    self._optimizer_step_pre_hooks.values())
        for hook in pre:
            result = hook(self, args, kwargs)
            if result is not None:
                args, kwargs = result
        out = step(self, *args, **kwargs)
        for hook in chain(self._optimizer_step_post_hooks.values(),
                          _torch_optimizer._global_optimizer_post_hooks.values()):
            hook(self, args, kwargs)
        return out

    wrapper.hooked = True  # tells Optimizer._patch_step_function not to wrap it again
    return wrapper


class LeanOptimizer(Optimizer):
    """`torch.optim.Optimizer` without the `torch._dynamo` import."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "hooked", False):
            cls.step = _with_step_hooks(step)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _add_param_group(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _zero_grad(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _load_state_dict(self, state_dict)


def state_bytes(optimizer: Optimizer) -> int:
    """Bytes held in `optimizer.state` tensors (moment and momentum buffers)."""
    total = 0
    for per_param in optimizer.state.values():
        for value in per_param.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def momentum_(direction: torch.Tensor, buf: torch.Tensor | None, *, momentum: float,
              dampening: float, nesterov: bool, owns_direction: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.optim.SGD`'s momentum on one tensor's update direction, written once for
    AlphaGrad and SGD: ``b = d`` on the first step (``buf`` None), then
    ``b <- momentum b + (1 - dampening) d``; the step is ``b``, or ``d + momentum b``
    with Nesterov. Returns ``(step, b)``; the step is applied as ``p -= lr * step``.
    ``owns_direction``: ``direction`` is a temporary the Nesterov sum may overwrite."""
    if buf is None:
        buf = torch.clone(direction).detach()
    else:
        buf.mul_(momentum).add_(direction, alpha=1.0 - dampening)
    if not nesterov:
        return buf, buf
    if owns_direction:
        return direction.add_(buf, alpha=momentum), buf
    return direction.add(buf, alpha=momentum), buf
