"""Verification: an artifact, loaded by its own runtime, against the numpy reference of
the policy (`edgeag.export.spec.PolicySpec.forward`) on observations recorded from the
environment. No torch is needed to verify ``.onnx`` and ``.ort`` files.

Each artifact is run twice over the observations: once per observation through the
runner's per-action path (`OnnxPolicy.act` / `PtePolicy.act`, batch 1, as a device
calls it) and once in batches through the runtime's plain call (the dynamic batch
dimension), and both must meet its tolerance:

==========  =========  ===================================================================
actions     precision  passes when
==========  =========  ===================================================================
discrete    fp32       the same action on at least 99.9% of observations
discrete    int8       the same action on at least 95% of observations
continuous  fp32       every action within 1e-4 of the action range (high - low) of the
                       reference's
continuous  int8       every action within 5% of the action range of the reference's
==========  =========  ===================================================================

A ``.pte`` is also run through the native runner (`edgeag.export.native`:
ExecuTorch's C++ runtime, as an Android app runs it) where that is built, under the
same tolerances, at batch 1 and in batches; its figures, with the runner's per-action
latency and peak RSS, are the ``native`` entry of the file's figures (``verified``
false, ``reason`` "not built: make native", where it is not built).

Output dtype and shape must match the contract exactly. A failure raises
`VerificationFailed` (exit 4) naming the worst mismatch: for discrete actions the
disagreeing observation where the reference's margin between its two largest outputs
(logits or Q-values) was largest, for continuous ones the largest error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeag.errors import EdgeagError
from edgeag.export import PTE_MAX_BATCH
from edgeag.export.runner import load_policy
from edgeag.export.spec import PolicySpec

TOLERANCES = {
    ("discrete", "fp32"): {"min_agreement": 0.999},
    ("discrete", "int8"): {"min_agreement": 0.95},
    ("continuous", "fp32"): {"max_error_fraction_of_range": 1e-4},
    ("continuous", "int8"): {"max_error_fraction_of_range": 0.05},
}


class VerificationFailed(EdgeagError):
    """An exported artifact does not behave like the policy's reference (exit 4)."""

    exit_code = 4


