"""The library API: every command as a method of :class:`Pipeline`, returning what it made.

The ``pipeline`` command is a thin click layer over this, and a notebook calls the same::

    from pipeline.api import Pipeline
    p = Pipeline(mirrors=["../shared/datasets"])
    report = p.cv("house", model="mlp")

Params are keyword arguments named as in ``params.toml`` (``weight_decay``, not
``--weight-decay``); those left out come from the target's defaults and ``params.toml``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from pipeline import backends, hub, make, params as params_file, reports
from pipeline.backends import Local
from pipeline.errors import ParamError
from pipeline.progress import Progress
from pipeline.results import Diff, Result, RunReport, Table
from pipeline.tabular import stages as tabular_stages, sweep as tabular_sweep
from pipeline.tabular.search import parse_ranges
from pipeline.tabular.trainer import TrainParams
from pipeline.targets import all_targets, check_flags, get_target
from pipeline.workspace import Workspace, mirrors_from_env


SEARCHES = ("grid", "tpe")


def _quiet(stage: str, what: str) -> None:
    pass


class Pipeline:
    """A workspace (``workdir``, else ``$PIPELINE_HOME``, else the current folder), the mirrors
    to download from (plus ``$PIPELINE_MIRROR``), and how to report: ``progress(desc)`` makes
    the :class:`~pipeline.progress.Progress` a stage's long steps report to (silent by default;
    ``Bars`` for tqdm bars), ``announce(stage, what)`` hears which stages run or are skipped.

    Every command returns what it made: a :class:`~pipeline.results.RunReport` (a dict of the
    run's report.json that prints as text and renders as HTML in Jupyter), a ``Result`` or a
    ``Table``."""

    def __init__(self, workdir: str | Path | None = None, mirrors=(), *, wait: float = 0.0,
                 progress: Callable[[str], Progress] = Progress, announce: Callable[[str, str], None] = _quiet):
        self.workspace = Workspace.resolve(workdir)
        self.mirrors = [str(m) for m in mirrors] + mirrors_from_env()
        self.wait, self.progress, self.announce = wait, progress, announce

    def context(self, target: str, params: dict | None = None, device: str = "auto",
                out: str | Path | None = None, backend=None, command: str | None = None, **options) -> make.Context:
        """The resolved params of ``target``: defaults, preset, params.toml, then ``params``;
        ``command`` is refused in one line when the target does not take it."""
        chosen = get_target(target, self.workspace)
        if command:
            chosen.refuse(command)
        given = check_flags(chosen, {k: v for k, v in (params or {}).items() if v is not None})
        resolved, config = params_file.resolve(chosen, self.workspace, given, **options)
        limit = getattr(config, "time_limit", None)
        return make.Context(self.workspace, chosen, resolved, config, self.mirrors, device, self.progress,
                            Path(out) if out else None, backend or Local(),
                            None if limit is None else time.monotonic() + limit)

    def _make(self, ctx: make.Context, until: str, **options) -> Result:
        options.setdefault("always", True)
        with self.workspace.exclusive(self.wait):
            return self._result(make.make(ctx, until, report=self.announce, **options))

    def _result(self, summary: dict) -> Result:
        if "run" in summary:
            return RunReport(summary, self.workspace.reports / "runs" / summary["run"])
        return Result(summary)

    def download(self, name: str) -> list[str]:
        """A target's data, a hub dataset, a group or ``all``: the verified files' paths."""
        if name in all_targets(self.workspace):
            return self._make(self.context(name), "download").get("files", [])
        with self.workspace.exclusive(self.wait):
            return [str(p) for p in hub.download_group(name, self.workspace.data, self.mirrors).values()]

    def hub(self) -> Table:
        return Table(hub.status(self.workspace.data), ["name", "cached", "verified", "url"])

    def preprocess(self, target: str, **params) -> dict:
        return self._make(self.context(target, params), "preprocess")

    def columns(self, target: str, **params) -> Table:
        """Each column of a tabular target's tables: its role (inferred or declared), distinct
        values, missing share, and the features it became (preprocessing first if needed)."""
        ctx = self.context(target, params, command="columns")
        with self.workspace.exclusive(self.wait):
            make.make(ctx, "preprocess", report=self.announce)
            return Table(tabular_stages.load_features(ctx).columns,
                         ["column", "role", "distinct", "missing", "features", "note"])

    def cv(self, target: str, device: str = "auto", backend: str = "local", address: str | None = None,
           **params) -> dict:
        """K-fold cross-validation of the target's recipe: its report. ``backend="ray"`` runs
        each member as a Ray task (``address``: a cluster to join; else a local Ray)."""
        chosen = backends.backend(backend, address)
        ctx = self.context(target, params, device, backend=chosen, command="cv")
        with chosen:
            return self._make(ctx, "cv")

    def train(self, target: str, device: str = "auto", **params) -> dict:
        return self._make(self.context(target, params, device), "train")

    def evaluate(self, target: str, device: str = "auto", **params) -> dict:
        return self._make(self.context(target, params, device, command="evaluate"), "evaluate")

    def submit(self, target: str, out: str | Path | None = None, device: str = "auto", test: str | Path | None = None,
               **params) -> dict:
        """A checked submission in ``submissions/`` (and at ``out``): its path and row count.
        ``test``: another test file with the training table's columns, predicted by the trained
        model (trained first if it is not up to date)."""
        if test is None:
            return self._make(self.context(target, params, device, out), "submit")
        ctx = self.context(target, params, device, out, command="predict")
        with self.workspace.exclusive(self.wait):
            make.make(ctx, "train", report=self.announce)
            return Result(tabular_stages.predict_file(ctx, Path(test)))

    def run(self, target: str, until: str | None = None, force: bool = False, device: str = "auto") -> dict:
        """Every stage in order through ``until``, skipping those that are up to date."""
        ctx = self.context(target, {}, device)
        return self._make(ctx, until or ctx.target.stages[-1].name, always=False, force=force, in_order=True)

    def status(self, target: str, device: str = "auto", **params) -> Table:
        return Table(make.status(self.context(target, params, device)), ["stage", "state", "reason"])

    def runs(self, target: str | None = None) -> Table:
        """Every run's score, best first per target and metric; ``best`` marks the best."""
        return Table(reports.leaderboard(self.workspace, target),
                     ["best", "target", "command", "metric", "score", "model", "seconds", "device", "run"])

    def diff(self, first: str, second: str) -> Diff:
        """What differs between two runs: their params and the change in score."""
        return Diff(reports.diff(self.workspace, first, second))

    def sweep(self, target: str, grid: dict[str, list] | list[str] = (), save: bool = True, device: str = "auto",
              backend: str = "local", address: str | None = None, search: str = "grid",
              ranges: list[str] = (), trials: int = 64, batch: int = 32, **params) -> dict:
        """Every config of ``grid`` ({"lr": [0.01, 0.03]} or ["lr=0.01,0.03"]) cross-validated at
        once; or, with ``search="tpe"``, ``trials`` configs that Optuna proposes from ``ranges``
        (["lr=1e-4..1e-1:log"]) and the grid's values, ``batch`` per stacked model. With
        ``backend="ray"`` the configs are spread over Ray tasks."""
        if search not in SEARCHES:
            raise ParamError("search", search, f"not one of {', '.join(SEARCHES)}")
        for name, value in (("trials", trials), ("batch", batch)):
            if value < 1:
                raise ParamError(name, value, "must be at least 1")
        chosen = backends.backend(backend, address)
        ctx = self.context(target, params, device, backend=chosen, command="sweep", single=True)
        base = ctx.config.torch_config().to_dict()
        sweepable = [k for k in TrainParams.__dataclass_fields__]
        if not isinstance(grid, dict):
            grid = params_file.parse_grid(grid, base, sweepable)
        space = parse_ranges(ranges, base, sweepable) if search == "tpe" else None
        if space is None and (ranges or not grid):
            raise ParamError("grid", list(grid), "a grid sweep takes a grid (NAME=V1,V2); ranges are for the tpe search")
        with self.workspace.exclusive(self.wait), chosen:
            make.make(ctx, "preprocess", always=False, report=self.announce)
            return self._result(tabular_sweep.sweep(ctx, grid, save=save, space=space, trials=trials, batch=batch))
