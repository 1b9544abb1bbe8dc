"""A competition with several label columns (multi-target): a tabular target per column, which
a command on the competition runs on, one after the other."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.results import Result, Table
from pipeline.tabular import stages as tabular_stages
from pipeline.targets.base import Target
from pipeline.targets.tabular import TabularTarget
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class SeveralLabels(Target):
    """A competition with several label columns: a tabular target per column, ``NAME.COLUMN``,
    whose features leave the other labels out (the same features and, with the same split and
    seed, the same folds); their submissions join into one, in the sample's format. Its columns'
    targets are its parts, which its commands run on: they take its params and its flags."""

    name: str
    columns: tuple[TabularTarget, ...]  # each label column's target
    whole: TabularTarget  # where the files are, the sample among them
    commands = frozenset({"download", "preprocess", "cv", "train", "submit", "run", "status"})

    @classmethod
    def of(cls, target: TabularTarget, labels: list[str]) -> dict:
        """The competition's target and each column's, by name."""
        parts = tuple(replace(target, name=f"{target.name}.{label}", sample=None, part_of=target.name,
                              spec=replace(target.spec, label=label,
                                           other_labels=tuple(c for c in labels if c != label)))
                      for label in labels)
        return {target.name: cls(target.name, parts, target), **{p.name: p for p in parts}}

    @property
    def parts(self) -> tuple[TabularTarget, ...]:
        return self.columns

    def join(self, command: str, made: list, workspace: Workspace, out: Path | None = None, wait: float = 0.0):
        """Each column's outputs joined: download's files, preprocess's features and train's models
        by column, cv's scores with their mean, status's stages by column, and submit's and run's
        submissions into one in the sample's format."""
        joins = {
            "download": lambda: sorted({f for files in made for f in files}),
            "preprocess": lambda: Result({p.name: m.get("features", "up to date") for p, m in zip(self.parts, made)}),
            "cv": lambda: Result(tabular_stages.joined_scores(self, made)),
            "train": lambda: Result({p.name: m["model"] for p, m in zip(self.parts, made)}),
            "submit": lambda: Result(self._submission(workspace, out, wait)),
            "run": lambda: self._outcome(made, workspace, wait),
            "status": lambda: Table([{**row, "stage": f"{p.spec.label}: {row['stage']}"}
                                     for p, rows in zip(self.parts, made) for row in rows],
                                    ["stage", "state", "reason"]),
        }
        return joins[command]()

    def _submission(self, workspace: Workspace, out: Path | None, wait: float) -> dict:
        with workspace.exclusive(wait):
            return tabular_stages.join_submissions(workspace, self, out)

    def _outcome(self, outcomes: list[dict], workspace: Workspace, wait: float) -> Result:
        """Each column's score and their mean; the joined submission once every column has one."""
        scores = {p.spec.label: o.get("score") for p, o in zip(self.parts, outcomes)}
        outcome = {"target": self.name, "metric": outcomes[0].get("metric"), **scores,
                   "mean": None if None in scores.values() else sum(scores.values()) / len(scores)}
        if all("submission" in o for o in outcomes):
            outcome["submission"] = self._submission(workspace, None, wait)["submission"]
        return Result(outcome)

    def refusal(self, command: str) -> str:
        return f"target {self.name} has several labels: {command} one of {', '.join(p.name for p in self.parts)}"

    @property
    def known(self) -> frozenset:
        return self.parts[0].known

    @property
    def flags(self) -> frozenset:
        return self.parts[0].flags

    @property
    def choices(self) -> dict:
        return self.parts[0].choices

    def flag_values(self, given: dict) -> dict:
        return self.parts[0].flag_values(given)

    def configure(self, stored: dict, flags: dict, **options) -> tuple:
        """The params its columns share (params.toml's [NAME]), as a column's target resolves them."""
        return self.parts[0].configure(stored, flags, **options)

    def time_limit(self, config) -> float | None:
        return self.parts[0].time_limit(config)

    @property
    def kaggle(self) -> str | None:
        return self.whole.kaggle

    def fetch(self, data_dir: Path, mirrors: list[str]) -> list[Path]:
        """The competition's files, which every column's target reads."""
        return self.whole.fetch(data_dir, mirrors)

    def kaggle_zip(self, data_dir: Path) -> Path | None:
        return self.whole.kaggle_zip(data_dir)

    def sample_path(self, data_dir: Path) -> Path | None:
        return self.whole.sample_path(data_dir)
