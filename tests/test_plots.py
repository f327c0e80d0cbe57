"""The report's figures as a reader sees them: every probe inside the "every probe"
panel, a zoomed panel that is inside it, one panel per row (seeds told apart by line
style and marker) for the series over time, tick labels that do not run into each
other; and the standalone ONNX example refusing another env's policy with one line."""

import json
import math
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from edgeag.report import plots
from edgeag.report.plots import MiB

REPO = Path(__file__).resolve().parents[1]
COMMITTED_CAPACITY = REPO / "docs" / "reports" / "capacity-rpi4-256MB" / "report.json"
DEVICE = {"profile": None, "machine": "x86_64"}


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would write, by file name, drawn (so text has its
    place on the canvas) instead of saved."""
    drawn = {}

    def keep(fig, path):
        fig.canvas.draw()
        drawn[Path(path).name] = fig

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def panels(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


# --- capacity_probes.png --------------------------------------------------------------

def probe(row, width, params, status, mib, budget=64):
    p = {"row": row, "width": width, "status": status, "parameter_count": params,
         "peak_anon_bytes": None, "killed_above_bytes": None, "max_seen_anon_bytes": 0,
         "floor_anon_bytes": 24 * MiB}
    if status == "measured":
        p["peak_anon_bytes"] = p["max_seen_anon_bytes"] = int(mib * MiB)
    else:
        p["killed_above_bytes"], p["max_seen_anon_bytes"] = budget * MiB, int(mib * MiB)
    return p


def capacity_report():
    """A sweep at 64 MiB where adam's widest probe finished above the budget (74 MiB at
    2.1M parameters) and alphagrad's last one was stopped far to the right (4.7M)."""
    probes = [probe("alphagrad", 64, 10_000, "measured", 25),
              probe("alphagrad", 256, 140_000, "measured", 28),
              probe("alphagrad", 512, 530_000, "measured", 36),
              probe("alphagrad", 1024, 2_100_000, "measured", 58),
              probe("alphagrad", 1536, 4_700_000, "exceeded", 66),
              probe("adam", 64, 10_000, "measured", 26),
              probe("adam", 256, 140_000, "measured", 31),
              probe("adam", 512, 530_000, "measured", 45),
              probe("adam", 1024, 2_100_000, "measured", 74)]
    results = [{"budget_bytes": 64 * MiB, "row": "alphagrad", "width": 1024,
                "parameter_count": 2_100_000, "parameter_ratio": 4.0, "reference": "adam"},
               {"budget_bytes": 64 * MiB, "row": "adam", "width": 512,
                "parameter_count": 530_000, "parameter_ratio": 1.0, "reference": "adam"}]
    return {"kind": "capacity", "device": DEVICE,
            "settings": {"env": "CartPole-v1", "threads": 1, "budgets_bytes": [64 * MiB]},
            "rows": [{"label": "alphagrad"}, {"label": "adam"}],
            "results": results, "probes": probes}


def inside(point, xlim, ylim):
    x, y = point
    return xlim[0] <= x <= xlim[1] and ylim[0] <= y <= ylim[1]


@pytest.mark.parametrize("source", ["synthetic", "committed"])
def test_every_probe_panel_holds_every_probe_and_the_zoomed_panel_lies_inside_it(
        figures, tmp_path, source):
    report = (capacity_report() if source == "synthetic"
              else json.loads(COMMITTED_CAPACITY.read_text()))
    plots.capacity_probes(report, tmp_path / "capacity_probes.png")
    whole, zoomed = panels(figures["capacity_probes.png"])
    assert whole.get_title().startswith("every probe") and "zoomed" in zoomed.get_title()
    points = [(x, y) for pts in plots.probe_points(report).values() for x, y, _ in pts]
    assert len(points) == sum(1 for p in report["probes"] if p.get("parameter_count"))
    wx, wy = whole.get_xlim(), whole.get_ylim()
    missing = [pt for pt in points if not inside(pt, wx, wy)]
    assert not missing, f"outside the 'every probe' panel {wx} x {wy}: {missing}"
    for budget in report["settings"]["budgets_bytes"]:
        assert wy[0] <= budget / MiB <= wy[1]
    if source == "synthetic":  # the two probes the panel once cut off
        assert inside((2.1, 74), wx, wy) and inside((4.7, 66), wx, wy)
    zx, zy = zoomed.get_xlim(), zoomed.get_ylim()
    assert zx[1] <= wx[1] and wy[0] <= zy[0] and zy[1] <= wy[1]
    assert zx[1] - zx[0] < wx[1] - wx[0] or zy[1] - zy[0] < wy[1] - wy[0]
    lowest = min(report["settings"]["budgets_bytes"]) / MiB
    assert zy[0] < lowest < zy[1]
    assert "log" in whole.get_xlabel() and whole.get_xscale() == "log"


