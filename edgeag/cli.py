"""The ``edgeag`` command: argument parsing and exit codes only.

Exit codes: 0 success; 2 usage or input error (bad flag, budget, profile, env, file);
3 stopped to respect the memory budget (checkpoint saved); 4 an exported artifact
failed verification; 1 unexpected internal error (with a traceback).

Command bodies import what they need when they run, so ``edgeag --help`` and the
training path never import heavy modules they do not use.
"""

from __future__ import annotations

import argparse
import sys

from edgeag.errors import EdgeagError

EPILOG = """\
examples:
  edgeag train --profile rpi4 --budget 256MB
                                  PPO + AlphaGrad on CartPole-v1 inside 256 MiB
  edgeag train --env Pendulum-v1 --optimizer adam --profile rpi5 --out runs/pend
  edgeag train --resume runs/pend continue a stopped run from its checkpoint
  edgeag profiles                 list device profiles with their RAM and default budget
  edgeag profiles rpi4            show one profile
  edgeag profiles ./my-board.toml validate and show your own profile

exit codes: 0 ok, 2 bad input, 3 stopped at the memory budget (checkpoint saved),
4 export verification failed, 1 internal error
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise EdgeagError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgeag", description="Train small RL policies on the device itself, "
                     "inside a memory budget, with the stateless AlphaGrad optimizer.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("profiles", help="list device profiles, or show one",
                       description="List the shipped device profiles, or show one (by name or "
                       "path to a TOML file).")
    p.add_argument("profile", nargs="?", help="profile name (e.g. rpi4) or path to a .toml file")
    p.set_defaults(func=cmd_profiles)
    add_train_parser(sub)
    return parser


TRAIN_EPILOG = """\
The run is planned before it starts: the measured floor (Python + torch + gymnasium)
plus parameters, gradients, optimizer state, rollout buffer, activations and slack.
A plan above the budget is refused (exit 2) with the largest settings that fit.
While training, RSS is sampled 20 times a second; above the budget the run stops at
the next update with a checkpoint and summary.json (exit 3); --resume continues it.

hyperparameters: the preset for the env and optimizer (edgeag/train/presets/ppo.toml),
then --lr/--alpha/--momentum/--total-steps/--seed, then --set NAME=VALUE (any
PPOConfig field, e.g. --set num_steps=64 --set 'hidden=[128, 128]').

run directory (default runs/<env>-<algo>-<optimizer>-s<seed>-<time>):
  config.toml, metrics.jsonl, checkpoints/latest.pt, rss.csv, summary.json

examples:
  edgeag train --profile rpi4 --budget 256MB
  edgeag train --env Pendulum-v1 --profile rpi4 --out runs/pendulum
  edgeag train --optimizer torch-adam --profile rpi4 --budget 256MB --dry-run
  edgeag train --resume runs/pendulum --budget 512MB

exit codes: 0 done, 2 bad input or plan over budget, 3 stopped at the memory budget
(checkpoint saved), 130 interrupted with Ctrl-C (checkpoint saved), 1 internal error
"""


OPTIMIZER_HELP = ("alphagrad (default; stateless, updates inside backward), adam (lean, "
                  "no torch._dynamo import), torch-adam (torch.optim.Adam: +~70 MiB), sgd (lean; "
                  "--momentum), torch-adafactor (torch.optim.Adafactor: +~70 MiB), lion "
                  "(lion-pytorch package: +~70 MiB)")
"""Written out so `edgeag --help` does not import torch; a test checks it names exactly
`edgeag.optim.supported_optimizers()`."""


def add_train_parser(sub) -> None:
    from edgeag.train import ALGORITHMS

    p = sub.add_parser("train", help="train a policy inside a memory budget",
                       description="Train a policy with PPO on a Gymnasium environment, "
                       "planned and held inside a device's memory budget.",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1", help="Gymnasium env id (default CartPole-v1)")
    p.add_argument("--algo", default="ppo", help="algorithm: " + ", ".join(ALGORITHMS))
    p.add_argument("--optimizer", default="alphagrad", help=OPTIMIZER_HELP)
    p.add_argument("--lr", type=float, help="initial learning rate (default: the preset's)")
    p.add_argument("--alpha", type=float, help="AlphaGrad steepness (default: the preset's)")
    p.add_argument("--momentum", type=float, help="AlphaGrad/SGD momentum (default 0: stateless)")
    p.add_argument("--profile", help="device profile name or TOML path (sets threads and the "
                   "default budget); see `edgeag profiles`")
    p.add_argument("--budget", help="whole-process RSS budget, e.g. 256MB, 1GiB, 268435456 "
                   "(default: the profile's; none without a profile)")
    p.add_argument("--total-steps", type=int, metavar="N", help="environment steps to train")
    p.add_argument("--seed", type=int, help="random seed (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override any PPO setting (repeatable)")
    p.add_argument("--out", help="run directory (default runs/<env>-<algo>-<optimizer>-s<seed>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint "
                   "(accepts --total-steps, --profile, --budget, --threads, --hard-cap)")
    p.add_argument("--threads", type=int, help="torch threads (default: the profile's, at most "
                   "this machine's cores; 1 without a profile)")
    p.add_argument("--tensorboard", action="store_true", help="also log to <run>/tensorboard "
                   "(needs the tensorboard package; costs memory)")
    p.add_argument("--hard-cap", action="store_true", help="also set RLIMIT_DATA to the budget: "
                   "an allocation beyond it fails at once and the run stops at its last checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the floor and the memory plan, "
                   "then exit without training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from edgeag.train.launch import launch

    return launch(env=args.env, algo=args.algo, optimizer=args.optimizer,
                  overrides=_overrides(args), profile=args.profile, budget=args.budget,
                  out=args.out, resume=args.resume, threads=args.threads,
                  tensorboard=args.tensorboard, hard_cap=args.hard_cap, dry_run=args.dry_run,
                  progress=not args.no_progress)


def _overrides(args) -> dict:
    from edgeag.train.config import parse_set

    out = {name: value for name, value in (("lr", args.lr), ("alpha", args.alpha),
                                           ("momentum", args.momentum), ("seed", args.seed),
                                           ("total_steps", args.total_steps))
           if value is not None}
    out.update(parse_set(args.set))
    return out


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
        args = parser.parse_args(argv)
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
