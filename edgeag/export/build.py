"""``edgeag export``: a run's checkpoint -> verified artifacts + ``policy.json``.

Order of events:

1. validate the formats, the output directory and the run (exit 2, nothing written);
2. rebuild the policy as `ExportPolicy` and record observations from the env;
3. build each artifact under a temporary name in the output directory and verify it
   with its own runtime against the PyTorch policy (`edgeag.export.verify`);
4. only when every artifact passed, move them to their final names and write
   ``policy.json`` last. A failure (exit 4) publishes nothing, and removes any
   previous export's file of the failed name and its ``policy.json``, so no file in
   the directory claims to be a verified policy.

The output directory holds one export: artifacts of an earlier export that this one
does not produce are removed when it succeeds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeag.errors import WRITE_ERRNOS, EdgeagError, WriteFailed, describe_write_error
from edgeag.export import FORMATS, METADATA, PTE_MAX_BATCH, QUANTIZE
from edgeag.export.verify import TOLERANCES, VerificationFailed

ARTIFACTS = {
    # final name: (format, precision)
    "policy.onnx": ("onnx", "fp32"),
    "policy.int8.onnx": ("onnx", "int8"),
    "policy.ort": ("ort", "fp32"),
    "policy.pte": ("pte", "fp32"),
    "policy.int8.pte": ("pte", "int8"),
}
CALIBRATION_SEED = 30_000
"""Seeds of the episodes whose observations calibrate int8 activation ranges (apart
from the verification episodes)."""
EXTRA_HINT = "pip install 'edgeag[export]'"


def parse_formats(text: str | None) -> list[str] | None:
    """``"onnx,pte"`` -> ``["onnx", "pte"]``; EdgeagError naming an unknown one."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise EdgeagError(f"unknown format {(bad or [text])[0]!r} (accepted: a comma-separated "
                          f"list of {', '.join(FORMATS)})")
    return list(dict.fromkeys(names))


def artifact_names(formats: list[str], quantize: str | None) -> list[str]:
    """The files an export with ``formats`` writes: ``ort`` is converted from the ONNX
    model, which is kept too; ``--quantize int8`` adds an int8 ``.onnx`` and ``.pte``
    beside the float ones."""
    names = []
    if "onnx" in formats or "ort" in formats:
        names.append("policy.onnx")
        if quantize:
            names.append("policy.int8.onnx")
    if "ort" in formats:
        names.append("policy.ort")
    if "pte" in formats:
        names.append("policy.pte")
        if quantize:
            names.append("policy.int8.pte")
    return names


def default_formats(run_path: Path, log) -> tuple[list[str], str]:
    """The export formats of the device profile the run was trained with, else onnx."""
    from edgeag.profiles import load_profile
    from edgeag.train.config import tomllib

    try:
        with open(run_path / "config.toml", "rb") as f:
            profile = tomllib.load(f).get("run", {}).get("profile") or None
    except (OSError, tomllib.TOMLDecodeError):
        profile = None
    if profile is None:
        return ["onnx"], "no device profile recorded"
    try:
        return list(load_profile(profile).export_formats), f"profile {profile}"
    except EdgeagError:
        log(f"the run's profile {profile!r} is not known here; exporting onnx")
        return ["onnx"], f"profile {profile} unknown"


