"""Small user-facing fixes: ``edgeag --version`` (without importing torch), ``--set``
list values written as ``hidden=64,64`` (what a refusal suggests, so it pastes back
into a shell unquoted), and off-policy runs too short to make an update."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

import edgeag
from edgeag.algos.dqn.config import DQNConfig
from edgeag.algos.ppo.config import PPOConfig
from edgeag.algos.td3.config import TD3Config
from edgeag.cli import main
from edgeag.errors import EdgeagError, torch_available
from edgeag.memory import Floor, MiB
from edgeag.train.config import (
    coerce_setting,
    parse_set,
    resolve_config,
)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})


# --- edgeag --version ------------------------------------------------------------------

def test_version_prints_the_package_version_and_exits_0():
    out = subprocess.run([sys.executable, "-m", "edgeag.cli", "--version"], check=False,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"edgeag {edgeag.__version__}\n" and not out.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", edgeag.__version__)


VERSION_PROBE = """\
import sys
{preload}
from edgeag.cli import main
try:
    main(["--version"])
except SystemExit as e:
    print("exit", e.code)
print("torch loaded:", sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_version_imports_no_torch():
    out = _python(VERSION_PROBE.format(preload=""))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [f"edgeag {edgeag.__version__}", "exit 0", "torch loaded: []"], out.stdout


@pytest.mark.skipif(not torch_available(), reason="the control needs torch installed")
def test_version_probe_sees_torch_when_it_is_loaded():
    """The probe above can fail: with torch imported first, it reports it."""
    out = _python(VERSION_PROBE.format(preload="import torch"))
    assert out.returncode == 0, out.stderr
    assert "'torch'" in out.stdout.splitlines()[-1]


# --- --set hidden=64,64 ----------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("64,64", (64, 64)), ("64", (64,)), ("[64, 64]", (64, 64)), ("[64]", (64,)),
    (" 128 , 32 ", (128, 32)), ("256,256,", (256, 256)), ("64,32,16", (64, 32, 16)),
])
def test_hidden_accepts_comma_separated_integers_and_the_toml_list(text, expected):
    assert coerce_setting("hidden", text, "override") == expected
    for algo in ("ppo", "dqn", "td3"):
        cfg, _ = resolve_config(None, None, parse_set([f"hidden={text}"]), algo)
        assert cfg.hidden == expected


@pytest.mark.parametrize("text", ["64,x", "", "[64, x]", "64,,64", "6 4", ",64", "64.5,64",
                                  "(64, 64)", "64;64"])
def test_bad_hidden_names_the_value_and_what_is_accepted(text):
    with pytest.raises(EdgeagError) as e:
        resolve_config(None, None, parse_set([f"hidden={text}"]))
    assert str(e.value) == (f"override: invalid hidden {text!r}: expected a list of integers "
                            f"such as 64,64 or [64, 64]")


def test_hidden_of_non_positive_widths_is_refused_by_validate():
    for text in ("0", "64,0", "-1,64", "[]"):
        with pytest.raises(EdgeagError, match=r"invalid hidden .*: expected one or more "
                                              r"positive widths such as 64,64 or \[64, 64\]"):
            resolve_config(None, None, {"hidden": text})


@pytest.mark.parametrize("name,value,accepted", [
    ("num_steps", "abc", "an integer"), ("num_steps", "2.5", "an integer"),
    ("lr", "fast", "a number"), ("norm_obs", "3", "true or false"),
    ("norm_obs", "yes", "true or false"),
])
def test_other_fields_say_what_they_accept_in_words(name, value, accepted):
    with pytest.raises(EdgeagError) as e:
        resolve_config(None, None, {name: value})
    assert re.fullmatch(rf"override: invalid {name} .*: expected {accepted}", str(e.value))
    with pytest.raises(EdgeagError, match=r"invalid env_id 3: expected a string$"):
        coerce_setting("env_id", 3, "preset x")


# --- the refusal's suggestions paste back ----------------------------------------------

FLOOR = 25 * MiB
"""A fixed floor, so that the refusal and the pasted-back run plan on the same one."""


def _suggestions(error_line: str) -> list[list[str]]:
    """The alternatives of a refusal's "largest settings that fit: A; or B", each as the
    flags it names (``--set NAME=VALUE`` and ``--optimizer NAME``)."""
    alternatives = error_line.split("largest settings that fit: ", 1)[1].split("; or ")
    out = []
    for alternative in alternatives:
        flags = re.findall(r"--(?:set|optimizer) \S+", alternative)
        assert flags, alternative
        text = " ".join(flags)
        # as pasted into a shell, unquoted: the words are the flags, nothing to quote
        assert shlex.split(text) == text.split() and re.fullmatch(r"[\w =,.-]+", text), text
        out.append(shlex.split(text))
    return out


