"""`edgeag compare` and `edgeag report`: real `edgeag train` children, the report's
files and keys, the capacity search, merging reports, and bad input."""

import copy
import json
import math
import re
import signal
import subprocess
import sys
import time

import pytest

from edgeag.cli import main
from edgeag.memory import MiB
from edgeag.report.capacity import widest_fitting
from edgeag.report.runs import Row, parse_rows
from edgeag.train.config import parse_seeds

PNG = b"\x89PNG\r\n\x1a\n"


# --- the capacity search: a pure function of fits(width) ------------------------------

def counting(cost, budget):
    calls = []

    def fits(width):
        calls.append(width)
        return cost(width) <= budget

    return fits, calls


def cost(width):
    """A synthetic training run: two W x W matrices, with Adam-like bytes per value."""
    return 240 * MiB + 2 * width * width * 16 + 300_000 * width


@pytest.mark.parametrize("budget", [241 * MiB, 256 * MiB, 512 * MiB, 1 << 30, 3 << 30])
def test_capacity_search_finds_the_exact_boundary_of_a_synthetic_cost(budget):
    boundary = max(w for w in range(1, 20_000) if cost(w) <= budget)
    fits, calls = counting(cost, budget)
    assert widest_fitting(fits, start=64, limit=1 << 16, tolerance=0) == boundary
    assert len(calls) == len(set(calls))  # never the same width twice
    assert len(calls) <= 2 * math.ceil(math.log2(1 << 16)) + 2
    assert max(calls) <= max(64, 2 * boundary)  # doubling stops at the first width that fails


@pytest.mark.parametrize("budget", [256 * MiB, 1 << 30])
def test_capacity_search_stops_within_its_tolerance(budget):
    boundary = max(w for w in range(1, 20_000) if cost(w) <= budget)
    fits, calls = counting(cost, budget)
    width = widest_fitting(fits, tolerance=1 / 32)
    assert cost(width) <= budget
    assert 0 <= boundary - width <= max(1, int(width / 32))
    exact_calls = []
    widest_fitting(lambda w: exact_calls.append(w) or cost(w) <= budget, tolerance=0)
    assert len(calls) <= len(exact_calls)
    if width >= 64:  # a bracket wider than 1/32 of the width is left alone: fewer probes
        assert len(calls) < len(exact_calls)


def test_capacity_search_edges():
    assert widest_fitting(lambda w: False) is None
    assert widest_fitting(lambda w: w <= 1) == 1
    assert widest_fitting(lambda w: w <= 5, start=64, tolerance=0) == 5
    assert widest_fitting(lambda w: True, limit=1000) == 1000
    assert widest_fitting(lambda w: w <= 999, limit=1000, tolerance=0) == 999


# --- rows and seeds -----------------------------------------------------------------

def test_rows_are_optimizers_with_settings():
    rows = parse_rows("alphagrad, adam,sgd:momentum=0.9,alphagrad:momentum=0.9:fuse_backward=false")
    assert rows == [Row("alphagrad"), Row("adam"), Row("sgd", (("momentum", "0.9"),)),
                    Row("alphagrad", (("momentum", "0.9"), ("fuse_backward", "false")))]
    assert rows[3].label == "alphagrad momentum=0.9 fuse_backward=false"
    assert rows[3].set_args() == ["--set", "momentum=0.9", "--set", "fuse_backward=false"]
    assert rows[2].slug == "sgd-momentum-0.9"
    assert parse_rows("adam:hidden=[32, 32],sgd") == [Row("adam", (("hidden", "[32, 32]"),)),
                                                       Row("sgd")]
    assert parse_seeds("3") == [1, 2, 3] and parse_seeds("4,9") == [4, 9]


# --- a tiny real comparison ---------------------------------------------------------

REPORT_KEYS = {"format", "kind", "created", "device", "settings", "seconds", "rows", "differences"}
DEVICE_KEYS = {"profile", "hostname", "machine", "cores", "ram_bytes", "torch", "python", "edgeag"}
ROW_KEYS = {"label", "optimizer", "options", "plan", "plan_above_floor_bytes", "statuses",
            "peak_rss_bytes", "floor_bytes", "above_floor_bytes", "optimizer_state_bytes",
            "final_eval_return", "refusals", "runs"}


