"""The one registry of optimizers: what the CLI, the config, both engines and the memory
plan know about each, read without importing torch.

Each entry names its implementations as ``"module:attribute"`` and they are imported
only when built: the torch one (a `torch.optim.Optimizer`) and, where there is one, the
numpy engine's (`edgeag.optim.flat`). Adding an optimizer is one entry here plus its
implementation.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeag.optim import rules

__all__ = ["OPTIMIZERS", "OptimizerInfo", "check_available", "get", "names", "numpy_names"]

StateRule = Callable[[tuple, int, float], int]


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer: its name, where it runs, its hyperparameters and what it costs."""

    name: str
    help: str
    torch: str
    """The torch implementation, ``"module:attribute"`` (a class or a builder)."""
    numpy: str | None = None
    """The numpy engine's implementation (`edgeag.optim.flat`), if it has one."""
    defaults: Mapping[str, Any] = field(default_factory=lambda: {"lr": 1e-3})
    """The hyperparameters it takes and their defaults; those that are run config fields
    (``lr``, ``alpha``, ``momentum``, ``eps``, ``alpha_scale``) come from the run's config."""
    validate: Callable[..., None] | None = None
    """Raises ValueError naming a hyperparameter out of range (`edgeag.optim.rules`)."""
    state_rule: StateRule = rules.no_state
    """Bytes of state kept for one tensor ``(shape, itemsize, momentum)``."""
    temporaries: int = 1
    """Tensors the size of the largest parameter alive at once inside one torch update
    (Adam's ``denom`` and its ``sqrt``; Lion's ``clone`` and the sum)."""
    clips_gradients: bool = True
    """Training clips the global gradient norm before the step (every optimizer but
    AlphaGrad, whose per-element step is already bounded)."""
    fusable: bool = False
    """Each tensor can be updated from its own gradient alone, inside backward."""
    package: str | None = None
    """The distribution (pip name) it needs besides torch and edgeag."""
    imports_dynamo: bool = False
    """Building it imports `torch._dynamo` (~70 MiB of peak RSS)."""

    @property
    def engines(self) -> tuple[str, ...]:
        """The engines that run it: ``numpy`` (where implemented) and ``torch``."""
        return ("numpy", "torch") if self.numpy else ("torch",)

    def options(self, cfg) -> dict:
        """Its hyperparameters taken from a run config ``cfg`` (the fields it has)."""
        return {k: getattr(cfg, k) for k in self.defaults if hasattr(cfg, k)}

    def state_bytes(self, shapes: Iterable[tuple], itemsize: int, momentum: float = 0.0) -> int:
        """Analytic bytes of state for tensors of ``shapes`` after a step of each."""
        return sum(self.state_rule(tuple(s), itemsize, momentum) for s in shapes)

    def build_torch(self, params, **options):
        """The torch optimizer over ``params``; options it does not take are ignored."""
        return _build(self.torch, params, self.defaults, options)

    def build_numpy(self, buffer, **options):
        """The numpy engine's optimizer bound to ``buffer`` (a `FlatBuffer`)."""
        if self.numpy is None:
            raise ValueError(f"optimizer {self.name!r} has no numpy implementation (accepted "
                             f"on the numpy engine: {', '.join(numpy_names())})")
        return _build(self.numpy, buffer, self.defaults, options)

    def missing_package(self) -> str | None:
        """The pip name of the package it needs, when that is not installed."""
        if self.package and importlib.util.find_spec(self.package.replace("-", "_")) is None:
            return self.package
        return None


def _build(where: str, first, defaults: Mapping, options: dict):
    module, _, attribute = where.partition(":")
    factory = getattr(importlib.import_module(module), attribute)
    accepted = set(defaults) & set(inspect.signature(factory).parameters)
    return factory(first, **{k: v for k, v in options.items() if k in accepted})


_ALPHAGRAD_OPTIONS = dict(rules.ALPHAGRAD_DEFAULTS)
_ADAM_OPTIONS = dict(rules.ADAM_DEFAULTS)
_SGD_OPTIONS = dict(rules.SGD_DEFAULTS)

OPTIMIZERS: dict[str, OptimizerInfo] = {info.name: info for info in (
    OptimizerInfo("alphagrad", "AlphaGrad (default; stateless with momentum 0)",
                  torch="edgeag.optim.alphagrad:AlphaGrad", numpy="edgeag.optim.flat:AlphaGrad",
                  defaults=_ALPHAGRAD_OPTIONS, validate=rules.validate_alphagrad,
                  state_rule=rules.momentum_state_bytes, clips_gradients=False, fusable=True),
    OptimizerInfo("adam", "Adam, edgeag's lean implementation (no torch._dynamo import)",
                  torch="edgeag.optim.adam:Adam", numpy="edgeag.optim.flat:Adam",
                  defaults=_ADAM_OPTIONS, validate=rules.validate_adam,
                  state_rule=rules.adam_state_bytes, temporaries=2),
    OptimizerInfo("torch-adam", "torch.optim.Adam as other libraries run it "
                  "(imports torch._dynamo, ~70 MiB)", torch="torch.optim:Adam",
                  defaults={"lr": 1e-3, "eps": 1e-8}, state_rule=rules.adam_state_bytes,
                  temporaries=2, imports_dynamo=True),
    OptimizerInfo("sgd", "SGD, lean implementation (optional momentum)",
                  torch="edgeag.optim.sgd:SGD", numpy="edgeag.optim.flat:SGD",
                  defaults=_SGD_OPTIONS, validate=rules.validate_sgd,
                  state_rule=rules.momentum_state_bytes),
    OptimizerInfo("torch-adafactor", "torch.optim.Adafactor: factored second moments "
                  "(imports torch._dynamo, ~70 MiB)", torch="torch.optim:Adafactor",
                  state_rule=rules.adafactor_state_bytes, imports_dynamo=True),
    OptimizerInfo("lion", "Lion from the lion-pytorch package: one momentum buffer "
                  "(a torch.optim.Optimizer: imports torch._dynamo, ~70 MiB)",
                  torch="lion_pytorch:Lion", state_rule=rules.full_buffer_bytes,
                  temporaries=2, package="lion-pytorch", imports_dynamo=True),
)}
"""Every optimizer `edgeag train --optimizer` accepts, in the order `--help` lists them."""


def names() -> list[str]:
    """Every registered optimizer's name."""
    return list(OPTIMIZERS)


def numpy_names() -> list[str]:
    """The optimizers the numpy engine runs; the others train on the torch engine."""
    return [n for n, info in OPTIMIZERS.items() if info.numpy]


def get(name: str) -> OptimizerInfo:
    """The registry entry of ``name``; ValueError naming the accepted names otherwise."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r} (accepted: {', '.join(names())})") from None


def check_available(optimizer: str) -> None:
    """EdgeagError naming the pip package a registered optimizer needs besides torch, if
    missing (with torch's pinned extra too where torch is missing). Imports no torch."""
    from edgeag.errors import TORCH_INSTALL, EdgeagError, torch_available

    package = get(optimizer).missing_package()
    if package:
        install = f"pip install {package}" if torch_available() else f"{TORCH_INSTALL} {package}"
        raise EdgeagError(f"--optimizer {optimizer} needs the {package} package ({install})")
