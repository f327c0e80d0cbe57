"""The search space of a study: which config fields a trial chooses, and from what.

``--space`` names fields of the algorithm's config (`edgeag.train.config`), each
with a default range (`DEFAULT_RANGES`) or an explicit one:

    alpha                 the default range of alpha (log-uniform 0.5..128)
    alpha=1:64:log        log-uniform between 1 and 64
    gamma=0.9:0.999       uniform
    update_epochs=2:20    integers (the field is an integer)
    momentum=0,0.9        one of these values (categorical)
    alpha_scale=none,sqrt_numel   one of these words (a setting whose value is a word)

Entries are separated by commas; a value after a categorical entry belongs to it
(``momentum=0,0.9,alpha`` is momentum in {0, 0.9}, then alpha). This module imports
no optuna: `Param.suggest` receives the trial.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from edgeag.errors import EdgeagError

SPACE_SYNTAX = ("NAME, NAME=LOW:HIGH[:log] or NAME=V1,V2,... separated by commas, e.g. "
                "alpha,lr=1e-4:3e-3:log,momentum=0,0.9")

RESERVED = ("env_id", "optimizer", "total_steps")
"""Fields the study sets itself (--env, --optimizer, --total-steps)."""
SEED = "seed"
"""The one field a space may list that is no setting: ``seed=101,102,...`` with
``--sampler grid`` makes each trial one seed's run (instead of ``--seeds`` runs), so an
interrupted study repeats at most one run, and workers split the seeds between them."""


@dataclass(frozen=True)
class Param:
    """One tuned field: a range (``low``..``high``, log-uniform when ``log``) or a
    list of ``choices``."""

    name: str
    kind: str
    """``float``, ``int``, ``bool``, ``str`` (the field's type; ``str`` only as choices)."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def suggest(self, trial):
        """This parameter's value for an Optuna ``trial``."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.name}={','.join(format_value(c) for c in self.choices)}"
        return (f"{self.name}={format_value(self.low)}:{format_value(self.high)}"
                + (":log" if self.log else ""))


DEFAULT_RANGES: dict[str, tuple] = {
    "alpha": (0.5, 128.0, True),
    "lr": (1e-5, 1e-2, True),
    "momentum": (0.0, 0.95, False),
    "eps": (1e-8, 1e-4, True),
    "ent_coef": (0.0, 0.05, False),
    "vf_coef": (0.1, 1.0, False),
    "gamma": (0.9, 0.9999, False),
    "gae_lambda": (0.8, 1.0, False),
    "clip_coef": (0.1, 0.4, False),
    "max_grad_norm": (0.1, 5.0, True),
    "update_epochs": (1, 20, False),
    "num_steps": (16, 512, True),
    "batch_size": (32, 512, True),
    "tau": (0.001, 1.0, True),
    "exploration_fraction": (0.05, 0.5, False),
    "exploration_final_eps": (0.01, 0.1, False),
    "policy_noise": (0.0, 0.5, False),
    "exploration_noise": (0.0, 0.5, False),
    "train_frequency": (1, 16, True),
    "target_update_interval": (100, 5000, True),
}
"""Range of each field ``--space`` may name without one: (low, high, log)."""


def format_value(value) -> str:
    """A value as ``--set`` reads it back (TOML scalars)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _fields(algo: str) -> dict:
    from edgeag.train.config import config_class

    # env_kwargs (a table of the env's own arguments) is part of the env, not a setting to tune
    return {f.name: f for f in dataclasses.fields(config_class(algo)) if f.name != "env_kwargs"}


def _kind(name: str, fields: dict, algo: str) -> str:
    if name in RESERVED:
        raise EdgeagError(f"invalid --space entry {name!r}: {name} is set by the study itself "
                          "(--env, --optimizer, --total-steps)")
    if name not in fields:
        raise EdgeagError(f"invalid --space entry {name!r}: not a setting of {algo} "
                          f"(accepted: {', '.join(n for n in fields if n not in (*RESERVED, SEED))}"
                          f"; and {SEED}=V1,V2,... with --sampler grid)")
    default = fields[name].default
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(default, types):
            return kind
    raise EdgeagError(f"invalid --space entry {name!r}: only number, true/false and word "
                      f"settings can be tuned ({name} is {type(default).__name__}; set it "
                      "with --set)")


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.+-]*")


def _number(text: str, kind: str, entry: str):
    from edgeag.io import tomllib

    if kind == "str":
        if not _WORD.fullmatch(text.strip()):
            raise EdgeagError(f"invalid --space entry {entry!r}: {text.strip()!r} is not a "
                              "word such as sqrt_numel")
        return text.strip()
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = None
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(v)}[kind](value)
    if not ok:
        expected = {"bool": "true or false", "int": "an integer", "float": "a number"}[kind]
        raise EdgeagError(f"invalid --space entry {entry!r}: {text.strip()!r} is not {expected}")
    return float(value) if kind == "float" else value


