"""The manual shows only what exists: every ``edgeag <command> --flag`` in README.md,
docs/**/*.md and the ``--help`` epilogs is a real command of `edgeag.cli.build_parser`
with flags its parser has, and every ``make <target>`` is a target of the Makefile.

Commands are read from fenced and indented code blocks and from inline code spans.
Placeholders in capitals (``edgeag COMMAND --help``) stand for any command. Nothing is
run: the parser is only built."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from edgeag.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^ *(```|~~~)[^\n]*\n(.*?)^ *\1 *$", re.M | re.S)
INDENTED = re.compile(r"(?:^(?: {4}|\t)[^\n]*\n?)+", re.M)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
COMMAND = re.compile(r"(?:^|(?<=[\s/$(|;&]))edgeag[ \t]+([A-Za-z][\w-]*:?|--?[\w-]+)")
AT_COMMAND = re.compile(r"(?:^\s*|[;&|(]\s*|\$\s+|\b(?:sudo|exec|time(?:\s+-\w+)*)\s+|\b\w+=\S*\s+|/)$")
"""Where a command starts: a line's start (after a prompt ``$``, ``VAR=value`` settings,
``sudo``, ``time -v`` or a directory: ``.venv/bin/edgeag``), or after ``;``, ``&&``,
``|``, ``$(``. Elsewhere ``edgeag`` is a word of prose or output ("from edgeag import",
"a readable edgeag checkpoint")."""
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
MAKE = re.compile(r"(?:^|(?<=[\s$(]))make[ \t]+([a-z][\w-]*)")


def code_texts(markdown: str) -> list[str]:
    """The code of a Markdown page: its code blocks, then its inline code spans (from
    the text outside the blocks); a span's line breaks become spaces."""
    blocks = [m.group(2) for m in FENCE.finditer(markdown)]
    prose = FENCE.sub("", markdown)
    # an indented block follows a blank line; list items' continuation lines do not
    blocks += [m.group(0) for m in INDENTED.finditer(prose)
               if prose[:m.start()].endswith("\n\n") or m.start() == 0]
    spans = [m.group(1).replace("\n", " ") for m in INLINE.finditer(prose)]
    return blocks + spans


def _logical_lines(code: str) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined."""
    return code.replace("\\\n", " ").splitlines()


def commands(code: str) -> list[tuple[str, list[str]]]:
    """Each ``edgeag`` invocation in ``code`` as (command, flags): the first word after
    ``edgeag`` (or a top-level ``--flag``), and every ``--flag`` up to the end of the
    line, a shell comment, a pipe or the next command."""
    found = []
    for line in _logical_lines(code):
        for m in COMMAND.finditer(line):
            word = m.group(1)
            if not AT_COMMAND.search(line[:m.start()]):
                continue
            if word.endswith(":"):  # output such as "edgeag: error: ..." or "edgeag train: ppo ..."
                continue
            rest = line[m.end():] if not word.startswith("-") else line[m.start(1):]
            rest = re.split(r"\s#|\s\|\s|&&|;|\bedgeag\s", rest)[0]
            rest = rest.replace("\\|", " ")  # an escaped pipe inside a Markdown table cell
            found.append(("" if word.startswith("-") else word,
                          [f.split("=")[0] for f in FLAG.findall(rest)]))
    return found


def make_targets(code: str) -> list[str]:
    lines = [re.split(r"(?:^|\s)#", line)[0] for line in _logical_lines(code)]
    return [m.group(1) for line in lines for m in MAKE.finditer(line)]


def parsers() -> dict[str, argparse.ArgumentParser]:
    """The top-level parser ("edgeag") and each command's, from the real CLI."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"edgeag": parser, **subs.choices}


def cli_options() -> dict[str, set[str]]:
    """Option strings per command; "" is the top level (``edgeag --version``)."""
    return {"" if name == "edgeag" else name: set(p._option_string_actions)
            for name, p in parsers().items()}


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))


