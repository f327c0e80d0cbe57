"""`edgeag tune`: real worker processes, real `edgeag train` children, real storages
(a journal file, SQLite, and a PostgreSQL server started here), read back with
``optuna.load_study``."""

import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

optuna = pytest.importorskip("optuna")

from edgeag.cli import main
from edgeag.errors import EdgeagError
from edgeag.tune.space import Param, parse_space
from edgeag.tune.storage import mask, resolve_storage

TINY = ["--env", "CartPole-v1", "--total-steps", "1024", "--set", "num_steps=32",
        "--set", "eval_episodes=2", "--threads", "1", "--space", "alpha,lr", "--pruner", "none"]
"""A trial of one seed: 4 PPO iterations, ~2 s per child here; never pruned."""


def worker(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeag.cli", "tune", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finish(*procs, timeout=150) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def load(storage: str, study: str):
    if storage.endswith(".log"):
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(storage))
    else:  # the URL naming the installed driver (SQLAlchemy's default one varies)
        storage = resolve_storage(storage).url
    return optuna.load_study(study_name=study, storage=storage)


def states(study) -> dict:
    counts = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def check_shared_study(study, out: Path, n: int) -> None:
    """``n`` distinct trials, all COMPLETE, each with its run's figures."""
    trials = study.get_trials(deepcopy=False)
    assert states(study) == {"COMPLETE": n}
    assert sorted(t.number for t in trials) == list(range(n))
    assert len({(t.params["alpha"], t.params["lr"]) for t in trials}) == n
    for t in trials:
        (run,) = t.user_attrs["runs"]
        assert run["run_dir"] == f"trials/{t.number}/s1" and run["status"] == "done"
        summary = json.loads((out / run["run_dir"] / "summary.json").read_text())
        assert t.value == summary["final_eval_return"]["mean"] == t.user_attrs["returns"][0]
        assert t.user_attrs["peak_rss_bytes"] == summary["peak_rss_bytes"] > 0
        assert run["rss_anon_bytes"] == summary["rss_anon_bytes"]
        assert run["floor_bytes"] == summary["floor_bytes"]
        assert t.user_attrs["optimizer_state_bytes"] == 0  # stateless AlphaGrad
        assert t.user_attrs["wall_seconds"] > 0 and t.user_attrs["run_dirs"] == [run["run_dir"]]
        assert t.user_attrs["overrides"]["alpha"] == t.params["alpha"]


# --- two workers, one study, three storages -------------------------------------------

