"""Run reports and the leaderboard of runs in a workspace.

Each run gets its own folder ``reports/runs/<run id>/`` holding ``report.json`` (what ``--json``
prints), ``report.md`` and ``report.html`` (what a person reads: the same sections; the HTML
file embeds its pictures, so it can be mailed or opened anywhere) and its PNG plots, so runs
never overwrite each other and ``pipeline runs`` can rank and compare them, like ``dvc exp``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.metrics import METRICS
from pipeline.workspace import Workspace, write_json, write_text


def new_run_dir(workspace: Workspace, target: str, command: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return workspace.reports / "runs" / f"{target}-{command}-{stamp}"


def headline_score(report: dict) -> float | None:
    """The score a run is ranked by: mean valid, test accuracy, or a sweep's best."""
    return report.get("mean_valid", report.get("test_accuracy", report.get("best_mean_valid")))


def higher_is_better(report: dict) -> bool | None:
    """The direction of a report's metric: a built-in metric's, or as a custom one's report says."""
    metric = METRICS.get(report.get("metric"))
    return metric.higher_is_better if metric is not None else report.get("higher_is_better")


def best_run(workspace: Workspace, target: str, metric: str) -> dict | None:
    """The best earlier run of ``target`` scored by ``metric``: its leaderboard row."""
    rows = [r for r in leaderboard(workspace, target) if r["metric"] == metric and not _failed(r["score"])]
    return rows[0] if rows else None


