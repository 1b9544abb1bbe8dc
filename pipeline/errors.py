"""User-facing errors: one line that names the file, column or value and says what to do.

The CLI prints ``str(error)`` and exits with ``error.exit_code``, one code per kind of error
wherever it is raised; a traceback appears only with ``--debug``. Library callers catch
``PipelineError``. Library messages name params as the library knows them (``lr``); the CLI
shows a param that is one of its flags as the flag (``--lr``).

====  ==========================================================================
code  kind
====  ==========================================================================
1     :class:`DataError`: an input file (CSV, IDX, archive, checkpoint) is wrong
2     :class:`UsageError`: the command line, or a config file (:class:`ConfigError`)
3     :class:`TrainingError`: training failed (a non-finite loss)
4     :class:`DownloadError`: a dataset could not be fetched and verified, or Kaggle refused a call
5     :class:`LockedError`: another run holds the workspace
130   interrupted
====  ==========================================================================
"""

import numpy as np


def shown(value):
    """A value as a message should show it: a numpy scalar as its Python value (3, not np.int64(3))."""
    return value.item() if isinstance(value, np.generic) else value


class PipelineError(Exception):
    """Base class for errors caused by input, configuration or the environment, not by a bug."""

    exit_code = 1


class UsageError(PipelineError):
    """An unknown name or a bad flag value (exit code 2, like click's own usage errors)."""

    exit_code = 2


class ConfigError(UsageError):
    """A mistake in ``pipeline.toml`` or ``params.toml``: the user's settings, like a flag's."""


class ParamError(UsageError):
    """A param's value that the library refuses. The message names the param as the library
    knows it (``folds = 1: ...``); the CLI shows one of its flags as the flag (``--folds 1: ...``)."""

    def __init__(self, param: str, value, why: str):
        self.param, self.value, self.why = param, shown(value), why
        super().__init__(f"{param} = {self.value!r}: {why}")

    def as_flag(self, flag: str | None = None) -> str:
        return f"{flag or '--' + self.param.replace('_', '-')} {self.value!r}: {self.why}"


class DownloadError(PipelineError):
    """A dataset could not be fetched and verified from any mirror or its canonical URL, or the
    Kaggle service refused a call (a download, an upload, a submission)."""

    exit_code = 4


class DataError(PipelineError):
    """An input file (CSV, IDX, archive, checkpoint) is malformed or inconsistent."""


class TrainingError(PipelineError):
    """Training failed, e.g. the loss became non-finite."""

    exit_code = 3


class LockedError(PipelineError):
    """Another pipeline process holds the workspace lock."""

    exit_code = 5
