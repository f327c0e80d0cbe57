"""The native runner: ``native/pte_runner``, a C++ program that runs a ``.pte`` on
ExecuTorch's C++ runtime through the ``Module`` API, the one an Android app calls
through the AAR's JNI, with no Python and no torch in its process.

It is built with CMake against the C++ SDK inside the installed ``executorch`` wheel
(``lib/`` with the runtime, kernels and XNNPACK libraries, ``include/``, and the
``find_package(executorch)`` config): ``make native``, which runs ``python -m
edgeag.export.native``, into ``native/build/`` (or ``$EDGEAG_NATIVE_BUILD``). The SDK is
the installed wheel's, or ``$EDGEAG_EXECUTORCH_SDK``. Its RUNPATH names the wheel's
``lib/``, so it runs without ``LD_LIBRARY_PATH``.

Where it is built, ``edgeag export --format pte`` also verifies each ``.pte`` through it
(`edgeag.export.verify.verify_native`), and ``edgeag run policy.pte --native`` takes
its actions from it (`run_native`). The runner's two modes (its source's header):
a ``.npy`` of observations in, a ``.npy`` of actions out (`run_batch`), or one
observation per line on stdin and one action per line on stdout (`NativePolicy`);
each ends with one JSON line of figures: per-call latency, load time and the runner's
own peak RSS.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeag.errors import EdgeagError

RUNNER = "pte_runner"
SOURCE = Path(__file__).resolve().parents[2] / "native" / RUNNER
"""The CMake project (``CMakeLists.txt`` and ``pte_runner.cpp``), in a clone of edgeag."""
BUILD_ENV = "EDGEAG_NATIVE_BUILD"
"""Where the runner is built and looked for, instead of ``native/build/``."""
SDK_ENV = "EDGEAG_EXECUTORCH_SDK"
"""An ExecuTorch C++ SDK to build against instead of the installed wheel's."""
MIN_CMAKE = (3, 28)
"""The wheel's package config defines its imported targets only from CMake 3.28 on."""
NOT_BUILT = "not built: make native"
"""What policy.json records for the native runner where it is not built."""
SDK_CONFIG = Path("lib") / "cmake" / "executorch" / "executorch-config.cmake"


def build_dir() -> Path:
    return Path(os.environ.get(BUILD_ENV) or SOURCE.parent / "build")


def runner_path(where: str | os.PathLike | None = None) -> Path | None:
    """The built runner in ``where`` (default `build_dir`), or None."""
    path = Path(where or build_dir()) / RUNNER
    return path if path.is_file() and os.access(path, os.X_OK) else None


def require_runner() -> Path:
    path = runner_path()
    if path is None:
        raise EdgeagError(f"the native runner is not built ({build_dir() / RUNNER}): run make "
                          "native (CMake >= 3.28 and a C++ compiler; docs/running.md)")
    return path


# --- building --------------------------------------------------------------------------

def find_sdk(sdk: str | os.PathLike | None = None) -> Path:
    """The ExecuTorch C++ SDK: ``sdk``, else ``$EDGEAG_EXECUTORCH_SDK``, else the
    installed ``executorch`` package's directory (found without importing it)."""
    where = sdk or os.environ.get(SDK_ENV)
    if not where:
        try:
            spec = importlib.util.find_spec("executorch")
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise EdgeagError("the native runner is built against the C++ SDK in the executorch "
                              "wheel, which is not installed here: pip install 'edgeag[export]'")
        where = list(spec.submodule_search_locations)[0]
    if not (Path(where) / SDK_CONFIG).is_file():
        raise EdgeagError(f"no ExecuTorch C++ SDK at {where}: it has no {SDK_CONFIG} (the "
                          f"executorch wheel ships one; {SDK_ENV} names another)")
    return Path(where)


def find_cmake() -> str:
    """A ``cmake`` >= 3.28: the one installed beside this Python (``pip install
    cmake``), else the one on PATH."""
    seen = []
    for candidate in (Path(sys.executable).parent / "cmake", shutil.which("cmake")):
        if candidate is None or not Path(candidate).is_file():
            continue
        version = _cmake_version(str(candidate))
        if version is not None and version >= MIN_CMAKE:
            return str(candidate)
        seen.append(f"{'.'.join(map(str, version)) if version else 'unknown'} at {candidate}")
    found = f"found {', '.join(seen)}" if seen else "none found"
    raise EdgeagError(f"the native runner needs CMake >= {'.'.join(map(str, MIN_CMAKE))} "
                      f"({found}): pip install cmake")


