"""The optimizer evaluation's pipeline (``scripts/evaluate_optimizers.py``) on a tiny
grid: studies over seeds, a run killed outright and started again without repeating a
finished run, and the report regenerated from the storage alone. Also ``edgeag tune``'s
grid over seeds that it rests on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from edgeag.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "evaluate_optimizers.py"


def _script(*args: str, tmp: Path, **popen) -> list[str]:
    return [sys.executable, str(SCRIPT), *args, "--storage", f"sqlite:///{tmp}/studies.db",
            "--out", str(tmp / "runs"), "--docs", str(tmp / "docs")]


def _trials(tmp: Path, name: str) -> list:
    from optuna.storages import RDBStorage

    storage = RDBStorage(f"sqlite:///{tmp}/studies.db")
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


TINY = ["--tasks", "ppo-cartpole", "--optimizers", "adam,alphagrad", "--seeds", "3",
        "--total-steps", "1024", "--jobs", "1", "--heartbeat", "1"]


def test_a_killed_run_continues_without_repeating_a_finished_seed(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(_script("run", *TINY, tmp=tmp_path), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    before = []
    while time.monotonic() < deadline and proc.poll() is None:
        if (tmp_path / "studies.db").exists():
            try:
                before = [t for t in _trials(tmp_path, "eval-ppo-cartpole-adam")
                          if t.state.name == "COMPLETE"]
            except Exception:  # noqa: BLE001 (the study is being created)
                before = []
            if len(before) >= 1:
                break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0].decode()
    os.killpg(proc.pid, signal.SIGKILL)  # the script, its tune worker and training child
    proc.wait()
    assert 1 <= len(before) < 3
    finished = {t.number: (t.params["seed"], t.datetime_complete) for t in before}

    done = subprocess.run(_script("run", *TINY, tmp=tmp_path), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 of 6 runs finished, 0 running on other workers, 0 to run" in done.stdout
    for name in ("eval-ppo-cartpole-adam", "eval-ppo-cartpole-alphagrad"):
        trials = _trials(tmp_path, name)
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        assert sorted(t.params["seed"] for t in complete) == [101, 102, 103]  # each once
        assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)  # the killed one failed
        if name.endswith("adam"):  # the runs finished before the kill are the same trials
            kept = {t.number: (t.params["seed"], t.datetime_complete) for t in complete}
            assert {n: kept[n] for n in finished} == finished

    report = subprocess.run(_script("report", "--tasks", "ppo-cartpole", "--optimizers",
                                    "adam,alphagrad", "--seeds", "3", tmp=tmp_path),
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "## PPO, classic control" in text
    assert "| AlphaGrad (stateless) > Adam |" in text
    summary = json.loads((tmp_path / "docs" / "results.json").read_text())
    runs = summary["tasks"]["ppo-cartpole"]["adam"]
    assert [r["seed"] for r in runs] == [101, 102, 103] and all(r["curve"] is not None for r in runs)
    group = summary["groups"]["ppo-classic"]
    iqm = group["aggregates"]["adam"]["iqm"]
    assert iqm["low"] <= iqm["point"] <= iqm["high"] or iqm["low"] == iqm["high"]
    assert 0 <= group["improvement"]["alphagrad>adam"]["final"]["point"] <= 1
    assert (tmp_path / "docs" / "ppo-classic-profile.png").stat().st_size > 1000


@pytest.mark.parametrize("args,message", [
    (["--space", "seed=1,2", "--seeds", "2", "--sampler", "grid"],
     "--seeds 2 and --space seed=...: give the seeds once (in the space: one run per trial)"),
    (["--space", "seed=1,2"],
     "--space seed=...: a study over seeds needs --sampler grid (each trial one seed's run)"),
    (["--space", "seed=1:5", "--sampler", "grid"],
     "invalid --space entry 'seed=1:5': seeds are listed, e.g. seed=101,102,103 (with "
     "--sampler grid)"),
])
def test_a_grid_over_seeds_is_refused_when_it_cannot_mean_one_run_per_trial(
        tmp_path, capsys, args, message):
    assert main(["tune", "--storage", str(tmp_path / "s.log"), "--out", str(tmp_path / "o"),
                 *args]) == 2
    assert capsys.readouterr().err.strip() == f"edgeag: error: {message}"
    assert not (tmp_path / "s.log").exists() and not (tmp_path / "o").exists()