def export_run(run_path: str | Path, formats: list[str] | None = None, out: str | Path | None = None,
               quantize: str | None = None, progress: bool = True, log=print) -> dict:
    """Export the run in ``run_path``; returns the metadata written to ``policy.json``.
    Raises EdgeagError (exit 2) for bad input and `VerificationFailed` (exit 4)."""
    if quantize is not None and quantize not in QUANTIZE:
        raise EdgeagError(f"unknown --quantize {quantize!r} (accepted: {', '.join(QUANTIZE)})")
    _check_installed()
    from edgeag.export.policy import load_run

    run = load_run(run_path)
    origin = "--format"
    if formats is None:
        formats, origin = default_formats(run.path, log)
    names = artifact_names(formats, quantize)
    out = Path(out) if out is not None else run.path / "export"
    staging = _staging_dir(out)
    try:
        meta = _build_and_verify(run, names, staging, out, progress, log,
                                 f"{', '.join(formats)} ({origin})")
        for name in names:
            (staging / name).replace(out / name)
        for stale in set(ARTIFACTS) - set(names):
            (out / stale).unlink(missing_ok=True)
        from edgeag.train.rundir import write_json
        write_json(out / METADATA, meta)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        raise WriteFailed(f"cannot write the export to {out}: {describe_write_error(e)}; the "
                          "previous export there, if any, is unchanged") from None
    except VerificationFailed:
        removed = [p.name for p in (out / n for n in (*names, METADATA)) if p.exists()]
        for name in removed:
            (out / name).unlink()
        if removed:
            log(f"removed the previous export's {', '.join(removed)} from {out}")
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def _check_installed() -> None:
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript", "executorch")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgeagError(f"edgeag export needs {', '.join(missing)}: {EXTRA_HINT}")


def _staging_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    except OSError as e:
        raise EdgeagError(f"cannot write to the output directory {out}: "
                          f"{e.strerror or type(e).__name__}") from None


def _build_and_verify(run, names: list[str], staging: Path, out: Path, progress: bool, log,
                      formats_text: str) -> dict:
    import torch

    from edgeag.export.policy import record_observations
    from edgeag.export.verify import reference, verify

    torch.set_num_threads(1)
    env_id = run.config["env_id"]
    obs_dim = run.observation_space.shape[0]
    log(f"edgeag export: {run.path} ({env_id}, step {run.checkpoint_step:,}) -> {out}; "
        f"formats {formats_text}: {', '.join(names)}")
    policy = run.export_policy()
    bar = _progress(progress, 1 + 2 * len(names))
    _step(bar, "recording observations")
    obs, recorded = record_observations(policy, env_id)
    expected, logits = reference(policy, obs)
    bar.update(1)
    artifacts = {}
    for name in names:
        fmt, precision = ARTIFACTS[name]
        path = staging / name
        _step(bar, f"building {name}")
        info = _build(name, policy, obs_dim, staging, env_id)
        bar.update(1)
        _step(bar, f"verifying {name}")
        try:
            figures = verify(path, name, precision, policy, obs, expected, logits)
        finally:
            bar.update(1)
        artifacts[name] = {"format": fmt, "precision": precision, "bytes": path.stat().st_size,
                           "sha256": _sha256(path), **info, "verification": figures}
        log(f"  {name:18s} {path.stat().st_size:>9,d} B  verified: {_summary(figures, policy.discrete)}")
    bar.close()
    return _metadata(run, artifacts, recorded)


def _build(name: str, policy, obs_dim: int, staging: Path, env_id: str) -> dict:
    from edgeag.export import onnx as onnx_export
    from edgeag.export.policy import record_observations

    path = staging / name
    if name == "policy.onnx":
        return onnx_export.export_onnx(policy, obs_dim, path)
    if name == "policy.int8.onnx":
        calibration, recorded = record_observations(policy, env_id, seed=CALIBRATION_SEED)
        return {**onnx_export.quantize_onnx(staging / "policy.onnx", path, calibration),
                "quantization": "onnxruntime quantize_static, QDQ: int8 weights per channel "
                                "(7-bit range), int8 activations with calibrated ranges",
                "calibration": recorded}
    if name == "policy.ort":
        onnx_export.convert_ort(staging / "policy.onnx", path)
        return {"converted_from": "policy.onnx"}
    from edgeag.export.executorch import export_pte

    if name == "policy.pte":
        return export_pte(policy, obs_dim, path)
    calibration, recorded = record_observations(policy, env_id, seed=CALIBRATION_SEED)
    return {**export_pte(policy, obs_dim, path, calibration),
            "quantization": "PT2E with ExecuTorch's XNNPACKQuantizer: symmetric int8, weights "
                            "per channel, static activation ranges",
            "calibration": recorded}


