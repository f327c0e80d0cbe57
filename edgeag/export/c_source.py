"""Plain C: a `PolicySpec` written as one C99 header, ``policy.h``, for boards with neither
onnxruntime nor ExecuTorch (ESP32, Teensy, Raspberry Pi Pico), the way RLtools exports a
policy as a C header.

The header is the numpy reference (`PolicySpec.outputs`, `PolicySpec.apply_head`) line for
line in float32: the weights as ``static const float`` arrays (``[out][in]`` row-major, as
torch keeps them), the observation normalisation when the policy has one, the layers with
their activation, the head, and one function::

    void edgeag_policy_act(const float *obs, int *action);    /* argmax: PPO, DQN */
    void edgeag_policy_act(const float *obs, float *action);  /* PPO, TD3, SAC */

No allocation (two scratch arrays of the widest layer, on the stack, or static when the
includer defines ``EDGEAG_SCRATCH`` as ``static``), nothing but ``<math.h>`` (``tanhf``;
link with ``-lm``). ``EDGEAG_CONST_ATTRIBUTE``, empty unless the includer defines it,
follows every array's name: a section attribute such as Teensy's ``PROGMEM`` keeps the
constants in flash where a linker script would copy ``.rodata`` to RAM (Teensy 4.x's
``imxrt1062.ld`` does). Every definition is ``static``, so the header compiles without
warnings in any translation unit that includes it.

`verify_c` compiles the header into a generated harness with the C compiler found here
(``$CC``, else ``cc`` or ``gcc``), runs it on the export's verification observations one
at a time as a board calls it, compares with the reference under the fp32 tolerances of
`edgeag.export.verify`, and times calls at batch 1 on this machine. Without a compiler
the header is still written and ``policy.json`` says it is not verified, and why.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgeag.export.spec import OBS_CLIP, PolicySpec
from edgeag.export.verify import TOLERANCES, VerificationFailed, check_actions

FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2")
"""What the header is compiled with when it is verified (and what the docs suggest)."""
NO_COMPILER = "no C compiler (apt install gcc)"
TIMING_SECONDS = 0.1
"""The harness repeats passes over the observations until this much time has passed."""
PER_LINE = 8
"""Numbers per line of an array in the header."""


def export_c(spec: PolicySpec, path: Path, ctx=None) -> dict:
    """Write ``spec`` to ``path`` as a C99 header; returns its API, the bytes its constant
    arrays take in flash and the stack its scratch arrays take."""
    Path(path).write_text(header(spec))
    return {"language": "C99", "api": _signature(spec),
            "flash_bytes": flash_bytes(spec), "stack_bytes": 2 * 4 * _width(spec),
            "compile": f"cc {' '.join(FLAGS)} your_program.c -lm"}


def flash_bytes(spec: PolicySpec) -> int:
    """The bytes of the header's ``static const float`` arrays (all of its constants)."""
    return 4 * sum(a.size for _, a in _arrays(spec))


def header(spec: PolicySpec) -> str:
    """The text of ``policy.h`` for ``spec``."""
    from edgeag import __version__

    sizes, discrete = spec.sizes, spec.discrete
    action_dim = 1 if discrete else sizes[-1]
    act_type = "int" if discrete else "float"
    norm = (f"clip((obs - mean) / std, -{OBS_CLIP:g}, {OBS_CLIP:g}) first, "
            if spec.normalize else "the raw observation, ")
    lines = [
        f"/* policy.h: an edgeag {spec.algorithm} policy; action: {spec.meaning}.",
        f" * Written by edgeag {__version__} (docs/export.md, \"Plain C\"). C99, no allocation,",
        " * nothing but <math.h> (link with -lm).",
        " *",
        " *   float obs[EDGEAG_OBS_DIM];      the observation as the env returns it",
        f" *   {act_type} action[EDGEAG_ACTION_DIM];",
        " *   edgeag_policy_act(obs, action);",
        " *",
        f" * Inside: {norm}layers {' -> '.join(map(str, sizes))} "
        f"({spec.activation} between them),",
        f" * then {_head_text(spec)}.",
        f" * Constants: {flash_bytes(spec)} bytes (define EDGEAG_CONST_ATTRIBUTE before including",
        " * this file to place them, e.g. as PROGMEM on Teensy 4.x, whose linker copies .rodata",
        f" * to RAM); scratch: 2 x {_width(spec)} floats (define EDGEAG_SCRATCH as static to keep",
        " * them off the stack). */",
        "#ifndef EDGEAG_POLICY_H",
        "#define EDGEAG_POLICY_H",
        "",
        "#include <math.h>",
        "",
        f"#define EDGEAG_OBS_DIM {spec.obs_dim}",
        f"#define EDGEAG_ACTION_DIM {action_dim}",
        f"#define EDGEAG_DISCRETE {int(discrete)}",
    ]
    if discrete:
        lines.append(f"#define EDGEAG_NUM_ACTIONS {sizes[-1]}")
    for macro in ("EDGEAG_CONST_ATTRIBUTE", "EDGEAG_SCRATCH"):
        lines += ["", f"#ifndef {macro}", f"#define {macro}", "#endif"]
    lines.append("")
    for name, values in _arrays(spec):
        lines += _array(name, values)
    lines += _functions(spec)
    lines += ["", "#endif /* EDGEAG_POLICY_H */", ""]
    return "\n".join(lines)