def _is_value(token: str) -> bool:
    """A bare token that continues a categorical list (a number or true/false), as
    opposed to a field name starting the next entry."""
    from edgeag.io import tomllib

    try:
        return not isinstance(tomllib.loads(f"v = {token.strip()}")["v"], (str, list, dict))
    except tomllib.TOMLDecodeError:
        return False


def parse_space(texts: list[str], algo: str = "ppo") -> list[Param]:
    """``--space`` (each given text, split at commas) as parameters of ``algo``'s config;
    EdgeagError naming the entry and what is accepted."""
    tokens = [t.strip() for text in texts for t in text.split(",")]
    if not any(tokens):
        raise EdgeagError(f"invalid --space {','.join(texts)!r}: expected {SPACE_SYNTAX}")
    fields = _fields(algo)

    def continues(token: str, entry: list[str]) -> bool:
        """A bare token after ``NAME=V1`` is one more value of NAME: a number or
        true/false, or, for a word setting, any token that names no setting."""
        name, eq, spec = entry[0].partition("=")
        if "=" in token or not eq or ":" in spec:
            return False
        word = name.strip() in fields and isinstance(fields[name.strip()].default, str)
        return (token not in fields) if word else _is_value(token)

    entries: list[list[str]] = []
    for token in tokens:
        if not token:
            raise EdgeagError(f"invalid --space {','.join(texts)!r}: an empty entry "
                              f"(expected {SPACE_SYNTAX})")
        if entries and continues(token, entries[-1]):
            entries[-1].append(token)
        else:
            entries.append([token])
    params = []
    for entry in entries:
        text = ",".join(entry)
        name, eq, spec = (s.strip() for s in text.partition("="))
        kind = _kind(name, fields, algo)
        if name == SEED and (not eq or ":" in spec):
            raise EdgeagError(f"invalid --space entry {text!r}: seeds are listed, e.g. "
                              "seed=101,102,103 (with --sampler grid)")
        if any(p.name == name for p in params):
            raise EdgeagError(f"invalid --space: {name} is listed twice")
        if not eq:
            if kind == "str":
                raise EdgeagError(f"invalid --space entry {name!r}: list the values of "
                                  f"{name}, e.g. {name}=V1,V2")
            if kind == "bool":
                params.append(Param(name, kind, choices=(False, True)))
                continue
            if name not in DEFAULT_RANGES:
                raise EdgeagError(f"invalid --space entry {name!r}: no default range for "
                                  f"{name}; give one, e.g. {name}=LOW:HIGH or {name}=V1,V2 "
                                  f"(names with a default range: {', '.join(DEFAULT_RANGES)})")
            low, high, log = DEFAULT_RANGES[name]
            params.append(Param(name, kind, low=float(low) if kind == "float" else int(low),
                                high=float(high) if kind == "float" else int(high), log=log))
            continue
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip() != "log") \
                    or kind in ("bool", "str"):
                raise EdgeagError(f"invalid --space entry {text!r}: expected "
                                  f"{name}=LOW:HIGH or {name}=LOW:HIGH:log"
                                  + (f" ({name} is true/false: {name}=false,true)"
                                     if kind == "bool" else "")
                                  + (f" ({name} is a word: {name}=V1,V2)"
                                     if kind == "str" else ""))
            low, high = (_number(p, kind, text) for p in parts[:2])
            log = len(parts) == 3
            if not low < high:
                raise EdgeagError(f"invalid --space entry {text!r}: LOW must be below HIGH")
            if log and low <= 0:
                raise EdgeagError(f"invalid --space entry {text!r}: a log range needs "
                                  "LOW > 0")
            params.append(Param(name, kind, low=low, high=high, log=log))
            continue
        choices = tuple(_number(v, kind, text) for v in spec.split(","))
        if len(set(choices)) != len(choices):
            raise EdgeagError(f"invalid --space entry {text!r}: a value is listed twice")
        params.append(Param(name, kind, choices=choices))
    return params


def check_values(params: list[Param], resolve) -> None:
    """Resolve a config at each parameter's bounds (or choices) with the others at
    their first, so a range no trial could run (alpha=-1:4) is refused before the
    study starts. ``resolve(overrides)`` raises EdgeagError for a bad setting."""
    def corners(p: Param):
        return list(p.choices) if p.choices is not None else [p.low, p.high]

    base = {p.name: corners(p)[0] for p in params}
    for p in params:
        for value in corners(p):
            try:
                resolve({**base, p.name: value})
            except EdgeagError as e:
                raise EdgeagError(f"invalid --space entry {p.describe()!r}: {p.name}="
                                  f"{format_value(value)} is refused ({e})") from None


def grid(params: list[Param]) -> dict:
    """The GridSampler search space: every parameter must list its values."""
    ranges = [p.name for p in params if p.choices is None]
    if ranges:
        raise EdgeagError(f"--sampler grid needs a list of values for every parameter, e.g. "
                          f"alpha=1,4,16 (a range: {', '.join(ranges)})")
    return {p.name: list(p.choices) for p in params}
