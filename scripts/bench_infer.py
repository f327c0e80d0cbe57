#!/usr/bin/env python
"""Inference of an exported policy: per-action latency of torch eager, onnxruntime
(fp32, int8) and ExecuTorch XNNPACK (fp32, int8), and peak RSS of the torch-free runner
against a torch-based one, in one run.

Policy: ``--run DIR`` (a run directory of ``edgeag train``); without it, a CartPole-v1
run is trained first (``edgeag train --profile rpi4``, ~35 s). It is exported with
``edgeag export --format onnx,pte --quantize int8`` into a temporary directory.

Latency, in one fresh child process, 1 thread for every runtime (torch.set_num_threads(1)
and OMP_NUM_THREADS=1, onnxruntime intra_op 1 / inter_op 1, ExecuTorch's XNNPACK
thread pool 1): each system's per-action call at batch 1, from the raw observation to
the action for ``env.step``, on 1024 observations recorded from the env:

- torch eager: the exported module (`edgeag.export.executorch.ExportPolicy`) in eager mode
  inside one ``torch.inference_mode()``, ``module(torch.from_numpy(obs[None]))``;
- onnxruntime and ExecuTorch: the runner's ``policy.act(obs)``
  (`edgeag.export.runner`), what ``edgeag run`` times.

After a warm-up, ``--rounds`` rounds time ``--calls`` calls of every system each (the
order rotates every round); a round's figure is its median call. Reported: the median
over rounds (min-max), and the ratio to torch eager as the median over rounds of the
two systems' medians in the same round, so slow drifts of machine load cancel.

Peak RSS: each runner alone in its own fresh process, ``--rss-repeats`` times, running
``--episodes`` episodes; the child reports its own VmHWM (/proc/self/status) at its
end. Torch-free: ``python -m edgeag.cli run policy.onnx``. Torch-based: the same episode
loop (`edgeag.export.runner.run_episodes`) with the checkpoint loaded by torch and the
module in eager mode. ExecuTorch: ``edgeag run policy.pte`` (its Python bindings import
torch), for reference.

    python scripts/bench_infer.py [--run runs/<run>] [--json results/bench_infer.json]

Takes ~1 minute with a given run; run it on a quiet machine (latency is wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 2**20
SYSTEMS = {
    "torch eager": None,
    "onnxruntime fp32": "policy.onnx",
    "onnxruntime int8": "policy.int8.onnx",
    "executorch xnnpack fp32": "policy.pte",
    "executorch xnnpack int8": "policy.int8.pte",
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class TorchPolicy:
    """The exported module in eager mode, with the runner's ``act`` interface (call
    inside ``torch.inference_mode()``)."""

    def __init__(self, run_dir: str):
        import torch

        from edgeag.export.policy import load_run

        trained = load_run(run_dir)
        self.module = trained.export_policy()
        self.obs_dim = trained.observation_space.shape[0]
        self.discrete = trained.discrete
        self._from_numpy = torch.from_numpy

    def act(self, obs):
        import numpy as np

        out = self.module(self._from_numpy(np.asarray(obs, np.float32).reshape(1, -1)))[0]
        return int(out) if self.discrete else out.numpy()


def child_latency(run_dir: str, export_dir: str, rounds: int, calls: int, warmup: int) -> None:
    import torch

    torch.set_num_threads(1)
    from edgeag.export.policy import load_run, record_observations
    from edgeag.export.runner import load_policy

    trained = load_run(run_dir)
    obs, _ = record_observations(trained.spec, trained.config["env_id"])
    systems = {name: TorchPolicy(run_dir) if file is None
               else load_policy(os.path.join(export_dir, file), threads=1)
               for name, file in SYSTEMS.items()}
    runtimes = {name: getattr(p, "runtime", f"torch {torch.__version__}")
                for name, p in systems.items()}
    timer = time.perf_counter_ns
    per_round = {name: [] for name in systems}
    with torch.inference_mode():
        for policy in systems.values():
            for i in range(warmup):
                policy.act(obs[i % len(obs)])
        names = list(systems)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                act, samples = systems[name].act, []
                for i in range(calls):
                    o = obs[(r * calls + i) % len(obs)]
                    start = timer()
                    act(o)
                    samples.append(timer() - start)
                per_round[name].append(statistics.median(samples) / 1e3)
    print(json.dumps({"rounds_us": per_round, "runtimes": runtimes}), flush=True)


def child_torch_runner(run_dir: str, episodes: int) -> None:
    import torch

    torch.set_num_threads(1)
    from edgeag.export.runner import memory_status, run_episodes

    policy = TorchPolicy(run_dir)
    with torch.inference_mode():
        result = run_episodes(policy, _env_id(run_dir), episodes)
    status = memory_status()
    print(json.dumps({"mean_return": result["mean_return"], "peak_rss_bytes": status["VmHWM"],
                      "rss_anon_bytes": status["RssAnon"], "rss_file_bytes": status["RssFile"]}),
          flush=True)


def _env_id(run_dir: str) -> str:
    from edgeag.io import tomllib

    with open(os.path.join(run_dir, "config.toml"), "rb") as f:
        return tomllib.load(f)["ppo"]["env_id"]


def spawn(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit(f"bench_infer: {' '.join(cmd[:4])} ... exited with {proc.returncode}")
    return proc.stdout


def rss_runs(kind: str, run_dir: str, export_dir: str, episodes: int, repeats: int) -> list[dict]:
    rows = []
    for _ in range(repeats):
        if kind == "torch":
            rows.append(json.loads(spawn([sys.executable, os.path.abspath(__file__), "--child",
                                          "torch-runner", "--run", run_dir, "--episodes",
                                          str(episodes)]).strip().splitlines()[-1]))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            spawn([sys.executable, "-m", "edgeag.cli", "run", os.path.join(export_dir, kind),
                   "--episodes", str(episodes), "--threads", "1", "--json", out])
            with open(out) as f:
                rows.append(json.load(f))
    return rows


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run directory of edgeag train (default: train CartPole-v1 "
                                  "first)")
    ap.add_argument("--rounds", type=int, default=40, help="latency rounds (default 40)")
    ap.add_argument("--calls", type=int, default=1000, help="timed calls per system per round "
                    "(default 1000)")
    ap.add_argument("--warmup", type=int, default=2000, help="untimed calls per system first")
    ap.add_argument("--episodes", type=int, default=10, help="episodes per RSS run (default 10)")
    ap.add_argument("--rss-repeats", type=int, default=3, help="fresh processes per runner "
                    "for peak RSS (default 3)")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--export-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "latency":
        return child_latency(args.run, args.export_dir, args.rounds, args.calls, args.warmup)
    if args.child == "torch-runner":
        return child_torch_runner(args.run, args.episodes)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run
        if run_dir is None:
            run_dir = os.path.join(tmp, "run")
            print("training CartPole-v1 (edgeag train --profile rpi4) ...", file=sys.stderr,
                  flush=True)
            spawn([sys.executable, "-m", "edgeag.cli", "train", "--profile", "rpi4", "--out",
                   run_dir, "--no-progress"])
        export_dir = os.path.join(tmp, "export")
        print(f"exporting {run_dir} ...", file=sys.stderr, flush=True)
        spawn([sys.executable, "-m", "edgeag.cli", "export", run_dir, "--format", "onnx,pte",
               "--quantize", "int8", "--out", export_dir, "--no-progress"])
        with open(os.path.join(export_dir, "policy.json")) as f:
            meta = json.load(f)
        print(f"latency: {args.rounds} rounds x {args.calls} calls per system ...",
              file=sys.stderr, flush=True)
        latency = json.loads(spawn([sys.executable, os.path.abspath(__file__), "--child", "latency",
                                    "--run", run_dir, "--export-dir", export_dir,
                                    "--rounds", str(args.rounds), "--calls", str(args.calls),
                                    "--warmup", str(args.warmup)]).strip().splitlines()[-1])
        print("peak RSS: fresh runner processes ...", file=sys.stderr, flush=True)
        rss = {"onnxruntime runner (torch-free)": rss_runs("policy.onnx", run_dir, export_dir,
                                                           args.episodes, args.rss_repeats),
               "torch runner": rss_runs("torch", run_dir, export_dir, args.episodes,
                                        args.rss_repeats),
               "executorch runner": rss_runs("policy.pte", run_dir, export_dir, args.episodes,
                                             args.rss_repeats)}

    rounds = latency["rounds_us"]
    base = rounds["torch eager"]
    lat = {name: {**stats(v), "runtime": latency["runtimes"][name],
                  "ratio_to_torch_eager": statistics.median(a / b for a, b in zip(v, base))}
           for name, v in rounds.items()}
    print(f"\n{meta['env_id']} policy (hidden {meta['network']['hidden']}), batch 1, 1 thread "
          f"per runtime; per-action latency, median over {args.rounds} rounds of "
          f"{args.calls} calls (min-max of round medians)")
    print(f"{'system':26s} {'runtime':24s} {'latency us':>24s} {'ratio to torch eager':>21s}")
    for name, s in lat.items():
        print(f"{name:26s} {s['runtime']:24s} "
              f"{s['median']:10.1f} ({s['min']:.1f}-{s['max']:.1f}) "
              f"{s['ratio_to_torch_eager']:20.3f}x")

    mem = {name: {key: stats([r[key] for r in rows]) for key in
                  ("peak_rss_bytes", "rss_anon_bytes", "rss_file_bytes")}
           | {"mean_return": stats([r["mean_return"] for r in rows])}
           for name, rows in rss.items()}
    torch_peak = mem["torch runner"]["peak_rss_bytes"]["median"]
    print(f"\npeak RSS (VmHWM) of a runner process, {args.episodes} episodes, median over "
          f"{args.rss_repeats} fresh processes (min-max); anon/file at the end")
    print(f"{'runner':34s} {'peak RSS MiB':>22s} {'anon/file MiB':>14s} {'ratio to torch':>15s} "
          f"{'mean return':>12s}")
    for name, m in mem.items():
        p = m["peak_rss_bytes"]
        m["ratio_to_torch_runner"] = p["median"] / torch_peak
        print(f"{name:34s} {p['median'] / MiB:8.1f} ({p['min'] / MiB:.1f}-{p['max'] / MiB:.1f}) "
              f"{m['rss_anon_bytes']['median'] / MiB:6.0f}/"
              f"{m['rss_file_bytes']['median'] / MiB:.0f}"
              f"{m['ratio_to_torch_runner']:15.3f}x {m['mean_return']['median']:12.1f}")
    if args.json:
        from edgeag.io import write_json

        write_json(args.json, {"env_id": meta["env_id"], "threads": 1, "rounds": args.rounds,
                               "calls": args.calls, "warmup": args.warmup,
                               "episodes": args.episodes, "rss_repeats": args.rss_repeats,
                               "versions": meta["versions"], "latency_us": lat,
                               "latency_rounds_us": rounds, "memory": mem, "rss_runs": rss})


if __name__ == "__main__":
    main()