def problems(code_blocks: list[str], options: dict[str, set[str]], targets: set[str]) -> list[str]:
    """What the given code shows that the CLI or the Makefile does not have."""
    found = []
    for code in code_blocks:
        for command, flags in commands(code):
            if command and command.isupper():  # a placeholder: edgeag COMMAND --help
                known = set.intersection(*(v for k, v in options.items() if k))
            elif command in options:
                known = options[command]
            else:
                found.append(f"unknown command: edgeag {command}")
                continue
            for flag in flags:
                if flag not in known:
                    found.append(f"edgeag {command} has no flag {flag}".replace("  ", " "))
        for target in make_targets(code):
            if target not in targets:
                found.append(f"the Makefile has no target: make {target}")
    return found


def epilog_codes() -> list[str]:
    """The --help epilogs, read as code: their examples start lines."""
    return [p.epilog or "" for p in parsers().values()]


@pytest.fixture(scope="module")
def cli():
    return cli_options(), makefile_targets()


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_page_shows_only_commands_and_flags_the_cli_has(page, cli):
    options, targets = cli
    assert problems(code_texts(page.read_text()), options, targets) == []


def test_the_help_epilogs_show_only_commands_and_flags_the_cli_has(cli):
    options, targets = cli
    codes = epilog_codes()
    assert sum(len(commands(c)) for c in codes) >= 20
    assert problems(codes, options, targets) == []


def test_every_epilog_has_examples_exit_codes_and_its_page():
    for name, parser in parsers().items():
        epilog = parser.epilog or ""
        assert "examples:\n  edgeag " in epilog or "examples:\n  PYTHONPATH" in epilog, name
        assert re.search(r"^exit codes: 0 ", epilog, re.M), name
        pages = re.findall(r"^Docs: (docs/\S+\.md)$", epilog, re.M)
        assert len(pages) == 1 and epilog.rstrip().endswith(pages[0]), f"{name}: {epilog!r}"
        assert (ROOT / pages[0]).is_file(), pages[0]


def test_the_readme_links_resolve_in_the_repository():
    """README.md is read on the repository's web page, outside the site: its relative
    links must name files there (docs/*.md)."""
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link)]
    assert len(local) > 20
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_the_pages_do_show_commands():
    """The checker reads what it should: the manual is full of commands."""
    shown = [c for page in DOCS for code in code_texts(page.read_text()) for c in commands(code)]
    assert len(shown) > 100
    assert {c for c, _ in shown} >= {"train", "eval", "export", "run", "compare", "report",
                                     "tune", "profiles"}


def test_the_checker_catches_a_fake_flag_command_and_target(cli):
    options, targets = cli
    page = """
Some prose with `edgeag train --budget 256MB` and `make demo`.

```sh
edgeag train --profile rpi4 --no-such-flag 3
$ edgeag tune --space alpha \\
    --trials 2 --budgett 256MB   # a typo on the continued line
PYTHONPATH=x edgeag teleport --now
make deploy
```

    edgeag export runs/x --format onnx --sign
"""
    found = problems(code_texts(page), options, targets)
    assert found == ["edgeag train has no flag --no-such-flag", "edgeag tune has no flag --budgett",
                     "unknown command: edgeag teleport", "the Makefile has no target: make deploy",
                     "edgeag export has no flag --sign"], found


def test_the_checker_ignores_output_placeholders_and_comments(cli):
    options, targets = cli
    page = """
```
$ edgeag train --resume runs/r2 --budget 256MB
edgeag train: ppo on CartPole-v1 (resumed from runs/r2) --whatever
edgeag: error: --engine torch needs torch
```

`edgeag COMMAND --help`, `edgeag eval RUN [--checkpoint latest\\|best]`,
`edgeag --version`, `edgeag.PPO("CartPole-v1")`, `pip install 'edgeag[onnx]'`.

```sh
edgeag profiles    # --not-a-flag: only a comment
```
"""
    assert problems(code_texts(page), options, targets) == []
    assert commands("edgeag --version") == [("", ["--version"])]
