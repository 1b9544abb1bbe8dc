"""Run reports (JSON + Markdown + PNG per run) and the leaderboard of runs in a workspace.

Each run gets its own folder ``reports/runs/<run id>/`` holding ``report.json`` (what
``--json`` prints), ``report.md`` (what a person reads) and its plots, so runs never overwrite
each other and ``pipeline runs`` can rank them all, like ``dvc exp show``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

from pipeline.metrics import METRICS
from pipeline.workspace import Workspace, write_json, write_text


def new_run_dir(workspace: Workspace, target: str, command: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return workspace.reports / "runs" / f"{target}-{command}-{stamp}"


def save_report(run_dir: Path, report: dict) -> Path:
    """Write ``report.json`` and ``report.md`` (atomically) into ``run_dir``."""
    write_text(run_dir / "report.md", render_markdown(report))
    return write_json(run_dir / "report.json", report)


def _fmt(value, digits: int = 5) -> str:
    if isinstance(value, float):
        return "failed" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict) -> str:
    """A readable report: headline, table of folds, params, time, device and plots."""
    lines = [f"# {report['target']} — {report['command']} ({report['run']})", ""]
    metric = report.get("metric", "")
    if "mean_valid" in report:
        lines += [f"**{metric}**: mean valid {_fmt(report['mean_valid'])} ± {_fmt(report['std_valid'])} "
                  f"over {len(report['folds'])} folds", ""]
        lines += ["| fold | train | valid | note |", "|---:|---:|---:|---|"]
        for i, fold in enumerate(report["folds"], 1):
            note = f"diverged at epoch {fold['failed_epoch']}" if fold.get("failed_epoch") else ""
            lines.append(f"| {i} | {_fmt(fold['train'])} | {_fmt(fold['valid'])} | {note} |")
        lines.append("")
    for key in ("test_accuracy", "valid_accuracy"):
        if key in report:
            lines += [f"**{key.replace('_', ' ')}**: {_fmt(report[key], 4)}", ""]
    if "per_class" in report:
        lines += ["| class | accuracy |", "|---|---:|"]
        lines += [f"| {name} | {_fmt(acc, 4)} |" for name, acc in report["per_class"].items()]
        lines.append("")
    if "leaderboard" in report:
        lines += ["| rank | " + " | ".join(report["grid"]) + " | mean valid | std |",
                  "|---:|" + "---|" * len(report["grid"]) + "---:|---:|"]
        for rank, row in enumerate(report["leaderboard"], 1):
            cells = " | ".join(str(row["params"][k]) for k in report["grid"])
            lines.append(f"| {rank} | {cells} | {_fmt(row['mean_valid'])} | {_fmt(row['std_valid'])} |")
        lines.append("")
    lines += [f"- seconds: {report['seconds']:.2f}", f"- device: {report['device']}",
              f"- created: {report['created']}", "", "## Params", "", "```json",
              json.dumps(report["params"], indent=2), "```", ""]
    for plot in report.get("plots", []):
        lines += [f"![{plot}]({plot})", ""]
    return "\n".join(lines)


def leaderboard(workspace: Workspace, target: str | None = None) -> list[dict]:
    """Every run's headline score, best first within each metric."""
    rows = []
    for path in sorted((workspace.reports / "runs").glob("*/report.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a report from an older or foreign version; the leaderboard skips it
        if target and report.get("target") != target:
            continue
        score = report.get("mean_valid", report.get("test_accuracy", report.get("best_mean_valid")))
        if score is None:
            continue
        rows.append({"run": report["run"], "target": report["target"], "command": report.get("command", ""),
                     "metric": report["metric"], "score": score,
                     "model": report["params"].get("model", ""), "seconds": report["seconds"],
                     "device": report["device"]})

    def key(row):
        bad = row["score"] is None or (isinstance(row["score"], float) and math.isnan(row["score"]))
        metric = METRICS.get(row["metric"])
        return (row["target"], row["metric"], bad, 0 if bad or metric is None else metric.sort_key(row["score"]))

    return sorted(rows, key=key)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Plain aligned columns for the terminal."""
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")
