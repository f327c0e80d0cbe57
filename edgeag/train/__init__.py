"""On-device training: algorithms, their presets, the run directory.

Algorithms are registered in `ALGORITHMS`; ``--algo`` validates against it.
"""

ALGORITHMS = {"ppo": "Proximal Policy Optimization (discrete and continuous actions)"}


def supported_algos() -> list[str]:
    return list(ALGORITHMS)