def _head_text(spec: PolicySpec) -> str:
    if spec.head == "argmax":
        return "the index of the largest output (the first on ties)"
    if spec.head == "tanh":
        return "tanh(y) * scale + bias, clipped to [low, high]"
    return "the output clipped to [low, high]"


def _signature(spec: PolicySpec) -> str:
    return f"void edgeag_policy_act(const float *obs, {'int' if spec.discrete else 'float'} " \
           "*action)"


def _width(spec: PolicySpec) -> int:
    """The scratch array length: the widest layer output (and the observation, when it
    is normalised into scratch)."""
    return max(spec.sizes[1:] + ([spec.obs_dim] if spec.normalize else []))


def _arrays(spec: PolicySpec) -> list[tuple[str, np.ndarray]]:
    """``(C name, float32 values)`` of every constant the header holds."""
    out = []
    if spec.normalize:
        out += [("edgeag_obs_mean", spec.obs_mean), ("edgeag_obs_std", spec.obs_std)]
    for i, (weight, bias) in enumerate(spec.layers):
        out += [(f"edgeag_layer{i}_weight", weight), (f"edgeag_layer{i}_bias", bias)]
    if spec.head == "tanh":
        out += [("edgeag_action_scale", spec.action_scale),
                ("edgeag_action_bias", spec.action_bias)]
    if not spec.discrete:
        out += [("edgeag_action_low", spec.action_low), ("edgeag_action_high", spec.action_high)]
    return [(name, np.asarray(values, np.float32)) for name, values in out]


def _array(name: str, values: np.ndarray) -> list[str]:
    """A ``static const float`` definition; a matrix keeps one row per output, its
    length written as ``out * in``."""
    rows = values.reshape(values.shape[0], -1) if values.ndim == 2 else values.reshape(1, -1)
    size = " * ".join(map(str, values.shape))
    lines = [f"static const float {name}[{size}] EDGEAG_CONST_ATTRIBUTE = {{"]
    for row in rows:
        numbers = [_literal(v) for v in row]
        for start in range(0, len(numbers), PER_LINE):
            lines.append("    " + ", ".join(numbers[start:start + PER_LINE]) + ",")
    lines[-1] = lines[-1].rstrip(",")
    return lines + ["};", ""]


def _literal(value: np.float32) -> str:
    """The shortest decimal that reads back as exactly this float32, as a C float constant."""
    if np.isnan(value):
        return "NAN"
    if np.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return f"{str(np.float32(value))}f"