def test_zoomed_panel_shows_where_each_row_crosses_the_smallest_budget(figures, tmp_path):
    """Each row's widest probe inside the smallest budget and its next, wider one."""
    report = json.loads(COMMITTED_CAPACITY.read_text())
    plots.capacity_probes(report, tmp_path / "capacity_probes.png")
    _, zoomed = panels(figures["capacity_probes.png"])
    lowest = min(report["settings"]["budgets_bytes"]) / MiB
    for row, pts in plots.probe_points(report).items():
        fitting = [(x, y) for x, y, finished in pts if finished and y <= lowest]
        widest = max(fitting)
        above = min((x, y) for x, y, finished in pts
                    if x > widest[0] and not (finished and y <= lowest))
        for pt in (widest, above):
            assert inside(pt, zoomed.get_xlim(), zoomed.get_ylim()), (row, pt)


def test_capacity_figures_of_a_sweep_where_nothing_fits(figures, tmp_path):
    report = capacity_report()
    report["probes"] = [probe("adam", 1, 100, "exceeded", 80),
                        probe("adam", 64, 10_000, "exceeded", 90)]
    report["rows"], report["results"] = [{"label": "adam"}], [
        {"budget_bytes": 64 * MiB, "row": "adam", "width": None, "parameter_count": None,
         "parameter_ratio": None, "reference": "adam"}]
    plots.capacity_probes(report, tmp_path / "capacity_probes.png")
    plots.capacity(report, tmp_path / "capacity.png")
    whole, _ = panels(figures["capacity_probes.png"])
    assert all(inside((x, y), whole.get_xlim(), whole.get_ylim())
               for pts in plots.probe_points(report).values() for x, y, _ in pts)
    (bars,) = panels(figures["capacity.png"])
    assert "none fits" in [t.get_text() for t in bars.texts]


def test_capacity_bars_leave_room_for_their_labels(figures, tmp_path):
    report = json.loads(COMMITTED_CAPACITY.read_text())
    plots.capacity(report, tmp_path / "capacity.png")
    fig = figures["capacity.png"]
    (ax,) = panels(fig)
    top = ax.get_window_extent()
    for text in ax.texts:
        assert text.get_window_extent().y1 <= top.y1, text.get_text()
    assert [t.get_text() for t in ax.get_xticklabels()] == [r["label"] for r in report["rows"]]


# --- compare figures ------------------------------------------------------------------

LABELS = ["alphagrad", "adam", "alphagrad engine=torch", "adam engine=torch", "torch-adam",
          "sgd", "sgd momentum=0.9", "alphagrad momentum=0.9", "torch-adafactor", "lion"]


