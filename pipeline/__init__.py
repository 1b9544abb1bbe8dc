"""pipeline: a Kaggle competition pipeline (House Prices, Fashion-MNIST, any declared tabular target).

Every command is a function too; in Jupyter its result renders as HTML (tables and plots)::

    import pipeline
    report = pipeline.cv("house", model="mlp", mirrors=["../shared/datasets"])
    report                      # the run's report: headline, members, folds, pictures
    report["mean_valid"]        # it is the dict of report.json

``workdir`` and ``mirrors`` default to ``$PIPELINE_HOME`` (else the current folder) and
``$PIPELINE_MIRROR``; other keyword arguments are params, named as in ``params.toml``.
``pipeline.open(...)`` returns the :class:`~pipeline.api.Pipeline` these functions use.
"""

__version__ = "0.1.0"


def open(workdir=None, mirrors=(), *, wait: float = 0.0):
    """A :class:`~pipeline.api.Pipeline` on ``workdir`` that shows progress bars (widgets in Jupyter)."""
    from pipeline.api import Pipeline
    from pipeline.progress import Bars

    return Pipeline(workdir, mirrors, wait=wait, progress=Bars)


def _command(name: str):
    def command(*args, workdir=None, mirrors=(), **params):
        return getattr(open(workdir, mirrors), name)(*args, **params)

    command.__name__ = name
    command.__doc__ = f"``Pipeline.{name}`` on the default workspace: see :class:`pipeline.api.Pipeline`."
    return command


download, preprocess, cv, train, evaluate, submit, sweep, run, status, runs, diff = (
    _command(name) for name in
    ("download", "preprocess", "cv", "train", "evaluate", "submit", "sweep", "run", "status", "runs", "diff"))
