#!/usr/bin/env python
"""Optimizer step cost: AlphaGrad against torch.optim.Adam and friends, in one run.

For MLPs 4-64-64-2, 8-256-256-4 and 64-1024-1024-16 (float32, CPU) it prints, per
optimizer: the median ``step()`` time and its ratio to ``torch.optim.Adam()`` with
torch's CPU defaults (what Stable-Baselines3 and CleanRL construct), the optimizer
state bytes after the first steps, the peak extra bytes allocated during one step
(tensor storage counted op by op), and the peak RSS (VmHWM) of a fresh process after
importing torch, building the MLP and the optimizer, and taking one step.

AlphaGrad "in-backward" has no separate step: its figure is the extra time that the
fused hooks add to ``backward()`` (median of forward+backward with hooks minus
median without), and its peak extra bytes are those of the whole fused backward
minus those of a plain backward.

    python scripts/bench_optim.py [--threads 1] [--repeats 3] [--json results/bench_optim.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from edgeag.algos.torch_runtime import peak_allocated_bytes
from edgeag.memory import peak_rss_bytes
from edgeag.optim import SGD, Adam, AlphaGrad, fuse_into_backward, state_bytes

SIZES = {"small": (4, 64, 64, 2), "medium": (8, 256, 256, 4), "large": (64, 1024, 1024, 16)}
BATCH = 64

OPTIMIZERS = {
    "torch.optim.Adam()": lambda p: torch.optim.Adam(p, lr=1e-6),
    "torch Adam(foreach=True)": lambda p: torch.optim.Adam(p, lr=1e-6, foreach=True),
    "torch Adam(fused=True)": lambda p: torch.optim.Adam(p, lr=1e-6, fused=True),
    "edgeag Adam (lean)": lambda p: Adam(p, lr=1e-6),
    "torch.optim.SGD()": lambda p: torch.optim.SGD(p, lr=1e-6),
    "edgeag SGD (lean)": lambda p: SGD(p, lr=1e-6),
    "AlphaGrad": lambda p: AlphaGrad(p, lr=1e-6),
    "AlphaGrad default": lambda p: AlphaGrad(p, lr=1e-6),
    "AlphaGrad m=0.9 default": lambda p: AlphaGrad(p, lr=1e-6, momentum=0.9),
}
BASELINE = "torch.optim.Adam()"
FUSED = "AlphaGrad in-backward"


def mlp(sizes: tuple[int, ...]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


def median_seconds(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def reps_for(size: str) -> int:
    return {"small": 400, "medium": 200, "large": 40}[size]


def bench_step(size: str, name: str) -> dict:
    torch.manual_seed(0)
    model = mlp(SIZES[size])
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt = OPTIMIZERS[name](list(model.parameters()))
    seconds = median_seconds(opt.step, reps_for(size))
    extra = peak_allocated_bytes(opt.step)
    return {"step_us": seconds * 1e6, "state_bytes": state_bytes(opt), "peak_extra_bytes": extra}


def bench_fused(size: str) -> dict:
    torch.manual_seed(0)
    model = mlp(SIZES[size])
    x = torch.randn(BATCH, SIZES[size][0])

    def fwd_bwd():
        model(x).square().mean().backward()

    def plain():
        model.zero_grad(set_to_none=True)
        fwd_bwd()

    base = median_seconds(plain, reps_for(size))
    base_bytes = peak_allocated_bytes(plain)
    opt = AlphaGrad(model.parameters(), lr=1e-6)
    handle = fuse_into_backward(model, opt)
    fused = median_seconds(fwd_bwd, reps_for(size))
    fused_bytes = peak_allocated_bytes(fwd_bwd)
    handle.remove()
    return {"step_us": (fused - base) * 1e6, "state_bytes": state_bytes(opt),
            "peak_extra_bytes": max(fused_bytes - base_bytes, 0)}


CHILD = """
import sys, torch
torch.set_num_threads({threads})
sys.path.insert(0, {scripts!r})
from bench_optim import OPTIMIZERS, SIZES, mlp, FUSED
from edgeag.memory import peak_rss_bytes
from edgeag.optim import AlphaGrad, fuse_into_backward
torch.manual_seed(0)
model = mlp(SIZES[{size!r}])
x = torch.randn(64, SIZES[{size!r}][0])
if {name!r} == FUSED:
    opt = AlphaGrad(model.parameters(), lr=1e-6); fuse_into_backward(model, opt)
else:
    opt = OPTIMIZERS[{name!r}](list(model.parameters()))
model(x).square().mean().backward(); opt.step()
print(peak_rss_bytes(), "torch._dynamo" in sys.modules)
"""


def child_peak_rss(size: str, name: str, threads: int) -> tuple[int, bool]:
    code = CHILD.format(threads=threads, scripts=os.path.dirname(os.path.abspath(__file__)),
                        size=size, name=name)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, dynamo = out.stdout.split()
    return int(peak), dynamo == "True"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="fresh processes per optimizer for peak RSS (default 3)")
    ap.add_argument("--sizes", default="small,medium,large")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    results: dict = {"threads": args.threads, "torch": torch.__version__, "sizes": {}}
    bad = [x for x in args.sizes.split(",") if x not in SIZES]
    if bad:
        print(f"bench_optim: invalid --sizes {','.join(bad)}: expected a comma-separated "
              f"list of {', '.join(SIZES)}", file=sys.stderr)
        sys.exit(2)
    for size in args.sizes.split(","):
        rows = {name: bench_step(size, name) for name in OPTIMIZERS}
        rows[FUSED] = bench_fused(size)
        for name, row in rows.items():
            peaks = [child_peak_rss(size, name, args.threads) for _ in range(args.repeats)]
            row["peak_rss_mib"] = [p / 2**20 for p, _ in peaks]
            row["imports_dynamo"] = peaks[0][1]
        base = rows[BASELINE]["step_us"]
        fused_adam = rows["torch Adam(fused=True)"]["step_us"]
        n_params = sum(p.numel() for p in mlp(SIZES[size]).parameters())
        print(f"\nMLP {'-'.join(map(str, SIZES[size]))} ({n_params:,} params), "
              f"{args.threads} thread(s)")
        print(f"{'optimizer':26s} {'step us':>9s} {'/Adam()':>8s} {'/fused':>7s} "
              f"{'state B':>10s} {'step extra B':>13s} {'peak RSS MiB (min-max)':>24s} dynamo")
        for name, row in rows.items():
            rss = row["peak_rss_mib"]
            row["ratio_to_adam_default"] = row["step_us"] / base
            row["ratio_to_adam_fused"] = row["step_us"] / fused_adam
            print(f"{name:26s} {row['step_us']:9.1f} {row['ratio_to_adam_default']:8.2f} "
                  f"{row['ratio_to_adam_fused']:7.2f} {row['state_bytes']:10,d} "
                  f"{row['peak_extra_bytes']:13,d} "
                  f"{statistics.median(rss):10.1f} ({min(rss):.1f}-{max(rss):.1f}) "
                  f"{'yes' if row['imports_dynamo'] else 'no':>6s}")
        results["sizes"][size] = {"params": n_params, "rows": rows}
    print(f"\nthis process's peak RSS: {peak_rss_bytes() / 2**20:.1f} MiB")
    if args.json:
        from edgeag.io import write_json

        write_json(args.json, results)


if __name__ == "__main__":
    main()
