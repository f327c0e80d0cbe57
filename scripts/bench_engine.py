#!/usr/bin/env python
"""The numpy engine against the torch engine, in one process, and the import floors.

1. One PPO minibatch update as `edgeag train` runs it (actor 4-64-64-2 and critic
   4-64-64-1, batch 256, float32, stateless AlphaGrad): the numpy engine (BLAS
   threads 1, then 2) against the torch engine's textbook update (autograd, AlphaGrad
   fused into backward; torch threads 1). Medians and the ratio.
2. The stateless AlphaGrad flat step alone (~9k and ~250k parameters).
3. The actor and critic hidden layers as one batched matmul over ``[2, out, in]`` (what
   the torch fast path does) against two passes, forward and backward.
4. Peak RSS (VmHWM) of a fresh process importing the engine and gymnasium (and setting
   BLAS threads, which imports threadpoolctl), against one
   importing torch; and what ``scipy.linalg.lapack`` (the lean init's import) adds.
5. What initialising one square float32 weight raises peak RSS by, in a fresh process:
   the plain ``np.linalg.qr`` path against `lean_orthogonal_` (scipy already imported).

    python scripts/bench_engine.py [--reps 7] [--json results/bench_engine.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from edgeag.engine import MLP, Layout, set_blas_threads
from edgeag.optim.flat import AlphaGrad

OBS, ACTIONS, HIDDEN, BATCH = 4, 2, (64, 64), 256


def median_us(fn, reps: int, inner: int) -> float:
    """Median over ``reps`` runs of the mean time of ``inner`` calls, in microseconds."""
    fn()
    runs = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        runs.append((time.perf_counter() - start) / inner * 1e6)
    return statistics.median(runs)


def minibatch_updates():
    """``update(minibatch)`` of PPO's two engines as `edgeag train` runs them (CartPole
    sizes, stateless AlphaGrad, the same parameters and minibatch): the numpy engine's
    flat path and the torch engine's textbook ``loss.backward()`` with AlphaGrad fused."""
    from edgeag.algos.ppo.algorithm import Minibatch, sample
    from edgeag.algos.ppo.config import PPOConfig
    from edgeag.algos.ppo.numpy_engine import NumpyActorCritic
    from edgeag.algos.ppo.torch_engine import TorchActorCritic

    cfg = PPOConfig(env_id="CartPole-v1", optimizer="alphagrad", lr=1e-6, hidden=HIDDEN)
    fast = NumpyActorCritic(cfg, OBS, ACTIONS, True)
    ref = TorchActorCritic(cfg, OBS, ACTIONS, True)
    fast.params.load_state_dict({k: v.numpy() for k, v in ref.net.state_dict().items()})
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((BATCH, OBS), dtype=np.float32)
    out, value = fast.forward(obs)
    actions, logp = sample(out, None, rng)
    mb = Minibatch(obs, actions, logp.astype(np.float32), rng.standard_normal(BATCH, np.float32),
                   value + 1, value)
    return (lambda: fast.update(mb, record=False)), (lambda: ref.update(mb, record=False)), \
        fast.layout.size


def step_only(n_params_width: int):
    """The AlphaGrad step alone on the actor-critic layout of hidden width ``w``."""
    actor = MLP((OBS, n_params_width, n_params_width, ACTIONS), prefix="actor")
    critic = MLP((OBS, n_params_width, n_params_width, 1), prefix="critic")
    layout = Layout.from_shapes(actor.shapes() + critic.shapes())
    params = layout.zeros()
    opt = AlphaGrad(params, lr=1e-6)
    source = np.random.default_rng(0).standard_normal(layout.size, dtype=np.float32)
    grads = layout.zeros()

    def step():
        grads.data[:] = source
        opt.step(grads)

    def copy_only():
        grads.data[:] = source

    return step, copy_only, layout.size


