#!/usr/bin/env python
"""Where a second BLAS thread starts to pay, at 1 and at N threads, interleaved, medians.

1. One hidden layer's three training matmuls (``x @ W.T``, ``g.T @ x``, ``g @ W``,
   float32) for hidden width W and batch B: B x W x W multiply-adds each.
2. What decides: one whole PPO minibatch update on the numpy engine (actor and critic
   W-W, batch 256, stateless AlphaGrad), as `edgeag train` runs it, with its many small
   elementwise operations between the matmuls.

The smallest work at which N threads are at least ``--gain`` faster in (2) is what
`edgeag.engine.threads.THREADS_CROSSOVER_MACS` stands for; below it a run uses one
thread whatever its profile allows.

Optionally with a busy neighbour (``--busy``): one process spinning on another core,
as on a robot whose other cores run the rest of its software.

    python scripts/bench_threads.py [--busy] [--reps 9] [--json results/bench_threads.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from edgeag.engine import set_blas_threads

SIZES = [(64, 64), (256, 64), (64, 256), (256, 256), (64, 512), (256, 512), (1024, 256),
         (256, 1024), (1024, 1024), (256, 2048), (1024, 2048)]
"""(batch, width) pairs, from a small policy's minibatch to a large one's."""
UPDATE_WIDTHS = (64, 128, 256, 362, 512, 1024)
"""Hidden widths of the whole-update measurement (362: 2^25 multiply-adds at batch 256)."""


def layer_step(batch: int, width: int):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, width), dtype=np.float32)
    w = rng.standard_normal((width, width), dtype=np.float32)
    g = rng.standard_normal((batch, width), dtype=np.float32)
    y, gw, gx = np.empty_like(x), np.empty_like(w), np.empty_like(x)

    def run():
        np.matmul(x, w.T, out=y)
        np.matmul(g.T, x, out=gw)
        np.matmul(g, w, out=gx)
    return run


def ppo_update(width: int, batch: int = 256):
    """One PPO minibatch update of actor and critic ``width``-``width`` (CartPole sizes)."""
    from edgeag.algos.ppo.algorithm import Minibatch, sample
    from edgeag.algos.ppo.config import PPOConfig
    from edgeag.algos.ppo.numpy_engine import NumpyActorCritic

    cfg = PPOConfig(env_id="CartPole-v1", optimizer="alphagrad", lr=1e-6,
                    hidden=(width, width), batch_size=batch)
    policy = NumpyActorCritic(cfg, 4, 2, True)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((batch, 4), dtype=np.float32)
    out, value = policy.forward(obs)
    actions, logp = sample(out, None, rng)
    mb = Minibatch(obs, actions, logp.astype(np.float32), rng.standard_normal(batch, np.float32),
                   value + 1, value)
    return lambda: policy.update(mb, record=False)


def compare(step, threads: int, reps: int) -> tuple[float, float]:
    times: dict = {}
    for n in (1, threads, 1, threads):  # interleaved
        set_blas_threads(n)
        times.setdefault(n, []).append(median_seconds(step, reps))
    return statistics.median(times[1]), statistics.median(times[threads])


def median_seconds(fn, reps: int) -> float:
    fn()
    inner = 1
    while True:  # at least ~20 ms per sample
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        if time.perf_counter() - t0 > 0.02:
            break
        inner *= 2
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--gain", type=float, default=1.1,
                    help="how much faster N threads must be to count (default 1.1)")
    ap.add_argument("--busy", action="store_true", help="spin a process on another core")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    rows, updates = [], []
    try:
        for batch, width in SIZES:
            one, many = compare(layer_step(batch, width), args.threads, args.reps)
            rows.append({"batch": batch, "width": width, "macs": batch * width * width,
                         "one_thread_us": one * 1e6, "n_threads_us": many * 1e6,
                         "speedup": one / many})
        for width in UPDATE_WIDTHS:
            one, many = compare(ppo_update(width), args.threads, args.reps)
            updates.append({"batch": 256, "width": width, "macs": 256 * width * width,
                            "one_thread_us": one * 1e6, "n_threads_us": many * 1e6,
                            "speedup": one / many})
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    print(f"one W x W layer, forward + both backward matmuls, float32, 1 against "
          f"{args.threads} BLAS threads{' (another core busy)' if args.busy else ''}")
    print(f"{'batch':>6s} {'W':>6s} {'MACs':>14s} {'1 thread us':>12s} "
          f"{args.threads} threads us  speedup")
    for r in rows:
        print(f"{r['batch']:6d} {r['width']:6d} {r['macs']:14,d} {r['one_thread_us']:12.1f} "
              f"{r['n_threads_us']:12.1f}  {r['speedup']:6.2f}x")
    print(f"PPO minibatch update (actor and critic W-W, batch 256), 1 against "
          f"{args.threads} BLAS threads")
    for r in updates:
        print(f"{r['batch']:6d} {r['width']:6d} {r['macs']:14,d} {r['one_thread_us']:12.1f} "
              f"{r['n_threads_us']:12.1f}  {r['speedup']:6.2f}x")
    faster = [r["macs"] for r in updates if r["speedup"] >= args.gain]
    crossover = min(faster) if faster else None
    print(f"smallest update work with a speedup of {args.gain:g}x or more: "
          f"{'none' if crossover is None else f'{crossover:,d} multiply-adds'}")
    if args.json:
        from edgeag.io import write_json
        write_json(args.json, {"threads": args.threads, "busy": args.busy, "gain": args.gain,
                               "matmuls": rows, "updates": updates,
                               "crossover_macs": crossover})
    return 0


if __name__ == "__main__":
    sys.exit(main())