@pytest.fixture(scope="module")
def journal_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("journal")
    storage, out = str(root / "study.log"), root / "out"
    args = [*TINY, "--trials", "3", "--storage", storage, "--study", "pair", "--out", str(out)]
    results = finish(worker(*args), worker(*args))
    return storage, out, results


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_started_at_once_share_one_study(kind, journal_study, tmp_path):
    if kind == "journal":
        storage, out, results = journal_study
    else:
        storage, out = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "out"
        args = [*TINY, "--trials", "3", "--storage", storage, "--study", "pair",
                "--out", str(out)]
        results = finish(worker(*args), worker(*args))
    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert "best trial" in stdout and "Traceback" not in stderr
    study = load(storage, "pair")
    check_shared_study(study, out, 6)
    assert study.user_attrs["edgeag_objective"]["space"] == ["alpha=0.5:128.0:log",
                                                             "lr=1e-05:0.01:log"]
    for name in ("best.toml", "params.png", "tune.json", "study.json"):
        assert (out / name).exists(), name
    assert (out / "params.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((out / "tune.json").read_text())  # the study when a worker ended
    assert summary["study"] == "pair" and summary["storage"] == storage
    assert 3 <= summary["trials"]["COMPLETE"] <= 6
    assert summary["best"]["value"] == study.trials[summary["best"]["number"]].value


def test_the_best_preset_reproduces_the_best_trial(journal_study, tmp_path):
    """`edgeag train --preset best.toml` resolves exactly the best trial's config."""
    storage, out, _ = journal_study
    best = load(storage, "pair").best_trial
    run = tmp_path / "again"
    assert main(["train", "--preset", str(out / "best.toml"), "--seed", "1",
                 "--out", str(run), "--no-progress"]) == 0

    def ppo_table(path):
        from edgeag.io import tomllib
        return tomllib.loads(path.read_text())["ppo"]

    again = ppo_table(run / "config.toml")
    assert again == ppo_table(out / best.user_attrs["run_dirs"][0] / "config.toml")
    assert {k: again[k] for k in best.params} == best.params
    assert again["total_steps"] == 1024 and again["num_steps"] == 32


# --- PostgreSQL: a server of our own -------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server in a temporary directory on a free localhost port, with a
    password login; stopped and removed at the end."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) are not "
                    "installed: apt-get install postgresql (.ci/run does it)")
    bindir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="edgeag-pg-"))
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        import pwd
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    os.chmod(root, 0o755)
    password = "pw-" + secrets.token_hex(12)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    port = free_port()
    data = root / "data"
    def run(*cmd):
        return subprocess.run([*as_user, *map(str, cmd)], check=True,
                                          capture_output=True, text=True)
    run(bindir / "initdb", "-D", data, "-U", "edgeag", "--pwfile", pwfile,
        "-A", "scram-sha-256", "--no-sync")
    pwfile.unlink()
    run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield {"url": f"postgresql://edgeag@127.0.0.1:{port}/postgres", "password": password,
               "port": port}
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgresql_study_and_never_show_its_password(postgres, tmp_path):
    """One worker has the password in its URL, the other in EDGEAG_STORAGE_PASSWORD;
    the password is in no file of the study's directory and in nothing printed."""
    password = postgres["password"]
    with_password = postgres["url"].replace("edgeag@", f"edgeag:{password}@")
    out = tmp_path / "out"
    common = [*TINY, "--trials", "3", "--study", "pg-pair", "--out", str(out)]
    results = finish(worker(*common, "--storage", with_password),
                     worker(*common, "--storage", postgres["url"],
                            env={"EDGEAG_STORAGE_PASSWORD": password}))
    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert password not in stdout and password not in stderr
        assert "postgresql://edgeag:***@127.0.0.1" in stderr
    check_shared_study(load(with_password, "pg-pair"), out, 6)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 30
    for path in files:
        assert password.encode() not in path.read_bytes(), path
    assert "edgeag:***@" in (out / "tune.json").read_text()
    assert "edgeag:***@" in (out / "best.toml").read_text()
    study = load(with_password, "pg-pair")
    assert password not in json.dumps([t.user_attrs for t in study.trials])

    # a wrong password: one masked line, exit 2, nothing written
    code, stdout, stderr = finish(worker(*common[:-1], str(tmp_path / "never"), "--storage",
                                         postgres["url"].replace("edgeag@", "edgeag:wrong-pw@")))[0]
    assert code == 2 and "wrong-pw" not in stdout + stderr, stderr
    assert re.fullmatch(r"edgeag: error: cannot open --storage 'postgresql://edgeag:\*\*\*@"
                        r"127.0.0.1:\d+/postgres': .*password authentication failed.*\n", stderr)
    assert not (tmp_path / "never").exists()


# --- the cap, pruning, Ctrl-C -----------------------------------------------------------

def test_max_total_trials_caps_the_study_across_workers(tmp_path):
    storage, out = str(tmp_path / "cap.log"), tmp_path / "out"
    args = [*TINY, "--trials", "3", "--max-total-trials", "3", "--storage", storage,
            "--study", "cap", "--out", str(out)]
    for code, _, stderr in finish(worker(*args), worker(*args)):
        assert code == 0, stderr
    study = load(storage, "cap")
    counts = states(study)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 3, counts
    skipped = [t for t in study.trials if t.state.name == "FAIL"]
    assert all("not run: the study already had 3 trials" in t.user_attrs["fail_reason"]
               and not (out / "trials" / str(t.number)).exists() for t in skipped)
    # a third worker finds the study full and runs nothing
    code, stdout, stderr = finish(worker(*args))[0]
    assert code == 0 and "already holds 3 trials" in stderr
    assert len(load(storage, "cap").trials) == len(study.trials)


