"""What commands return: plain data that prints as text in a terminal and renders as HTML in
Jupyter (``_repr_html_``). The CLI prints the same objects, so it adds nothing of its own.
"""

from __future__ import annotations

import html
from pathlib import Path

from pipeline import reports


class Result(dict):
    """A command's summary: a dict, shown as a two-column table."""

    def _pairs(self) -> list[tuple[str, str]]:
        return [(str(k), reports._fmt(v)) for k, v in self.items() if not isinstance(v, (dict, list))]

    def __str__(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self._pairs())

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self._pairs())
        return f"<table>{rows}</table>"


class RunReport(Result):
    """A run's report (``report.json``), with its folder: text for a terminal, the run's own
    self-contained HTML page (tables and pictures) for Jupyter."""

    def __init__(self, report: dict, run_dir: Path):
        super().__init__(report)
        self.run_dir = run_dir

    def __str__(self) -> str:
        lines = []
        for kind, title, content in reports.sections(self):
            if kind == "table":
                columns, rows = content
                shown = rows if title != "Leaderboard" else rows[:20]
                lines += [f"{title}:", reports.format_table([dict(zip(columns, r)) for r in shown], columns)]
            elif kind == "paragraph":
                lines.append(content)
            elif kind == "pictures":
                lines.append("pictures: " + ", ".join(str(self.run_dir / name) for name in content))
        lines.append(f"report: {self.run_dir / 'report.html'}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return reports.render_html(self, self.run_dir)


class Table(list):
    """Rows of dicts (status, leaderboard): aligned columns in a terminal, an HTML table in Jupyter."""

    def __init__(self, rows: list[dict], columns: list[str], digits: dict[str, int] | None = None):
        super().__init__(rows)
        self.columns, self.digits = columns, digits

    def __str__(self) -> str:
        return reports.format_table(self, self.columns, self.digits)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(reports._fmt(row.get(c, '')))}</td>"
                                        for c in self.columns) + "</tr>" for row in self)
        return f"<table><tr>{head}</tr>{body}</table>"


class Diff(Result):
    """Two runs compared: the params that differ and the change in score."""

    def table(self) -> Table:
        runs = [k for k in self["score"] if k not in ("metric", "change")]
        return Table(self["params"], ["param", *runs])

    def _score(self) -> str:
        score = self["score"]
        runs = [k for k in score if k not in ("metric", "change")]
        change = "" if score["change"] is None else f" ({score['change']:+.5f})"
        return f"{score['metric']}: " + " -> ".join(reports._fmt(score[r]) for r in runs) + change

    def __str__(self) -> str:
        params = str(self.table()) if self["params"] else "no params differ"
        return f"{params}\n{self._score()}"

    def _repr_html_(self) -> str:
        return self.table()._repr_html_() + f"<p>{html.escape(self._score())}</p>"
