"""The ``edgeag`` command: argument parsing and exit codes only.

Exit codes: 0 success; 2 usage or input error (bad flag, budget, profile, env, file);
3 stopped to respect the memory budget (checkpoint saved); 4 an exported artifact
failed verification; 5 a file could not be written (disk full, file-size limit);
130 interrupted with Ctrl-C; 1 unexpected internal error (with a traceback).

Command bodies import what they need when they run, so ``edgeag --help`` and the
training path never import heavy modules they do not use.
"""

from __future__ import annotations

import argparse
import sys

from edgeag import __version__
from edgeag.errors import EdgeagError

EPILOG = """\
examples:
  edgeag train --profile rpi4 --budget 256MB
                                  PPO + AlphaGrad on CartPole-v1 inside 256 MiB
  edgeag train --env Pendulum-v1 --optimizer adam --profile rpi5 --out runs/pend
  edgeag train --algo td3 --env Pendulum-v1 --optimizer adam --profile rpi4
                                  TD3 (twin critics, replay buffer) inside rpi4's 1 GiB
  edgeag train --resume runs/pend
                                  continue a stopped run from its checkpoint, with its own
                                  profile, budget and threads
  edgeag train --init-from runs/pend --env-kwargs g=11.0 --out runs/pend-g11
                                  fine-tune: a new run from runs/pend's weights
  edgeag eval runs/pend --checkpoint best
                                  evaluate a checkpoint without exporting it (no torch)
  edgeag compare --profile rpi4 --budget 256MB
                                  AlphaGrad against Adam and the others: peak RSS report
  edgeag compare --profile rpi4 --capacity
                                  widest policy each optimizer trains in 256 MiB/512 MiB/1 GiB
  edgeag report results/*/report.json
                                  one table from reports of several devices
  edgeag tune --env CartPole-v1 --space alpha,lr --trials 20
                                  an Optuna study of isolated training runs; run the
                                  same command elsewhere to add workers
  edgeag profiles                 list device profiles with their RAM and default budget
  edgeag profiles rpi4            show one profile
  edgeag profiles ./my-board.toml validate and show your own profile
  edgeag export runs/pend --format onnx,pte --quantize int8
                                  verified ONNX and ExecuTorch files in runs/pend/export/
  edgeag run runs/pend/export/policy.onnx --episodes 10
                                  run the policy with onnxruntime (no torch)

commands that step the env: train, eval, run, tune and compare; export only with
--record-observations; profiles and report never.

exit codes: 0 ok, 2 bad input, 3 stopped at the memory budget (checkpoint saved),
4 export verification failed, 5 a file could not be written (disk full, file-size
limit; nothing half-written), 130 interrupted, 1 internal error (tune: a trial's
training process failed)

Docs: docs/index.md
"""


