"""The exported policy as data: `PolicySpec`, built from a checkpoint's arrays with numpy
alone, and its numpy forward, the reference every artifact is verified against.

Every algorithm's policy is the same shape of program::

    x = clip((obs - mean) / std, -OBS_CLIP, OBS_CLIP)     # PPO with norm_obs only
    x = act(x @ W1.T + b1); ...; y = x @ Wn.T + bn          # act: tanh (PPO), relu (DQN, TD3)
    action = head(y)

with one of three heads:

==========  ==========================  ===================================================
head        algorithms                  action
==========  ==========================  ===================================================
argmax      PPO (discrete), DQN         ``argmax(y)``: int64 ``[batch]``
clip        PPO (continuous)            ``min(max(y, low), high)``: float32 ``[batch, act]``
tanh        TD3                         ``min(max(tanh(y) * scale + bias, low), high)``,
                                        scale = (high - low) / 2, bias = (high + low) / 2:
                                        float32 ``[batch, act]``
==========  ==========================  ===================================================

Each algorithm says which of its arrays, activation and head make its policy (its
`edgeag.algos.base.ExportSpec`, ``EXPORT`` in its folder); this module knows none by
name. The clip after TD3's tanh is what `edgeag.train.envs.evaluate` applies to every
continuous action; it only ever removes float rounding at the bounds.

`edgeag.export.onnx` writes this program as an ONNX graph and `edgeag.export.executorch`
as a torch module; neither reads the checkpoint. This module imports numpy only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgeag.algos import export_specs
from edgeag.algos.base import NORM_EPS, OBS_CLIP, ExportSpec

__all__ = ["HEADS", "NORM_EPS", "OBS_CLIP", "PolicySpec", "SpecError", "spec_from_checkpoint"]

HEADS = ("argmax", "clip", "tanh")


class SpecError(ValueError):
    """A checkpoint whose arrays do not make an exportable policy; the message says what
    is missing or wrong."""


@dataclass(frozen=True)
class PolicySpec:
    """One exported MLP policy: observation normalisation, layers, activation and head,
    all float32 (see the module docstring)."""

    algorithm: str
    """The registered algorithm (`edgeag.algos.ALGORITHMS`)."""
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    """(weight ``[out, in]``, bias ``[out]``) per linear layer, input to output."""
    activation: str
    """Between layers: tanh or relu."""
    head: str
    """argmax, clip or tanh (`HEADS`)."""
    obs_mean: np.ndarray | None = None
    obs_std: np.ndarray | None = None
    """``sqrt(var + NORM_EPS)``, computed in float64 and rounded; both None: the
    observation is used raw."""
    action_low: np.ndarray | None = None
    action_high: np.ndarray | None = None
    """The action bounds (continuous heads only)."""

    @property
    def normalize(self) -> bool:
        return self.obs_mean is not None

    @property
    def discrete(self) -> bool:
        return self.head == "argmax"

    @property
    def sizes(self) -> list[int]:
        """``[obs_dim, hidden..., out]``."""
        return [int(self.layers[0][0].shape[1])] + [int(w.shape[0]) for w, _ in self.layers]

    @property
    def obs_dim(self) -> int:
        return self.sizes[0]

    @property
    def export(self) -> ExportSpec:
        """The algorithm's export spec."""
        return export_specs()[self.algorithm]

    @property
    def meaning(self) -> str:
        """What the output ``action`` is (``policy.json``'s ``contract.output.meaning``)."""
        return self.export.meanings[self.head]

    @property
    def output_name(self) -> str:
        """What the last layer computes: logits, Q-values, means or pre-tanh actions."""
        return self.export.outputs[self.discrete]

    @property
    def action_scale(self) -> np.ndarray:
        """TD3's ``(high - low) / 2``, in float32 as `DeterministicActor` computes it."""
        return (self.action_high - self.action_low) / np.float32(2)

    @property
    def action_bias(self) -> np.ndarray:
        return (self.action_high + self.action_low) / np.float32(2)

    def outputs(self, obs: np.ndarray) -> np.ndarray:
        """The last layer's output (before the head) for float32 ``[batch, obs_dim]``."""
        x = np.asarray(obs, np.float32)
        if self.normalize:
            x = np.clip((x - self.obs_mean) / self.obs_std, np.float32(-OBS_CLIP),
                        np.float32(OBS_CLIP))
        act = np.tanh if self.activation == "tanh" else (lambda v: np.maximum(v, np.float32(0)))
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight.T + bias
            if i < len(self.layers) - 1:
                x = act(x)
        return x

    def forward(self, obs: np.ndarray) -> np.ndarray:
        """The actions for float32 ``[batch, obs_dim]`` observations: int64 ``[batch]``
        or float32 ``[batch, act_dim]``."""
        return self.apply_head(self.outputs(obs))

    __call__ = forward

    def apply_head(self, y: np.ndarray) -> np.ndarray:
        if self.head == "argmax":
            return np.argmax(y, axis=-1).astype(np.int64)
        if self.head == "tanh":
            y = np.tanh(y) * self.action_scale + self.action_bias
        return np.minimum(np.maximum(y, self.action_low), self.action_high)