def save_report(run_dir: Path, report: dict, workspace: Workspace | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and ``report.json`` (atomically) into ``run_dir``;
    with ``workspace``, the headline compares the score with the best earlier run of the target."""
    score = headline_score(report)
    if workspace is not None and score is not None and higher_is_better(report) is not None:
        best = best_run(workspace, report["target"], report["metric"])
        if best is not None:
            report["compared"] = {"run": best["run"], "score": best["score"], "change": score - best["score"]}
    write_text(run_dir / "report.md", render_markdown(report))
    write_text(run_dir / "report.html", render_html(report, run_dir))
    return write_json(run_dir / "report.json", report)


def _fmt(value, digits: int = 5) -> str:
    if isinstance(value, float):
        return "failed" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _failed(score) -> bool:
    return score is None or (isinstance(score, float) and math.isnan(score))


# ----------------------------------------------------------------------------- sections

def headline(report: dict) -> str:
    """Metric, mean ± std, and the change from the best earlier run of the target."""
    metric = report.get("metric", "")
    if "mean_valid" in report:
        text = (f"{metric}: mean valid {_fmt(report['mean_valid'])} ± {_fmt(report['std_valid'])} "
                f"over {len(report['folds'])} folds")
    elif "best_mean_valid" in report:
        text = f"{metric}: best mean valid {_fmt(report['best_mean_valid'])} of {len(report['leaderboard'])} configs"
    elif "test_accuracy" in report:
        text = f"test accuracy {_fmt(report['test_accuracy'], 4)}"
    else:
        text = metric
    compared = report.get("compared")
    if compared:
        better = (headline_score(report) > compared["score"]) == higher_is_better(report)
        word = "better than" if better else ("the same as" if compared["change"] == 0 else "worse than")
        text += f"; {compared['change']:+.5f}, {word} the best earlier run ({compared['run']}, {_fmt(compared['score'])})"
    return text


def sections(report: dict) -> list[tuple[str, str, object]]:
    """(kind, title, content) in reading order: ``paragraph``, ``table`` (columns, rows), ``pictures``, ``code``."""
    out: list[tuple[str, str, object]] = [("paragraph", "", headline(report))]
    if "positive_class" in report:
        out.append(("paragraph", "", f"probabilities are of the positive class {report['positive_class']!r}"))
    if report.get("members") and report.get("recipe"):
        seeds = f", each from {report['seeds']} seeds (as many as the time limit left room for)" \
            if "seeds" in report else ""
        out.append(("paragraph", "", f"recipe {report['recipe']}: {len(report['members'])} members{seeds}, each "
                                     f"one's time in the table"))
    if report.get("members"):
        folds = len(report["members"][0]["valid"])
        columns = ["member", "weight", "mean valid", *[f"fold {i + 1}" for i in range(folds)], "seconds", "budget"]
        rows = [[m["model"], f"{m['weight']:.3f}", _fmt(m["mean_valid"]), *[_fmt(v) for v in m["valid"]],
                 f"{m['seconds']:.1f}", "" if m.get("budget") is None else f"{m['budget']:.0f}"]
                for m in report["members"]]
        out.append(("table", "Members", (columns, rows)))
    if report.get("infold_seconds"):
        out.append(("paragraph", "", f"the in-fold columns (target encodings, text models), fit in each fold for "
                                     f"every member: {report['infold_seconds']:.1f} s"))
    if isinstance(report.get("folds"), list) and report["folds"]:
        rows = [[str(i), _fmt(f["train"]), _fmt(f["valid"]),
                 f"diverged at epoch {f['failed_epoch']}" if f.get("failed_epoch") else ""]
                for i, f in enumerate(report["folds"], 1)]
        out.append(("table", "Folds" + (" (the blend)" if len(report.get("members", [])) > 1 else ""),
                    (["fold", "train", "valid", "note"], rows)))
    if "per_class" in report:
        out.append(("table", "Per class", (["class", "accuracy"],
                                           [[name, _fmt(acc, 4)] for name, acc in report["per_class"].items()])))
    if "leaderboard" in report:
        columns = ["rank", *report["grid"], "mean valid", "std"]
        rows = [[str(rank), *[str(row["params"][k]) for k in report["grid"]], _fmt(row["mean_valid"]),
                 _fmt(row["std_valid"])] for rank, row in enumerate(report["leaderboard"][:30], 1)]
        out.append(("table", "Leaderboard", (columns, rows)))
    if report.get("time_limit"):
        out.append(("paragraph", "", time_limit_line(report["time_limit"])))
    if report.get("columns"):
        columns = ["column", "role", "distinct", "missing", "features", "note"]
        out.append(("table", "Columns", (columns, [[str(row[c]) for c in columns] for row in report["columns"]])))
    if report.get("plots"):
        out.append(("pictures", "Pictures", report["plots"]))
    facts = [f"{report['seconds']:.2f} s on {report['device']}", f"created {report['created']}"]
    if "where" in report:
        facts.append(report["where"])
    out.append(("paragraph", "", "; ".join(facts)))
    out.append(("code", "Params", json.dumps(report["params"], indent=2)))
    return out


def time_limit_line(limit: dict) -> str:
    """What a time limit left out or cut short, in one line."""
    parts = [f"cut {c['member']} ({c['why']})" for c in limit["cut"]]
    parts += [f"shortened {s['member']} ({s['how']})" for s in limit["shortened"]]
    return f"time limit {limit['seconds']:.0f} s: " + ("; ".join(parts) or "everything fit")


def render_markdown(report: dict) -> str:
    lines = [f"# {report['target']} — {report['command']} ({report['run']})", ""]
    for kind, title, content in sections(report):
        if title:
            lines += [f"## {title}", ""]
        if kind == "paragraph":
            lines += [content, ""]
        elif kind == "table":
            columns, rows = content
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
        elif kind == "pictures":
            lines += [line for plot in content for line in (f"![{plot}]({plot})", "")]
        else:
            lines += ["```json", content, "```", ""]
    return "\n".join(lines)


STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}
pre{background:#f6f6f6;padding:1em;overflow:auto}.headline{font-size:1.15em}"""


def _embedded(path: Path) -> str:
    """A PNG as a data URI: the page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(report: dict, run_dir: Path) -> str:
    """The report as one self-contained HTML page (pictures embedded)."""
    title = f"{report['target']} — {report['command']} ({report['run']})"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for number, (kind, heading, content) in enumerate(sections(report)):
        if heading:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
        if kind == "paragraph":
            parts.append(f"<p{' class=headline' if number == 0 else ''}>{html.escape(content)}</p>")
        elif kind == "table":
            columns, rows = content
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows]
            parts.append("</table>")
        elif kind == "pictures":
            parts += [f"<figure><img alt='{html.escape(p)}' src='{_embedded(run_dir / p)}'>"
                      f"<figcaption>{html.escape(p)}</figcaption></figure>" for p in content if (run_dir / p).exists()]
        else:
            parts.append(f"<pre>{html.escape(content)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- runs

def _reports(workspace: Workspace) -> list[dict]:
    out = []
    for path in sorted((workspace.reports / "runs").glob("*/report.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a report from an older or foreign version; the leaderboard skips it
    return out


def leaderboard(workspace: Workspace, target: str | None = None) -> list[dict]:
    """Every run's headline score, best first within each target and metric; the best of each
    target and metric is marked ``best``."""
    rows, higher = [], {}
    for report in _reports(workspace):
        if target and report.get("target") != target:
            continue
        higher[report["run"]] = higher_is_better(report)
        score = headline_score(report)
        if score is None:
            continue
        params = report.get("params", {})
        rows.append({"run": report["run"], "target": report["target"], "command": report.get("command", ""),
                     "metric": report["metric"], "score": score,
                     "model": params.get("recipe") or params.get("model", ""), "seconds": round(report["seconds"], 1),
                     "device": report["device"]})

    def key(row):
        bad, direction = _failed(row["score"]), higher[row["run"]]
        return (row["target"], row["metric"], bad, 0 if bad or direction is None else
                (-row["score"] if direction else row["score"]))

    rows.sort(key=key)
    seen = set()
    for row in rows:
        first = (row["target"], row["metric"]) not in seen and not _failed(row["score"])
        row["best"] = "*" if first else ""
        seen.add((row["target"], row["metric"]))
    return rows


def _flat(params: dict, prefix: str = "") -> dict:
    """Params with member tables spelled out: ``ensemble[2].lr``."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, table in enumerate(value):
                out.update(_flat(table, f"{name}[{i}]."))
        else:
            out[name] = value
    return out


def diff(workspace: Workspace, first: str, second: str) -> dict:
    """What differs between two runs (like ``dvc exp diff``): their params and their scores."""
    runs = {r["run"]: r for r in _reports(workspace)}
    for name in (first, second):
        if name not in runs:
            raise UsageError(f"no run {name!r} in {workspace.reports / 'runs'}; `pipeline runs` lists them")
    a, b = runs[first], runs[second]
    pa, pb = _flat(a.get("params", {})), _flat(b.get("params", {}))
    params = [{"param": k, first: pa.get(k, ""), second: pb.get(k, "")}
              for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
    sa, sb = headline_score(a), headline_score(b)
    score = {"metric": a.get("metric"), first: sa, second: sb,
             "change": None if _failed(sa) or _failed(sb) else sb - sa}
    return {"params": params, "score": score}


def format_table(rows: list[dict], columns: list[str], digits: dict[str, int] | None = None) -> str:
    """Plain aligned columns for the terminal; floats with 5 digits, or a column's ``digits``."""
    digits = digits or {}
    cells = [[_fmt(row.get(c, ""), digits.get(c, 5)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")
