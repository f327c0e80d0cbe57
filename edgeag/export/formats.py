"""The export formats, registered once: what ``--format`` accepts, what each writes, what
builds, quantizes and runs it, and what it needs installed.

A format's code lives in its own module (`edgeag.export.onnx`,
`edgeag.export.executorch`): a builder ``(spec, path, ctx) -> dict`` for the fp32 file,
optionally a quantizer ``(spec, path, ctx) -> dict`` for the int8 one, and, for a file
no Python runtime loads (`edgeag.export.c_source`), its own verification. ``ctx`` is an
`ExportContext`: the staging directory (where formats converted from another find it)
and the calibration observations. Adding a format is its module plus one `Format` here.
Importing this module imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FORMATS", "QUANTIZE", "ExportContext", "Format", "artifact_formats",
           "artifact_names", "runtime_suffixes"]

QUANTIZE = ("int8",)
"""What ``--quantize`` accepts."""


@dataclass(frozen=True)
class Format:
    """One export format."""

    name: str
    suffix: str
    """The file suffix: ``policy<suffix>``, and ``policy.int8<suffix>`` when quantized."""
    help: str
    build: str
    """``"module:function"`` writing the fp32 file: ``(spec, path, ctx) -> dict`` of facts
    for ``policy.json``."""
    quantize: str | None = None
    """``"module:function"`` writing the int8 file, if the format has one."""
    runtime: str = ""
    """The runtime that loads the file (`edgeag.export.runner.RUNTIMES`)."""
    packages: tuple[str, ...] = ()
    """Modules needed to build and verify it (``torch`` counted without importing it)."""
    install: str = ""
    """What installs them."""
    converted_from: str | None = None
    """Another format whose fp32 file this one is made from (also written)."""
    verify: str | None = None
    """``"module:function"`` verifying a file that no Python runtime loads, in place of
    `edgeag.export.verify.verify` and with its arguments; returns the figures."""

    def artifacts(self, quantize: str | None) -> list[str]:
        names = [f"policy{self.suffix}"]
        if quantize and self.quantize:
            names.append(f"policy.{quantize}{self.suffix}")
        return names

    def verifier(self) -> Callable:
        """The format's own verification, else `edgeag.export.verify.verify`."""
        module, _, name = (self.verify or "edgeag.export.verify:verify").partition(":")
        return getattr(importlib.import_module(module), name)

    def builder(self, precision: str) -> Callable:
        where = self.build if precision == "fp32" else self.quantize
        module, _, name = where.partition(":")
        return getattr(importlib.import_module(module), name)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", "ONNX, run by onnxruntime (the Pi); no torch needed",
           build="edgeag.export.onnx:export_onnx", quantize="edgeag.export.onnx:quantize_onnx",
           runtime="onnxruntime", packages=("onnx", "onnxruntime"),
           install="pip install 'edgeag[onnx]'"),
    Format("ort", ".ort", "ONNX Runtime's own format (mobile onnxruntime), converted from "
           "the .onnx", build="edgeag.export.onnx:convert_ort", runtime="onnxruntime",
           packages=("onnx", "onnxruntime"), install="pip install 'edgeag[onnx]'",
           converted_from="onnx"),
    Format("pte", ".pte", "ExecuTorch program (Android, iOS), XNNPACK backend",
           build="edgeag.export.executorch:export_pte",
           quantize="edgeag.export.executorch:quantize_pte", runtime="executorch",
           packages=("torch", "executorch"), install="pip install 'edgeag[export]'"),
    Format("c", ".h", "plain C99 header (microcontrollers without either runtime), checked "
           "with a C compiler when one is found", build="edgeag.export.c_source:export_c",
           verify="edgeag.export.c_source:verify_c"),
)}
"""Every format ``--format`` and a device profile's ``export_formats`` accept."""


@dataclass
class ExportContext:
    """What a builder may need besides the spec and its output path."""

    staging: Path
    """Where the export's files are written before they are verified and published."""
    calibration: Callable[[], tuple] = field(default=lambda: (None, {}))
    """() -> (observations, how they were recorded), for int8 calibration (recorded once,
    on first use)."""


def artifact_names(formats: list[str], quantize: str | None) -> list[str]:
    """The files an export with ``formats`` writes, in build order: a format converted
    from another comes after that one's file, which is written too."""
    names: list[str] = []
    for name in formats:
        fmt = FORMATS[name]
        if fmt.converted_from:
            names += [n for n in FORMATS[fmt.converted_from].artifacts(quantize)
                      if n not in names]
        names += [n for n in fmt.artifacts(quantize) if n not in names]
    order = [n for f in FORMATS.values() for n in f.artifacts(quantize)]
    return sorted(names, key=order.index)


def artifact_formats() -> dict[str, tuple[Format, str]]:
    """``{file name: (format, precision)}`` of every file any export can write."""
    out = {}
    for fmt in FORMATS.values():
        for name in fmt.artifacts(QUANTIZE[0]):
            out[name] = (fmt, "fp32" if name == f"policy{fmt.suffix}" else QUANTIZE[0])
    return out


def runtime_suffixes() -> dict[str, str]:
    """``{suffix: runtime}``: which runtime runs which file."""
    return {f.suffix: f.runtime for f in FORMATS.values() if f.runtime}
