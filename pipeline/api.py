"""The library API: every command as a method of :class:`Pipeline`, returning what it made.

The ``pipeline`` command is a thin click layer over this, and a notebook calls the same::

    from pipeline.api import Pipeline
    p = Pipeline(mirrors=["../shared/datasets"])
    report = p.cv("house", model="mlp")

Params are keyword arguments named as in ``params.toml`` (``weight_decay``, not
``--weight-decay``); those left out come from the target's defaults and ``params.toml``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from pipeline import backends, hub, make, params as params_file, reports
from pipeline.backends import Local
from pipeline.errors import ParamError, UsageError
from pipeline.progress import Progress
from pipeline.results import Diff, Result, RunReport, Table
from pipeline.tabular import stages as tabular_stages, sweep as tabular_sweep
from pipeline.tabular.search import parse_ranges
from pipeline.tabular.trainer import TrainParams
from pipeline.targets import Target, all_targets, declared_targets, get_target
from pipeline.workspace import Workspace, mirrors_from_env


SEARCHES = ("grid", "tpe")
# the commands that spend time: a target of several parts shares a time limit among them
TIMED = frozenset({"cv", "train", "submit", "run"})


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
        if command not in ("status", "blend"):
            self._can_fetch(chosen)
        given = chosen.check_flags({k: v for k, v in (params or {}).items() if v is not None})
        resolved, config = params_file.resolve(chosen, self.workspace, given, **options)
        limit = chosen.time_limit(config)
        return make.Context(self.workspace, chosen, resolved, config, self.mirrors, device, self.progress,
                            Path(out) if out else None, backend or Local(),
                            None if limit is None else time.monotonic() + limit)

    def _can_fetch(self, chosen) -> None:
        """Kaggle's client and credentials, while a Kaggle target's zip is not on disk: checked
        here, so that a command without them ends before any stage reports running."""
        zip_path = chosen.kaggle_zip(self.workspace.data)
        if zip_path is not None and not zip_path.is_file():
            from pipeline import kaggle_client

            kaggle_client.api()

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
            return self._on_parts(name, "download", {},
                                  lambda part, given: self._make(self.context(part.name), "download").get("files", []))
        with self.workspace.exclusive(self.wait):
            return [str(p) for p in hub.download_group(name, self.workspace.data, self.mirrors).values()]

    def init(self, path: str | Path, name: str | None = None) -> Result:
        """Declare the competition whose files are in the folder or zip at ``path``: a commented
        ``[target.NAME]`` added to pipeline.toml. Images (a folder of image files with a CSV of
        labels, or CSVs of pixels) make an image target; train.csv, test.csv and
        sample_submission.csv otherwise a tabular one."""
        from pipeline.images import declare as images
        from pipeline.tabular import declare

        with self.workspace.exclusive(self.wait):
            root = self.workspace.root
            declaration = images.declare(Path(path), root, name) or declare.declare(Path(path), root, name)
            text = declare.write(declaration, self.workspace.config_file)
        return Result({"target": declaration.name, "config": str(self.workspace.config_file), "declaration": text})

    def hub(self) -> Table:
        return Table(hub.status(self.workspace.data), ["name", "cached", "verified", "url"])

    def _on_parts(self, target: str, command: str, params: dict, one: Callable[[Target, dict], object],
                  out: Path | None = None):
        """``one(part, params)`` on each part of ``target`` (a target is its own one part; a
        competition of several label columns has a target per column), and what the target
        joins of what they made. A time limit is the whole command's: each of several parts gets
        an even share of what is left when its turn comes."""
        chosen = get_target(target, self.workspace)
        chosen.refuse(command)
        parts = chosen.parts
        timed = command in TIMED and len(parts) > 1
        deadline = self.context(parts[0].name, params).deadline if timed else None
        made = []
        for i, part in enumerate(parts):
            share = {} if deadline is None else {
                "time_limit": max(1.0, (deadline - time.monotonic()) / (len(parts) - i))}
            made.append(one(part, {**params, **share}))
        return chosen.join(command, made, self.workspace, out, self.wait)

    def preprocess(self, target: str, **params) -> dict:
        return self._on_parts(target, "preprocess", params,
                              lambda part, given: self._make(self.context(part.name, given), "preprocess"))

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

        def one(part: Target, given: dict) -> dict:
            ctx = self.context(part.name, given, device, backend=chosen, command="cv")
            with chosen:
                return self._make(ctx, "cv")
        return self._on_parts(target, "cv", params, one)

    def train(self, target: str, device: str = "auto", **params) -> dict:
        return self._on_parts(target, "train", params,
                              lambda part, given: self._make(self.context(part.name, given, device), "train"))

    def evaluate(self, target: str, device: str = "auto", **params) -> dict:
        return self._make(self.context(target, params, device, command="evaluate"), "evaluate")

    def submit(self, target: str, out: str | Path | None = None, device: str = "auto", test: str | Path | None = None,
               to_kaggle: str | None = None, **params) -> dict:
        """A checked submission in ``submissions/`` (and at ``out``): its path and row count.
        ``test``: another test file with the training table's columns, predicted by the trained
        model (trained first if it is not up to date). ``to_kaggle``: a message; the checked CSV
        is then uploaded to the target's competition on Kaggle."""
        competition = None if to_kaggle is None else self._competition(target)  # credentials before any work
        if test is None:  # out: the copy of a target that is its own one part, else of the parts' joined one
            summary = self._on_parts(target, "submit", params, lambda part, given: self._make(
                self.context(part.name, given, device, out if part.name == target else None), "submit"),
                Path(out) if out else None)
        else:
            ctx = self.context(target, params, device, out, command="predict")
            with self.workspace.exclusive(self.wait):
                make.make(ctx, "train", report=self.announce)
                summary = Result(tabular_stages.predict_file(ctx, Path(test)))
        if competition is not None:
            ref = competition.submit(Path(summary["submission"]), to_kaggle)
            summary["kaggle"] = (f"submitted to {competition.slug} (submission {ref}): "
                                 f"`pipeline leaderboard {target}` shows its score")
        return summary

    def leaderboard(self, target: str) -> Table:
        """The user's submissions to the target's competition on Kaggle, newest first."""
        return Table(self._competition(target).submissions(), ["date", "description", "status", "public", "private"])

    def _competition(self, target: str):
        from pipeline import kaggle_client

        slug = get_target(target, self.workspace).kaggle
        if slug is None:
            raise UsageError(f"target {target} is not a Kaggle competition: set kaggle = \"SLUG\" in its "
                             f"[target.{target}] of {self.workspace.config_file.name}")
        return kaggle_client.Competition(slug)

    def run(self, target: str, until: str | None = None, force: bool = False, device: str = "auto",
            **params) -> Result:
        """Every stage in order through ``until``, skipping those that are up to date; what they
        left: the score of the latest report, and where that report and the submission are."""
        def one(part: Target, given: dict) -> Result:
            ctx = self.context(part.name, given, device)
            with self.workspace.exclusive(self.wait):
                make.make(ctx, until or ctx.target.stages[-1].name, force=force, in_order=True, report=self.announce)
                return Result(self._outcome(ctx))
        return self._on_parts(target, "run", params, one)

    def _outcome(self, ctx: make.Context) -> dict:
        """The stages' recorded outputs: the last report's score and the report and submission paths."""
        outs = make.recorded(ctx)
        outcome = {"target": ctx.target.name}
        reports_json = [p for p in outs if p.name == "report.json" and p.exists()]
        if reports_json:
            report = json.loads(reports_json[-1].read_text())
            score = report.get("mean_valid", report.get("score", report.get("test_accuracy")))
            outcome.update({"metric": report.get("metric"), "score": score,
                            "report": str(reports_json[-1].with_name("report.html"))})
        submissions = [p for p in outs if p.parent == self.workspace.submissions]
        if submissions:
            outcome["submission"] = str(submissions[-1])
        return outcome

    def status(self, target: str, device: str = "auto", **params) -> Table:
        return self._on_parts(target, "status", params, lambda part, given: Table(  # no Kaggle credentials needed
            make.status(self.context(part.name, given, device, command="status")), ["stage", "state", "reason"]))

    def blend(self, run_names: list[str], out: str | Path | None = None, how: str = "greedy") -> Result:
        """Blend CV runs of one target (see :mod:`pipeline.tabular.runs`): each run's CV and the
        blend's, honestly scored, and the blended submission (``out``, else
        ``submissions/TARGET-blend.csv``)."""
        run_dirs = [self.workspace.reports / "runs" / name for name in run_names]
        for run_dir in run_dirs:
            if not (run_dir / "report.json").exists():
                raise UsageError(f"no run {run_dir.name} in {self.workspace.reports / 'runs'}; `pipeline runs` lists them")
        targets = {json.loads((d / "report.json").read_text())["target"] for d in run_dirs}
        if len(targets) > 1:
            raise UsageError(f"runs of several targets ({', '.join(sorted(targets))}); blend runs of one target")
        ctx = self.context(targets.pop(), {}, out=out, command="blend")
        with self.workspace.exclusive(self.wait):
            return Result(tabular_stages.blend_runs(ctx, run_dirs, how))

    def first_target(self) -> str:
        """The first target declared in pipeline.toml, else house: what to try first."""
        return next(iter(declared_targets(self.workspace)), "house")

    def runs(self, target: str | None = None) -> Table:
        """Every run's score, best first per target and metric; ``best`` marks the best."""
        return Table(reports.leaderboard(self.workspace, target),
                     ["best", "target", "command", "metric", "score", "model", "seconds", "device", "run"],
                     {"seconds": 1})

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