def spec_from_checkpoint(ckpt: dict, action_low=None, action_high=None) -> PolicySpec:
    """The policy in a checkpoint's state (`edgeag.train.rundir.RunDir.load_checkpoint`):
    its ``arch``, the ``policy`` arrays (numpy arrays or torch tensors, read through
    ``np.asarray``), ``obs_norm`` and ``config["norm_obs"]`` for PPO. ``action_low`` /
    ``action_high``: the env's bounds, for PPO's continuous head (TD3 carries its own in
    ``arch``). SpecError names what is missing or inconsistent."""
    arch = ckpt.get("arch")
    policy = ckpt.get("policy")
    if not isinstance(arch, dict) or not isinstance(policy, dict):
        raise SpecError("no arch and policy arrays")
    kinds = {e.arch_kind: name for name, e in export_specs().items()}
    kind = arch.get("kind")
    if kind not in kinds:
        accepted = [f"none for {n}" if k is None else repr(k) for k, n in kinds.items()]
        raise SpecError(f"unknown arch kind {kind!r} (accepted: {', '.join(accepted)})")
    algorithm = kinds[kind]
    export = export_specs()[algorithm]
    try:
        obs_dim, action_dim = int(arch["obs_dim"]), int(arch["action_dim"])
        discrete, hidden = bool(arch["discrete"]), [int(h) for h in arch["hidden"]]
    except (KeyError, TypeError, ValueError) as e:
        raise SpecError(f"an arch without {e}") from None
    layers = _layers(policy, export.prefix, [obs_dim, *hidden, action_dim])
    mean = std = low = high = None
    if discrete not in export.heads:
        raise SpecError(f"a {kind or algorithm} arch with discrete {str(discrete).lower()} "
                        f"({algorithm}'s actions are "
                        f"{'discrete' if True in export.heads else 'continuous'})")
    if export.normalises_obs and ckpt.get("config", {}).get("norm_obs", True):
        norm = ckpt.get("obs_norm")
        if not isinstance(norm, dict) or "mean" not in norm or "var" not in norm:
            raise SpecError("norm_obs is on but there are no obs_norm mean and var")
        mean = np.asarray(norm["mean"], np.float32)
        std = np.sqrt(np.asarray(norm["var"], np.float64) + NORM_EPS).astype(np.float32)
        if mean.shape != (obs_dim,) or std.shape != (obs_dim,):
            raise SpecError(f"obs_norm of shape {list(mean.shape)}, the policy takes {obs_dim} "
                            "values")
    if export.bounds_in_arch:
        action_low, action_high = arch.get("low"), arch.get("high")
    if not discrete:
        if action_low is None or action_high is None:
            raise SpecError("a continuous policy without action bounds")
        low, high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)
        if low.shape != (action_dim,) or high.shape != (action_dim,):
            raise SpecError(f"action bounds of shape {list(low.shape)}, the policy has "
                            f"{action_dim} actions")
    return PolicySpec(algorithm, layers, export.activation, export.heads[discrete], mean, std,
                      low, high)


def _layers(policy: dict, prefix: str, sizes: list[int]) -> tuple:
    """``{prefix}.0``, ``{prefix}.2``, ... (an ``nn.Sequential`` with an activation module
    between its linear layers) as float32 (weight, bias) pairs of the ``sizes`` arch."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.weight")
    found = sorted(int(m.group(1)) for m in map(pattern.fullmatch, policy) if m)
    if not found:
        raise SpecError(f"no {prefix}.*.weight arrays")
    expected = list(range(0, 2 * (len(sizes) - 1), 2))
    if found != expected:
        raise SpecError(f"layers {', '.join(f'{prefix}.{i}' for i in found)}; the arch "
                        f"{sizes} needs {', '.join(f'{prefix}.{i}' for i in expected)}")
    layers = []
    for i, n_in, n_out in zip(expected, sizes[:-1], sizes[1:]):
        if f"{prefix}.{i}.bias" not in policy:
            raise SpecError(f"no {prefix}.{i}.bias")
        weight = np.ascontiguousarray(np.asarray(policy[f"{prefix}.{i}.weight"]), np.float32)
        bias = np.ascontiguousarray(np.asarray(policy[f"{prefix}.{i}.bias"]), np.float32)
        if weight.shape != (n_out, n_in) or bias.shape != (n_out,):
            raise SpecError(f"{prefix}.{i} has weight {list(weight.shape)} and bias "
                            f"{list(bias.shape)}; the arch {sizes} needs [{n_out}, {n_in}] "
                            f"and [{n_out}]")
        layers.append((weight, bias))
    return tuple(layers)