def _functions(spec: PolicySpec) -> list[str]:
    sizes, act = spec.sizes, spec.activation
    activation = "tanhf(x[i])" if act == "tanh" else "x[i] > 0.0f ? x[i] : 0.0f"
    lines = [
        "static inline void edgeag_dense(const float *weight, const float *bias, int n_in,",
        "                                int n_out, const float *x, float *y)",
        "{",
        "    int i, j;",
        "    for (j = 0; j < n_out; ++j) {",
        "        const float *row = weight + j * n_in;",
        "        float sum = 0.0f;",
        "        for (i = 0; i < n_in; ++i)",
        "            sum += row[i] * x[i];",
        "        y[j] = sum + bias[j];",
        "    }",
        "}",
        "",
        f"static inline void edgeag_{act}(float *x, int n)",
        "{",
        "    int i;",
        "    for (i = 0; i < n; ++i)",
        f"        x[i] = {activation};",
        "}",
        "",
        f"static inline {_signature(spec)}",
        "{",
        f"    EDGEAG_SCRATCH float a[{_width(spec)}], b[{_width(spec)}];",
        "    int i;",
    ]
    x = "obs"
    if spec.normalize:
        clip = f"{OBS_CLIP:g}.0f" if float(OBS_CLIP).is_integer() else f"{OBS_CLIP}f"
        lines += [
            "    for (i = 0; i < EDGEAG_OBS_DIM; ++i) {",
            "        float v = (obs[i] - edgeag_obs_mean[i]) / edgeag_obs_std[i];",
            f"        a[i] = v < -{clip} ? -{clip} : (v > {clip} ? {clip} : v);",
            "    }",
        ]
        x = "a"
    last = len(spec.layers) - 1
    for i in range(len(spec.layers)):
        y = "b" if x != "b" else "a"
        lines.append(f"    edgeag_dense(edgeag_layer{i}_weight, edgeag_layer{i}_bias, "
                     f"{sizes[i]}, {sizes[i + 1]}, {x}, {y});")
        if i < last:
            lines.append(f"    edgeag_{act}({y}, {sizes[i + 1]});")
        x = y
    if spec.head == "argmax":
        lines += [
            "    *action = 0;",
            f"    for (i = 1; i < {sizes[-1]}; ++i)",
            f"        if ({x}[i] > {x}[*action])",
            "            *action = i;",
        ]
    else:
        value = (f"tanhf({x}[i]) * edgeag_action_scale[i] + edgeag_action_bias[i]"
                 if spec.head == "tanh" else f"{x}[i]")
        lines += [
            "    for (i = 0; i < EDGEAG_ACTION_DIM; ++i) {",
            f"        float v = {value};",
            "        v = v > edgeag_action_low[i] ? v : edgeag_action_low[i];",
            "        action[i] = v < edgeag_action_high[i] ? v : edgeag_action_high[i];",
            "    }",
        ]
    return lines + ["}"]


# --- verification ---------------------------------------------------------------------

HARNESS = r"""#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "policy.h"

#if EDGEAG_DISCRETE
typedef int action_t;
#else
typedef float action_t;
#endif

/* harness OBS_FILE ACTIONS_FILE COUNT SECONDS: the action of each of COUNT float32
   observations, written as int32 or float32; then passes over them until SECONDS
   have passed, printing "calls nanoseconds". */
int main(int argc, char **argv)
{
    static action_t out[EDGEAG_ACTION_DIM];
    volatile double sink = 0.0;
    struct timespec t0, t1;
    long n, k, calls = 0;
    double seconds, elapsed = 0.0;
    float *obs;
    FILE *f;
    if (argc != 5)
        return 2;
    n = atol(argv[3]);
    seconds = atof(argv[4]);
    obs = malloc(sizeof(float) * EDGEAG_OBS_DIM * (size_t)n);
    f = fopen(argv[1], "rb");
    if (!obs || !f || fread(obs, sizeof(float) * EDGEAG_OBS_DIM, (size_t)n, f) != (size_t)n)
        return 3;
    fclose(f);
    f = fopen(argv[2], "wb");
    if (!f)
        return 4;
    for (k = 0; k < n; ++k) {
        edgeag_policy_act(obs + k * EDGEAG_OBS_DIM, out);
        if (fwrite(out, sizeof out, 1, f) != 1)
            return 5;
    }
    if (fclose(f) != 0)
        return 6;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (calls == 0 || elapsed < seconds) {
        for (k = 0; k < n; ++k) {
            edgeag_policy_act(obs + k * EDGEAG_OBS_DIM, out);
            sink += out[0];
        }
        calls += n;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        elapsed = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    }
    printf("%ld %.0f\n", calls, elapsed * 1e9);
    free(obs);
    return 0;
}
"""


