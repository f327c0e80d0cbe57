"""Every bad input, through the real command in a fresh process: exit 2, one line
``edgeag: error: ...`` naming the bad value (checked by a pattern per case), no
traceback, and nothing written: the working directory stays empty and every file of
the fixtures stays as it was."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgeag.train import checkpoint
from edgeag.train.rundir import RunDir

TOY = "toy_envs:edgeag-test/"
"""Envs of tests/toy_envs.py, found as a user's own module is (``--env module:EnvId``)."""
ENV_IDS = (r"\(accepted: a registered Gymnasium id such as CartPole-v1, or module:EnvId with "
           r"the module on PYTHONPATH\)$")
OBS = r"ppo accepts a flat 1-D Box \(a vector of numbers\)"
PPO_ACTIONS = r"ppo accepts Discrete\(n\) starting at 0, or a bounded 1-D Box \(finite low and high\)"

CASES = [
    # (id, arguments, pattern the error line must match); {w} is the fixtures' directory
    # --- train: budget, counts, numbers
    ("train-budget-empty", ["train", "--budget="], r"invalid budget ''"),
    ("train-budget-unit", ["train", "--budget", "12XB"], r"invalid budget '12XB'"),
    ("train-budget-negative", ["train", "--budget=-5MB"], r"invalid budget '-5MB'"),
    ("train-budget-zero", ["train", "--budget", "0"], r"invalid budget '0'"),
    ("train-budget-below-plan", ["train", "--budget", "8MB"], r"plan .* exceeds the budget 8\.0 MiB"),
    ("train-total-steps-zero", ["train", "--total-steps", "0"], r"invalid total_steps 0"),
    ("train-total-steps-negative", ["train", "--total-steps", "-100"], r"invalid total_steps -100"),
    ("train-total-steps-text", ["train", "--total-steps", "many"], r"--total-steps.*'many'"),
    ("train-seed-negative", ["train", "--seed", "-1"], r"invalid seed -1"),
    ("train-threads-zero", ["train", "--threads", "0"], r"invalid --threads 0"),
    ("train-lr-negative", ["train", "--lr", "-1"], r"invalid lr -1"),
    ("train-lr-nan", ["train", "--lr", "nan"], r"invalid lr nan"),
    ("train-alpha-zero", ["train", "--alpha", "0"], r"invalid alpha 0"),
    ("train-alpha-scale", ["train", "--set", "alpha_scale=rms"],
     r"invalid alpha_scale 'rms': expected none or sqrt_numel"),
    ("train-momentum-one", ["train", "--momentum", "1.5"], r"invalid momentum 1.5"),
    # --- train: names
    ("train-algo", ["train", "--algo", "a2c"], r"unknown algo 'a2c'.*ppo"),
    ("train-optimizer", ["train", "--optimizer", "adamw"], r"unknown optimizer 'adamw'.*alphagrad"),
    ("train-env", ["train", "--env", "NoSuchEnv-v0"], r"NoSuchEnv-v0"),
    ("train-env-module", ["train", "--env", "no_such_module:Thing-v0"],
     rf"unknown env 'no_such_module:Thing-v0': no module 'no_such_module' on PYTHONPATH {ENV_IDS}"),
    ("train-env-module-unregistered", ["train", "--env", "toy_envs:Thing-v0"],
     rf"unknown env 'toy_envs:Thing-v0': module toy_envs registers no env Thing-v0 "
     rf"\(it registers edgeag-test/ConstantReward-v0, .*\) {ENV_IDS}"),
    ("train-env-module-registers-none", ["train", "--env", "json:Thing-v0"],
     r"module json registers no env Thing-v0 \(a module registers its envs by calling "
     r"gymnasium.register when imported\)"),
    ("train-env-two-colons", ["train", "--env", "a:b:c"], r"invalid env 'a:b:c': expected a "
     r"registered Gymnasium id such as CartPole-v1, or module:EnvId with the module on PYTHONPATH$"),
    ("train-env-no-module", ["train", "--env", ":CartPole-v1"], r"invalid env ':CartPole-v1'"),
    ("train-dqn-continuous", ["train", "--algo", "dqn", "--env", "Pendulum-v1"], r"Pendulum-v1.*Discrete"),
    # --- train: spaces edgeag does not train on (tests/toy_envs.py), each naming what it accepts
    ("train-obs-dict", ["train", "--env", f"{TOY}DictObservation-v0"],
     rf"observation space Dict\('mode': Discrete\(3\), 'speed': Box\(.*\)\): {OBS}; "
     r"gymnasium.wrappers.FlattenObservation turns it into one$"),
    ("train-obs-tuple", ["train", "--env", f"{TOY}TupleObservation-v0"],
     rf"observation space Tuple\(Box\(.*\), Discrete\(3\)\): {OBS}; gymnasium.wrappers.Flatten"),
    ("train-obs-image", ["train", "--env", f"{TOY}ImageObservation-v0"],
     rf"observation space Box\(0, 255, \(84, 84, 3\), uint8\): {OBS}; this one is 3-D "
     r"\(edgeag's policies are MLPs, with no convolutional network for images\)"),
    ("train-obs-image-dqn", ["train", "--algo", "dqn", "--env", f"{TOY}ImageObservation-v0"],
     r"observation space Box\(0, 255, \(84, 84, 3\), uint8\): dqn accepts a flat 1-D Box"),
    ("train-action-multidiscrete", ["train", "--env", f"{TOY}MultiDiscreteAction-v0"],
     rf"action space MultiDiscrete\(\[3 2\]\): {PPO_ACTIONS}; one action per combination "
     r"would be Discrete\(6\)$"),
    ("train-action-multibinary", ["train", "--env", f"{TOY}MultiBinaryAction-v0"],
     rf"action space MultiBinary\(3\): {PPO_ACTIONS}; one action per combination would be "
     r"Discrete\(8\)$"),
    ("train-action-multibinary-dqn", ["train", "--algo", "dqn", "--env", f"{TOY}MultiBinaryAction-v0"],
     r"action space MultiBinary\(3\): dqn accepts Discrete\(n\) starting at 0; one action per "
     r"combination would be Discrete\(8\)$"),
    ("train-action-tuple", ["train", "--env", f"{TOY}TupleAction-v0"],
     rf"action space Tuple\(Discrete\(2\), Discrete\(3\)\): {PPO_ACTIONS}$"),
    ("train-action-unbounded", ["train", "--env", f"{TOY}UnboundedAction-v0"],
     rf"action space Box\(-inf, inf, \(2,\), float32\): {PPO_ACTIONS}; this one is unbounded"),
    ("train-action-unbounded-td3", ["train", "--algo", "td3", "--env", f"{TOY}UnboundedAction-v0"],
     r"action space Box\(-inf, inf, \(2,\), float32\): td3 accepts a bounded 1-D Box \(finite "
     r"low and high\); this one is unbounded"),
    ("train-action-shifted-discrete", ["train", "--env", f"{TOY}ShiftedDiscreteAction-v0"],
     rf"action space Discrete\(3, start=-1\): {PPO_ACTIONS}; this one starts at -1$"),
    ("train-action-box-dqn", ["train", "--algo", "dqn", "--env", f"{TOY}IdentityBox-v0"],
     r"action space Box\(-1.0, 1.0, \(1,\), float32\): dqn accepts Discrete\(n\) starting at 0 "
     r"\(try --algo td3 or ppo\)$"),
    ("train-action-discrete-td3", ["train", "--algo", "td3", "--env", f"{TOY}Identity-v0"],
     r"action space Discrete\(4\): td3 accepts a bounded 1-D Box \(finite low and high\) "
     r"\(try --algo dqn or ppo\)$"),
    ("train-profile", ["train", "--profile", "rpi9"], r"rpi9"),
    ("train-profile-garbage", ["train", "--profile", "{w}/garbage.toml"], r"garbage\.toml"),
    ("train-hard-cap-no-budget", ["train", "--hard-cap"], r"--hard-cap needs a budget"),
    ("train-hard-cap-below-start", ["train", "--budget", "8MB", "--hard-cap"], r"8\.0 MiB"),
    ("train-shrink-ppo", ["train", "--shrink-buffer"], r"--shrink-buffer.*not ppo"),
    ("train-unknown-flag", ["train", "--fast"], r"unrecognized arguments: --fast"),
    # --- train: --set
    ("train-set-unknown", ["train", "--set", "learning_rate=1"], r"unknown setting 'learning_rate'"),
    ("train-set-no-equals", ["train", "--set", "num_steps"], r"invalid --set 'num_steps'"),
    ("train-set-bad-int", ["train", "--set", "num_steps=abc"], r"invalid num_steps 'abc'"),
    ("train-set-zero-width", ["train", "--set", "hidden=[0]"], r"invalid hidden"),
    ("train-set-empty-hidden", ["train", "--set", "hidden=[]"], r"invalid hidden"),
    ("train-set-float-for-int", ["train", "--set", "num_envs=2.5"], r"invalid num_envs 2\.5"),
    ("train-set-zero-envs", ["train", "--set", "num_envs=0"], r"invalid num_envs 0"),
    ("train-set-gamma", ["train", "--set", "gamma=2"], r"invalid gamma 2"),
    ("train-set-hidden-not-integers", ["train", "--set", "hidden=64,x"],
     r"invalid hidden '64,x': expected a list of integers such as 64,64 or \[64, 64\]$"),
    ("train-set-hidden-nothing", ["train", "--set", "hidden="],
     r"invalid hidden '': expected a list of integers such as 64,64 or \[64, 64\]$"),
    ("train-set-bool-word", ["train", "--set", "norm_obs=yes"],
     r"invalid norm_obs 'yes': expected true or false$"),
    # --- train: off-policy runs too short to make a single update
    ("train-td3-no-update", ["train", "--algo", "td3", "--total-steps", "5000"],
     (r"invalid total_steps 5000: expected more than learning_starts \(10000\), or the run "
      r"makes no update: raise --total-steps or lower --set learning_starts=N$")),
    ("train-dqn-no-update", ["train", "--algo", "dqn", "--total-steps", "100", "--set",
                             "learning_starts=100"],
     (r"invalid total_steps 100: expected at least learning_starts \+ train_frequency = 110, "
      r"or the run makes no update: raise --total-steps or lower --set learning_starts=N$")),
    # --- train: --out
    ("train-out-is-file", ["train", "--out", "{w}/a-file"], r"a-file.*not a directory"),
    ("train-out-under-file", ["train", "--out", "{w}/a-file/run"], r"a-file/run.*cannot"),
    ("train-out-unwritable", ["train", "--out", "/proc/edgeag-run"], r"/proc/edgeag-run.*cannot"),
    ("train-out-holds-run", ["train", "--out", "{w}/ppo-run"], r"already holds a run"),
    # --- train --resume
    ("resume-missing", ["train", "--resume", "{w}/nothing-here"], r"cannot resume: .*nothing-here"),
    ("resume-not-a-run", ["train", "--resume", "{w}/empty-dir"], r"cannot resume: .*empty-dir"),
    ("resume-config-garbage", ["train", "--resume", "{w}/bad-config"], r"cannot resume: .*config\.toml"),
    ("resume-config-bad-value", ["train", "--resume", "{w}/bad-value"], r"invalid num_envs -3"),
    ("resume-checkpoint-truncated", ["train", "--resume", "{w}/truncated"], r"cannot resume: .*latest"),
    ("resume-checkpoint-garbage", ["train", "--resume", "{w}/garbage-ckpt"], r"cannot resume: .*latest"),
    ("resume-checkpoint-mismatch", ["train", "--resume", "{w}/mismatch"], r"cannot resume: .*does not match"),
    ("resume-changes-settings", ["train", "--resume", "{w}/ppo-run", "--set", "hidden=[8]"],
     r"cannot resume: --set hidden '\[8\]' would change what the run trains \(it has hidden "
     r"\(64, 64\)\)"),
    ("resume-changes-env", ["train", "--resume", "{w}/ppo-run", "--env", "Acrobot-v1"],
     r"cannot resume: --env 'Acrobot-v1' would change what the run trains \(it has env_id "
     r"'CartPole-v1'\)"),
    ("resume-changes-algo", ["train", "--resume", "{w}/ppo-run", "--algo", "dqn"],
     r"cannot resume: --algo 'dqn' would change what the run trains \(it has algo 'ppo'\)"),
    ("resume-changes-optimizer", ["train", "--resume", "{w}/ppo-run", "--optimizer", "sgd"],
     r"cannot resume: --optimizer 'sgd' would change what the run trains"),
    ("resume-changes-seed", ["train", "--resume", "{w}/ppo-run", "--seed", "5"],
     r"cannot resume: --seed 5 would change what the run trains \(it has seed 1\)"),
    ("resume-and-init-from", ["train", "--resume", "{w}/ppo-run", "--init-from", "{w}/ppo-run"],
     r"--resume continues a run; --init-from starts a new one"),
    # --- train --init-from, --env-kwargs, --eval-every, --stop-at-return
    ("init-from-missing", ["train", "--init-from", "{w}/nothing-here"],
     r"cannot initialise from: .*nothing-here is not a directory"),
    ("init-from-no-checkpoint", ["train", "--init-from", "{w}/empty-run"],
     r"cannot initialise from .*empty-run: it has no checkpoint yet"),
    ("init-from-network", ["train", "--init-from", "{w}/ppo-run", "--set", "hidden=8",
                           "--total-steps", "256"],
     r"cannot initialise from .*ppo-run: its network has hidden \[64, 64\], this run's has \[8\]"),
    ("init-from-other-algo", ["train", "--init-from", "{w}/ppo-run", "--algo", "dqn"],
     r"--algo dqn: .*ppo-run is a ppo run"),
    ("init-from-spaces", ["train", "--init-from", "{w}/ppo-run", "--env", "Acrobot-v1",
                          "--total-steps", "256"],
     r"cannot initialise from .*ppo-run: its network has obs_dim 4, this run's has 6"),
    ("init-from-preset", ["train", "--init-from", "{w}/ppo-run", "--preset", "{w}/garbage.toml"],
     r"--preset is for a new run"),
    ("env-kwargs-malformed", ["train", "--env", "Pendulum-v1", "--env-kwargs", "g"],
     r"invalid --env-kwargs 'g': expected NAME=VALUE, e.g. g=11.0"),
    ("env-kwargs-unknown", ["train", "--env", "Pendulum-v1", "--env-kwargs", "gravity=11"],
     r"invalid env_kwargs \{'gravity': 11\}: env 'Pendulum-v1' does not take them"),
    ("eval-every-zero", ["train", "--eval-every", "0"], r"invalid --eval-every 0"),
    ("stop-at-return-alone", ["train", "--stop-at-return", "400"],
     r"invalid --stop-at-return 400.0: expected a number, with --eval-every N"),
    # --- eval
    ("eval-missing", ["eval", "{w}/nothing-here"], r"cannot evaluate: .*nothing-here is not a directory"),
    ("eval-not-a-run", ["eval", "{w}/empty-dir"], r"cannot evaluate: .*config\.toml is not a readable"),
    ("eval-checkpoint-unknown", ["eval", "{w}/ppo-run", "--checkpoint", "first"],
     r"invalid --checkpoint 'first': expected latest or best"),
    ("eval-no-best", ["eval", "{w}/ppo-run", "--checkpoint", "best"],
     r"cannot evaluate: .*ppo-run has no best checkpoint \(checkpoints/best.safetensors\): "
     r"train it with --eval-every N"),
    ("eval-episodes-zero", ["eval", "{w}/ppo-run", "--episodes", "0"], r"invalid --episodes 0"),
    ("eval-render-and-video", ["eval", "{w}/ppo-run", "--render", "--video", "{w}/v"],
     r"--render shows the episodes on screen and --video records them: give one of them"),
    ("eval-no-checkpoint", ["eval", "{w}/empty-run"], r"cannot evaluate: .*empty-run has no checkpoint"),
    ("eval-mismatch", ["eval", "{w}/mismatch"], r"cannot evaluate: .*latest.safetensors does not match"),
    # --- export
    ("export-missing", ["export", "{w}/nothing-here"], r"nothing-here"),
    ("export-garbage-ckpt", ["export", "{w}/garbage-ckpt"], r"garbage-ckpt.*latest"),
    ("export-format", ["export", "{w}/ppo-run", "--format", "tflite"], r"tflite.*onnx"),
    ("export-quantize", ["export", "{w}/ppo-run", "--quantize", "int4"], r"int4"),
    ("export-c-int8", ["export", "{w}/ppo-run", "--format", "c", "--quantize", "int8"],
     r"--quantize int8 has nothing to quantize: --format c has no int8 variant"),
    ("export-out-is-file", ["export", "{w}/ppo-run", "--out", "{w}/a-file"], r"a-file"),
    ("export-unknown-arch", ["export", "{w}/unknown-arch"], r"unknown-arch.*unknown arch kind 'rnn'"),
    ("export-no-actor", ["export", "{w}/no-actor"], r"no-actor.*lacks the policy \(no actor\.\*\.weight arrays\)"),
    # --- run
    ("run-missing", ["run", "{w}/nothing.onnx"], r"nothing\.onnx"),
    ("run-garbage-model", ["run", "{w}/garbage.onnx"], r"garbage\.onnx"),
    ("run-unknown-suffix", ["run", "{w}/a-file"], r"a-file"),
    ("run-a-run-directory", ["run", "{w}/dqn-run"],
     r"dqn-run is a run directory, not a policy file: evaluate its checkpoint with edgeag eval"),
    ("run-native-garbage-pte", ["run", "{w}/garbage.pte", "--native", "--env", "CartPole-v1"],
     r"(cannot load .*garbage\.pte|make native)"),  # the runner's refusal, or: not built
    ("run-native-not-pte", ["run", "{w}/garbage.onnx", "--native", "--env", "CartPole-v1"],
     r"--native runs \.pte files on ExecuTorch's C\+\+ runtime, not \.onnx"),
    ("run-episodes-zero", ["run", "{w}/garbage.onnx", "--episodes", "0"], r"--episodes 0"),
    ("run-episodes-negative", ["run", "{w}/garbage.onnx", "--episodes", "-2"], r"--episodes -2"),
    # --- compare
    ("compare-seeds-zero", ["compare", "--budget", "1GB", "--seeds", "0"], r"--seeds '?0"),
    ("compare-seeds-text", ["compare", "--budget", "1GB", "--seeds", "abc"], r"--seeds 'abc'"),
    ("compare-optimizer", ["compare", "--budget", "1GB", "--optimizers", "alphagrad,adamw"], r"adamw"),
    ("compare-budgets", ["compare", "--capacity", "--budgets", "256MB,1XB"], r"1XB"),
    ("compare-total-steps", ["compare", "--budget", "1GB", "--total-steps", "0"], r"--total-steps 0"),
    ("compare-out-not-empty", ["compare", "--budget", "1GB", "--out", "{w}/ppo-run"], r"ppo-run"),
    ("compare-no-budget", ["compare"], r"budget"),
    ("compare-env-module", ["compare", "--budget", "1GB", "--env", "no_such_module:Thing-v0"],
     r"unknown env 'no_such_module:Thing-v0': no module 'no_such_module'"),
    ("compare-obs-dict", ["compare", "--budget", "1GB", "--env", f"{TOY}DictObservation-v0"],
     r"observation space Dict\(.*\): edgeag accepts a flat 1-D Box"),
    # --- report
    ("report-missing", ["report", "{w}/nothing.json"], r"nothing\.json"),
    ("report-garbage", ["report", "{w}/garbage.json"], r"garbage\.json"),
    ("report-not-a-report", ["report", "{w}/ppo-run/summary.json"], r"summary\.json"),
    # --- profiles
    ("profiles-unknown", ["profiles", "rpi9"], r"rpi9"),
    ("profiles-garbage", ["profiles", "{w}/garbage.toml"], r"garbage\.toml"),
    ("profiles-unknown-key", ["profiles", "{w}/extra-key.toml"], r"colour"),
    ("profiles-negative-ram", ["profiles", "{w}/negative-ram.toml"], r"ram"),
    # --- tune
    ("tune-trials-zero", ["tune", "--trials", "0"], r"invalid --trials 0"),
    ("tune-sampler", ["tune", "--sampler", "annealing"], r"'annealing'.*tpe, random, grid"),
    ("tune-storage", ["tune", "--storage", "ftp://host/x"], r"'ftp://host/x'.*sqlite"),
    ("tune-space", ["tune", "--space", "beta"], r"'beta'.*alpha"),
    ("tune-env-module", ["tune", "--env", "no_such_module:Thing-v0"],
     r"unknown env 'no_such_module:Thing-v0': no module 'no_such_module'"),
    ("tune-action-multidiscrete", ["tune", "--env", f"{TOY}MultiDiscreteAction-v0"],
     r"action space MultiDiscrete\(\[3 2\]\): edgeag accepts Discrete\(n\) starting at 0, or"),
    # --- the command itself
    ("no-such-command", ["fly"], r"invalid choice: 'fly'"),
]