def twin_candidates():
    """Forward and backward of both networks' hidden layers: two passes, and one batched
    matmul over stacked ``[2, out, in]`` weights."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, OBS), dtype=np.float32)
    sizes = (OBS, *HIDDEN)
    ws = [rng.standard_normal((2, o, i), dtype=np.float32) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [np.zeros((2, 1, o), np.float32) for o in sizes[1:]]
    gw = [np.empty_like(w) for w in ws]
    gb = [np.empty((2, o), np.float32) for o in sizes[1:]]
    d_top = rng.standard_normal((2, BATCH, HIDDEN[-1]), dtype=np.float32)

    def two_passes():
        for k in range(2):
            acts, h = [x], x
            for w, b in zip(ws, bs):
                h = np.matmul(h, w[k].T)
                h += b[k]
                np.tanh(h, out=h)
                acts.append(h)
            d = d_top[k] * (1 - acts[-1] * acts[-1])
            for i in range(len(ws) - 1, -1, -1):
                np.matmul(d.T, acts[i], out=gw[i][k])
                np.sum(d, axis=0, out=gb[i][k])
                if i > 0:
                    d = np.matmul(d, ws[i][k]) * (1 - acts[i] * acts[i])

    def batched():
        h = np.broadcast_to(x, (2, *x.shape))
        acts = [h]
        for w, b in zip(ws, bs):
            h = np.matmul(h, w.transpose(0, 2, 1))
            h += b
            np.tanh(h, out=h)
            acts.append(h)
        d = d_top * (1 - acts[-1] * acts[-1])
        for i in range(len(ws) - 1, -1, -1):
            np.matmul(d.transpose(0, 2, 1), acts[i], out=gw[i])
            np.sum(d, axis=1, out=gb[i])
            if i > 0:
                d = np.matmul(d, ws[i]) * (1 - acts[i] * acts[i])

    return two_passes, batched


def child_peak_rss(code: str) -> dict:
    """VmHWM and RssAnon/RssFile (MiB) of a fresh interpreter after ``code``."""
    probe = code + _status_probe()
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _status_probe() -> str:
    return ("\nimport json\nst = {}\nfor line in open('/proc/self/status'):\n"
            "    k, _, v = line.partition(':')\n"
            "    if k in ('VmHWM', 'VmRSS', 'RssAnon', 'RssFile'):\n"
            "        st[k] = round(int(v.split()[0]) / 1024, 1)\n"
            "print(json.dumps(st))\n")


def init_peak_rise(n: int, lean: bool) -> float:
    """MiB that `orthogonal_` of an ``n`` x ``n`` float32 weight adds to a fresh process's
    peak RSS over its RSS just before (the weight itself already resident)."""
    code = (f"import numpy as np\nfrom edgeag.engine import orthogonal_\n"
            f"{'import scipy.linalg.lapack' if lean else ''}\n"
            f"w = np.ones(({n}, {n}), np.float32)\n"
            "st = lambda k: next(int(l.split()[1]) for l in open('/proc/self/status') "
            "if l.startswith(k))\n"
            "before = st('VmRSS')\n"
            f"orthogonal_(w, 1.0, np.random.default_rng(0), lean_numel={0 if lean else n * n})\n"
            "print((st('VmHWM') - before) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    results: dict = {}

    import torch

    torch.set_num_threads(1)
    default_blas = set_blas_threads(2).describe()
    engine, torch_update, n_params = minibatch_updates()
    engine_default = median_us(engine, args.reps, 200)
    info = set_blas_threads(1)
    engine_1 = median_us(engine, args.reps, 400)
    torch_1 = median_us(torch_update, args.reps, 400)
    results["update"] = {"params": n_params, "numpy_engine_blas1_us": engine_1,
                         "numpy_engine_blas2_us": engine_default, "torch_engine_us": torch_1,
                         "ratio_numpy_over_torch": engine_1 / torch_1}
    print(f"PPO minibatch update as edgeag train runs it (actor+critic 4-64-64, batch {BATCH}, "
          f"{n_params} params, loss gradient, backward, stateless AlphaGrad)")
    print(f"  numpy engine, {info.describe()}: {engine_1:8.1f} us")
    print(f"  numpy engine, {default_blas}: {engine_default:8.1f} us")
    print(f"  torch engine (autograd, AlphaGrad in backward), 1 thread: {torch_1:8.1f} us")
    print(f"  ratio numpy / torch (BLAS 1 thread): {engine_1 / torch_1:.2f}x")

    print("AlphaGrad flat step alone (gradient copy subtracted)")
    results["flat_step_us"] = {}
    for width in (64, 350):
        step, copy_only, size = step_only(width)
        us = median_us(step, args.reps, 300) - median_us(copy_only, args.reps, 300)
        results["flat_step_us"][size] = us
        print(f"  {size:7d} params: {us:8.1f} us")

    two, batched = twin_candidates()
    t_two, t_batched = median_us(two, args.reps, 400), median_us(batched, args.reps, 400)
    results["twin"] = {"two_passes_us": t_two, "batched_us": t_batched}
    print(f"Hidden layers of actor and critic, forward + backward: two passes {t_two:.1f} us, "
          f"one batched [2, out, in] matmul {t_batched:.1f} us ({t_batched / t_two:.2f}x)")

    floors = {
        "python": child_peak_rss("pass"),
        "numpy": child_peak_rss("import numpy"),
        "engine + gymnasium": child_peak_rss(
            "import edgeag.engine, gymnasium; edgeag.engine.set_blas_threads(1)"),
        "engine + gymnasium + scipy.linalg.lapack": child_peak_rss(
            "import edgeag.engine, gymnasium, scipy.linalg.lapack; "
            "edgeag.engine.set_blas_threads(1)"),
        "torch": child_peak_rss("import torch"),
    }
    results["floors_mib"] = floors
    print("Peak RSS (VmHWM) of a fresh process, MiB (anon / file at the end)")
    for name, st in floors.items():
        print(f"  {name:42s} {st['VmHWM']:7.1f}   ({st.get('RssAnon', 0):.1f} / "
              f"{st.get('RssFile', 0):.1f})")
    scipy_cost = floors["engine + gymnasium + scipy.linalg.lapack"]["VmHWM"] - \
        floors["engine + gymnasium"]["VmHWM"]
    print(f"  scipy.linalg.lapack adds {scipy_cost:.1f} MiB; torch over engine + gymnasium: "
          f"{floors['torch']['VmHWM'] - floors['engine + gymnasium']['VmHWM']:.1f} MiB")
    print("Orthogonal init of one square float32 weight: peak RSS rise, MiB")
    results["init_mib"] = {}
    for n in (1024, 2048):
        row = {kind: init_peak_rise(n, kind == "lean") for kind in ("plain", "lean")}
        results["init_mib"][n] = row
        print(f"  {n}x{n} ({n * n * 4 / 2**20:.0f} MiB): plain {row['plain']:.1f}, "
              f"lean {row['lean']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