def test_a_pruned_trial_leaves_no_process_behind(tmp_path):
    """A grid of a good and a useless learning rate (lr 0.5: every weight moves by up
    to 0.5 a step); Optuna's fixed grid order runs the good one first, so the median
    pruner (after 1 completed trial) stops the other one's child mid-run."""
    storage, out = str(tmp_path / "prune.log"), tmp_path / "out"
    code, stdout, stderr = finish(worker(
        "--env", "CartPole-v1", "--total-steps", "8192", "--set", "eval_episodes=1",
        "--threads", "1", "--sampler", "grid", "--space", "lr=0.5,3e-3", "--prune-after", "1",
        "--storage", storage, "--study", "prune", "--out", str(out)))[0]
    assert code == 0, stderr
    study = load(storage, "prune")
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert by_lr[3e-3].state.name == "COMPLETE" and by_lr[3e-3].number == 0
    pruned = by_lr[0.5]
    assert pruned.state.name == "PRUNED", pruned.user_attrs
    (run,) = pruned.user_attrs["runs"]
    assert run["status"] == "pruned" and run["exit_code"] == -signal.SIGTERM
    assert re.match(r"seed 1: pruned at step [\d,]+ \(training return", pruned.user_attrs["pruned_reason"])
    assert pruned.intermediate_values and max(pruned.intermediate_values) >= 8192 // 4
    assert not (out / run["run_dir"] / "summary.json").exists()  # stopped before the end
    assert not psutil.pid_exists(run["pid"])
    assert f"trial {pruned.number} PRUNED seed 1: pruned at step" in stderr


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_killed_worker_takes_its_child_along_and_its_trial_is_failed_by_the_next(kind,
                                                                                  tmp_path):
    """SIGKILL on a worker mid-trial: its `edgeag train` child stops too (the parent-death
    signal). On a database the next worker finds the trial's heartbeat stale and marks
    it FAIL before running its own; a journal file has no heartbeat (Optuna's), so the
    trial stays RUNNING there."""
    storage = str(tmp_path / "k.log") if kind == "journal" else f"sqlite:///{tmp_path / 'k.db'}"
    out = tmp_path / "out"
    args = ["--env", "CartPole-v1", "--total-steps", "20000", "--set", "eval_episodes=2",
            "--threads", "1", "--pruner", "none", "--heartbeat", "1", "--storage", storage,
            "--study", "k", "--out", str(out)]
    proc = worker(*args)
    metrics = out / "trials" / "0" / "s1" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not metrics.exists():
        time.sleep(0.02)
    assert metrics.exists()
    (child,) = psutil.Process(proc.pid).children()
    proc.kill()
    proc.communicate(timeout=30)
    gone, alive = psutil.wait_procs([child], timeout=10)
    assert not alive
    assert not (out / "trials" / "0" / "s1" / "summary.json").exists()  # stopped mid-run
    time.sleep(3)  # past twice the 1 s heartbeat
    code, _, stderr = finish(worker(*args, "--trials", "1"))[0]
    assert code == 0, stderr
    trials = load(storage, "k").trials
    assert trials[1].state.name == "COMPLETE"
    assert trials[0].state.name == ("RUNNING" if kind == "journal" else "FAIL")


def test_a_worker_joining_a_finished_grid_runs_and_records_nothing(tmp_path):
    storage, out = str(tmp_path / "grid.log"), tmp_path / "out"
    args = [*TINY[:-4], "--sampler", "grid", "--space", "alpha=1,4", "--pruner", "none",
            "--storage", storage, "--study", "grid", "--out", str(out)]
    code, _, stderr = finish(worker(*args))[0]
    assert code == 0, stderr
    assert states(load(storage, "grid")) == {"COMPLETE": 2}
    code, stdout, stderr = finish(worker(*args))[0]
    assert code == 0 and "every point of the grid has run or is running: none run" in stderr
    assert states(load(storage, "grid")) == {"COMPLETE": 2}
    assert "best trial" in stdout and not (out / "trials" / "2").exists()