@pytest.mark.parametrize("args,expected", [
    (["--set", "hidden=2048,2048"], ["hidden"]),
    (["--set", "hidden=400,400", "--set", "num_steps=8192"], ["num_steps", "hidden"]),
    (["--algo", "dqn", "--set", "buffer_size=200000", "--set", "hidden=512,512"],
     ["buffer_size", "hidden"]),
    (["--algo", "td3", "--set", "hidden=512,512"], ["hidden"]),
])
def test_what_fits_suggestions_paste_back_and_fit(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("edgeag.train.run.measure_floor", lambda: Floor(FLOOR + 20 * MiB, FLOOR,
                                                                         20 * MiB))
    monkeypatch.chdir(tmp_path)
    budget = str(FLOOR + 16 * MiB)
    base = ["train", "--dry-run", "--no-progress", "--budget", budget, *args]
    assert main(base) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("edgeag: error: plan ") and "exceeds the budget" in error
    alternatives = _suggestions(error)
    assert [re.match(r"(\w+)=", a[1]).group(1) for a in alternatives] == expected, error
    assert "--set hidden=" in error and "hidden=[" not in error
    for flags in alternatives:
        assert main([*base, *flags]) == 0, capsys.readouterr().err
        assert "dry run: plan fits" in "".join(capsys.readouterr())
    # the width named is the largest that fits
    width = int(re.search(r"--set hidden=(\d+)(?:,\1)*(?:\s|$)", error).group(1))
    depth = len(alternatives[-1][1].split("=")[1].split(","))
    assert main([*base, "--set", "hidden=" + ",".join([str(width + 1)] * depth)]) == 2
    assert "exceeds the budget" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_suggestion_pasted_into_a_real_shell_is_accepted(tmp_path):
    """A real refusal (real floor) and its hidden suggestion pasted verbatim into a bash
    command line. The pasted run gets 1 MiB more budget: the floor of a fresh process
    moves by a few KiB from one to the next (the exact fit is checked above)."""
    command = [sys.executable, "-m", "edgeag.cli", "train", "--dry-run", "--no-progress",
               "--set", "hidden=4096,4096"]
    out = subprocess.run([*command, "--budget", "100MB"], check=False, capture_output=True,
                         text=True, cwd=tmp_path, timeout=240)
    assert out.returncode == 2, out.stderr
    error = out.stderr.strip().splitlines()[-1]
    suggestion = re.search(r"--set hidden=\S+", error).group(0)
    assert suggestion == "--set hidden=" + ",".join([suggestion.split("=")[1].split(",")[0]] * 2)
    line = " ".join(shlex.quote(a) for a in command) + " --budget 101MB " + suggestion
    out = subprocess.run(["bash", "-c", line], check=False, capture_output=True, text=True,
                         cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "dry run: plan fits" in out.stdout + out.stderr
    assert not list(tmp_path.iterdir())


# --- off-policy runs that make no update -----------------------------------------------

@pytest.mark.parametrize("cls,changes,message", [
    (TD3Config, {"total_steps": 5000, "learning_starts": 25_000},
     (r"invalid total_steps 5000: expected more than learning_starts \(25000\), or the run "
      r"makes no update: raise --total-steps or lower --set learning_starts=N")),
    (TD3Config, {"total_steps": 500, "learning_starts": 500}, r"invalid total_steps 500: "),
    (DQNConfig, {"total_steps": 100, "learning_starts": 100},
     (r"invalid total_steps 100: expected at least learning_starts \+ train_frequency = 110, "
      r"or the run makes no update")),
    (DQNConfig, {"total_steps": 10_005, "learning_starts": 10_000}, r"= 10010, or the run"),
])
def test_offpolicy_run_with_no_update_is_refused(cls, changes, message):
    with pytest.raises(EdgeagError, match=message):
        cls(**changes).validate()


@pytest.mark.parametrize("cfg", [
    TD3Config(total_steps=501, learning_starts=500),
    DQNConfig(total_steps=110, learning_starts=100),   # one round of updates, at step 110
    DQNConfig(total_steps=10, learning_starts=0, train_frequency=10),
    DQNConfig(total_steps=3, learning_starts=0, train_frequency=1, num_envs=2,
              iteration_steps=2),                     # 3 steps: 2 vector steps, 4 env steps
])
def test_offpolicy_run_with_one_update_is_accepted(cfg):
    assert cfg.validate() is cfg


def test_ppo_has_no_learning_starts():
    assert PPOConfig(total_steps=1).validate().total_steps == 1
