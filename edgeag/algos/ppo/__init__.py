"""PPO: the algorithm (`algorithm`), its config, its numpy and torch networks, its presets,
and how its checkpoints export (`EXPORT`). Implementation details: docs/algorithms/ppo.md."""

from edgeag.algos.base import ExportSpec

EXPORT = ExportSpec(
    arch_kind=None, prefix="actor", activation="tanh",
    heads={True: "argmax", False: "clip"},
    meanings={"argmax": "argmax of logits",
              "clip": "Gaussian mean clipped to the action bounds"},
    outputs={True: "logit", False: "mean"},
    contents="observation normalisation and clipping, actor, deterministic action",
    raw_obs_note="the run had norm_obs = false", normalises_obs=True)
