"""``edgeag report``: one comparison across devices from several ``report.json`` files
(say, ``edgeag compare`` run on a Raspberry Pi and on a phone development board)."""

from __future__ import annotations

import json
from pathlib import Path

from edgeag.errors import EdgeagError
from edgeag.report.compare import FORMAT
from edgeag.report.render import device_line, mib, signed_mib, stat_mib, table

REQUIRED = {"compare": ("device", "settings", "rows", "differences"),
            "capacity": ("device", "settings", "rows", "results")}


def load_report(path: str) -> dict:
    """A report.json written by ``edgeag compare``; EdgeagError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EdgeagError(f"cannot read report {path!r}: no such file") from None
    except IsADirectoryError:
        raise EdgeagError(f"cannot read report {path!r}: a directory (pass its "
                          "report.json)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeagError(f"cannot read report {path!r}: {e}") from None
    except json.JSONDecodeError as e:
        raise EdgeagError(f"{path}: not JSON ({e.msg} at line {e.lineno}): expected a "
                          "report.json written by edgeag compare") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EdgeagError(f"{path}: not an edgeag report (expected \"format\": \"{FORMAT}\", "
                          "as in a report.json written by edgeag compare)")
    missing = [k for k in REQUIRED.get(data.get("kind"), ("kind",)) if k not in data]
    if missing:
        raise EdgeagError(f"{path}: incomplete edgeag report: missing {', '.join(missing)}")
    return data


def device_label(report: dict, index: int) -> str:
    d = report["device"]
    return f"#{index} {d['profile'] or '-'} @ {d['hostname']} ({d['machine']})"


def merge_markdown(paths: list[str]) -> str:
    """One Markdown report across the devices of ``paths``."""
    if len(paths) < 1:
        raise EdgeagError("edgeag report needs at least one report.json")
    reports = [load_report(p) for p in paths]
    labels = [device_label(r, i) for i, r in enumerate(reports, 1)]
    lines = [f"# edgeag reports from {len(reports)} run(s)", "", "## Devices", ""]
    lines += table(["device", "file", "kind", "env", "budget(s), MiB", "threads", "details"],
                   [[f"`{label}`", f"`{path}`", r["kind"], r["settings"]["env"],
                     mib(r["settings"]["budget_bytes"], 0) if r["kind"] == "compare" else
                     ", ".join(mib(b, 0) for b in r["settings"]["budgets_bytes"]),
                     r["settings"]["threads"], device_line(r["device"])]
                    for label, path, r in zip(labels, paths, reports)])
    lines.append("")

    compares = [(label, r) for label, r in zip(labels, reports) if r["kind"] == "compare"]
    if compares:
        rows = _union(r["label"] for _, r in compares for r in r["rows"])
        lines += ["## Peak RSS, MiB: median [min–max] over seeds", ""]
        lines += table(["row", *(f"`{label}`" for label, _ in compares)],
                       [[f"`{row}`", *(_peak_cell(r, row) for _, r in compares)] for row in rows])
        lines += ["", "## Against AlphaGrad: Δ peak RSS of medians, MiB (run-to-run spread)", ""]
        diff_rows = _union(d["row"] for _, r in compares for d in r["differences"])
        lines += table(["row", *(f"`{label}`" for label, _ in compares)],
                       [[f"`{row}`", *(_diff_cell(r, row) for _, r in compares)]
                        for row in diff_rows])
        lines.append("")

    capacities = [(label, r) for label, r in zip(labels, reports) if r["kind"] == "capacity"]
    if capacities:
        keys = _union((x["budget_bytes"], x["row"]) for _, r in capacities for x in r["results"])
        keys.sort(key=lambda k: k[0])
        lines += ["## Capacity: widest W (parameters; × Adam's parameters)", ""]
        lines += table(["budget", "row", *(f"`{label}`" for label, _ in capacities)],
                       [[f"{mib(b, 0)} MiB", f"`{row}`", *(_capacity_cell(r, b, row)
                                                            for _, r in capacities)]
                        for b, row in keys])
        lines.append("")
    return "\n".join(lines) + "\n"


def _union(items) -> list:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _peak_cell(report: dict, label: str) -> str:
    row = next((r for r in report["rows"] if r["label"] == label), None)
    if row is None:
        return "not run"
    if row["peak_rss_bytes"] is None:
        return "refused" if row["refusals"] else "no measurement"
    return stat_mib(row["peak_rss_bytes"])


def _diff_cell(report: dict, label: str) -> str:
    d = next((d for d in report["differences"] if d["row"] == label), None)
    if d is None:
        return "—"
    return f"{signed_mib(d['peak_median_delta_bytes'])} ({mib(d['spread_bytes'], 2)})"


def _capacity_cell(report: dict, budget: int, label: str) -> str:
    x = next((x for x in report["results"]
              if x["budget_bytes"] == budget and x["row"] == label), None)
    if x is None:
        return "not run"
    if not x["width"]:
        return "none fits"
    ratio = f"; {x['parameter_ratio']:.2f}x" if x.get("parameter_ratio") else ""
    return f"{x['width']} ({x['parameter_count']:,}{ratio})"
