"""SAC: the algorithm (`algorithm`), its config, its numpy and torch networks, its presets,
and how its checkpoints export (`EXPORT`). Implementation details: docs/algorithms/sac.md.

The exported policy is the actor's deterministic action, ``tanh(mean)`` scaled to the
bounds: the checkpoint's ``policy`` holds the actor's layers with only the mean rows of
the last one, so it exports as a TD3 actor does (the log-std rows stay in ``nets``)."""

from edgeag.algos.base import ExportSpec

EXPORT = ExportSpec(
    arch_kind="squashed_gaussian_actor", prefix="net", activation="relu",
    heads={False: "tanh"},
    meanings={"tanh": "tanh of the Gaussian mean, scaled to the action bounds"},
    outputs={False: "mean of the pre-tanh Gaussian"},
    contents="actor's mean, deterministic action", raw_obs_note="sac trains on raw observations",
    bounds_in_arch=True)
