"""``edgeag export``: a run's checkpoint -> verified artifacts + ``policy.json``.

Order of events:

1. validate the formats, the output directory and the run (exit 2, nothing written);
2. read the policy as a `PolicySpec` (numpy arrays) and the observations to verify on:
   the checkpoint's sample of training observations (`edgeag.train.observations`), so
   that an export never steps the env, or, with ``record=True``
   (``--record-observations``), observations recorded by stepping it; compute the
   numpy reference's actions on them;
3. build each artifact under a temporary name in the output directory and verify it
   with its own runtime against the numpy reference (`edgeag.export.verify`; a format
   no Python runtime loads verifies itself: ``Format.verify``);
4. only when every artifact passed, move them to their final names and write
   ``policy.json`` last. A failure (exit 4) publishes nothing, and removes any
   previous export's file of the failed name and its ``policy.json``, so no file in
   the directory claims to be a verified policy.

The output directory holds one export: artifacts of an earlier export that this one
does not produce are removed when it succeeds.

Only ``pte`` needs torch (and ExecuTorch); ``onnx`` and ``ort`` are written with the
``onnx`` package and verified with onnxruntime, and never import torch; ``c`` is
verified with a C compiler, when there is one.
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
from edgeag.export import METADATA, PTE_MAX_BATCH
from edgeag.export.formats import FORMATS, QUANTIZE, ExportContext, artifact_formats, artifact_names
from edgeag.export.verify import TOLERANCES, VerificationFailed

CALIBRATION_SEED = 30_000
"""Seeds of the episodes whose observations calibrate int8 activation ranges (apart
from the verification episodes)."""
METADATA_FORMAT = 2
"""``policy.json``'s ``format_version``. 2: ``network`` is ``layers`` / ``activation`` /
``head`` / ``hidden`` (1 had ``actor``, PPO only); ``normalization`` holds ``mean``,
``var`` and ``count`` only when it is enabled; ``algorithm`` is the run's (a name of
`edgeag.algos.ALGORITHMS`); ``training.final_eval_seed`` is new; ``versions`` lists
torch, executorch and torchao only for an export with a ``.pte``."""


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


def default_formats(run_path: Path, log) -> tuple[list[str], str]:
    """The export formats of the device profile the run was trained with, else onnx."""
    from edgeag.io import tomllib
    from edgeag.profiles import load_profile

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


def export_run(run_path: str | Path, formats: list[str] | None = None,
               out: str | Path | None = None,
               quantize: str | None = None, progress: bool = True, log=print,
               record: bool = False) -> dict:
    """Export the run in ``run_path``; returns the metadata written to ``policy.json``.
    Artifacts are verified (and int8 ones calibrated) on the checkpoint's training
    observations; ``record`` steps the env for them instead. Raises EdgeagError (exit 2)
    for bad input and `VerificationFailed` (exit 4)."""
    if quantize is not None and quantize not in QUANTIZE:
        raise EdgeagError(f"unknown --quantize {quantize!r} (accepted: {', '.join(QUANTIZE)})")
    from edgeag.export.policy import VERIFY_OBSERVATIONS, load_run

    run = load_run(run_path)
    if not record and run.observations is None:
        raise EdgeagError(f"cannot export: {run.path} has no training observations to verify "
                          f"on (its checkpoint was written before runs kept them); pass "
                          f"--record-observations to record {VERIFY_OBSERVATIONS} by stepping "
                          f"the env {run.config['env_id']!r} (record=True from Python)")
    origin = "--format"
    if formats is None:
        formats, origin = default_formats(run.path, log)
    _check_installed(formats)
    names = artifact_names(formats, quantize)
    if quantize and all(artifact_formats()[n][1] != quantize for n in names):
        raise EdgeagError(f"--quantize {quantize} has nothing to quantize: --format "
                          f"{','.join(formats)} has no {quantize} variant (docs/export.md); "
                          "export without --quantize")
    out = Path(out) if out is not None else run.path / "export"
    staging = _staging_dir(out)
    try:
        meta = _build_and_verify(run, names, staging, out, progress, log,
                                 f"{', '.join(formats)} ({origin})", record)
        for name in names:
            (staging / name).replace(out / name)
        for stale in set(artifact_formats()) - set(names):
            (out / stale).unlink(missing_ok=True)
        from edgeag.io import write_json
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


def _check_installed(formats: list[str]) -> None:
    """EdgeagError (exit 2) naming the packages ``formats`` need that are not installed
    here (each format's ``packages``), without importing any of them."""
    from edgeag.errors import torch_available

    def missing(fmt):
        return [m for m in fmt.packages if not (
            torch_available() if m == "torch" else _installed(m))]

    for name in formats:
        fmt = FORMATS[name]
        absent = missing(fmt)
        if not absent:
            continue
        if "torch" in fmt.packages:
            raise EdgeagError(
                f"edgeag export --format {name} needs {' and '.join(absent)}, which "
                f"{'is' if len(absent) == 1 else 'are'} not installed here: phones get their "
                f"{fmt.suffix} from a machine with torch ({fmt.install}); "
                f"{_listed([f for f, o in FORMATS.items() if 'torch' not in o.packages])} "
                "export without torch")
        light = [f for f in formats if "torch" not in FORMATS[f].packages]
        raise EdgeagError(f"edgeag export --format {','.join(light)} needs "
                          f"{', '.join(absent)}, not installed here: {fmt.install}")


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # blocked (sys.modules[name] = None) or broken
        return False


def _staging_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    except OSError as e:
        raise EdgeagError(f"cannot write to the output directory {out}: "
                          f"{e.strerror or type(e).__name__}") from None


def _build_and_verify(run, names: list[str], staging: Path, out: Path, progress: bool, log,
                      formats_text: str, record: bool) -> dict:
    from edgeag.export.policy import VERIFY_SEED
    from edgeag.export.verify import reference

    env_id = run.config["env_id"]
    log(f"edgeag export: {run.path} ({env_id}, step {run.checkpoint_step:,}) -> {out}; "
        f"formats {formats_text}: {', '.join(names)}")
    spec = run.spec
    bar = _progress(progress, 1 + 2 * len(names))
    _step(bar, "recording observations" if record else "reading observations")
    obs, recorded = _observations(run, record, VERIFY_SEED)
    if not record:
        log(f"  verifying on {recorded['count']:,} of the {recorded['seen']:,} observations "
            "seen in training (the env is not stepped)")
    expected, outputs = reference(spec, obs)
    bar.update(1)
    artifacts = {}
    ctx = ExportContext(staging, _calibration(run, record))
    for name in names:
        fmt, precision = artifact_formats()[name]
        path = staging / name
        _step(bar, f"building {name}")
        info = _build(name, spec, ctx)
        bar.update(1)
        _step(bar, f"verifying {name}")
        try:
            figures = fmt.verifier()(path, name, precision, spec, obs, expected, outputs)
        finally:
            bar.update(1)
        artifacts[name] = {"format": fmt.name, "precision": precision, "bytes": path.stat().st_size,
                           "sha256": _sha256(path), **info, "verification": figures}
        log(f"  {name:18s} {path.stat().st_size:>9,d} B  {_summary(figures, spec.discrete)}")
        if "native" in figures:  # a .pte through the native runner (edgeag.export.native)
            log(f"  {'':32s}native: {_summary(figures['native'], spec.discrete)}")
    bar.close()
    return _metadata(run, artifacts, recorded)


def _build(name: str, spec, ctx: ExportContext) -> dict:
    """Write the artifact ``name`` into ``ctx.staging`` with its format's builder."""
    fmt, precision = artifact_formats()[name]
    return fmt.builder(precision)(spec, ctx.staging / name, ctx)


def _observations(run, record: bool, seed: int) -> tuple[np.ndarray, dict]:
    """The run's training sample, or (``record``) observations recorded from its env
    with episode seeds from ``seed``."""
    if not record:
        rows, info = run.observations
        return rows, {**info, "checkpoint_step": run.checkpoint_step}
    from edgeag.export.policy import record_observations

    obs, info = record_observations(run.spec, run.config["env_id"], seed=seed,
                                    env_kwargs=run.config.get("env_kwargs"))
    return obs, {"source": "env", **info}


def _calibration(run, record: bool):
    """The int8 calibration observations, on first use, once per export: the training
    sample, or (``record``) episodes apart from the verification ones."""
    found = []

    def calibration():
        if not found:
            found.append(_observations(run, record, CALIBRATION_SEED))
        return found[0]
    return calibration


def _metadata(run, artifacts: dict, recorded: dict) -> dict:
    cfg, summary, spec = run.config, run.summary or {}, run.spec
    obs_space, act_space = run.observation_space, run.action_space
    obs_dim = obs_space.shape[0]
    if spec.discrete:
        action_space = {"type": "Discrete", "n": int(act_space.n)}
        output = {"name": "action", "dtype": "int64", "shape": ["batch"], "meaning": spec.meaning}
    else:
        action_space = {"type": "Box", "shape": list(act_space.shape),
                        "low": _floats(act_space.low), "high": _floats(act_space.high)}
        output = {"name": "action", "dtype": "float32", "shape": ["batch", int(act_space.shape[0])],
                  "meaning": spec.meaning}
    from edgeag import __version__
    from edgeag.export.spec import NORM_EPS, OBS_CLIP
    from edgeag.train.envs import EVAL_SEED_OFFSET

    inside = spec.export.contents  # contract.inside: what the file holds, obs to action
    if spec.normalize:
        normalization = {"enabled": True, "mean": _floats(run.obs_norm["mean"]),
                         "var": _floats(run.obs_norm["var"]),
                         "count": float(run.obs_norm["count"]), "epsilon": NORM_EPS,
                         "clip": OBS_CLIP,
                         "formula": "clip((obs - mean) / sqrt(var + epsilon), -clip, clip)"}
    else:
        inside = inside.replace("observation normalisation and clipping, ", "")
        normalization = {"enabled": False, "note": "the policy takes the raw observation "
                                                   f"({spec.export.raw_obs_note})"}
    network = {"layers": spec.sizes, "activation": spec.activation, "head": spec.meaning,
               "hidden": spec.sizes[1:-1]}
    if spec.head == "tanh":
        network["action_scale"] = _floats(spec.action_scale)
        network["action_bias"] = _floats(spec.action_bias)
    return {
        "format_version": METADATA_FORMAT,
        "env_id": cfg["env_id"],
        "env_kwargs": cfg.get("env_kwargs") or {},
        "observation_space": {"type": "Box", "shape": list(obs_space.shape),
                              "low": _floats(obs_space.low), "high": _floats(obs_space.high)},
        "action_space": action_space,
        "contract": {"input": {"name": "obs", "dtype": "float32", "shape": ["batch", obs_dim]},
                     "output": output, "pte_max_batch": PTE_MAX_BATCH, "inside": inside},
        "normalization": normalization,
        "algorithm": spec.algorithm,
        "optimizer": {k: cfg.get(k) for k in ("optimizer", "lr", "alpha", "momentum", "eps")},
        "network": network,
        "training": {"run": str(run.path), "checkpoint_step": run.checkpoint_step,
                     "seed": cfg.get("seed"), "total_steps": cfg.get("total_steps"),
                     "final_eval_seed": None if cfg.get("seed") is None
                     else int(cfg["seed"]) + EVAL_SEED_OFFSET,
                     **{k: summary.get(k) for k in ("steps", "stopped", "wall_seconds",
                                                    "steps_per_second", "peak_rss_bytes",
                                                    "budget_bytes", "profile", "threads",
                                                    "hard_cap_mode", "init_from",
                                                    "final_eval_return")}},
        "versions": _versions(any(a["format"] == "pte" for a in artifacts.values())),
        "verification": {"reference": "numpy forward of the checkpoint's arrays "
                                      "(edgeag.export.spec.PolicySpec)",
                         "observations": recorded, "tolerances": {
            f"{kind}/{precision}": tol for (kind, precision), tol in TOLERANCES.items()}},
        "artifacts": artifacts,
        "edgeag": __version__,
    }


def _versions(pte: bool) -> dict:
    """The releases the export ran with: Python, edgeag, the ONNX tools, gymnasium and
    numpy, and, when it wrote a ``.pte``, torch, executorch and torchao."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    packages = ["edgeag", "onnx", "onnxruntime", "gymnasium", "numpy"]
    if pte:
        packages[1:1] = ["torch"]
        packages += ["executorch", "torchao"]
    for package in packages:
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
    """One line for the log: what verification found (``verified`` false: why not). A
    format verified only at batch 1 (C) has no ``batched`` figures."""
    if not figures.get("verified", True):
        return f"NOT verified: {figures['reason']}"
    passes = [figures[mode] for mode in ("batch_1", "batched") if mode in figures]
    if discrete:
        return (f"verified: same action on {min(p['agreement'] for p in passes):.2%} of "
                f"{figures['observations']} observations ({figures['runtime']})")
    worst = max(p["max_error_fraction_of_range"] for p in passes)
    return (f"verified: max error {worst:.2g} of the action range on "
            f"{figures['observations']} observations ({figures['runtime']})")


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
