"""TD3: the algorithm (`algorithm`), its config, its numpy and torch networks, its presets,
and how its checkpoints export (`EXPORT`). Implementation details: docs/algorithms/td3.md."""

from edgeag.algos.base import ExportSpec

EXPORT = ExportSpec(
    arch_kind="deterministic_actor", prefix="net", activation="relu", heads={False: "tanh"},
    meanings={"tanh": "tanh scaled to the action bounds"}, outputs={False: "pre-tanh action"},
    contents="actor, deterministic action", raw_obs_note="td3 trains on raw observations",
    bounds_in_arch=True)