PROFILES_EPILOG = """\
examples:
  edgeag profiles                 list device profiles with their RAM and default budget
  edgeag profiles rpi4            show one profile
  edgeag profiles ./my-board.toml validate and show your own profile

exit codes: 0 ok, 2 unknown profile or invalid profile file, 1 internal error

Docs: docs/memory.md
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise EdgeagError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgeag", description="Train small RL policies on the device itself, "
                     "inside a memory budget, with the stateless AlphaGrad optimizer.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgeag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("profiles", help="list device profiles, or show one",
                       description="List the shipped device profiles, or show one (by name or "
                       "path to a TOML file).", epilog=PROFILES_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profile", nargs="?", help="profile name (e.g. rpi4) or path to a .toml file")
    p.set_defaults(func=cmd_profiles)
    add_train_parser(sub)
    add_export_parser(sub)
    add_run_parser(sub)
    add_eval_parser(sub)
    add_compare_parser(sub)
    add_report_parser(sub)
    add_tune_parser(sub)
    return parser


TRAIN_EPILOG = """\
examples:
  edgeag train --profile rpi4 --budget 256MB
                                  PPO + AlphaGrad on CartPole-v1 inside 256 MiB
  edgeag train --env Pendulum-v1 --profile rpi4 --out runs/pendulum
  edgeag train --algo dqn --env CartPole-v1 --optimizer adam --profile rpi4
                                  DQN with Adam, its default; AlphaGrad on DQN is
                                  EXPERIMENTAL: the AlphaGrad paper reports it unstable
  edgeag train --algo td3 --env Pendulum-v1 --optimizer adam --profile rpi4
  edgeag train --algo td3 --env Hopper-v5 --budget 400MB --shrink-buffer
                                  the largest replay buffer that fits, instead of a refusal
  PYTHONPATH=examples/custom_env edgeag train --env fan_speed:FanSpeed-v0 --lr 3e-3 --alpha 4
                                  your own env: module:EnvId
  edgeag train --optimizer torch-adam --profile rpi4 --budget 256MB --dry-run
                                  print the floor and the memory plan, train nothing
  edgeag train --set num_steps=64 --set hidden=128,128
                                  any field of PPOConfig, DQNConfig or TD3Config
                                  (each algorithm's edgeag/algos/<algo>/config.py)
  edgeag train --resume runs/pendulum --budget 512MB
                                  continue a stopped run with its own profile and threads,
                                  and a larger budget (validated, printed, recorded)
  edgeag train --eval-every 5000 --stop-at-return 475 --out runs/cp
  edgeag train --init-from runs/pendulum --env-kwargs g=11.0 --total-steps 20000
                                  fine-tune: a new run from runs/pendulum's weights
  edgeag train --preset results/tune/CartPole-v1-ppo-alphagrad/best.toml

exit codes: 0 done, 2 bad input or plan over budget (nothing written), 3 stopped at the
memory budget (checkpoint saved; by the guard, or by the kernel under --hard-cap),
5 a file could not be written (disk full, ulimit -f; the last checkpoint is intact:
--resume once there is room), 130 interrupted with Ctrl-C (checkpoint saved),
1 internal error

Docs: docs/training.md
"""


OPTIMIZER_HELP = ("alphagrad (stateless, updates inside backward; PPO's default; "
                  "experimental on DQN), adam (lean, no torch._dynamo import; DQN's and TD3's "
                  "default), torch-adam (torch.optim.Adam: +~70 MiB), sgd (lean; --momentum), "
                  "torch-adafactor (torch.optim.Adafactor: +~70 MiB), lion (lion-pytorch "
                  "package: +~70 MiB)")
"""Written out so `edgeag --help` does not import torch; a test checks it names exactly
`edgeag.optim.supported_optimizers()`."""


def add_train_parser(sub) -> None:
    from edgeag.algos import ALGORITHMS

    p = sub.add_parser("train", help="train a policy inside a memory budget",
                       description="Train a policy with PPO, DQN or TD3 on a Gymnasium "
                                   "environment, "
                       "planned and held inside a device's memory budget.",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", help="Gymnasium env id, or module:EnvId for an env that module "
                   "registers when imported (on PYTHONPATH) (default CartPole-v1; Pendulum-v1 "
                   "for td3 and sac)")
    p.add_argument("--algo", help="algorithm: " + ", ".join(ALGORITHMS) +
                   " (default ppo; dqn: discrete actions, td3 and sac: bounded continuous ones)")
    p.add_argument("--optimizer", help=OPTIMIZER_HELP)
    p.add_argument("--engine", choices=["numpy", "torch"], help="numpy: edgeag's own engine, "
                   "no torch on the training path (the default for alphagrad, adam and sgd, "
                   "every algorithm); torch: the textbook autograd path with edgeag.optim "
                   "(the reference, and the engine of the torch.optim optimizers)")
    p.add_argument("--lr", type=float, help="initial learning rate (default: the preset's)")
    p.add_argument("--alpha", type=float, help="AlphaGrad steepness (default: the preset's)")
    p.add_argument("--momentum", type=float, help="AlphaGrad/SGD momentum (default 0: stateless)")
    p.add_argument("--profile", help="device profile name or TOML path (sets threads and the "
                   "default budget); see `edgeag profiles`")
    p.add_argument("--budget", help="budget on the process's anonymous memory (RssAnon + "
                   "RssShmem, what a cgroup's memory.max OOM-kills on; mapped library files "
                   "are reported, not counted), e.g. 256MB, 1GiB, 268435456 (default: the "
                   "profile's; none without a profile)")
    p.add_argument("--total-steps", type=int, metavar="N", help="environment steps to train")
    p.add_argument("--seed", type=int, help="random seed (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override any setting of the algorithm's config (repeatable)")
    p.add_argument("--preset", metavar="FILE", help="a preset file (the format of "
                   "edgeag/algos/<algo>/presets.toml, e.g. the best.toml of `edgeag tune`) "
                   "instead of the shipped presets; --env defaults to its only env")
    p.add_argument("--out", help="run directory (default "
                                 "runs/<env>-<algo>-<optimizer>-s<seed>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint, "
                   "with its own profile, budget, threads and hard cap (each may be changed: "
                   "--profile, --budget, --threads, --hard-cap; and --total-steps; recorded in "
                   "its config.toml with the step they apply from)")
    p.add_argument("--init-from", metavar="RUN", help="fine-tune: a new run that starts from "
                   "RUN's weights (and PPO's observation normaliser) with a fresh optimizer, "
                   "its settings, and what you change (--env, --env-kwargs, --total-steps, "
                   "--lr, --seed, ...); trained under its own budget and plan")
    p.add_argument("--env-kwargs", nargs="+", metavar="NAME=VALUE", help="keyword arguments of "
                   "gymnasium.make, e.g. --env-kwargs g=11.0 (values read as TOML: numbers, "
                   "true/false, strings)")
    p.add_argument("--eval-every", type=int, metavar="N", help="evaluate every N env steps "
                   "(the final evaluation's episodes and seeds) and keep the best policy in "
                   "checkpoints/best.safetensors")
    p.add_argument("--stop-at-return", type=float, metavar="R", help="with --eval-every: stop "
                   "(with a checkpoint, exit 0) once an evaluation's mean return reaches R")
    p.add_argument("--threads", type=int, help="BLAS threads of the numpy engine, torch's on "
                   "the torch engine (default: the profile's, at most this machine's cores; 1 "
                   "without a profile)")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files "
                   "to <run>/tensorboard, without torch (needs tensorboardX: pip install "
                   "'edgeag[logging]'; planned: ~2.5 MiB in the floor, 1 MiB for the writer)")
    p.add_argument("--hard-cap", nargs="?", const="auto", metavar="auto|cgroup|rlimit",
                   help="also have the kernel enforce the budget: cgroup trains in a cgroup "
                   "of its own with memory.max = budget and no swap (cgroup v2, or v1's "
                   "memory hierarchy; the kernel OOM-kills at the limit and the run resumes "
                   "from its last checkpoint); rlimit sets RLIMIT_DATA so an allocation "
                   "beyond the budget's headroom fails at once and the run stops at its last "
                   "checkpoint; auto (the default) is cgroup where one can be made, else "
                   "rlimit. The run says which applied"),
    p.add_argument("--shrink-buffer", action="store_true", help="dqn, td3, sac: when the replay "
                   "buffer does not fit the budget, shrink it to the largest that does "
                   "(reported) instead of refusing")
    p.add_argument("--dry-run", action="store_true", help="print the floor and the memory plan, "
                   "then exit without training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


COMPARE_EPILOG = """\
examples:
  edgeag compare --profile rpi4 --budget 256MB
                                  the 10 default rows (every optimizer; alphagrad and adam
                                  on the torch engine too), 3 seeds, each run in its own
                                  `edgeag train` process
  edgeag compare --profile rpi4 --budget 1GB --optimizers alphagrad,adam --seeds 5
  edgeag compare --budget 512MB --optimizers alphagrad,sgd:momentum=0.9,alphagrad:engine=torch
                                  rows: NAME[:SETTING=VALUE...], SETTING any PPO setting
  edgeag compare --profile rpi4 --budget 256MB --threads 1
                                  on a shared machine: multi-threaded runs slow down
                                  badly when other processes compete for the cores
  edgeag compare --profile rpi4 --capacity --budgets 256MB,512MB,1GB
                                  the widest policy each optimizer trains inside each
                                  budget, measured by running it
  edgeag compare --budget 512MB --optimizers alphagrad,adam --seeds 1 --total-steps 2048

exit codes: 0 done (refused or budget-stopped runs included), 2 bad input, 130
interrupted with Ctrl-C (the report holds what finished), 1 a run failed
unexpectedly (the report is still written)

Docs: docs/compare.md
"""


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="memory comparison of optimizers: report.md, "
                       "report.json, figures", description="Train every optimizer row in "
                       "isolated processes under one budget and report peak RSS (with its "
                       "run-to-run spread), RSS over time, returns and the memory plan beside "
                       "the measurement; or, with --capacity, the widest policy each optimizer "
                       "can train inside each budget.",
                       epilog=COMPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1", help="Gymnasium env id, or module:EnvId "
                   "(default CartPole-v1)")
    p.add_argument("--optimizers", metavar="ROWS", help="rows to compare, NAME[:SETTING=VALUE...] "
                   "separated by commas: an optimizer with PPO settings (default: 10 rows, every "
                   "optimizer, and alphagrad and adam on the torch engine too; --capacity: "
                   "alphagrad, alphagrad:fuse_backward=false, adam, alphagrad:engine=torch, "
                   "torch-adam)")
    p.add_argument("--seeds", help="runs per row: a count (default 3: seeds 1-3) or a list "
                   "such as 1,7,9")
    p.add_argument("--profile", help="device profile name or TOML path (threads, default "
                   "budget, recorded in the report)")
    p.add_argument("--budget", help="budget of every run on its anonymous memory, e.g. 256MB "
                   "(default: the profile's)")
    p.add_argument("--capacity", action="store_true", help="find the widest policy per "
                   "optimizer and budget instead (measured by running it)")
    p.add_argument("--budgets", metavar="SIZES", help="budgets of --capacity (default "
                   "256MB,512MB,1GB)")
    p.add_argument("--total-steps", type=int, metavar="N", help="env steps per run (default: "
                   "the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="PPO setting for every row (repeatable; a row's own settings win)")
    p.add_argument("--threads", type=int, help="threads per run (default: the "
                   "profile's, at most this machine's cores; 1 without a profile)")
    p.add_argument("--out", help="report directory (must be new or empty)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compare)


REPORT_EPILOG = """\
examples:
  edgeag report results/pi4.json results/orin.json
                                  the report.json of `edgeag compare` from each device
  edgeag report results/*.json --out results/devices.md

exit codes: 0 ok, 2 bad input (a file is missing or not an edgeag report, --out is a
directory), 1 internal error

Docs: docs/compare.md
"""


def add_report_parser(sub) -> None:
    p = sub.add_parser("report", help="merge report.json files from several devices",
                       description="Build one comparison (Markdown tables) from the "
                       "report.json files of several devices.",
                       epilog=REPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", metavar="REPORT.json", help="report.json files")
    p.add_argument("--out", metavar="FILE.md", help="write the Markdown here instead of "
                   "printing it")
    p.set_defaults(func=cmd_report)


def cmd_compare(args) -> int:
    from edgeag.report.launch import CompareRequest, launch_compare

    return launch_compare(CompareRequest(
        env=args.env, optimizers=args.optimizers, seeds=args.seeds, profile=args.profile,
        budget=args.budget, capacity=args.capacity, budgets=args.budgets,
        total_steps=args.total_steps, sets=args.set, threads=args.threads, out=args.out,
        progress=not args.no_progress))


def cmd_report(args) -> int:
    from edgeag.report.launch import launch_report

    return launch_report(args.reports, args.out)


def cmd_train(args) -> int:
    from edgeag.train.launch import TrainRequest, launch

    return launch(TrainRequest(
        env=args.env, algo=args.algo, optimizer=args.optimizer, overrides=_overrides(args),
        profile=args.profile, budget=args.budget, threads=args.threads, hard_cap=args.hard_cap,
        out=args.out, resume=args.resume, init_from=args.init_from, preset=args.preset,
        env_kwargs=args.env_kwargs, eval_every=args.eval_every,
        stop_at_return=args.stop_at_return, tensorboard=args.tensorboard,
        dry_run=args.dry_run, progress=not args.no_progress, shrink_buffer=args.shrink_buffer,
        argv=args.argv))


def _overrides(args) -> dict:
    from edgeag.train.config import parse_set

    out = {name: value for name, value in (("lr", args.lr), ("alpha", args.alpha),
                                           ("momentum", args.momentum), ("seed", args.seed),
                                           ("total_steps", args.total_steps),
                                           ("engine", getattr(args, "engine", None)))
           if value is not None}
    out.update(parse_set(args.set))
    return out


TUNE_EPILOG = """\
examples:
  edgeag tune --env CartPole-v1 --space alpha,lr --trials 20 --seeds 2
  edgeag tune --space alpha=1:64:log,lr=1e-4:3e-3:log,momentum=0,0.9
                                  a space: NAME (its default range), NAME=LOW:HIGH[:log]
                                  or NAME=V1,V2,...
  edgeag tune --env CartPole-v1 --storage results/tune/cartpole.log --trials 10
                                  (the same command on more machines adds workers)
  edgeag tune --sampler grid --space alpha=1,4,16,64 --seeds 3 --profile rpi4
  EDGEAG_STORAGE_PASSWORD=... edgeag tune --storage postgresql://tune@db.lan/studies
              --study pi-alpha --trials 10 --max-total-trials 100 --profile rpi4
  edgeag train --preset results/tune/CartPole-v1-ppo-alphagrad/best.toml
                                  train with the best trial's settings

exit codes: 0 done (pruned trials included), 2 bad input (flag, space, storage,
unreachable database), 130 interrupted with Ctrl-C (the running trial is marked FAIL,
its child stopped), 1 a trial failed because its training process failed

Docs: docs/tune.md
"""


def add_tune_parser(sub) -> None:
    from edgeag.algos import ALGORITHMS

    p = sub.add_parser("tune", help="Optuna study of isolated `edgeag train` runs; "
                       "several workers join one study",
                       description="Tune settings (AlphaGrad's alpha, the learning rate, ...) "
                       "with an Optuna study whose trials are isolated `edgeag train` runs "
                       "under the memory budget; any number of workers on any machines join "
                       "the same study through its storage.",
                       epilog=TUNE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", help="Gymnasium env id, or module:EnvId (default CartPole-v1; "
                   "Pendulum-v1 for td3 and sac)")
    p.add_argument("--algo", default="ppo", help="algorithm: " + ", ".join(ALGORITHMS) +
                   " (default ppo)")
    p.add_argument("--optimizer", help="optimizer of every trial (default: the algorithm's)")
    p.add_argument("--trials", type=int, metavar="N", help="trials this worker runs (default "
                   "20; with --sampler grid, until the grid is done)")
    p.add_argument("--max-total-trials", type=int, metavar="M", help="at most M trials "
                   "complete or are pruned in the whole study, over every worker")
    p.add_argument("--storage", metavar="PATH.log|URL", help="journal file or database URL "
                   "(sqlite:///F.db, postgresql://USER@HOST/DB, mysql://USER@HOST/DB); the same "
                   "storage and --study on any machines make one study (default "
                   "results/tune/<study>.log)")
    p.add_argument("--storage-password-file", metavar="FILE", help="file whose first line is "
                   "the database password (or EDGEAG_STORAGE_PASSWORD, PGPASSWORD, PGPASSFILE)")
    p.add_argument("--study", metavar="NAME", help="study name (default <env>-<algo>-<optimizer>)")
    p.add_argument("--seeds", help="seeds per trial: a count (default 1: seed 1) or a list "
                   "such as 1,7,9")
    p.add_argument("--total-steps", type=int, metavar="N", help="env steps per run (default: "
                   "the preset's)")
    p.add_argument("--profile", help="device profile name or TOML path (threads, default "
                   "budget), passed to every run")
    p.add_argument("--budget", help="budget of every run on its anonymous memory "
                   "(RssAnon + RssShmem, as edgeag train --budget), e.g. 256MB (default: the "
                   "profile's; none without a profile)")
    p.add_argument("--threads", type=int, help="threads per run (default: the "
                   "profile's, at most this machine's cores; 1 without a profile)")
    p.add_argument("--space", action="append", default=[], metavar="SPACE",
                   help="parameters to tune, separated by commas: NAME (its "
                   "default range), NAME=LOW:HIGH[:log] or NAME=V1,V2,... (default alpha; "
                   "repeatable); with --sampler grid, seed=101,102,... makes each trial one "
                   "seed's run (instead of --seeds)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="fixed setting of every run (repeatable)")
    p.add_argument("--sampler", default="tpe", help="tpe (default), random, or grid (every "
                   "combination of the listed values)")
    p.add_argument("--pruner", default="median", help="median (default: stop a run whose "
                   "training return is below the median of earlier trials at the same step) "
                   "or none")
    p.add_argument("--prune-after", type=int, default=5, metavar="N", help="completed trials "
                   "before the median pruner prunes (default 5)")
    p.add_argument("--out", help="directory of the runs and results (default "
                   "results/tune/<study>/; workers on one machine share it)")
    p.add_argument("--heartbeat", type=int, metavar="SECONDS", help="database storages: "
                   "seconds between this worker's heartbeats (default 60); a running trial "
                   "silent for twice that is marked FAIL by the next worker")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    from edgeag.tune.launch import TuneRequest, launch_tune

    return launch_tune(TuneRequest(
        env=args.env, algo=args.algo, optimizer=args.optimizer, trials=args.trials,
        max_total_trials=args.max_total_trials, storage=args.storage,
        storage_password_file=args.storage_password_file, study=args.study, seeds=args.seeds,
        total_steps=args.total_steps, profile=args.profile, budget=args.budget,
        threads=args.threads, space=args.space, sets=args.set, sampler=args.sampler,
        pruner=args.pruner, prune_after=args.prune_after, out=args.out,
        heartbeat=args.heartbeat))


EXPORT_EPILOG = """\
Each artifact is checked with its own runtime against the checkpoint's policy on the
run's sample of its training observations (up to 1024, kept in the checkpoint; int8
files are calibrated on them too): discrete actions equal on >= 99.9% (int8: >= 95%),
continuous actions within 1e-4 (int8: 5%) of the action range. Nothing is published
unless all pass. export does not step the env (an env that drives hardware stays
still) unless --record-observations asks it to.

examples:
  edgeag export runs/cartpole     the formats of the run's device profile, else onnx
  edgeag export runs/pend --format onnx,pte --quantize int8
                                  pte needs torch and ExecuTorch: pip install 'edgeag[export]'
  edgeag export runs/cartpole --format ort --out phone/
                                  onnx and ort need no torch: pip install 'edgeag[onnx]'
  edgeag export runs/old --record-observations
                                  a run trained before runs kept observations: step the
                                  env to record 1024 (its own episodes and exploring ones)

exit codes: 0 exported and verified, 2 bad input (run directory, checkpoint, format,
output directory, a package the format needs), 4 an artifact failed verification
(nothing published), 5 a file could not be written (the previous export is
unchanged), 130 interrupted, 1 internal error

Docs: docs/export.md
"""


def add_export_parser(sub) -> None:
    from edgeag.algos import ALGORITHMS

    p = sub.add_parser("export", help="export a trained policy as verified ONNX / ExecuTorch files",
                       description="Export a run's policy (" + ", ".join(ALGORITHMS) + ") for "
                       "inference on a device, verified against the checkpoint's policy.",
                       epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_DIR", help="run directory written by edgeag train")
    from edgeag.export.formats import FORMATS

    p.add_argument("--format", help="comma-separated list of " + ", ".join(FORMATS) +
                   " (c: a C99 header for boards with neither runtime; default: the run's "
                   "device profile's export formats, else onnx)")
    p.add_argument("--quantize", choices=["int8"], help="also write int8 variants of the "
                   ".onnx and .pte files")
    p.add_argument("--out", help="output directory (default RUN_DIR/export)")
    p.add_argument("--record-observations", action="store_true",
                   help="verify (and calibrate int8) on 1024 observations recorded by "
                   "stepping the env, instead of the run's training observations (steps the "
                   "env: do not use it where the env moves hardware you do not want moved)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from edgeag.export.build import export_run, parse_formats

    def log(text):
        return print(text, file=sys.stderr, flush=True)
    formats = parse_formats(args.format)
    meta = export_run(args.run, formats, args.out, args.quantize,
                      progress=not args.no_progress, log=log, record=args.record_observations)
    out = args.out or f"{args.run.rstrip('/')}/export"
    for name, art in meta["artifacts"].items():
        print(f"{out}/{name}  sha256 {art['sha256'][:16]}  {art['verification']['runtime']}")
    print(f"{out}/policy.json")
    return 0


RUN_EPILOG = """\
examples:
  edgeag run runs/cartpole/export/policy.onnx --episodes 10
                                  onnxruntime, numpy and gymnasium: no torch
  edgeag run runs/pend/export/policy.pte --env Pendulum-v1 --json result.json
                                  the ExecuTorch runtime
  PYTHONPATH=examples/custom_env edgeag run runs/fan/export/policy.onnx
                                  an env of your own: its module must be importable here
  edgeag run runs/cartpole/export/policy.pte --native
                                  ExecuTorch's C++ runtime (the native runner: make native)

exit codes: 0 ok, 2 bad input (policy file, env, flag), 130 interrupted, 1 internal error

Docs: docs/running.md
"""


def add_run_parser(sub) -> None:
    from edgeag.export.runner import add_arguments

    p = sub.add_parser("run", help="run an exported policy on an env (onnxruntime: no torch)",
                       description="Run an exported policy for some episodes and report its "
                       "return, per-action latency and peak RSS.",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--native", action="store_true", help="a .pte on ExecuTorch's C++ runtime: "
                   "actions from the native runner (build it with make native); latency and "
                   "peak RSS are the runner's own")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from edgeag.export.runner import run

    return run(args)


EVAL_EPILOG = """\
examples:
  edgeag eval runs/cartpole       the run's eval_episodes, as training's final evaluation
  edgeag eval runs/cartpole --checkpoint best --episodes 20
                                  the best periodic evaluation's policy (--eval-every)
  edgeag eval runs/pend --video out/pend-video
                                  record the episodes as mp4: pip install 'edgeag[video]'

exit codes: 0 ok, 2 bad input (run directory, checkpoint, flag, missing package),
130 interrupted, 1 internal error

Docs: docs/lifecycle.md
"""


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run's checkpoint (no export, no torch)",
                       description="Evaluate a run's latest or best checkpoint on its env, "
                       "exactly as training's final evaluation does.",
                       epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_DIR", help="run directory written by edgeag train")
    p.add_argument("--checkpoint", default="latest", help="latest (default) or best")
    p.add_argument("--episodes", type=int, metavar="N", help="episodes (default: the run's "
                   "eval_episodes)")
    p.add_argument("--render", action="store_true", help="show the episodes (needs a display)")
    p.add_argument("--video", metavar="DIR", help="record the episodes to DIR (mp4)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from edgeag.api import evaluate_run

    result = evaluate_run(args.run, args.checkpoint, args.episodes, args.render, args.video)
    print(f"run: {result['run']} ({result['env']}"
          + (f" {result['env_kwargs']}" if result["env_kwargs"] else "")
          + f"), checkpoint {result['checkpoint']} at step {result['step']:,}")
    print(f"mean return: {result['mean_return']:.1f} +- {result['std_return']:.1f} over "
          f"{result['episodes']} deterministic episodes (seeds {result['seed']}.."
          f"{result['seed'] + result['episodes'] - 1})")
    if result.get("recorded_eval_return") is not None:
        print(f"recorded when it was kept: {result['recorded_eval_return']:.1f}")
    for path in result.get("video", []):
        print(f"video: {path}")
    if args.json:
        from pathlib import Path

        from edgeag.io import write_json
        write_json(Path(args.json), result)
    return 0


def cmd_profiles(args) -> int:
    from edgeag.profiles import format_size, load_profile, profile_names

    if args.profile:
        prof = load_profile(args.profile)
        for key, value in (("name", prof.name), ("description", prof.description),
                           ("arch", prof.arch), ("cores", prof.cores),
                           ("ram", format_size(prof.ram_bytes)),
                           ("default budget", format_size(prof.default_budget_bytes)),
                           ("threads", prof.threads),
                           ("export formats", ", ".join(prof.export_formats)),
                           ("notes", prof.notes), ("file", prof.source)):
            print(f"{key + ':':16s}{value}")
        return 0
    rows = [load_profile(name) for name in profile_names()]
    print(f"{'profile':18s} {'arch':8s} {'cores':>5s} {'RAM':>9s} {'budget':>10s} "
          f"{'budget bytes':>14s} {'threads':>7s}  export")
    for prof in rows:
        print(f"{prof.name:18s} {prof.arch:8s} {prof.cores:5d} "
              f"{prof.ram_bytes / 2**30:5.1f} GiB {prof.default_budget_bytes / 2**20:6.0f} MiB "
              f"{prof.default_budget_bytes:14,d} {prof.threads:7d}  "
              f"{', '.join(prof.export_formats)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = parser.parse_args(argv)
        args.argv = argv
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args)
    except EdgeagError as e:
        print(f"edgeag: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgeag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