def test_a_word_setting_is_tuned_through_its_values(tmp_path):
    """``--space alpha_scale=none,sqrt_numel``: each trial's runs get the word, and the
    best preset holds it."""
    storage, out = str(tmp_path / "w.log"), tmp_path / "out"
    code, _, stderr = finish(worker(
        *TINY[:-4], "--sampler", "grid", "--space", "alpha_scale=none,sqrt_numel", "--pruner",
        "none", "--storage", storage, "--study", "w", "--out", str(out)))[0]
    assert code == 0, stderr
    trials = load(storage, "w").trials
    assert sorted(t.params["alpha_scale"] for t in trials) == ["none", "sqrt_numel"]
    for t in trials:
        config = (out / t.user_attrs["runs"][0]["run_dir"] / "config.toml").read_text()
        assert f'alpha_scale = "{t.params["alpha_scale"]}"' in config
    assert 'alpha_scale = "' in (out / "best.toml").read_text()
    assert (out / "params.png").stat().st_size > 0


def test_ctrl_c_fails_the_running_trial_and_stops_its_child(tmp_path):
    storage, out = str(tmp_path / "int.log"), tmp_path / "out"
    proc = worker("--env", "CartPole-v1", "--total-steps", "400000", "--threads", "1",
                  "--storage", storage, "--study", "int", "--out", str(out))
    metrics = out / "trials" / "0" / "s1" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not metrics.exists():
        time.sleep(0.05)
    assert metrics.exists()
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    (trial,) = load(storage, "int").trials
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["fail_reason"].startswith("interrupted (Ctrl-C) during seed 1")


# --- bad input: exit 2, one line, nothing written -----------------------------------

@pytest.mark.parametrize("argv,message", [
    (["--sampler", "cmaes"], r"unknown --sampler 'cmaes' \(accepted: tpe, random, grid\)"),
    (["--pruner", "hyperband"], r"unknown --pruner 'hyperband' \(accepted: median, none\)"),
    (["--trials", "0"], r"invalid --trials 0: expected a positive integer"),
    (["--max-total-trials", "-2"], r"invalid --max-total-trials -2"),
    (["--total-steps", "0"], r"invalid --total-steps 0"),
    (["--seeds", "0"], r"invalid --seeds '0'"),
    (["--storage", "study.txt"], r"invalid --storage 'study.txt': expected a journal file PATH.log"),
    (["--storage", "redis://h/0"], r"unknown database 'redis' \(accepted: sqlite, postgresql, mysql"),
    (["--storage", "postgresql://u:hunter2@/db"], r"'postgresql://u:\*\*\*@/db': no host"),
    (["--storage", "postgresql://u:hunter2@127.0.0.1:1/db"],
     r"cannot open --storage 'postgresql://u:\*\*\*@127.0.0.1:1/db': .*"),
    (["--space", "alpah"], r"invalid --space entry 'alpah': not a setting of ppo \(accepted: lr"),
    (["--space", "alpha=4:1"], r"'alpha=4:1': LOW must be below HIGH"),
    (["--space", "alpha=0:4:log"], r"a log range needs LOW > 0"),
    (["--space", "lr=-1:1"], r"'lr=-1.0:1.0'.*lr=-1.0 is refused \(.*invalid lr -1.0"),
    (["--space", "momentum=0,true"], r"'momentum=0,true': 'true' is not a number"),
    (["--space", "momentum=0,x"], r"invalid --space entry 'x': not a setting of ppo"),
    (["--space", "hidden"], r"only number, true/false and word settings can be tuned"),
    (["--space", "alpha_scale"], r"list the values of alpha_scale, e.g. alpha_scale=V1,V2"),
    (["--space", "alpha_scale=none:sqrt_numel"], r"alpha_scale is a word: alpha_scale=V1,V2"),
    (["--space", "alpha_scale=none,rms"], r"alpha_scale=rms is refused \(invalid alpha_scale "
                                          r"'rms': expected none or sqrt_numel\)"),
    (["--space", "log_std_init"], r"no default range for log_std_init; give one"),
    (["--space", "total_steps"], r"total_steps is set by the study itself"),
    (["--space", "seed"], r"invalid --space entry 'seed': seeds are listed, e.g. seed=101,102,103"),
    (["--sampler", "grid", "--space", "alpha"], r"--sampler grid needs a list of values .*alpha"),
    (["--set", "alpha=2"], r"--set alpha=... and --space alpha: a setting is either fixed or tuned"),
    (["--set", "eval_episodes=0"], r"eval_episodes=0: a trial's value is the final evaluation"),
    (["--study", "a b"], r"invalid --study 'a b'"),
    (["--env", "Nope-v0"], r"unknown env 'Nope-v0'"),
])
def test_bad_tune_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    storage = [] if "--storage" in argv else ["--storage", str(tmp_path / "s.log")]
    code = main(["tune", *storage, "--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("edgeag: error: ") and re.search(message, err[0]), err
    assert "hunter2" not in err[0]
    assert not out.exists() and not (tmp_path / "s.log").exists()


def test_an_out_directory_of_another_study_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"study": "other", "storage": "x.log"}))
    assert main(["tune", "--storage", str(tmp_path / "s.log"), "--out", str(out)]) == 2
    assert "holds the runs of study 'other' in x.log" in capsys.readouterr().err


