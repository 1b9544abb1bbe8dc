"""The library API as a notebook uses it (issue 15): every command is a function whose result
prints as text and renders as HTML; the README's notebook session runs as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pipeline
from helpers import make_competition
from pipeline.results import RunReport, Table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readmes_notebook_session_runs_as_written(shared_datasets, tmp_path, monkeypatch):
    block = re.search(r"### In a notebook.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path))
    monkeypatch.setenv("PIPELINE_MIRROR", str(shared_datasets))
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        exec(compile(block, "README.md", "exec"), namespace)
    report = namespace["report"]
    assert isinstance(report, RunReport) and report["target"] == "house" and report["params"]["model"] == "mlp"
    score, epochs = printed.getvalue().split()
    assert float(score) == report["mean_valid"] < 0.13 and int(epochs) == report["params"]["epochs"] == 30
    page = report._repr_html_()
    assert page.count("<table>") >= 2 and page.count("data:image/png;base64,") == 2  # curves, predictions
    runs = pipeline.runs(target="house")
    assert isinstance(runs, Table) and runs[0]["run"] == report["run"] and runs[0]["best"] == "*"


def test_results_print_as_text_and_render_as_html(tmp_path):
    ws = make_competition(tmp_path / "ws")
    report = pipeline.cv("toy", workdir=ws, model="linear", epochs=3)
    text = str(report)
    assert text.splitlines()[0].startswith("log_rmse: mean valid ") and "Folds:" in text
    assert f"report: {ws / 'reports' / 'runs' / report['run'] / 'report.html'}" in text
    assert report._repr_html_() == (ws / "reports" / "runs" / report["run"] / "report.html").read_text()
    status = pipeline.status("toy", workdir=ws, model="linear", epochs=3)
    assert [row["state"] for row in status] == ["up to date", "up to date", "up to date", "missing", "missing"]
    assert str(status).splitlines()[0].split() == ["stage", "state", "reason"]
    assert status._repr_html_().startswith("<table><tr><th>stage</th>")
    submitted = pipeline.submit("toy", workdir=ws, model="linear", epochs=3)
    assert submitted["rows"] == 120 and "rows: 120" in str(submitted) and "<th>rows</th>" in submitted._repr_html_()
