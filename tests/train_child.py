"""Run `edgeag train` in a fresh Python process and report which heavy modules it loaded."""

import ast
import subprocess
import sys

HEAVY_MODULES = ("torch._dynamo", "onnx", "onnxruntime", "executorch", "matplotlib", "tensorboard",
                 "optuna")
"""Modules a training process must never import (each costs memory inside the budget)."""
NUMPY_ENGINE_FORBIDDEN = ("torch", *HEAVY_MODULES)
"""And a run on the numpy engine imports no torch at all."""


def train_and_list_heavy_imports(args: list[str], forbidden=HEAVY_MODULES) -> tuple[int, list[str]]:
    """``edgeag train ARGS`` in a child process: its exit code and the ``forbidden``
    modules it had loaded when training ended."""
    code = ("import sys; from edgeag.cli import main; "
            f"rc = main(['train', *{args!r}]); "
            f"print(rc, [m for m in {tuple(forbidden)!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rc, bad = out.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(rc), ast.literal_eval(bad)
