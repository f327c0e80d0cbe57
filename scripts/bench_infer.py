#!/usr/bin/env python
"""Inference of an exported policy, side by side in one run: per-action latency at batch 1
and peak RSS of torch eager, onnxruntime (fp32, int8), ExecuTorch XNNPACK through its
Python bindings (fp32, int8), ExecuTorch's C++ runtime in the native runner (fp32, int8)
and the policy as plain C.

Policy: ``--run DIR`` (a run directory of ``edgeag train``); without it, a CartPole-v1
run is trained first (``edgeag train --profile rpi4``, ~35 s). It is exported with
``edgeag export --format onnx,pte,c --quantize int8`` into a temporary directory. Every
system acts on the same 1024 observations, recorded from the env as ``edgeag export
--record-observations`` records them (`edgeag.export.policy.record_observations`).

Systems, 1 thread each (torch.set_num_threads(1) and OMP_NUM_THREADS=1, onnxruntime
intra_op 1 / inter_op 1, ExecuTorch's XNNPACK thread pool 1), each timed per action at
batch 1, from the raw observation to the action for ``env.step``:

- torch eager: the exported module (`edgeag.export.executorch.ExportPolicy`) in eager mode
  inside one ``torch.inference_mode()``, ``module(torch.from_numpy(obs[None]))``;
- onnxruntime and ExecuTorch XNNPACK through Python: the runner's ``policy.act(obs)``
  (`edgeag.export.runner`), what ``edgeag run`` times;
- the native runner on ``policy.pte`` and ``policy.int8.pte`` (``native/pte_runner``,
  `edgeag.export.native.run_batch`): ExecuTorch's C++ ``Module`` API with no Python in
  its process, one observation per call back to back, timed by the runner itself. When
  it is not built it is built first, as ``make native`` does; when that fails, its rows
  are skipped with the reason;
- plain C: ``policy.h`` compiled with the C compiler `edgeag.export.c_source` finds
  (``$CC``, else ``cc`` or ``gcc``) under the export's flags (``-std=c99 ... -O2``) into
  the harness `C_HARNESS`, which loads the recorded observations and times each
  ``edgeag_policy_act`` call itself; skipped, with the reason, without a compiler.

Latency: in one fresh child process, after ``--warmup`` untimed calls per in-process
system, ``--rounds`` rounds time ``--calls`` calls of every system each (the order rotates
every round); a round's figure is its median call. The native runner and the C harness
are measured in their own processes: in its turn in each round's rotation, the child
starts one process per such system on the round's observations, and the round's figure
is the median of that process's own per-call timings (the C harness after ``--warmup``
untimed calls of its own; the runner makes one call when it loads the program and has no
other warm-up). Reported: the median over rounds (min-max), and the ratio to torch eager
as the median over rounds of the two systems' medians in the same round, so slow drifts
of machine load cancel.

Peak RSS: each system alone in its own fresh process, ``--rss-repeats`` times; the
process reports its own VmHWM (/proc/self/status) at its end. The Python runners run
``--episodes`` episodes: torch-free, ``python -m edgeag.cli run policy.onnx``;
torch-based, the same episode loop (`edgeag.export.runner.run_episodes`) with the
checkpoint loaded by torch and the module in eager mode; ExecuTorch, ``edgeag run
policy.pte`` (its Python bindings import torch). The native runner and the C harness
have no env: each acts once on the 1024 recorded observations, one per call.

    python scripts/bench_infer.py [--run runs/<run>] [--json results/bench_infer.json]

Takes ~1 minute with a given run; run it on a quiet machine (latency is wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 2**20
SYSTEMS = {
    "torch eager": None,
    "onnxruntime fp32": "policy.onnx",
    "onnxruntime int8": "policy.int8.onnx",
    "executorch xnnpack fp32": "policy.pte",
    "executorch xnnpack int8": "policy.int8.pte",
}
"""The systems timed inside the latency child, and the file each loads."""
NATIVE = {
    "executorch C++ runner fp32": "policy.pte",
    "executorch C++ runner int8": "policy.int8.pte",
}
C_POLICY = "plain C (policy.h)"
OWN_PROCESS = "*"
"""Marks, in the printed tables, a system measured in its own process."""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

C_HARNESS = r"""#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "policy.h"

#if EDGEAG_DISCRETE
typedef int action_t;
#else
typedef float action_t;
#endif

/* Not static, so each call's stores land before the clock is read again. */
action_t bench_action[EDGEAG_ACTION_DIM];