def _edgeag(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """``edgeag ARGS`` with tests/ on PYTHONPATH (for ``--env toy_envs:...``)."""
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                         os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "edgeag.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The files the cases point at: two short runs (PPO, DQN), damaged copies of the
    PPO run, garbage files of each kind."""
    w = tmp_path_factory.mktemp("world")
    for algo, extra in (("ppo", ["--set", "num_steps=32"]),
                        ("dqn", ["--set", "learning_starts=100", "--set", "iteration_steps=300"])):
        out = _edgeag(["train", "--algo", algo, "--total-steps", "600", "--set", "eval_episodes=1",
                       "--out", str(w / f"{algo}-run"), "--no-progress", *extra], w)
        assert out.returncode == 0, out.stderr
    ppo = w / "ppo-run"
    (w / "empty-run").mkdir()  # a run killed before its first checkpoint
    shutil.copy(ppo / "config.toml", w / "empty-run" / "config.toml")
    (w / "a-file").write_text("not a directory\n")
    (w / "empty-dir").mkdir()
    (w / "garbage.toml").write_text("name = [unclosed\n")
    (w / "garbage.json").write_text("{not json")
    (w / "garbage.onnx").write_bytes(os.urandom(256))
    (w / "garbage.pte").write_bytes(os.urandom(256))
    (w / "extra-key.toml").write_text((Path(__file__).parents[1] / "device_profiles" / "rpi4.toml")
                                      .read_text() + '\ncolour = "red"\n')
    (w / "negative-ram.toml").write_text(re.sub(r"(?m)^ram = .*$", 'ram = "-4GB"',
        (Path(__file__).parents[1] / "device_profiles" / "rpi4.toml").read_text()))
    for name in ("bad-config", "bad-value", "truncated", "garbage-ckpt", "mismatch"):
        shutil.copytree(ppo, w / name)
    (w / "bad-config" / "config.toml").write_text("[ppo\nseed = ")
    text = (ppo / "config.toml").read_text()
    (w / "bad-value" / "config.toml").write_text(re.sub(r"(?m)^num_envs = .*$", "num_envs = -3", text))
    ckpt = ppo / "checkpoints" / "latest.safetensors"
    (w / "truncated" / "checkpoints" / "latest.safetensors").write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    (w / "garbage-ckpt" / "checkpoints" / "latest.safetensors").write_bytes(os.urandom(4096))
    (w / "mismatch" / "config.toml").write_text(re.sub(r"(?m)^hidden = .*$", "hidden = [16, 16]", text))
    for name, damage in (("unknown-arch", lambda s: s["arch"].update(kind="rnn")),
                         ("no-actor", lambda s: [s["policy"].pop(k) for k in list(s["policy"])
                                                 if k.startswith("actor.")])):
        shutil.copytree(ppo, w / name)
        state = checkpoint.load(w / name / "checkpoints" / "latest.safetensors")
        damage(state)
        RunDir(w / name).save_checkpoint(state)
    return w


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _run_case(case, world: Path, scratch: Path) -> str | None:
    """None when the case behaves, else what went wrong."""
    name, args, pattern = case
    w = scratch / "w"
    shutil.copytree(world, w, symlinks=True)
    cwd = scratch / "cwd"
    cwd.mkdir()
    before = _snapshot(w)
    out = _edgeag([a.replace("{w}", str(w)) for a in args], cwd)
    problems = []
    if out.returncode != 2:
        problems.append(f"exit {out.returncode}")
    if "Traceback" in out.stderr + out.stdout:
        problems.append("traceback")
    errors = [line for line in out.stderr.splitlines() if line.startswith("edgeag: error: ")]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    elif not re.search(pattern, errors[0]):
        problems.append(f"message {errors[0]!r} does not match {pattern!r}")
    if out.stderr.strip().splitlines()[-1:] != errors[-1:]:
        problems.append("the error is not the last line")
    if list(cwd.iterdir()):
        problems.append(f"wrote {[p.name for p in cwd.iterdir()]} in the working directory")
    if _snapshot(w) != before:
        after = _snapshot(w)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        problems.append(f"changed {changed[:5]}")
    return f"{name}: {', '.join(problems)}; stderr: {out.stderr.strip()[-300:]!r}" if problems else None


def test_every_bad_input_is_refused_in_one_line_with_exit_2_and_nothing_written(world, tmp_path):
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda ic: _run_case(ic[1], world, tmp_path / str(ic[0])),
                                enumerate(CASES)))
    failures = [r for r in results if r]
    assert not failures, "\n".join(failures)


def test_unknown_arch_error_names_what_is_exported(world):
    """A checkpoint of an architecture export does not know is refused with the kinds it
    accepts, not an internal key."""
    out = _edgeag(["export", str(world / "unknown-arch")], world)
    assert out.returncode == 2 and "KeyError" not in out.stderr
    assert ("(accepted: none for ppo, 'q', 'deterministic_actor', 'squashed_gaussian_actor')"
            in out.stderr)