def _cmake_version(cmake: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([cmake, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_compiler() -> str:
    """``$CXX``, else ``c++``, ``g++`` or ``clang++`` on PATH."""
    named = os.environ.get("CXX")
    for name in [named] if named else ["c++", "g++", "clang++"]:
        path = shutil.which(name)
        if path:
            return path
    if named:
        raise EdgeagError(f"no C++ compiler: CXX={named} is not an executable")
    raise EdgeagError("the native runner needs a C++ compiler (c++, g++ or clang++ on PATH, or "
                      "CXX): apt-get install g++")


def toolchain(sdk: str | os.PathLike | None = None) -> tuple[str, str, Path]:
    """(cmake, C++ compiler, SDK), or EdgeagError naming the first missing of SDK,
    compiler and CMake."""
    sdk = find_sdk(sdk)
    compiler = find_compiler()
    return find_cmake(), compiler, sdk


def build(where: str | os.PathLike | None = None, sdk: str | os.PathLike | None = None,
          log=print) -> Path:
    """Configure and compile the runner into ``where`` (default `build_dir`); returns its
    path. CMake's output goes to ``build.log`` there; a failure is an EdgeagError with
    CMake's or the compiler's first error."""
    cmake, cxx, sdk = toolchain(sdk)
    if not (SOURCE / "CMakeLists.txt").is_file():
        raise EdgeagError(f"the native runner's source is not here ({SOURCE}): it is in a clone "
                          "of edgeag's repository, under native/")
    where = Path(where or build_dir())
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeagError(f"cannot create the build directory {where}: "
                          f"{e.strerror or type(e).__name__}") from None
    start = time.monotonic()
    steps = {
        "configure": [cmake, "-S", str(SOURCE), "-B", str(where), "-DCMAKE_BUILD_TYPE=Release",
                      f"-DCMAKE_CXX_COMPILER={cxx}", f"-DCMAKE_PREFIX_PATH={sdk}",
                      f"-Dexecutorch_DIR={sdk / SDK_CONFIG.parent}"],
        "compile": [cmake, "--build", str(where), "--parallel", str(os.cpu_count() or 1)],
    }
    with open(where / "build.log", "w") as record:
        for step, argv in steps.items():
            record.write(f"$ {' '.join(argv)}\n")
            proc = subprocess.run(argv, capture_output=True, text=True, errors="replace")
            record.write(proc.stdout + proc.stderr)
            record.flush()
            if proc.returncode != 0:
                raise EdgeagError(f"cannot build the native runner: {step} failed: "
                                  f"{_first_error(proc.stdout + proc.stderr)} (the whole output: "
                                  f"{where / 'build.log'})")
    path = where / RUNNER
    log(f"built {path} against the ExecuTorch SDK in {sdk} ({time.monotonic() - start:.1f} s)")
    return path


def _first_error(output: str) -> str:
    """CMake's first ``CMake Error`` with its message, or the compiler's first
    ``error:`` line, as one line."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("CMake Error"):
            message = []
            for more in lines[i + 1:]:
                if more and not more.startswith(" "):
                    break
                message.append(more.strip())
            return " ".join(" ".join(message).split())[:300] or line
    for line in lines:
        if "error:" in line or "Error " in line:
            return line.strip()[:300]
    return next((line.strip() for line in reversed(lines) if line.strip()), "no output")[:300]


# --- running ---------------------------------------------------------------------------

def _failure(stderr: str, returncode: int, runner: Path) -> EdgeagError:
    """The runner's one-line ``error: ...``, or why it could not start."""
    text = stderr.strip()
    if text.startswith("error: ") and "\n" not in text:
        return EdgeagError(text[len("error: "):])
    first = text.splitlines()[0] if text else f"exit status {returncode}"
    return EdgeagError(f"the native runner {runner} failed ({first[:200]}): rebuild it with "
                       "make native")


def run_batch(path: str | os.PathLike, obs: np.ndarray, batch: int = 1, threads: int = 1,
              runner: Path | None = None) -> tuple[np.ndarray, dict]:
    """The actions of the ``.pte`` at ``path`` for float32 observations ``obs``, run in
    calls of ``batch`` rows, and the runner's figures (its JSON line)."""
    runner = runner or require_runner()
    with tempfile.TemporaryDirectory(prefix="edgeag-native-") as tmp:
        obs_file, out_file = Path(tmp) / "obs.npy", Path(tmp) / "actions.npy"
        np.save(obs_file, np.ascontiguousarray(obs, np.float32))
        try:
            proc = subprocess.run([str(runner), str(path), "--obs", str(obs_file), "--out",
                                   str(out_file), "--batch", str(batch), "--threads",
                                   str(threads)], capture_output=True, text=True,
                                  errors="replace")
        except OSError as e:
            raise _failure(str(e), -1, runner) from None
        if proc.returncode != 0:
            raise _failure(proc.stderr, proc.returncode, runner)
        return np.load(out_file), json.loads(proc.stdout.strip().splitlines()[-1])


class NativePolicy:
    """A ``.pte`` on the native runner, one observation per line through its
    ``--stdio`` mode: ``policy.act(obs)`` gives the action for ``env.step`` (as
    `edgeag.export.runner.PtePolicy.act`); `close` ends the runner and returns its
    figures."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, runner: Path | None = None):
        self.runner = runner or require_runner()
        try:
            self._proc = subprocess.Popen(
                [str(self.runner), str(path), "--stdio", "--threads", str(threads)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, errors="replace", bufsize=1)
        except OSError as e:
            raise _failure(str(e), -1, self.runner) from None
        header = self._proc.stdout.readline()
        if not header:
            raise self._died()
        info = json.loads(header)
        self.obs_dim = int(info["obs_dim"])
        self.discrete = info["action_dtype"] == "int64"
        self.runtime = info["runtime"]

    def act(self, obs):
        values = np.asarray(obs, np.float32).ravel()
        try:
            self._proc.stdin.write(" ".join(repr(float(v)) for v in values) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        line = self._proc.stdout.readline()
        if not line:
            raise self._died()
        return int(line) if self.discrete else np.array(line.split(), np.float32)

    def close(self) -> dict:
        """Ends the runner's input; returns its figures (per-action latency, peak RSS)."""
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        lines = self._proc.stdout.read().strip().splitlines()
        stderr = self._proc.stderr.read()
        if self._proc.wait() != 0 or not lines:
            raise _failure(stderr, self._proc.returncode, self.runner)
        return json.loads(lines[-1])

    def kill(self) -> None:
        """Ends the runner at once (its figures are lost)."""
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _died(self) -> EdgeagError:
        self.kill()
        return _failure(self._proc.stderr.read(), self._proc.returncode, self.runner)

    __del__ = kill


def run_native(policy: str | os.PathLike, env_id: str, episodes: int, seed: int = 0,
               env_kwargs: dict | None = None, threads: int = 1) -> dict:
    """``edgeag run POLICY --native``: `edgeag.export.runner.run_episodes` with the actions
    from `NativePolicy`; latency and peak RSS are the runner's own, and the round trip
    through the pipe and this process's peak RSS are reported beside them."""
    from edgeag.export.runner import check_policy_path, memory_status, run_episodes

    path = check_policy_path(policy)
    if path.suffix != ".pte":
        raise EdgeagError(f"--native runs .pte files on ExecuTorch's C++ runtime, not "
                          f"{path.suffix} (run {path.name} without --native)")
    native = NativePolicy(path, threads)
    try:
        result = run_episodes(native, env_id, episodes, seed, env_kwargs)
    except BaseException:
        native.kill()
        raise
    figures = native.close()
    python = memory_status()
    return {**result, "runtime": figures["runtime"],
            "round_trip_median_latency_us": result["median_latency_us"],
            "round_trip_p90_latency_us": result["p90_latency_us"],
            "median_latency_us": figures["median_latency_us"],
            "p90_latency_us": figures["p90_latency_us"],
            "peak_rss_bytes": figures["peak_rss_bytes"],
            "rss_anon_bytes": figures.get("rss_anon_bytes"),
            "rss_file_bytes": figures.get("rss_file_bytes"),
            "python_peak_rss_bytes": python.get("VmHWM"), "native": figures}


# --- make native -----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeag.export.native",
                                     description="Build the native ExecuTorch runner "
                                     "(make native).")
    parser.add_argument("--build-dir", help=f"where to build (default ${BUILD_ENV}, else "
                        "native/build)")
    parser.add_argument("--sdk", help=f"the ExecuTorch C++ SDK (default ${SDK_ENV}, else the "
                        "installed executorch wheel)")
    args = parser.parse_args(argv)
    try:
        build(args.build_dir, args.sdk)
    except EdgeagError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