/* A field of /proc/self/status in bytes, or -1. */
static long status_bytes(const char *field)
{
    char line[256];
    size_t n = strlen(field);
    long value = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            value = strtol(line + n + 1, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return value;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* bench OBS_FILE COUNT START CALLS WARMUP: COUNT float32 observations from OBS_FILE;
   WARMUP untimed calls, then CALLS timed calls on observations START, START + 1, ...
   (wrapping); prints one JSON line: the median per-call time and this process's peak
   RSS (VmHWM) with its anonymous and file-backed RSS at the end. */
int main(int argc, char **argv)
{
    volatile double sink = 0.0;
    struct timespec t0, t1;
    long n, start, calls, warmup, k;
    double *ns, median;
    float *obs;
    FILE *f;
    if (argc != 6)
        return 2;
    n = atol(argv[2]);
    start = atol(argv[3]);
    calls = atol(argv[4]);
    warmup = atol(argv[5]);
    if (n < 1 || start < 0 || calls < 1 || warmup < 0)
        return 2;
    obs = malloc(sizeof(float) * EDGEAG_OBS_DIM * (size_t)n);
    ns = malloc(sizeof(double) * (size_t)calls);
    f = fopen(argv[1], "rb");
    if (!obs || !ns || !f || fread(obs, sizeof(float) * EDGEAG_OBS_DIM, (size_t)n, f) != (size_t)n)
        return 3;
    fclose(f);
    for (k = 0; k < warmup; ++k) {
        edgeag_policy_act(obs + (k % n) * EDGEAG_OBS_DIM, bench_action);
        sink += bench_action[0];
    }
    for (k = 0; k < calls; ++k) {
        const float *o = obs + ((start + k) % n) * EDGEAG_OBS_DIM;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        edgeag_policy_act(o, bench_action);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        sink += bench_action[0];
        ns[k] = 1e9 * (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec);
    }
    qsort(ns, (size_t)calls, sizeof(double), by_value);
    median = calls % 2 ? ns[calls / 2] : 0.5 * (ns[calls / 2 - 1] + ns[calls / 2]);
    printf("{\"calls\": %ld, \"median_latency_us\": %.4f, \"peak_rss_bytes\": %ld, "
           "\"rss_anon_bytes\": %ld, \"rss_file_bytes\": %ld}\n", calls, median / 1e3,
           status_bytes("VmHWM"), status_bytes("RssAnon"), status_bytes("RssFile"));
    free(ns);
    free(obs);
    return 0;
}
"""
"""The plain C policy's timing harness: ``policy.h`` included as a board includes it."""


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


def own_process(system: dict, obs, start: int, calls: int, warmup: int) -> dict:
    """One process of the native runner or the C harness (``system``, as `main` describes
    it) acting on ``calls`` of the observations ``obs`` from ``start`` on (wrapping), one
    per call: its own figures (``median_latency_us``, ``peak_rss_bytes``, ...)."""
    import numpy as np

    if system["kind"] == "native":
        from edgeag.export.native import run_batch

        rows = obs[(start + np.arange(calls)) % len(obs)]
        return run_batch(system["path"], rows, batch=1, threads=1, runner=Path(system["runner"]))[1]
    out = spawn([system["exe"], system["obs"], str(len(obs)), str(start), str(calls), str(warmup)])
    return {"runtime": system["runtime"], **json.loads(out.strip().splitlines()[-1])}


def child_latency(run_dir: str, export_dir: str, obs_file: str, external: dict, rounds: int,
                  calls: int, warmup: int) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from edgeag.export.runner import load_policy

    obs = np.load(obs_file)
    systems = {name: TorchPolicy(run_dir) if file is None
               else load_policy(os.path.join(export_dir, file), threads=1)
               for name, file in SYSTEMS.items()}
    runtimes = {name: getattr(p, "runtime", f"torch {torch.__version__}")
                for name, p in systems.items()}
    timer = time.perf_counter_ns
    names = list(systems) + list(external)
    per_round = {name: [] for name in names}
    with torch.inference_mode():
        for policy in systems.values():
            for i in range(warmup):
                policy.act(obs[i % len(obs)])
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                if name in external:
                    figures = own_process(external[name], obs, r * calls % len(obs), calls,
                                          warmup)
                    runtimes[name] = figures["runtime"]
                    per_round[name].append(figures["median_latency_us"])
                    continue
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


def record(run_dir: str, where: str) -> tuple:
    """The export's 1024 verification observations of the run's env, saved as
    ``obs.npy`` and as raw float32 ``obs.bin`` (for the C harness) in ``where``."""
    import numpy as np

    from edgeag.export.policy import load_run, record_observations

    trained = load_run(run_dir)
    obs, _ = record_observations(trained.spec, trained.config["env_id"],
                                 env_kwargs=trained.config.get("env_kwargs"))
    obs = np.ascontiguousarray(obs, np.float32)
    np.save(os.path.join(where, "obs.npy"), obs)
    Path(where, "obs.bin").write_bytes(obs.tobytes())
    return obs, os.path.join(where, "obs.npy"), os.path.join(where, "obs.bin")


def native_runner() -> tuple[str | None, str | None]:
    """The native runner's path, built first as ``make native`` builds it when it is not
    there; else None and why not."""
    from edgeag.errors import EdgeagError
    from edgeag.export import native

    path = native.runner_path()
    if path is not None:
        return str(path), None
    print(f"the native runner is not built ({native.build_dir() / native.RUNNER}): building "
          "it as make native does ...", file=sys.stderr, flush=True)
    try:
        return str(native.build(log=lambda line: print(line, file=sys.stderr, flush=True))), None
    except EdgeagError as e:
        return None, str(e)


def c_harness(header: str, obs_bin: str, where: str) -> tuple[dict | None, str | None]:
    """`C_HARNESS` compiled with ``header`` in ``where``, as a system for `own_process`;
    else None and why not."""
    from edgeag.export.c_source import FLAGS, NO_COMPILER, find_compiler

    compiler = find_compiler()
    if compiler is None:
        return None, NO_COMPILER
    os.makedirs(where, exist_ok=True)
    shutil.copyfile(header, os.path.join(where, "policy.h"))
    Path(where, "bench.c").write_text(C_HARNESS)
    exe = os.path.join(where, "bench")
    argv = [*compiler, *FLAGS, "-o", exe, "bench.c", "-lm"]
    try:
        proc = subprocess.run(argv, cwd=where, capture_output=True, text=True, timeout=300)
        version = subprocess.run([compiler[0], "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{argv[0]} could not run: {e}"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        first = next((line for line in lines if "error" in line), lines[0])
        return None, f"{Path(compiler[0]).name} {' '.join(FLAGS)} refused it: {first.strip()[:200]}"
    number = re.search(r"\d+\.\d+(\.\d+)?", version[0]) if version else None
    name = Path(compiler[0]).name + (f" {number.group(0)}" if number else "")
    return {"kind": "c", "exe": exe, "obs": obs_bin, "runtime": f"C99 -O2, {name}",
            "compiler": version[0] if version else name, "flags": " ".join(FLAGS)}, None


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
    ap.add_argument("--obs", help=argparse.SUPPRESS)
    ap.add_argument("--external", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "latency":
        return child_latency(args.run, args.export_dir, args.obs, json.loads(args.external),
                             args.rounds, args.calls, args.warmup)
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
        spawn([sys.executable, "-m", "edgeag.cli", "export", run_dir, "--format", "onnx,pte,c",
               "--quantize", "int8", "--out", export_dir, "--no-progress"])
        with open(os.path.join(export_dir, "policy.json")) as f:
            meta = json.load(f)
        obs, obs_npy, obs_bin = record(run_dir, tmp)

        # The systems measured in their own processes, and those that cannot be, with why.
        external, skipped = {}, {}
        runner, why = native_runner()
        for name, file in NATIVE.items():
            if runner is None:
                skipped[name] = why
            else:
                external[name] = {"kind": "native", "path": os.path.join(export_dir, file),
                                  "runner": runner}
        harness, why = c_harness(os.path.join(export_dir, "policy.h"), obs_bin,
                                 os.path.join(tmp, "c"))
        if harness is None:
            skipped[C_POLICY] = why
        else:
            external[C_POLICY] = harness
        for reason in dict.fromkeys(skipped.values()):
            which = ", ".join(name for name, why in skipped.items() if why == reason)
            print(f"skipping {which}: {reason}", file=sys.stderr, flush=True)

        print(f"latency: {args.rounds} rounds x {args.calls} calls per system ...",
              file=sys.stderr, flush=True)
        latency = json.loads(spawn([sys.executable, os.path.abspath(__file__), "--child", "latency",
                                    "--run", run_dir, "--export-dir", export_dir,
                                    "--obs", obs_npy, "--external", json.dumps(external),
                                    "--rounds", str(args.rounds), "--calls", str(args.calls),
                                    "--warmup", str(args.warmup)]).strip().splitlines()[-1])
        print("peak RSS: fresh processes ...", file=sys.stderr, flush=True)
        rss = {"onnxruntime runner (torch-free)": rss_runs("policy.onnx", run_dir, export_dir,
                                                           args.episodes, args.rss_repeats),
               "torch runner": rss_runs("torch", run_dir, export_dir, args.episodes,
                                        args.rss_repeats),
               "executorch runner": rss_runs("policy.pte", run_dir, export_dir, args.episodes,
                                             args.rss_repeats)}
        for name, system in external.items():
            rss[name] = [own_process(system, obs, 0, len(obs), 0)
                         for _ in range(args.rss_repeats)]

    rounds = latency["rounds_us"]
    base = rounds["torch eager"]
    lat = {name: {**stats(v), "runtime": latency["runtimes"][name],
                  "ratio_to_torch_eager": statistics.median(a / b for a, b in zip(v, base)),
                  "own_process": name in external}
           for name, v in rounds.items()}
    lat |= {name: {"skipped": reason} for name, reason in skipped.items()}
    names = [*SYSTEMS, *NATIVE, C_POLICY]

    def label(name: str) -> str:
        return f"{name} {OWN_PROCESS}" if name in external else name

    width = max(len(label(name)) for name in names) + 1
    rw = max([len(s["runtime"]) for s in lat.values() if "runtime" in s] + [7]) + 1
    print(f"\n{meta['env_id']} policy (hidden {meta['network']['hidden']}), batch 1, 1 thread "
          f"per runtime, the same {len(obs)} recorded observations; per-action latency, median "
          f"over {args.rounds} rounds of {args.calls} calls (min-max of round medians)")
    print(f"{'system':{width}s} {'runtime':{rw}s} {'latency us':>22s} "
          f"{'ratio to torch eager':>21s}")
    for name in names:
        s = lat[name]
        if "skipped" in s:
            print(f"{label(name):{width}s} skipped: {s['skipped']}")
            continue
        cell = f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"
        print(f"{label(name):{width}s} {s['runtime']:{rw}s} {cell:>22s} "
              f"{s['ratio_to_torch_eager']:20.3f}x")
    if external:
        print(f"{OWN_PROCESS} measured in its own process, timed by itself: one process per round, "
              "started in its turn among the in-process systems")

    mem = {}
    for name, rows in rss.items():
        mem[name] = {key: stats([r[key] for r in rows]) for key in
                     ("peak_rss_bytes", "rss_anon_bytes", "rss_file_bytes")}
        if "mean_return" in rows[0]:
            mem[name]["mean_return"] = stats([r["mean_return"] for r in rows])
    torch_peak = mem["torch runner"]["peak_rss_bytes"]["median"]
    for m in mem.values():
        m["ratio_to_torch_runner"] = m["peak_rss_bytes"]["median"] / torch_peak
    mem |= {name: {"skipped": reason} for name, reason in skipped.items()}
    order = ["onnxruntime runner (torch-free)", "torch runner", "executorch runner", *NATIVE,
             C_POLICY]
    width = max(len(label(name)) for name in order) + 1
    print(f"\npeak RSS (VmHWM) of a process, median over {args.rss_repeats} fresh processes "
          f"(min-max); anon/file at the end; runners: {args.episodes} episodes")
    print(f"{'process':{width}s} {'peak RSS MiB':>22s} {'anon/file MiB':>14s} "
          f"{'ratio to torch':>15s} {'mean return':>12s}")
    for name in order:
        m = mem[name]
        if "skipped" in m:
            print(f"{label(name):{width}s} skipped: {m['skipped']}")
            continue
        p = m["peak_rss_bytes"]
        peak = f"{p['median'] / MiB:.1f} ({p['min'] / MiB:.1f}-{p['max'] / MiB:.1f})"
        split = (f"{m['rss_anon_bytes']['median'] / MiB:.0f}/"
                 f"{m['rss_file_bytes']['median'] / MiB:.0f}")
        ret = f"{m['mean_return']['median']:.1f}" if "mean_return" in m else "-"
        print(f"{label(name):{width}s} {peak:>22s} {split:>14s} "
              f"{m['ratio_to_torch_runner']:14.3f}x {ret:>12s}")
    if external:
        print(f"{OWN_PROCESS} no env: one pass over the {len(obs)} recorded observations, one "
              "per call")
    if args.json:
        from edgeag.io import write_json

        write_json(args.json, {
            "env_id": meta["env_id"], "threads": 1, "observations": len(obs),
            "rounds": args.rounds, "calls": args.calls, "warmup": args.warmup,
            "episodes": args.episodes, "rss_repeats": args.rss_repeats,
            "versions": meta["versions"], "latency_us": lat, "latency_rounds_us": rounds,
            "memory": mem, "rss_runs": rss, "skipped": skipped,
            "c_harness": {key: harness[key] for key in ("compiler", "flags")} if harness else None})


if __name__ == "__main__":
    main()
