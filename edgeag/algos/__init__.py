"""The algorithms: one folder each, registered here.

Each folder (``ppo/``, ``dqn/``, ``td3/``, ``sac/``) holds the algorithm written once for both
engines (``algorithm.py``, which defines ``ALGORITHM``), its config (``config.py``), its
numpy and torch networks (``numpy_engine.py``, ``torch_engine.py``), its presets
(``presets.toml``) and its export spec. What they share lives beside them: the
interfaces (`edgeag.algos.base`), the off-policy loop and replay buffer (``offpolicy/``),
and each engine's runtime (`edgeag.algos.numpy_runtime`, `edgeag.algos.torch_runtime`).

Adding an algorithm is its folder plus one line in `ALGORITHMS`. This module imports
nothing heavy: `get_algorithm` imports an algorithm only when a run needs it.
"""

from __future__ import annotations

import importlib

__all__ = ["ALGORITHMS", "export_specs", "get_algorithm", "get_config_class",
           "supported_algos"]

ALGORITHMS = {
    "ppo": "Proximal Policy Optimization (discrete and continuous actions)",
    "dqn": "Deep Q-Network (discrete actions; replay buffer, target network, epsilon-greedy)",
    "td3": "Twin Delayed DDPG (continuous actions; twin critics, delayed policy updates, "
           "target policy smoothing)",
    "sac": "Soft Actor-Critic (continuous actions; twin critics, learned entropy temperature)",
}
"""Every algorithm ``--algo`` accepts: the name of its folder, and what it is."""


def supported_algos() -> list[str]:
    return list(ALGORITHMS)


def _check(name: str) -> None:
    if name not in ALGORITHMS:
        from edgeag.errors import EdgeagError
        raise EdgeagError(f"unknown algo {name!r} (accepted: {', '.join(supported_algos())})")


def get_algorithm(name: str):
    """The registered algorithm ``name`` (`edgeag.algos.base.Algorithm`; imports its
    module, and torch only when its torch engine is built)."""
    _check(name)
    return importlib.import_module(f"edgeag.algos.{name}.algorithm").ALGORITHM


def get_config_class(name: str):
    """The config dataclass of algorithm ``name`` (its ``config.py``'s ``CONFIG``)."""
    _check(name)
    return importlib.import_module(f"edgeag.algos.{name}.config").CONFIG


def export_specs() -> dict:
    """``{name: ExportSpec}`` of every algorithm (each folder's ``EXPORT``; light imports)."""
    return {name: importlib.import_module(f"edgeag.algos.{name}").EXPORT for name in ALGORITHMS}