@pytest.fixture(scope="module")
def tiny_compare(tmp_path_factory):
    """AlphaGrad and lean Adam on the numpy engine, torch.optim.Adam on the torch engine,
    one seed, 512 steps, 200 MiB: the last one is refused by its plan (torch's floor,
    ~150 MiB of anonymous memory, and its torch._dynamo import, ~70 MiB)."""
    out = tmp_path_factory.mktemp("compare") / "report"
    budget = 200 * MiB
    code = main(["compare", "--budget", str(budget), "--optimizers", "alphagrad,adam,torch-adam",
                 "--seeds", "1", "--total-steps", "512", "--set", "eval_episodes=1",
                 "--threads", "1", "--out", str(out), "--no-progress"])
    return code, out, budget


def test_tiny_compare_writes_the_report(tiny_compare):
    code, out, budget = tiny_compare
    assert code == 0
    for name in ("peak_rss.png", "rss_over_time.png", "returns.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report) and report["kind"] == "compare"
    assert DEVICE_KEYS <= set(report["device"]) and report["device"]["cores"] >= 1
    assert report["settings"]["budget_bytes"] == budget
    assert report["settings"]["total_steps"] == 512 and report["settings"]["seeds"] == [1]
    rows = {r["label"]: r for r in report["rows"]}
    assert list(rows) == ["alphagrad", "adam", "torch-adam"]
    for row in rows.values():
        assert ROW_KEYS <= set(row) and len(row["runs"]) == 1

    for label in ("alphagrad", "adam"):
        run = rows[label]["runs"][0]
        assert run["status"] in ("done", "budget")  # a budget stop is a result too
        assert 0 < run["floor_bytes"] < run["peak_rss_bytes"]
        assert 0 < run["floor_anon_bytes"] <= run["peak_anon_bytes"] < run["peak_rss_bytes"]
        assert run["steps"] == 512 or run["status"] == "budget"
        assert (out / run["run_dir"] / "summary.json").exists()
        assert (out / run["run_dir"] / "train.log").exists()
        state = rows[label]["optimizer_state_bytes"]
        assert state["measured"] == [state["analytic"]]  # the plan's rule, exactly
    assert rows["alphagrad"]["optimizer_state_bytes"]["analytic"] == 0
    assert rows["adam"]["optimizer_state_bytes"]["analytic"] == 2 * 4 * 9155 + 12 * 4

    refused = rows["torch-adam"]["runs"][0]
    assert refused["status"] == "refused" and refused["exit_code"] == 2
    assert refused["plan_total_bytes"] > budget and refused["floor_anon_bytes"] > 0
    assert rows["torch-adam"]["plan"]["torch._dynamo import"] == 70 * MiB
    assert rows["torch-adam"]["peak_rss_bytes"] is None

    (diff,) = report["differences"]
    assert diff["row"] == "adam" and diff["baseline"] == "alphagrad"
    assert diff["peak_median_delta_bytes"] == (rows["adam"]["peak_rss_bytes"]["median"]
                                               - rows["alphagrad"]["peak_rss_bytes"]["median"])
    assert diff["optimizer_state_delta_bytes"] == 2 * 4 * 9155 + 12 * 4

    md = (out / "report.md").read_text()
    assert "cannot start: plan" in md and "![Peak RSS per optimizer](peak_rss.png)" in md
    assert f"{2 * 4 * 9155 + 12 * 4:,}" in md
    assert not list(out.rglob("*.tmp"))


def test_report_merges_reports_from_two_devices(tiny_compare, tmp_path, capsys):
    _, out, _ = tiny_compare
    pi = json.loads((out / "report.json").read_text())
    board = copy.deepcopy(pi)
    board["device"].update(profile="android-midrange", profile_arch="aarch64", hostname="devboard",
                           machine="aarch64", profile_ram_bytes=6 << 30)
    board["rows"][0]["peak_rss_bytes"]["median"] += 3 * MiB
    (tmp_path / "pi.json").write_text(json.dumps(pi))
    (tmp_path / "board.json").write_text(json.dumps(board))
    assert main(["report", str(tmp_path / "pi.json"), str(tmp_path / "board.json"),
                 "--out", str(tmp_path / "merged.md")]) == 0
    md = (tmp_path / "merged.md").read_text()
    host = pi["device"]["hostname"]
    assert f"`#1 - @ {host} (x86_64)`" in md and "`#2 android-midrange @ devboard (aarch64)`" in md
    assert "for the **android-midrange** profile (aarch64, 6 GiB)" in md
    peak = next(line for line in md.splitlines() if line.startswith("| `alphagrad` |"))
    base = pi["rows"][0]["peak_rss_bytes"]["median"] / MiB
    assert f"{base:.1f}" in peak and f"{base + 3:.1f}" in peak
    assert re.search(r"\| `torch-adam` \| refused \| refused \|", md)
    assert main(["report", str(tmp_path / "pi.json")]) == 0
    assert "## Peak RSS" in capsys.readouterr().out


def test_capacity_sweep_reports_what_cannot_start(tmp_path):
    """torch.optim.Adam inside 192 MiB of anonymous memory: even width 1 is seen above
    the budget (its torch._dynamo import) and is stopped there; measured, not planned."""
    out = tmp_path / "cap"
    assert main(["compare", "--capacity", "--budgets", "192MB", "--optimizers", "torch-adam",
                 "--threads", "1", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    (result,) = report["results"]
    assert result["width"] is None and result["smallest_probe_anon_bytes"] > 192 * MiB
    assert [p["width"] for p in report["probes"]] == [1, 64]
    assert all(p["status"] == "exceeded" and p["max_seen_anon_bytes"] > 192 * MiB
               for p in report["probes"])
    for name in ("capacity.png", "capacity_probes.png"):
        assert (out / name).read_bytes().startswith(PNG)
    assert "| 192 MiB | `torch-adam` | none |" in (out / "report.md").read_text()
    assert not (out / "probes" / "torch-adam-w64").exists()  # no probe's run left behind


# --- bad input: exit 2, one line, nothing written -----------------------------------

B = ["--budget", "256MB"]


@pytest.mark.parametrize("argv,message", [
    (B + ["--optimizers", "rmsprop"], r"unknown optimizer 'rmsprop' \(accepted: alphagrad"),
    (B + ["--optimizers", "alphagrad:momentum"], r"expected SETTING=VALUE after ':'"),
    (B + ["--optimizers", "alphagrad:seed=3"], r"seed is set by compare itself"),
    (B + ["--optimizers", "alphagrad:lr=-1"], r"row 'alphagrad lr=-1': invalid lr -1.0"),
    (B + ["--optimizers", "adam:learning_rate=1"], r"unknown setting 'learning_rate'"),
    (B + ["--optimizers", "adam,adam"], r"'adam' is listed twice"),
    (B + ["--seeds", "0"], r"invalid --seeds '0': expected a count"),
    (B + ["--seeds", "1,x"], r"invalid --seeds '1,x'"),
    (["--budget", "12XB"], r"invalid budget '12XB'"),
    (B + ["--env", "Nope-v0"], r"unknown env 'Nope-v0'"),
    (B + ["--total-steps", "0"], r"invalid --total-steps 0"),
    (B + ["--budgets", "512MB"], r"--budgets is for --capacity"),
    (B + ["--capacity"], r"--budget is for the comparison runs"),
    (["--capacity", "--seeds", "2"], r"--seeds and --total-steps are for the comparison runs"),
    (["--capacity", "--budgets", "256MB,0.25GB"], r"a size is listed twice"),
    (["--capacity", "--set", "hidden=[8, 8]"], r"--capacity chooses the hidden widths itself"),
])
def test_bad_compare_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = main(["compare", *argv, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("edgeag: error: ") and re.search(message, err[-1]), err
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_compare_without_a_budget_or_into_a_used_directory_exits_2(tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path / "a")]) == 2
    assert "needs a budget: --budget SIZE" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "report.json").write_text("{}")
    assert main(["compare", "--budget", "1GB", "--out", str(tmp_path / "used")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["compare", "--capacity", "--budgets", "100TB", "--out", str(tmp_path / "b")]) == 2
    assert "more than the RAM here" in capsys.readouterr().err


def test_bad_report_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "half.json").write_text(json.dumps({"format": "edgeag-report/1", "kind": "compare"}))
    for path, message in ((tmp_path / "missing.json", r"no such file"),
                          (tmp_path, r"a directory \(pass its report.json\)"),
                          (tmp_path / "junk.json", r"not JSON .* expected a report.json"),
                          (tmp_path / "other.json", r"not an edgeag report"),
                          (tmp_path / "half.json", r"incomplete edgeag report: missing device")):
        assert main(["report", str(path), "--out", str(tmp_path / "merged.md")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err
        assert not (tmp_path / "merged.md").exists()


def test_ctrl_c_writes_the_report_of_the_runs_that_finished(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.Popen([sys.executable, "-m", "edgeag.cli", "compare", "--budget", "1GB",
                             "--optimizers", "alphagrad,adam", "--seeds", "1,2", "--total-steps",
                             "512", "--set", "eval_episodes=1", "--threads", "1", "--out", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = out / "runs" / "alphagrad-s2" / "train.log"  # the first run is in the report
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not second.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True
    finished = [run for row in report["rows"] for run in row["runs"]]
    assert len(finished) == 1 and finished[0]["status"] == "done" and finished[0]["seed"] == 1
    assert "**Interrupted**" in (out / "report.md").read_text()
    assert (out / "peak_rss.png").exists()