def find_compiler() -> list[str] | None:
    """``$CC`` when it is set (split like a shell word list), else ``cc``, else ``gcc``;
    None when none of them is found."""
    given = os.environ.get("CC", "").strip()
    candidates = [shlex.split(given)] if given else [["cc"], ["gcc"]]
    for command in candidates:
        found = shutil.which(command[0])
        if found:
            return [found, *command[1:]]
    return None


def build_harness(header_path: Path, workdir: Path, compiler: list[str]) -> Path:
    """Compile the header at ``header_path`` with a generated ``main`` (`HARNESS`) in
    ``workdir``; returns the executable. RuntimeError with the compiler's first error
    line when it does not compile under `FLAGS`."""
    workdir = Path(workdir)
    shutil.copyfile(header_path, workdir / "policy.h")
    source = workdir / "harness.c"
    source.write_text(HARNESS)
    exe = workdir / "harness"
    proc = subprocess.run([*compiler, *FLAGS, "-o", str(exe), str(source), "-lm"], cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        first = next((ln for ln in lines if "error" in ln), lines[0])
        raise RuntimeError(f"{Path(compiler[0]).name} {' '.join(FLAGS)} refused it: "
                           f"{first.strip()[:200]}")
    return exe


def run_harness(exe: Path, obs: np.ndarray, discrete: bool, action_dim: int,
                seconds: float = TIMING_SECONDS) -> tuple[np.ndarray, dict]:
    """The harness's actions for float32 ``obs`` (int64 ``[n]`` or float32 ``[n, act]``),
    and its timing: calls and nanoseconds per call."""
    workdir = Path(exe).parent
    obs = np.ascontiguousarray(obs, np.float32)
    (workdir / "obs.bin").write_bytes(obs.tobytes())
    proc = subprocess.run([str(exe), "obs.bin", "actions.bin", str(len(obs)), str(seconds)],
                          cwd=workdir, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"the harness exited with {proc.returncode}")
    raw = (workdir / "actions.bin").read_bytes()
    if discrete:
        actions = np.frombuffer(raw, np.int32).astype(np.int64)
    else:
        actions = np.frombuffer(raw, np.float32).reshape(len(obs), action_dim).copy()
    calls, nanoseconds = (float(v) for v in proc.stdout.split())
    return actions, {"calls": int(calls), "per_action_ns": round(nanoseconds / calls, 1)}


def verify_c(path: Path, name: str, precision: str, spec: PolicySpec, obs: np.ndarray,
             expected: np.ndarray, outputs: np.ndarray) -> dict:
    """`edgeag.export.verify.verify` for a header no Python runtime loads: compile it into
    the harness, run it on ``obs`` one observation per call, compare with ``expected``
    under the same tolerances, and time it. Returns the figures (``verified`` false, with
    the reason, when there is no C compiler) or raises `VerificationFailed`."""
    compiler = find_compiler()
    if compiler is None:
        return {"verified": False, "reason": NO_COMPILER, "runtime": f"not verified: {NO_COMPILER}"}
    tolerance = TOLERANCES[("discrete" if spec.discrete else "continuous", precision)]
    with tempfile.TemporaryDirectory(prefix="edgeag-c-") as tmp:
        try:
            exe = build_harness(path, Path(tmp), compiler)
            actions, timing = run_harness(exe, obs, spec.discrete, int(expected.shape[-1])
                                          if expected.ndim == 2 else 1)
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
            raise VerificationFailed(f"{name} failed verification: {e}") from None
    figures = {"verified": True, "runtime": f"C harness, {_version(compiler)}",
               "flags": " ".join(FLAGS), "observations": len(obs), "tolerance": tolerance,
               "batch_1": check_actions(name, "batch_1", actions, expected, outputs, obs,
                                        tolerance, spec)}
    return {**figures, "timing": {**timing, "host": platform.machine(),
                                  "what": "edgeag_policy_act at batch 1, on this machine"}}


def _version(compiler: list[str]) -> str:
    try:
        out = subprocess.run([compiler[0], "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        out = []
    return out[0] if out else Path(compiler[0]).name