def stat(values):
    return {"median": sorted(values)[len(values) // 2], "min": min(values), "max": max(values)}


def compare_report(out: Path, refused: str = "torch-adam"):
    """Ten rows of two seeds, with the run directories the figures read (rss.csv,
    metrics.jsonl); ``refused``'s runs never started."""
    rows = []
    for i, label in enumerate(LABELS):
        runs, peaks = [], []
        for seed in (1, 2):
            run_dir = f"runs/{label.replace(' ', '-')}-s{seed}"
            if label == refused:
                runs.append({"seed": seed, "status": "refused", "run_dir": run_dir,
                             "plan_total_bytes": 300 * MiB})
                continue
            level = (25 + 10 * (i % 3)) * MiB  # rows on the same level: the overlap to undo
            (out / run_dir).mkdir(parents=True)
            (out / run_dir / "rss.csv").write_text("seconds,rss_bytes,anon_bytes\n" + "".join(
                f"{0.05 * k:.3f},{level + 20 * MiB},{level + k * 4096}\n" for k in range(40)))
            (out / run_dir / "metrics.jsonl").write_text("".join(
                json.dumps({"time/total_timesteps": 256 * k,
                            "rollout/ep_rew_mean": None if k == 0 else 20.0 + k * (i + seed)})
                + "\n" for k in range(8)))
            peaks.append(level + 40 * 4096)
            runs.append({"seed": seed, "status": "done", "run_dir": run_dir,
                         "peak_anon_bytes": peaks[-1], "peak_rss_bytes": peaks[-1] + 20 * MiB})
        rows.append({"label": label, "runs": runs,
                     "peak_anon_bytes": stat(peaks) if peaks else None,
                     "peak_rss_bytes": stat([p + 20 * MiB for p in peaks]) if peaks else None,
                     "floor_anon_bytes": stat([24 * MiB]) if peaks else None,
                     "final_eval_return": stat([100.0, 120.0]) if peaks else None})
    return {"kind": "compare", "device": DEVICE, "rows": rows,
            "settings": {"env": "CartPole-v1", "threads": 1, "budget_bytes": 256 * MiB,
                         "seeds": [1, 2]}}


@pytest.mark.parametrize("figure", ["rss_over_time", "returns"])
def test_series_figures_give_each_row_its_own_panel_on_shared_axes(figures, tmp_path, figure):
    report = compare_report(tmp_path)
    getattr(plots, figure)(report, tmp_path, tmp_path / f"{figure}.png")
    fig = figures[f"{figure}.png"]
    axes = panels(fig)
    assert [ax.get_title().split(" (")[0] for ax in axes] == LABELS
    assert len({ax.get_xlim() for ax in axes}) == 1 and len({ax.get_ylim() for ax in axes}) == 1
    colors = plots._colors(len(LABELS))
    for ax, row, color in zip(axes, report["rows"], colors):
        own = [line for line in ax.get_lines() if line.get_color() == color]
        if row["label"] == "torch-adam":  # refused: no line, a note instead
            assert not own and any("never started" in t.get_text() for t in ax.texts)
            continue
        assert own, row["label"]
        if figure == "rss_over_time":  # one line per seed, each its own style and marker
            assert len(own) == 2
            assert len({(line.get_linestyle(), line.get_marker()) for line in own}) == 2
            budget = [line for line in ax.get_lines() if line.get_color() == "crimson"]
            assert budget and budget[0].get_ydata()[0] == 256
    if figure == "rss_over_time":
        assert axes[0].get_ylim()[1] > 256  # the budget inside every panel
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("other rows" in n for n in names)


def test_peak_rss_tick_labels_do_not_overlap_and_refusals_give_units(figures, tmp_path):
    report = compare_report(tmp_path)
    plots.peak_rss(report, tmp_path / "peak_rss.png")
    fig = figures["peak_rss.png"]
    for ax in panels(fig):
        ticks = ax.get_xticklabels()
        assert [t.get_text() for t in ticks] == LABELS
        for a, b in pairwise(ticks):
            angle = math.radians(a.get_rotation())
            if angle == 0:
                assert not a.get_window_extent().overlaps(b.get_window_extent())
            else:  # slanted labels are parallel strips: their distance against a line's height
                xa = ax.transData.transform((a.get_position()[0], 0))[0]
                xb = ax.transData.transform((b.get_position()[0], 0))[0]
                height = a.get_fontsize() * fig.dpi / 72 * 1.2
                assert (xb - xa) * math.sin(angle) >= height, (a.get_text(), b.get_text())
    whole = panels(fig)[0]
    (note,) = [t for t in whole.texts if t.get_text() == "refused:\nplan 300 MiB"]
    assert note.get_window_extent().y1 <= whole.get_window_extent().y1  # not over the title


# --- examples/onnx_cartpole.py --------------------------------------------------------

def _export(tmp: Path, env: str) -> Path:
    from edgeag.cli import main

    run = tmp / env
    assert main(["train", "--env", env, "--total-steps", "64", "--out", str(run), "--no-progress",
                 "--set", "num_envs=1", "--set", "num_steps=64", "--set", "batch_size=64",
                 "--set", "update_epochs=1", "--set", "eval_episodes=0"]) == 0
    assert main(["export", str(run), "--format", "onnx", "--no-progress"]) == 0
    return run / "export" / "policy.onnx"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Tiny real PPO runs (numpy engine) of Pendulum and CartPole, exported to ONNX."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    tmp = tmp_path_factory.mktemp("example")
    return {env: _export(tmp, env) for env in ("Pendulum-v1", "CartPole-v1")}


def example(*args):
    return subprocess.run([sys.executable, str(REPO / "examples" / "onnx_cartpole.py"),
                           *map(str, args)], capture_output=True, text=True, timeout=120,
                          check=False)


def one_line_error(result):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("onnx_cartpole.py: error: ")
    return line


def test_example_refuses_a_pendulum_policy_by_its_policy_json(exported):
    line = one_line_error(example(exported["Pendulum-v1"], 1))
    assert "Pendulum-v1" in line and "accepted: a CartPole-v1 policy" in line


def test_example_without_policy_json_refuses_by_the_files_input(exported, tmp_path):
    bare = tmp_path / "policy.onnx"
    bare.write_bytes(exported["Pendulum-v1"].read_bytes())
    line = one_line_error(example(bare, 1))
    assert "['batch', 3]" in line and "accepted: obs [batch, 4]" in line


@pytest.mark.parametrize("args, expected", [
    (["{missing}"], "cannot load"),
    (["{policy}", "0"], "EPISODES is '0'; accepted: a whole number of at least 1"),
    ([], "usage: python onnx_cartpole.py POLICY.onnx [EPISODES]"),
])
def test_example_bad_input_is_one_line(exported, tmp_path, args, expected):
    names = {"missing": tmp_path / "none.onnx", "policy": exported["CartPole-v1"]}
    assert expected in one_line_error(example(*(a.format(**names) for a in args)))


def test_example_drives_a_cartpole_policy(exported):
    result = example(exported["CartPole-v1"], 2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mean return over 2 episodes: ")
