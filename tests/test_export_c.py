"""`edgeag export --format c`: a C99 header of real trained PPO (discrete and continuous),
DQN, TD3 and SAC policies that compiles with warnings as errors, takes the numpy
reference's actions in a harness of the test's own, records its facts in policy.json,
and fails, or says it is not verified, the way the other formats do."""

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeag.cli import main
from edgeag.export.policy import load_run, record_observations

FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
COMPILER = shutil.which("gcc") or shutil.which("cc")
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="no C compiler (apt install gcc)")

RUNS = {  # name: (algo, env, steps, extra --set)
    "ppo_discrete": ("ppo", "CartPole-v1", 512, []),
    "ppo_continuous": ("ppo", "Pendulum-v1", 512, []),
    "dqn": ("dqn", "CartPole-v1", 300, ["learning_starts=200", "hidden=[32, 32]"]),
    "td3": ("td3", "Pendulum-v1", 300, ["learning_starts=200", "hidden=[32, 32]"]),
    "sac": ("sac", "Pendulum-v1", 300, ["learning_starts=200", "hidden=[32, 32]"]),
}


def _train(out: Path, algo: str, env: str, steps: int, sets: list[str]) -> Path:
    argv = ["train", "--algo", algo, "--env", env, "--total-steps", str(steps), "--out",
            str(out), "--no-progress", "--set", "eval_episodes=0"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The five tiny runs, each exported with ``--format c``."""
    out = {}
    for name, (algo, env, steps, sets) in RUNS.items():
        run = _train(tmp_path_factory.mktemp(name) / "run", algo, env, steps, sets)
        assert main(["export", str(run), "--format", "c", "--no-progress"]) == 0
        out[name] = run
    return out


def _observations(run: Path) -> tuple:
    trained = load_run(run)
    obs, _ = record_observations(trained.spec, trained.config["env_id"],
                                 env_kwargs=trained.config.get("env_kwargs"))
    return trained.spec, obs


OWN_HARNESS = r"""#include <stdio.h>
#include "policy.h"

int main(void)
{
    float obs[EDGEAG_OBS_DIM];
    int i;
#if EDGEAG_DISCRETE
    int action[EDGEAG_ACTION_DIM];
#else
    float action[EDGEAG_ACTION_DIM];
#endif
    for (;;) {
        for (i = 0; i < EDGEAG_OBS_DIM; ++i)
            if (scanf("%a", &obs[i]) != 1)
                return 0;
        edgeag_policy_act(obs, action);
        for (i = 0; i < EDGEAG_ACTION_DIM; ++i)
#if EDGEAG_DISCRETE
            printf("%d ", action[i]);
#else
            printf("%a ", (double)action[i]);
#endif
        printf("\n");
    }
}
"""


def _run_own_harness(header: Path, tmp: Path, obs: np.ndarray, discrete: bool,
                     *defines: str) -> np.ndarray:
    """The header's actions for ``obs``, through a harness that reads hex floats from
    stdin and prints the actions: compiled with `FLAGS`."""
    shutil.copyfile(header, tmp / "policy.h")
    (tmp / "main.c").write_text(OWN_HARNESS)
    proc = subprocess.run([COMPILER, *FLAGS, "-O2", *defines, "-o", "main", "main.c", "-lm"],
                          cwd=tmp, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = "\n".join(" ".join(float(v).hex() for v in row) for row in obs)
    out = subprocess.run([str(tmp / "main")], input=text, cwd=tmp, capture_output=True,
                         text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    if discrete:
        return np.array([int(r[0]) for r in rows], np.int64)
    return np.array([[float.fromhex(v) for v in r] for r in rows], np.float32)


@needs_compiler
@pytest.mark.parametrize("name", list(RUNS))
def test_export_writes_a_verified_header_and_records_its_facts(runs, name):
    out = runs[name] / "export"
    assert sorted(p.name for p in out.iterdir()) == ["policy.h", "policy.json"]
    meta = json.loads((out / "policy.json").read_text())
    art = meta["artifacts"]["policy.h"]
    spec = load_run(runs[name]).spec
    assert meta["algorithm"] == RUNS[name][0]
    assert art["format"] == "c" and art["precision"] == "fp32"
    assert art["api"] == ("void edgeag_policy_act(const float *obs, "
                          f"{'int' if spec.discrete else 'float'} *action)")
    constants = [spec.obs_mean, spec.obs_std] if spec.normalize else []
    constants += [a for layer in spec.layers for a in layer]
    if not spec.discrete:
        constants += [spec.action_low, spec.action_high]
    if spec.head == "tanh":
        constants += [spec.action_scale, spec.action_bias]
    assert art["flash_bytes"] == 4 * sum(np.asarray(c).size for c in constants)
    figures = art["verification"]
    assert figures["verified"] is True and figures["runtime"].startswith("C harness, ")
    seen = meta["training"]["steps"] + load_run(runs[name]).config["num_envs"]  # the first reset's too
    assert figures["observations"] == meta["verification"]["observations"]["count"] == min(seen, 1024)
    if spec.discrete:
        assert figures["batch_1"] == {"agreement": 1.0, "mismatches": 0}
    else:
        assert figures["batch_1"]["max_error_fraction_of_range"] <= 1e-4
    timing = figures["timing"]
    assert timing["calls"] >= figures["observations"] and timing["per_action_ns"] > 0


@needs_compiler
@pytest.mark.parametrize("name", list(RUNS))
def test_header_takes_the_references_actions_in_a_harness_of_our_own(runs, name, tmp_path):
    """Compiled with -std=c99 -Wall -Wextra -Werror -pedantic, on the verification
    observations: the same discrete actions, continuous ones within 1e-4 of the range;
    the same with the scratch arrays static."""
    spec, obs = _observations(runs[name])
    expected = spec.forward(obs)
    header = runs[name] / "export" / "policy.h"
    for defines in ([], ["-DEDGEAG_SCRATCH=static"]):
        actions = _run_own_harness(header, tmp_path, obs, spec.discrete, *defines)
        if spec.discrete:
            np.testing.assert_array_equal(actions, expected)
        else:
            span = (spec.action_high - spec.action_low).astype(np.float64)
            assert actions.shape == expected.shape
            assert np.max(np.abs(actions - expected) / span) <= 1e-4


@pytest.mark.parametrize("name", list(RUNS))
def test_header_includes_only_math_h_allocates_nothing_and_declares_its_sizes(runs, name):
    text = (runs[name] / "export" / "policy.h").read_text()
    spec = load_run(runs[name]).spec
    assert re.findall(r"#\s*include\s*\S+", text) == ["#include <math.h>"]
    assert not re.search(r"\b(malloc|calloc|realloc|free|alloca)\b", text)
    assert f"#define EDGEAG_OBS_DIM {spec.obs_dim}\n" in text
    assert f"#define EDGEAG_ACTION_DIM {1 if spec.discrete else spec.sizes[-1]}\n" in text
    assert f"#define EDGEAG_DISCRETE {int(spec.discrete)}\n" in text
    assert ("#define EDGEAG_NUM_ACTIONS" in text) == spec.discrete


@pytest.mark.parametrize("name", ["ppo_discrete", "td3"])
def test_the_headers_numbers_read_back_as_the_policys_float32_arrays(runs, name):
    text = (runs[name] / "export" / "policy.h").read_text()
    spec = load_run(runs[name]).spec
    arrays = {f"edgeag_layer{i}_{part}": a for i, layer in enumerate(spec.layers)
              for part, a in zip(("weight", "bias"), layer)}
    if spec.normalize:
        arrays.update(edgeag_obs_mean=spec.obs_mean, edgeag_obs_std=spec.obs_std)
    for name_, values in arrays.items():
        body = re.search(rf"static const float {name_}\[[^\]]+\] EDGEAG_CONST_ATTRIBUTE = "
                         r"\{(.*?)\};", text, re.S)
        numbers = np.array([np.float32(v.strip().rstrip("f")) for v in body.group(1).split(",")])
        np.testing.assert_array_equal(numbers, np.asarray(values, np.float32).ravel())


@needs_compiler
@pytest.mark.skipif(shutil.which("nm") is None, reason="no nm (apt install binutils)")
def test_flash_bytes_are_the_sizes_of_the_compiled_constants(runs, tmp_path):
    """The object file's ``edgeag_*`` read-only symbols (at -O0, where none is folded
    away) add up to the flash size policy.json records."""
    for name in ("ppo_discrete", "sac"):
        shutil.copyfile(runs[name] / "export" / "policy.h", tmp_path / "policy.h")
        (tmp_path / "use.c").write_text(
            '#include "policy.h"\nvoid use(const float *obs, void *action);\n'
            "void use(const float *obs, void *action) { edgeag_policy_act(obs, action); }\n")
        subprocess.run([COMPILER, *FLAGS, "-O0", "-c", "use.c"], cwd=tmp_path, check=True)
        symbols = subprocess.run(["nm", "-S", "use.o"], cwd=tmp_path, capture_output=True,
                                 text=True, check=True).stdout.splitlines()
        rows = [s.split() for s in symbols]
        sizes = [int(r[1], 16) for r in rows
                 if len(r) == 4 and r[2] in "rR" and r[3].startswith("edgeag_")]
        meta = json.loads((runs[name] / "export" / "policy.json").read_text())
        assert sum(sizes) == meta["artifacts"]["policy.h"]["flash_bytes"]


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                    reason="no arm-none-eabi-gcc (apt install gcc-arm-none-eabi)")
@pytest.mark.parametrize("cpu", [
    ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],  # Teensy 3.6
    ["-mcpu=cortex-m0plus", "-mthumb"],  # RP2040 (Pi Pico), no FPU
])
def test_header_compiles_for_cortex_m_without_double_arithmetic(runs, tmp_path, cpu):
    """For a microcontroller with a single-precision FPU (or none), no float is promoted
    to double (-Wdouble-promotion); the object is the constants plus under 1 KB of code,
    and EDGEAG_CONST_ATTRIBUTE puts every constant in the section it names."""
    progmem = "-DEDGEAG_CONST_ATTRIBUTE=__attribute__((section(\".progmem\")))"
    for name in ("ppo_discrete", "td3"):
        shutil.copyfile(runs[name] / "export" / "policy.h", tmp_path / "policy.h")
        (tmp_path / "use.c").write_text(
            '#include "policy.h"\nvoid use(const float *obs, void *action);\n'
            "void use(const float *obs, void *action) { edgeag_policy_act(obs, action); }\n")
        flash = json.loads((runs[name] / "export" / "policy.json").read_text())[
            "artifacts"]["policy.h"]["flash_bytes"]
        for defines in ([], [progmem]):
            subprocess.run(["arm-none-eabi-gcc", *cpu, *FLAGS, "-Wdouble-promotion",
                            "-Wconversion", "-Wshadow", "-Os", *defines, "-c", "use.c"],
                           cwd=tmp_path, check=True)
            sections = dict(
                line.split()[:2] for line in subprocess.run(
                    ["arm-none-eabi-size", "-A", "use.o"], cwd=tmp_path, capture_output=True,
                    text=True, check=True).stdout.splitlines() if line.startswith("."))
            constants = int(sections[".progmem" if defines else ".rodata"])
            # -Os may fold a one-element array (a 1-d action's bounds) into the code
            assert flash - 64 <= constants <= flash and int(sections[".text"]) < 1024
            assert int(sections.get(".rodata", 0)) == (0 if defines else constants)
            assert int(sections.get(".data", 0)) == int(sections.get(".bss", 0)) == 0


# --- a wrong header fails; no compiler is said; int8 is refused ----------------------------

def _drop_normalisation(spec):
    return dataclasses.replace(spec, obs_mean=None, obs_std=None)


def _shift_last_bias(spec):
    weight, bias = spec.layers[-1]
    return dataclasses.replace(spec, layers=(*spec.layers[:-1], (weight, bias + 0.5)))


@needs_compiler
@pytest.mark.parametrize("name,wrong,message", [
    ("ppo_discrete", _drop_normalisation,
     r"policy.h failed verification \(batch_1\): same action on \d+\.\d+% of 520 "
     r"observations, needs 99.9%; worst mismatch: observation #\d+ \[.*\] gave action \d, "
     r"the reference \d \(logit margin .*\)$"),
    ("td3", _shift_last_bias,
     r"policy.h failed verification \(batch_1\): action error up to .* of the action range, "
     r"tolerance 0.0001; worst mismatch: observation #\d+"),
])
def test_a_header_unlike_the_reference_fails_with_exit_4_and_removes_the_export(
        runs, tmp_path, monkeypatch, capsys, name, wrong, message):
    import edgeag.export.c_source as c_source

    out = tmp_path / "export"
    shutil.copytree(runs[name] / "export", out)  # a previous, valid export in the same place
    real = c_source.header
    monkeypatch.setattr(c_source, "header", lambda spec: real(wrong(spec)))
    code = main(["export", str(runs[name]), "--format", "c", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert err[-1].startswith("edgeag: error: ") and re.search(message, err[-1]), err
    assert "Traceback" not in "\n".join(err)
    assert list(out.iterdir()) == []


@needs_compiler
def test_a_header_that_does_not_compile_fails_with_exit_4(runs, tmp_path, monkeypatch, capsys):
    import edgeag.export.c_source as c_source

    real = c_source.header
    monkeypatch.setattr(c_source, "header",
                        lambda spec: real(spec) + "static void never_called(void) {}\n")
    out = tmp_path / "export"
    code = main(["export", str(runs["dqn"]), "--format", "c", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert re.fullmatch(r"edgeag: error: policy.h failed verification: \S+ -std=c99 .*-Werror.* "
                        r"refused it: .*error: .*", err[-1]), err
    assert list(out.iterdir()) == []


def test_without_a_c_compiler_the_header_is_written_and_marked_not_verified(
        runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "export"
    assert main(["export", str(runs["td3"]), "--format", "c", "--out", str(out),
                 "--no-progress"]) == 0
    streams = capsys.readouterr()
    assert "policy.h" in streams.err and "NOT verified: no C compiler (apt install gcc)" in streams.err
    assert sorted(p.name for p in out.iterdir()) == ["policy.h", "policy.json"]
    assert (out / "policy.h").read_bytes() == (runs["td3"] / "export" / "policy.h").read_bytes()
    art = json.loads((out / "policy.json").read_text())["artifacts"]["policy.h"]
    assert art["verification"] == {"verified": False, "reason": "no C compiler (apt install gcc)",
                                   "runtime": "not verified: no C compiler (apt install gcc)"}
    assert art["flash_bytes"] > 0


def test_quantize_int8_with_only_c_is_refused_with_exit_2_and_writes_nothing(runs, tmp_path,
                                                                             capsys):
    out = tmp_path / "export"
    code = main(["export", str(runs["ppo_discrete"]), "--format", "c", "--quantize", "int8",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["edgeag: error: --quantize int8 has nothing to quantize: --format c has no "
                   "int8 variant (docs/export.md); export without --quantize"]
    assert not out.exists()


@needs_compiler
def test_c_beside_an_int8_onnx_is_written_as_float(runs, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "export"
    assert main(["export", str(runs["ppo_discrete"]), "--format", "onnx,c", "--quantize", "int8",
                 "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "policy.json").read_text())
    assert list(meta["artifacts"]) == ["policy.onnx", "policy.int8.onnx", "policy.h"]
    assert meta["artifacts"]["policy.h"]["precision"] == "fp32"
