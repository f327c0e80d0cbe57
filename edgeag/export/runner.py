"""Run an exported policy on an environment: ``edgeag run POLICY --env ENV``.

``.onnx`` and ``.ort`` files run on onnxruntime with numpy and gymnasium, and this
module never imports torch for them: on a Raspberry Pi it is the whole inference
stack. It is also a single file that runs without edgeag installed::

    pip install onnxruntime numpy gymnasium
    python runner.py policy.onnx --env CartPole-v1 --episodes 10

An env of your own (``module:EnvId``, as ``edgeag train --env`` took it and
policy.json keeps it) is made by importing its module, so the module goes with the
policy: beside this file, on PYTHONPATH, or installed.

``.pte`` files run on the ExecuTorch runtime (``executorch.runtime``, whose Python
bindings import torch).

Per-action latency is the wall time of ``policy.act(obs)``: from the raw observation
to the action handed to ``env.step`` (copy in, runtime call, action out), at batch 1;
peak RSS is the kernel's high-water mark of this process (VmHWM in /proc/self/status).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    from edgeag.errors import EdgeagError
except ImportError:  # copied alone to a device
    class EdgeagError(Exception):
        exit_code = 2

try:
    from edgeag.export.formats import runtime_suffixes
    SUFFIXES = runtime_suffixes()
except ImportError:  # copied alone to a device: the registry's table (tested equal)
    SUFFIXES = {".onnx": "onnxruntime", ".ort": "onnxruntime", ".pte": "executorch"}
INSTALL = {"onnxruntime": "pip install onnxruntime",
           "executorch": "pip install 'edgeag[export]': executorch 1.5.1 with torch 2.13.0"}
"""What installs each runtime (executorch's Python runtime imports torch)."""


class OnnxPolicy:
    """An ``.onnx``/``.ort`` policy on onnxruntime's CPU provider.

    ``policy(obs)`` runs float32 ``[batch, obs_dim]`` observations through
    ``InferenceSession.run`` (the reference path); ``policy.act(obs)`` takes one raw
    observation and returns the action for ``env.step`` through an I/O binding to
    arrays allocated once (the per-action path: about half the call overhead of
    ``run`` at batch 1; tested equal to it)."""

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != ["obs"] or [o.name for o in outputs] != ["action"]:
            raise ValueError(f"inputs {[i.name for i in inputs]}, outputs "
                             f"{[o.name for o in outputs]}: expected obs -> action")
        self.obs_dim = int(inputs[0].shape[-1])
        self.runtime = f"onnxruntime {ort.__version__}"
        self._obs = np.zeros((1, self.obs_dim), np.float32)
        probe = self(self._obs)
        self.discrete = probe.dtype == np.int64
        self._action = np.zeros(probe.shape, probe.dtype)
        self._binding = self.session.io_binding()
        self._binding.bind_cpu_input("obs", self._obs)
        self._binding.bind_output("action", "cpu", 0, probe.dtype, probe.shape,
                                  self._action.ctypes.data)

    def __call__(self, obs):
        return self.session.run(["action"], {"obs": obs})[0]

    def act(self, obs):
        self._obs[0] = obs
        self.session.run_with_iobinding(self._binding)
        return int(self._action[0]) if self.discrete else self._action[0].copy()


class PtePolicy:
    """A ``.pte`` policy on the ExecuTorch runtime (XNNPACK threads set to ``threads``);
    ``policy(obs)`` for a batch, ``policy.act(obs)`` for one raw observation."""

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        quiet_executorch_logs()
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
        from executorch.version import __version__

        with _stderr_kept_back():  # the runtime's C++ logs (cpu probing, thread pool)
            portable_lib._unsafe_reset_threadpool(threads)
            program = Runtime.get().load_program(Path(path))
            self.method = program.load_method("forward")
        self.obs_dim = int(program.metadata("forward").input_tensor_meta(0).sizes()[-1])
        self.runtime = f"executorch {__version__}"
        self._from_numpy = torch.from_numpy
        self._obs_tensor = torch.zeros(1, self.obs_dim)
        self._obs = self._obs_tensor.numpy()  # the same memory
        self.discrete = self(self._obs).dtype.kind == "i"

    def __call__(self, obs):
        return self.method.execute((self._from_numpy(obs),))[0].numpy()

    def act(self, obs):
        self._obs[0] = obs
        out = self.method.execute((self._obs_tensor,))[0]
        return int(out[0]) if self.discrete else out[0].numpy()


def load_policy(path: str | os.PathLike, threads: int = 1):
    """`OnnxPolicy` or `PtePolicy` by file suffix; EdgeagError (exit 2) for a missing,
    unknown or unloadable file."""
    path = check_policy_path(path)
    try:
        return (OnnxPolicy if SUFFIXES[path.suffix] == "onnxruntime" else PtePolicy)(path, threads)
    except ImportError as e:
        raise EdgeagError(f"running {path.suffix} needs {SUFFIXES[path.suffix]}: "
                          f"{e} ({INSTALL[SUFFIXES[path.suffix]]})") from None
    except Exception as e:
        raise EdgeagError(f"cannot load {path}: {type(e).__name__}: "
                          f"{_first_line(e)}") from None


def check_policy_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir() and (path / "config.toml").is_file():
        raise EdgeagError(f"{path} is a run directory, not a policy file: evaluate its "
                          f"checkpoint with edgeag eval {path}, or export it first (edgeag "
                          f"export {path}) and run {path / 'export' / 'policy.onnx'}")
    if path.suffix not in SUFFIXES:
        raise EdgeagError(f"unknown policy file type {path.suffix or path.name!r} "
                          f"(accepted: {', '.join(SUFFIXES)})")
    if not path.is_file():
        raise EdgeagError(f"no policy file at {path}")
    return path


def run_episodes(policy, env_id: str, episodes: int, seed: int = 0,
                 env_kwargs: dict | None = None) -> dict:
    """Returns of ``episodes`` episodes on env seeds ``seed``, ``seed + 1``, ..., with
    every action's latency in nanoseconds."""
    env = make_env(env_id, env_kwargs)
    try:
        shape = env.observation_space.shape
        if shape != (policy.obs_dim,):
            raise EdgeagError(f"the policy takes observations of {policy.obs_dim} values, "
                              f"env {env_id!r} gives shape {shape}")
        returns, latencies = [], []
        bar = _progress(episodes)
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                start = time.perf_counter_ns()
                action = policy.act(obs)
                latencies.append(time.perf_counter_ns() - start)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        env.close()
    mean = sum(returns) / len(returns)
    latencies.sort()
    # plain Python statistics: numpy's percentile imports numpy.ma (+1.3 MiB of peak RSS)
    return {"env": env_id, "episodes": episodes, "seed": seed, "returns": returns,
            "mean_return": mean,
            "std_return": (sum((r - mean) ** 2 for r in returns) / len(returns)) ** 0.5,
            "actions": len(latencies),
            "median_latency_us": _quantile(latencies, 0.5) / 1e3,
            "p90_latency_us": _quantile(latencies, 0.9) / 1e3}


def _quantile(ordered: list, q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method)."""
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


ENV_IDS = ("a registered Gymnasium id such as CartPole-v1, or module:EnvId with the module "
           "on PYTHONPATH")


def make_env(env_id: str, env_kwargs: dict | None = None):
    """``gymnasium.make(env_id, **env_kwargs)``; for ``module:EnvId`` (a user's own env) the
    module is
    imported first, which registers ``EnvId``, so it must be importable here too. The
    messages of `edgeag.train.envs.make_env` (without its list of the ids a module
    registers), written out so this file runs alone; a test keeps them alike."""
    import importlib

    import gymnasium as gym

    module, sep, name = env_id.partition(":")
    if sep and (not module or not name or ":" in name):
        raise EdgeagError(f"invalid env {env_id!r}: expected {ENV_IDS}")
    if sep:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and (module == e.name or module.startswith(e.name + ".")):
                raise EdgeagError(f"unknown env {env_id!r}: no module {e.name!r} on PYTHONPATH "
                                  f"(accepted: {ENV_IDS})") from None
            raise EdgeagError(f"env {env_id!r} needs a package that is not installed: module "
                              f"{module!r} imports {e.name!r}") from None
    try:
        return gym.make(env_id, **(env_kwargs or {}))
    except gym.error.Error as e:
        raise EdgeagError(f"unknown env {env_id!r}: {_first_line(e)} "
                          f"(accepted: {ENV_IDS})") from None
    except (ImportError, gym.error.DependencyNotInstalled) as e:
        raise EdgeagError(f"env {env_id!r} needs a package that is not installed: "
                          f"{_first_line(e)}") from None


def memory_status() -> dict:
    """Bytes of VmHWM (peak RSS), RssAnon and RssFile of this process from
    /proc/self/status, as `edgeag.memory.proc_status` reads them (written out so this
    file runs alone); empty where /proc is missing."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def quiet_executorch_logs() -> None:
    """Importing ExecuTorch's Python side imports torchao, which logs warnings about
    GPU kernels it cannot load on a CPU machine; they are noise for a user."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _stderr_kept_back():
    """Send file descriptor 2 to a temporary file for the block, and show what was
    written there only if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# --- the command ----------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", help="policy file: .onnx or .ort (onnxruntime), .pte (ExecuTorch)")
    p.add_argument("--env", help="Gymnasium env id, or module:EnvId for an env that module "
                   "registers (on PYTHONPATH) (default: env_id in policy.json beside the policy "
                   "file)")
    p.add_argument("--episodes", type=int, default=10, help="episodes to run (default 10)")
    p.add_argument("--seed", type=int, default=0, help="env seed of the first episode; "
                   "episode i uses seed + i (default 0)")
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")


def run(args) -> int:
    if args.episodes < 1:
        raise EdgeagError(f"invalid --episodes {args.episodes}: expected a positive integer")
    if args.threads < 1:
        raise EdgeagError(f"invalid --threads {args.threads}: expected a positive integer")
    env_id = args.env or _env_from_metadata(check_policy_path(args.policy))
    # the env the policy was trained on: its env_kwargs too, unless --env names another
    env_kwargs = {} if args.env else _metadata(args.policy).get("env_kwargs") or {}
    native = getattr(args, "native", False)  # edgeag run --native: edgeag.export.native
    if native:
        from edgeag.export.native import run_native
        result = run_native(args.policy, env_id, args.episodes, args.seed, env_kwargs,
                            args.threads)
    else:
        policy = load_policy(args.policy, args.threads)
        result = run_episodes(policy, env_id, args.episodes, args.seed, env_kwargs)
        status = memory_status()
        result.update(runtime=policy.runtime, peak_rss_bytes=status.get("VmHWM"),
                      rss_anon_bytes=status.get("RssAnon"), rss_file_bytes=status.get("RssFile"))
    result.update(policy=str(args.policy), threads=args.threads)
    print(f"policy: {args.policy} ({result['runtime']}, {args.threads} thread(s))")
    print(f"env: {env_id}{f' {env_kwargs}' if env_kwargs else ''}, {args.episodes} "
          f"episode(s), seeds {args.seed}..{args.seed + args.episodes - 1}")
    print(f"mean return: {result['mean_return']:.1f} +- {result['std_return']:.1f} "
          f"(min {min(result['returns']):.1f}, max {max(result['returns']):.1f})")
    print(f"per-action latency: median {result['median_latency_us']:.1f} us "
          f"(p90 {result['p90_latency_us']:.1f} us) over {result['actions']:,} actions")
    if result["peak_rss_bytes"] is not None:
        print(f"peak RSS: {result['peak_rss_bytes'] / 2**20:.1f} MiB "
              f"({result['peak_rss_bytes']:,} bytes, VmHWM{' of the runner' if native else ''})")
    if native:
        print(f"through the pipe from Python: median {result['round_trip_median_latency_us']:.1f} "
              f"us per action; Python's peak RSS "
              f"{(result['python_peak_rss_bytes'] or 0) / 2**20:.1f} MiB")
    if args.json:
        _write_json(Path(args.json), result)
    return 0


def _metadata(policy) -> dict:
    try:
        data = json.loads((Path(policy).parent / "policy.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _env_from_metadata(policy: Path) -> str:
    meta = policy.parent / "policy.json"
    try:
        return json.loads(meta.read_text())["env_id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgeagError(f"--env is needed: no readable policy.json beside {policy}") from None


def _write_json(path: Path, data: dict) -> None:
    """Through a temporary file and ``os.replace``, so no half-written file is left."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        raise EdgeagError(f"cannot write --json {path}: {e.strerror or e}") from None


def _progress(total: int):
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="episode", desc="episodes", leave=False)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except EdgeagError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
