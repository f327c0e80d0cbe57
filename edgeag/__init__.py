"""edgeag: train small reinforcement-learning policies on the device itself.

The Python API (`edgeag.api`), with Stable-Baselines3's names::

    import edgeag
    model = edgeag.PPO("CartPole-v1", profile="rpi4", budget="256MB")
    model.learn(total_timesteps=50_000)

Importing ``edgeag`` imports nothing heavy: the API's names are loaded when first used,
and the numpy engine never imports torch. Import ``edgeag.optim`` for the torch optimizers.
"""

__version__ = "0.1.0"

_API = ("PPO", "DQN", "TD3", "SAC", "BaseAlgorithm", "load", "evaluate_policy", "EvalCallback",
        "StopTrainingOnRewardThreshold")
__all__ = ["__version__", *_API, "EdgeagError", "BudgetRefused"]


def __getattr__(name: str):
    if name in _API:
        from edgeag import api
        return getattr(api, name)
    if name.isupper():  # an algorithm registered after the API's own classes
        from edgeag import api
        from edgeag.algos import ALGORITHMS
        if name.lower() in ALGORITHMS:
            return api.MODELS[name.lower()]
    if name == "EdgeagError":
        from edgeag.errors import EdgeagError
        return EdgeagError
    if name == "BudgetRefused":
        from edgeag.train.run import BudgetRefused
        return BudgetRefused
    raise AttributeError(f"module 'edgeag' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
