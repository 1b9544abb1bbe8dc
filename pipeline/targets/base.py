"""What every target kind answers: the API, the CLI, params and the make engine ask a target
these, whatever its kind, and never probe it for what it is.

A target is made of parts, each a target whose stages run: a single target is its own one part,
a competition of several label columns has a target per column. A command runs on each part,
and the target joins what its parts made into what the command returns (:meth:`Target.join`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from pipeline.errors import ParamError, UsageError
from pipeline.workspace import Workspace


class Target(ABC):
    """A competition: where its data come from, the stages that run on it and the commands it
    takes, its params (``params.toml``'s tables, flags and their choices) and their typed config."""

    name: str
    commands: frozenset[str]  # the commands it takes; refuse() answers the others in one line
    stages: tuple  # its make.Stage graph, in order
    kaggle: str | None = None  # its competition's slug on Kaggle, when its files come from Kaggle's client
    known: frozenset | None = None  # the params params.toml may set for it (None: any; its config checks them)

    @property
    def parts(self) -> tuple[Target, ...]:
        """The targets a command runs on: a single target is its own one part."""
        return (self,)

    def join(self, command: str, made: list, workspace: Workspace, out: Path | None = None, wait: float = 0.0):
        """What ``command`` returns from what it made on each of :attr:`parts`, in their order; a
        single target's is what its one part made. A join that writes (a joined submission, at
        ``out`` too) holds the workspace's lock, waiting ``wait`` seconds as the commands do."""
        return made[0]

    def refuse(self, command: str) -> None:
        """A one-line error for a command this target does not take."""
        if command not in self.commands:
            raise UsageError(self.refusal(command))

    @abstractmethod
    def refusal(self, command: str) -> str:
        """Why this target does not take ``command``, and what to do instead."""

    @property
    @abstractmethod
    def flags(self) -> frozenset:
        """The params a command may be given (the CLI offers the common ones as flags)."""

    @property
    @abstractmethod
    def choices(self) -> dict[str, tuple]:
        """The values each param that takes one of a few may have."""

    def flag_values(self, given: dict) -> dict:
        """The flags' values as this target's params take them."""
        return given

    def check_flags(self, given: dict) -> dict:
        """Flags given for this target: each must apply to it and be one of its choices."""
        for key, value in given.items():
            if key not in self.flags:
                raise ParamError(key, value, f"does not apply to target {self.name}")
            choices = self.choices.get(key)
            if choices is not None and value not in choices:
                raise ParamError(key, value, f"not one of {', '.join(choices)} for target {self.name}")
        return self.flag_values(given)

    @property
    def params_tables(self) -> tuple[str, ...]:
        """The tables of params.toml that hold this target's params, the later winning."""
        return (self.name,)

    @abstractmethod
    def configure(self, stored: dict, flags: dict, **options) -> tuple[dict, object]:
        """Its params under params.toml's values (``stored``) and ``flags``: as plain values (what
        reports and the lock record), and as its typed config."""

    def time_limit(self, config) -> float | None:
        """The seconds a command may spend under ``config`` (None: as long as it takes)."""
        return None

    def section(self, params: dict) -> str:
        """The lock's key for this target under ``params``."""
        return self.name

    @abstractmethod
    def fetch(self, data_dir: Path, mirrors: list[str]) -> list[Path]:
        """Download (and verify) its files under ``data_dir``: their paths."""

    def kaggle_zip(self, data_dir: Path) -> Path | None:
        """Where the competition's zip from Kaggle's client lies (None: the files come from
        elsewhere); while it is absent, the download stage needs the client and credentials."""
        return None

    def sample_path(self, data_dir: Path) -> Path | None:
        """Where the sample submission is once :meth:`fetch` has run (None: the target has none)."""
        return None