def reference(spec: PolicySpec, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The numpy reference's actions and last-layer outputs (logits, Q-values, means or
    pre-tanh actions) for ``obs``."""
    outputs = spec.outputs(obs)
    return spec.apply_head(outputs), outputs


def verify(path: Path, name: str, precision: str, spec: PolicySpec, obs: np.ndarray,
           expected: np.ndarray, outputs: np.ndarray) -> dict:
    """Run the artifact at ``path`` on ``obs`` and compare with ``expected`` (the
    reference's actions; ``outputs``: its last-layer outputs, for naming the worst
    mismatch); returns the figures (for policy.json) or raises `VerificationFailed`."""
    discrete = spec.discrete
    tolerance = TOLERANCES[("discrete" if discrete else "continuous", precision)]
    try:
        runtime = load_policy(path)
    except EdgeagError as e:
        raise VerificationFailed(f"{name} failed verification: its runtime cannot load it "
                                 f"({e})") from None
    try:
        single = np.stack([np.asarray(runtime.act(o)) for o in obs])
        batched = np.concatenate([runtime(obs[i:i + PTE_MAX_BATCH])
                                  for i in range(0, len(obs), PTE_MAX_BATCH)])
    except Exception as e:
        raise VerificationFailed(f"{name} failed verification: running it raised "
                                 f"{type(e).__name__}: "
                                 f"{str(e).strip().splitlines()[0][:160]}") from None
    figures = {"runtime": runtime.runtime, "observations": len(obs), "tolerance": tolerance}
    for mode, actions in (("batch_1", single), ("batched", batched)):
        figures[mode] = check_actions(name, mode, actions, expected, outputs, obs, tolerance, spec)
    if Path(path).suffix == ".pte":
        figures["native"] = verify_native(path, name, precision, spec, obs, expected, outputs)
    return figures


def verify_native(path: Path, name: str, precision: str, spec: PolicySpec, obs: np.ndarray,
                  expected: np.ndarray, outputs: np.ndarray) -> dict:
    """`verify` for a ``.pte`` on the native runner (ExecuTorch's C++ runtime), where it
    is built: ``obs`` one per call, then in calls of `PTE_MAX_BATCH`, under the same
    tolerance; with the runner's per-action latency and peak RSS."""
    from edgeag.export import native

    runner = native.runner_path()
    if runner is None:
        return {"verified": False, "reason": native.NOT_BUILT}
    tolerance = TOLERANCES[("discrete" if spec.discrete else "continuous", precision)]
    try:
        single, timing = native.run_batch(path, obs, 1, runner=runner)
        batched, _ = native.run_batch(path, obs, PTE_MAX_BATCH, runner=runner)
    except EdgeagError as e:
        raise VerificationFailed(f"{name} failed verification on the native runner: {e}") from None
    figures = {"verified": True, "runtime": timing["runtime"], "observations": len(obs),
               "tolerance": tolerance}
    for mode, actions in (("batch_1", single), ("batched", batched)):
        figures[mode] = check_actions(name, f"native, {mode}", actions, expected, outputs, obs,
                               tolerance, spec)
    if not spec.discrete:
        figures["max_abs_error"] = max(figures[m]["max_abs_error"] for m in ("batch_1", "batched"))
    return {**figures, "latency_us": timing["median_latency_us"],
            "p90_latency_us": timing["p90_latency_us"], "load_ms": timing["load_ms"],
            "peak_rss_bytes": timing["peak_rss_bytes"]}


def check_actions(name, mode, actions, expected, outputs, obs, tolerance,
                  spec: PolicySpec) -> dict:
    """The figures of one pass (``mode``) over ``obs`` against the reference, or
    `VerificationFailed`: every runtime's and format's check (`edgeag.export.c_source` too)."""
    if actions.dtype != expected.dtype or actions.shape != expected.shape:
        raise VerificationFailed(
            f"{name} failed verification ({mode}): output {actions.dtype} "
            f"{list(actions.shape)}, "
            f"expected {expected.dtype} {list(expected.shape)}")
    if spec.discrete:
        return _compare_discrete(name, mode, actions, expected, outputs, obs, tolerance,
                                 spec.output_name)
    span = spec.action_high.astype(np.float64) - spec.action_low
    return _compare_continuous(name, mode, actions, expected, span, obs, tolerance)


def _compare_discrete(name, mode, actions, expected, outputs, obs, tolerance, what) -> dict:
    agree = actions == expected
    rate = float(agree.mean())
    out = {"agreement": rate, "mismatches": int((~agree).sum())}
    if rate < tolerance["min_agreement"]:
        top2 = np.sort(outputs, axis=-1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        bad = np.flatnonzero(~agree)
        i = int(bad[np.argmax(margin[bad])])
        raise VerificationFailed(
            f"{name} failed verification ({mode}): same action on {rate:.2%} of {len(obs)} "
            f"observations, needs {tolerance['min_agreement']:.1%}; worst mismatch: observation "
            f"#{i} {_fmt(obs[i])} gave action {actions[i]}, the reference {expected[i]} "
            f"({what} margin {margin[i]:.3g})")
    return out


def _compare_continuous(name, mode, actions, expected, span, obs, tolerance) -> dict:
    error = np.abs(actions.astype(np.float64) - expected) / span
    worst = np.unravel_index(np.argmax(error), error.shape)
    i = int(worst[0])
    out = {"max_error_fraction_of_range": float(error.max()),
           "mean_error_fraction_of_range": float(error.mean()),
           "max_abs_error": float(np.abs(actions.astype(np.float64) - expected).max())}
    if error.max() > tolerance["max_error_fraction_of_range"]:
        raise VerificationFailed(
            f"{name} failed verification ({mode}): action error up to {error.max():.3g} of the "
            f"action range, tolerance {tolerance['max_error_fraction_of_range']:g}; worst "
            f"mismatch: observation #{i} {_fmt(obs[i])} gave {_fmt(actions[i])}, "
            f"the reference {_fmt(expected[i])}")
    return out


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.atleast_1d(values)) + "]"
