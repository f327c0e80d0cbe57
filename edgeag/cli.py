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
    return parser


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
