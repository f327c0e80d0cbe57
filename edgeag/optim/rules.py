"""The optimizers' hyperparameters and state sizes, written once for both engines.

The torch optimizers (`edgeag.optim.alphagrad`, `.adam`, `.sgd`) and the numpy ones
(`edgeag.optim.flat`) take these defaults, validate with these functions and price their
state with these rules (through `edgeag.optim.registry`), so the two engines accept the
same values, raise the same messages and plan the same bytes. Imports nothing but the
standard library.
"""

from __future__ import annotations

import math

__all__ = ["ADAM_DEFAULTS", "ALPHAGRAD_DEFAULTS", "ALPHA_SCALES", "SGD_DEFAULTS",
           "STEP_COUNTER_BYTES", "adafactor_state_bytes", "adam_state_bytes", "check_finite",
           "check_nesterov", "full_buffer_bytes", "momentum_state_bytes", "no_state",
           "tensor_alpha", "validate_adam", "validate_alphagrad", "validate_sgd"]

ALPHAGRAD_DEFAULTS = dict(lr=1e-3, alpha=1.0, eps=1e-5, momentum=0.0, dampening=0.0,
                          nesterov=False, weight_decay=0.0, maximize=False, alpha_scale="none")
"""`edgeag.optim.AlphaGrad`'s keyword defaults (tested equal to its signature)."""

ADAM_DEFAULTS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False)
"""`edgeag.optim.Adam`'s keyword defaults."""

SGD_DEFAULTS = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                    maximize=False)
"""`edgeag.optim.SGD`'s keyword defaults."""


