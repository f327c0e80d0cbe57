"""Fine-tuning on the device, measured: a TD3 policy trained on Pendulum-v1 with g = 10.0,
then adapted to g = 11.0 (``edgeag train --init-from``), against training on g = 11.0
from scratch for the same steps and settings; 3 seeds each.

    python scripts/finetune_pendulum.py [--seeds 1,2,3] [--out results/finetune]

Every run is a real ``edgeag train`` process on the numpy engine, one thread:

1. source: ``--algo td3 --env Pendulum-v1 --env-kwargs g=10.0`` with the shipped preset
   (20k steps);
2. zero-shot: the source policy evaluated on g = 11.0 (``edgeag.evaluate_policy``, the
   final evaluation's 10 episodes and seeds);
3. fine-tuned: ``--init-from <source> --env-kwargs g=11.0 --total-steps N --set
   learning_starts=1000``, for N = 2,000, 5,000 and 10,000;
4. scratch: the same commands without ``--init-from``.

Writes ``OUT/results.json`` and the Markdown table of ``docs/fine-tuning.md`` (between its
``<!-- results -->`` markers); prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fine-tuning.md"
COMMON = ["--algo", "td3", "--env", "Pendulum-v1", "--threads", "1", "--no-progress"]
STEPS, LEARNING_STARTS = (2_000, 5_000, 10_000), 1_000
"""The g = 11.0 runs' lengths (each fine-tuned and from scratch), and their random steps."""


def train(args: list[str]) -> dict:
    out = args[args.index("--out") + 1]
    proc = subprocess.run([sys.executable, "-m", "edgeag.cli", "train", *COMMON, *args],
                          text=True, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"edgeag train {' '.join(args)}: exit {proc.returncode}\n"
                         f"{proc.stderr[-2000:]}")
    return json.loads((Path(out) / "summary.json").read_text())


def zero_shot(run: Path) -> dict:
    import gymnasium as gym

    import edgeag

    model = edgeag.load(run)
    returns, _ = edgeag.evaluate_policy(model, lambda: gym.make("Pendulum-v1", g=11.0),
                                        n_eval_episodes=model.cfg.eval_episodes,
                                        return_episode_rewards=True)
    return {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "returns": returns}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--out", default="results/finetune")
    a = parser.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        src = out / f"g10-s{seed}"
        if not (src / "summary.json").exists():
            train(["--env-kwargs", "g=10.0", "--seed", str(seed), "--out", str(src)])
        source = json.loads((src / "summary.json").read_text())
        row = {"seed": seed, "source_g10": source["final_eval_return"]["mean"],
               "source_steps": source["steps"], "zero_shot_g11": zero_shot(src)["mean"]}
        for steps in STEPS:
            short = ["--env-kwargs", "g=11.0", "--seed", str(seed), "--total-steps", str(steps),
                     "--set", f"learning_starts={LEARNING_STARTS}"]
            tuned = train([*short, "--init-from", str(src),
                           "--out", str(out / f"g11-tuned-{steps}-s{seed}")])
            scratch = train([*short, "--out", str(out / f"g11-scratch-{steps}-s{seed}")])
            row[f"fine_tuned_{steps}"] = tuned["final_eval_return"]["mean"]
            row[f"scratch_{steps}"] = scratch["final_eval_return"]["mean"]
            row[f"fine_tuned_peak_anon_bytes_{steps}"] = tuned["peak_anon_bytes"]
            row[f"scratch_peak_anon_bytes_{steps}"] = scratch["peak_anon_bytes"]
        rows.append(row)
        print(json.dumps(row))
    (out / "results.json").write_text(json.dumps({"steps": list(STEPS), "learning_starts":
                                                  LEARNING_STARTS, "rows": rows}, indent=2) + "\n")
    table = _table(rows)
    print(table)
    text = DOC.read_text()
    start, end = "<!-- results -->\n", "<!-- /results -->"
    DOC.write_text(text[:text.index(start) + len(start)] + table + text[text.index(end):])
    return 0


def _table(rows: list[dict]) -> str:
    def cell(key):
        values = [r[key] for r in rows]
        return " / ".join(f"{v:.1f}" for v in values) + f" → **{np.mean(values):.1f}**"

    lines = ["| | return on g = 11.0 (seeds " + ", ".join(str(r["seed"]) for r in rows) +
             " → mean) |", "|---|---|",
             f"| source policy (g = 10.0, {rows[0]['source_steps']:,} steps), on its own "
             "g = 10.0 | "
             f"{cell('source_g10')} |",
             f"| source policy on g = 11.0, no training (zero-shot) | {cell('zero_shot_g11')} |"]
    for steps in STEPS:
        lines += [f"| fine-tuned on g = 11.0, {steps:,} steps (`--init-from`) | "
                  f"{cell(f'fine_tuned_{steps}')} |",
                  f"| from scratch on g = 11.0, {steps:,} steps | {cell(f'scratch_{steps}')} |"]
    tuned = np.mean([r[f"fine_tuned_peak_anon_bytes_{STEPS[-1]}"] for r in rows]) / 2**20
    scratch = np.mean([r[f"scratch_peak_anon_bytes_{STEPS[-1]}"] for r in rows]) / 2**20
    lines += [f"| peak anonymous memory at {STEPS[-1]:,} steps, fine-tuned / from scratch "
              f"(MiB, mean) | {tuned:.1f} / {scratch:.1f} |", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