def _metadata(run, artifacts: dict, recorded: dict) -> dict:
    cfg, summary = run.config, run.summary or {}
    obs_space, act_space = run.observation_space, run.action_space
    obs_dim = obs_space.shape[0]
    if run.discrete:
        action_space = {"type": "Discrete", "n": int(act_space.n)}
        output = {"name": "action", "dtype": "int64", "shape": ["batch"],
                  "meaning": "argmax of the actor's logits"}
    else:
        action_space = {"type": "Box", "shape": list(act_space.shape),
                        "low": _floats(act_space.low), "high": _floats(act_space.high)}
        output = {"name": "action", "dtype": "float32", "shape": ["batch", int(act_space.shape[0])],
                  "meaning": "Gaussian mean clipped to the action bounds"}
    norm = cfg.get("norm_obs", True)
    from edgeag import __version__
    from edgeag.train.envs import NORM_EPS, OBS_CLIP

    return {
        "format_version": 1,
        "env_id": cfg["env_id"],
        "observation_space": {"type": "Box", "shape": list(obs_space.shape),
                              "low": _floats(obs_space.low), "high": _floats(obs_space.high)},
        "action_space": action_space,
        "contract": {"input": {"name": "obs", "dtype": "float32", "shape": ["batch", obs_dim]},
                     "output": output, "pte_max_batch": PTE_MAX_BATCH,
                     "inside": "observation normalisation and clipping, actor, deterministic action"},
        "normalization": {"enabled": bool(norm), "mean": _floats(run.obs_norm["mean"]),
                          "var": _floats(run.obs_norm["var"]), "count": float(run.obs_norm["count"]),
                          "epsilon": NORM_EPS, "clip": OBS_CLIP,
                          "formula": "clip((obs - mean) / sqrt(var + epsilon), -clip, clip)"},
        "algorithm": "ppo",
        "optimizer": {k: cfg.get(k) for k in ("optimizer", "lr", "alpha", "momentum", "eps")},
        "network": {"actor": [int(m.out_features) for m in run.policy.actor
                              if hasattr(m, "out_features")], "activation": "tanh",
                    "hidden": list(cfg.get("hidden", []))},
        "training": {"run": str(run.path), "checkpoint_step": run.checkpoint_step,
                     "seed": cfg.get("seed"), "total_steps": cfg.get("total_steps"),
                     **{k: summary.get(k) for k in ("steps", "stopped", "wall_seconds",
                                                    "steps_per_second", "peak_rss_bytes",
                                                    "budget_bytes", "profile",
                                                    "final_eval_return")}},
        "versions": _versions(),
        "verification": {"observations": recorded, "tolerances": {
            f"{kind}/{precision}": tol for (kind, precision), tol in TOLERANCES.items()}},
        "artifacts": artifacts,
        "edgeag": __version__,
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("edgeag", "torch", "onnx", "onnxscript", "onnxruntime", "executorch",
                    "torchao", "gymnasium", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _floats(values) -> list:
    """JSON has no infinity: unbounded space limits are written as "inf" / "-inf"."""
    return [float(v) if np.isfinite(v) else ("inf" if v > 0 else "-inf")
            for v in np.asarray(values, np.float64).ravel()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _summary(figures: dict, discrete: bool) -> str:
    b1, bn = figures["batch_1"], figures["batched"]
    if discrete:
        return (f"same action on {min(b1['agreement'], bn['agreement']):.2%} of "
                f"{figures['observations']} observations ({figures['runtime']})")
    return (f"max error {max(b1['max_error_fraction_of_range'], bn['max_error_fraction_of_range']):.2g}"
            f" of the action range on {figures['observations']} observations ({figures['runtime']})")


class _NoBar:
    def update(self, n=1):
        pass

    def set_description_str(self, text):
        pass

    def close(self):
        pass


def _progress(enabled: bool, total: int):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="step", dynamic_ncols=True, desc="export", disable=None,
                file=sys.stderr, leave=False)


def _step(bar, text: str) -> None:
    bar.set_description_str(text)