def check_finite(name: str, value: float, *, low: float, low_inclusive: bool,
                 high: float = math.inf, high_inclusive: bool = False) -> None:
    """Raise ValueError naming `name` and `value` unless it lies in the range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (
            value <= high if high_inclusive else value < high)
    if not ok:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ValueError(f"Invalid {name} value: {value!r} (accepted: a finite number in "
                         f"{left}{low:g}, {high:g}{right})")


def check_nesterov(nesterov: bool, momentum: float, dampening: float) -> None:
    """Nesterov momentum needs momentum > 0 and no dampening (torch.optim.SGD's rule)."""
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError(f"Invalid nesterov value: {nesterov!r} (nesterov requires momentum > 0 "
                         f"and dampening 0; got momentum={momentum!r}, dampening={dampening!r})")


ALPHA_SCALES = ("none", "sqrt_numel")
"""How AlphaGrad's ``alpha`` is applied to each tensor (`tensor_alpha`)."""


def tensor_alpha(alpha: float, numel: int, alpha_scale: str) -> float:
    """The alpha one tensor of ``numel`` elements is updated with.

    ``none``: ``alpha`` itself, the paper's rule. ``sqrt_numel``: ``alpha * sqrt(numel)``.
    The entries of ``g / ||g||`` have a root mean square of ``1 / sqrt(numel)``, so this
    makes ``alpha`` act on ``g / rms(g)``: the same alpha bends a 64-element bias and a
    4096-element weight's update equally far into the tanh.
    """
    if alpha_scale == "none":
        return alpha
    if alpha_scale == "sqrt_numel":
        return alpha * math.sqrt(numel)
    raise ValueError(f"Invalid alpha_scale value: {alpha_scale!r} (accepted: "
                     f"{', '.join(ALPHA_SCALES)})")


def validate_alphagrad(*, lr, alpha, eps, momentum, dampening, nesterov, weight_decay,
                       alpha_scale="none") -> None:
    """AlphaGrad's ranges: lr >= 0, alpha > 0, eps > 0, momentum in [0, 1), dampening in
    [0, 1], weight_decay >= 0, nesterov only with momentum and no dampening, alpha_scale
    one of `ALPHA_SCALES`."""
    if alpha_scale not in ALPHA_SCALES:
        raise ValueError(f"Invalid alpha_scale value: {alpha_scale!r} (accepted: "
                         f"{', '.join(ALPHA_SCALES)})")
    check_finite("lr", lr, low=0.0, low_inclusive=True)
    check_finite("alpha", alpha, low=0.0, low_inclusive=False)
    check_finite("eps", eps, low=0.0, low_inclusive=False)
    check_finite("momentum", momentum, low=0.0, low_inclusive=True, high=1.0)
    check_finite("dampening", dampening, low=0.0, low_inclusive=True, high=1.0,
                 high_inclusive=True)
    check_finite("weight_decay", weight_decay, low=0.0, low_inclusive=True)
    check_nesterov(nesterov, momentum, dampening)


def validate_adam(*, lr, betas, eps, weight_decay) -> None:
    """Adam's ranges: lr >= 0, eps >= 0, each beta in [0, 1), weight_decay >= 0."""
    check_finite("lr", lr, low=0.0, low_inclusive=True)
    check_finite("eps", eps, low=0.0, low_inclusive=True)
    check_finite("beta1", betas[0], low=0.0, low_inclusive=True, high=1.0)
    check_finite("beta2", betas[1], low=0.0, low_inclusive=True, high=1.0)
    check_finite("weight_decay", weight_decay, low=0.0, low_inclusive=True)


def validate_sgd(*, lr, momentum, dampening, weight_decay, nesterov) -> None:
    """SGD's ranges: lr >= 0, momentum in [0, 1), dampening in [0, 1], weight_decay >= 0,
    nesterov only with momentum and no dampening."""
    check_finite("lr", lr, low=0.0, low_inclusive=True)
    check_finite("momentum", momentum, low=0.0, low_inclusive=True, high=1.0)
    check_finite("dampening", dampening, low=0.0, low_inclusive=True, high=1.0,
                 high_inclusive=True)
    check_finite("weight_decay", weight_decay, low=0.0, low_inclusive=True)
    check_nesterov(nesterov, momentum, dampening)


STEP_COUNTER_BYTES = 4
"""Adam's step count per tensor: a float32 scalar, as `torch.optim.Adam` keeps it."""

# State rules: the bytes an optimizer keeps for one tensor of ``shape`` and ``itemsize``
# bytes per value, given the momentum (`edgeag.optim.registry.OptimizerInfo.state_rule`).


def no_state(shape: tuple, itemsize: int, momentum: float) -> int:
    """Nothing (torch-adam's ``step`` aside, stateless optimizers keep no tensor)."""
    return 0


def momentum_state_bytes(shape: tuple, itemsize: int, momentum: float) -> int:
    """AlphaGrad's and SGD's state: a buffer the tensor's size when momentum > 0,
    nothing otherwise."""
    return math.prod(shape) * itemsize if momentum > 0 else 0


def adam_state_bytes(shape: tuple, itemsize: int, momentum: float = 0.0) -> int:
    """Adam's state: ``exp_avg`` and ``exp_avg_sq`` (each the tensor's size) and the step
    count."""
    return 2 * math.prod(shape) * itemsize + STEP_COUNTER_BYTES


def adafactor_state_bytes(shape: tuple, itemsize: int, momentum: float = 0.0) -> int:
    """`torch.optim.Adafactor`: a float32 ``step``; for a tensor of 2 or more dimensions
    the row and column factors of the second moment (the shape with the last,
    respectively the second-to-last, dimension set to 1); for a vector the full
    ``variance``."""
    if len(shape) < 2:
        return math.prod(shape) * itemsize + 4
    *batch, n_rows, n_cols = shape
    return math.prod(batch) * (n_rows + n_cols) * itemsize + 4


def full_buffer_bytes(shape: tuple, itemsize: int, momentum: float = 0.0) -> int:
    """One buffer the tensor's size whatever the momentum (Lion's ``exp_avg``)."""
    return math.prod(shape) * itemsize