# --- the space and the storage, on their own ----------------------------------------

def test_space_entries_ranges_and_choices():
    params = parse_space(["alpha,lr=1e-4:3e-3:log,momentum=0,0.9,update_epochs=2:8",
                          "norm_adv"])
    assert params == [
        Param("alpha", "float", low=0.5, high=128.0, log=True),
        Param("lr", "float", low=1e-4, high=3e-3, log=True),
        Param("momentum", "float", choices=(0.0, 0.9)),
        Param("update_epochs", "int", low=2, high=8),
        Param("norm_adv", "bool", choices=(False, True)),
    ]
    assert [p.describe() for p in params[1:3]] == ["lr=0.0001:0.003:log", "momentum=0.0,0.9"]
    assert parse_space(["tau"], "td3") == [Param("tau", "float", low=0.001, high=1.0, log=True)]
    assert parse_space(["alpha_scale=none,sqrt_numel,alpha=1,4", "td_loss=mse,huber"], "dqn") == [
        Param("alpha_scale", "str", choices=("none", "sqrt_numel")),
        Param("alpha", "float", choices=(1.0, 4.0)),
        Param("td_loss", "str", choices=("mse", "huber"))]
    with pytest.raises(EdgeagError, match="listed twice"):
        parse_space(["alpha,alpha=1:2"])


def test_storage_forms_and_passwords(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEAG_STORAGE_PASSWORD", raising=False)
    assert resolve_storage("results/x.log").kind == "journal"
    s = resolve_storage("sqlite:///x.db")
    assert s.kind == "rdb" and s.display == "sqlite:///x.db"
    s = resolve_storage("postgresql://tune:s3cr3t@db.lan:5433/studies")
    assert s.display == "postgresql://tune:***@db.lan:5433/studies" and "s3cr3t" in s.url
    assert "s3cr3t" not in repr(s) and s.scrub("login s3cr3t failed") == "login *** failed"
    monkeypatch.setenv("EDGEAG_STORAGE_PASSWORD", "p@ss:w/rd")
    s = resolve_storage("postgresql://tune@db.lan/studies")
    assert s.display == "postgresql://tune:***@db.lan/studies"
    from sqlalchemy.engine import make_url
    assert make_url(s.url).password == "p@ss:w/rd"
    with pytest.raises(EdgeagError, match="give it once"):
        resolve_storage("postgresql://tune:x@db.lan/studies")
    monkeypatch.delenv("EDGEAG_STORAGE_PASSWORD")
    (tmp_path / "pw").write_text("from-file\n")
    s = resolve_storage("postgresql://tune@db.lan/studies", str(tmp_path / "pw"))
    assert make_url(s.url).password == "from-file" and "from-file" not in s.display
    s = resolve_storage("postgresql://tune@db.lan/studies")  # PGPASSWORD / PGPASSFILE: libpq's
    assert make_url(s.url).password is None and s.display == "postgresql://tune@db.lan/studies"
    assert mask("see postgresql://a:b@h/d and mysql://c:d@h/e") == \
        "see postgresql://a:***@h/d and mysql://c:***@h/e"


def test_help_and_training_never_import_optuna():
    code = ("import sys; from edgeag.cli import build_parser; build_parser().format_help(); "
            "print('optuna' in sys.modules, 'sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
