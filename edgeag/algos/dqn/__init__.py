"""DQN: the algorithm (`algorithm`), its config, its numpy and torch Q-networks, its
presets, and how its checkpoints export (`EXPORT`). Implementation details:
docs/algorithms/dqn.md."""

from edgeag.algos.base import ExportSpec

EXPORT = ExportSpec(
    arch_kind="q", prefix="net", activation="relu", heads={True: "argmax"},
    meanings={"argmax": "argmax of Q"}, outputs={True: "Q-value"},
    contents="Q-network, greedy action", raw_obs_note="dqn trains on raw observations")
