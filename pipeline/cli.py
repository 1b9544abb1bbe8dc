"""The ``pipeline`` command: click over :class:`pipeline.api.Pipeline`, nothing more.

Errors caused by input (:class:`PipelineError`) print one line and exit non-zero; a traceback
appears only with ``--debug``. A refused param is shown as its flag (``--folds 1: ...``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Callable

import click

from pipeline import __version__
from pipeline.backends import BACKENDS
from pipeline.errors import ParamError, PipelineError
from pipeline.progress import Bars, Lines, Live, Progress

if TYPE_CHECKING:
    from pipeline.api import Pipeline

# torch, scikit-learn, LightGBM and matplotlib load only in the commands that use them, so that
# `pipeline --help` answers at once (it took 7-8 s and 384 MB when everything loaded up front)
log = logging.getLogger("pipeline")


def _widths(value: str | None):
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give widths like 256 or 128,64") from None


CHOICE_LABELS = {"house": "house and declared targets"}


def _choices(param: str, target=None) -> str:
    """``target``'s choices for ``param`` ("a, b"), or without one, each built-in target's, from
    the library: "house: a, b; fashion: c" (commas, so that help wraps between choices)."""
    if target is not None:
        return ", ".join(map(str, target.choices.get(param, ())))
    from pipeline.targets import BUILTIN

    parts = [f"{CHOICE_LABELS.get(name, name)}: {', '.join(t.choices[param])}"
             for name, t in BUILTIN.items() if t.choices.get(param)]
    return "; ".join(parts)


# (param, click type, help): every training flag, named as its param (--weight-decay is weight_decay).
# A callable help takes the target whose help is shown (None: the built-in targets).
PARAM_OPTIONS = (
    ("recipe", str, lambda t: f"A preset recipe ({_choices('recipe', t)})."),
    ("model", str, lambda t: f"A single model ({_choices('model', t)})."),
    ("hidden", str, "Hidden widths, e.g. 256 or 128,64."),
    ("activation", str, lambda t: _choices("activation", t)),
    ("dropout", float, None),
    ("epochs", int, None),
    ("lr", float, "Learning rate."),
    ("weight_decay", float, None),
    ("batch_size", int, None),
    ("log_target", bool, "Train on log(label)."),
    ("optimizer", str, lambda t: _choices("optimizer", t)),
    ("schedule", str, lambda t: _choices("schedule", t)),
    ("folds", int, "K for K-fold cross-validation."),
    ("split", str, lambda t: f"Fold assignment ({_choices('split', t)})."),
    ("seed", int, None),
    ("fit_on", str, lambda t: f"Fit preprocessing on train+test or train ({_choices('fit_on', t)})."),
    ("log_skewed", float, "log1p numeric columns with |skew| above this (0: off)."),
    ("clip_quantile", float, "Clip numeric columns to their [q, 1-q] quantiles (0: off)."),
    ("scaling", str, lambda t: f"Numeric columns' scaling ({_choices('scaling', t)})."),
    ("numeric_bins", int, "Also encode numeric columns piecewise-linearly between this many quantiles (0: off)."),
    ("text_words", int, "Also give each free-text column's N most frequent words and word pairs as 0/1 columns "
                        "(0: off)."),
    ("blend", str, lambda t: f"How members are weighed ({_choices('blend', t)}): equally, or by ensemble selection."),
    ("final", str, lambda t: f"What predicts the submission ({_choices('final', t)}): each member refit on every "
                             "row, or its CV's fold models averaged (no refit)."),
    ("time_limit", str, "Time for the whole command (90s, 10m, 1.5h): members share it, and what does not fit "
                        "is cut (the report says what)."),
    ("augment", bool, "Images: random crop and flip."),
    ("flip", bool, "Images: mirror images in the augmentation (--no-flip where a mirror changes the class: digits)."),
    ("valid_fraction", float, "Images: held-out share when --folds < 2."),
    ("tta", bool, "Images: evaluate and submit on each image and its mirror image, probabilities averaged."),
)
PARAM_NAMES = tuple(name for name, _, _ in PARAM_OPTIONS)


class ParamOption(click.Option):
    """A param's flag: its help (and choices) are those of the target named on the command line,
    worked out only when the help is shown."""

    def __init__(self, *args, lazy_help=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_help = lazy_help

    def get_help_record(self, ctx: click.Context):
        if callable(self.lazy_help):
            self.help = self.lazy_help(ctx.meta.get("target"))
        return super().get_help_record(ctx)


class TargetCommand(click.Command):
    """A command on a target: ``pipeline cv NAME --help`` lists only the params NAME takes."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        named = next((a for a in args if not a.startswith("-")), None)
        wants_help = any(a in ctx.help_option_names for a in args)
        ctx.meta["target"] = _target(ctx, named) if named and wants_help else None
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter) -> None:
        target = ctx.meta.get("target")
        self.epilog = None if target else "The params a target takes differ: `pipeline COMMAND TARGET --help` lists them."
        others = [p for p in self.params if p.name in PARAM_NAMES and target and p.name not in target.flags]
        for p in others:
            p.hidden = True
        try:
            super().format_help(ctx, formatter)
        finally:  # the command object outlives this help (tests, notebooks call the CLI in-process)
            for p in others:
                p.hidden = False


def _target(ctx: click.Context, name: str):
    """The target called ``name`` in the workspace, or None when there is none (the command then
    says so when it runs)."""
    from pipeline.targets import get_target

    try:
        return get_target(name, ctx.obj.workspace)
    except (PipelineError, AttributeError):
        return None


def _option(name: str, value_type, help_text) -> Callable:
    flag = name.replace("_", "-")
    options = {"cls": ParamOption, "lazy_help": help_text} if callable(help_text) else {"help": help_text}
    if value_type is bool:
        return click.option(f"--{flag}/--no-{flag}", name, default=None, **options)
    if name == "hidden":
        return click.option(f"--{flag}", name, callback=lambda c, p, v: _widths(v), **options)
    return click.option(f"--{flag}", name, type=value_type, **options)


def _devices(target) -> str:
    from pipeline.devices import DEVICE_CHOICES

    return "|".join(DEVICE_CHOICES)


def training_options(func):
    func = click.option("--device", default="auto", show_default=True, cls=ParamOption, lazy_help=_devices)(func)
    for name, value_type, help_text in reversed(PARAM_OPTIONS):
        func = _option(name, value_type, help_text)(func)
    return func


def _progress(live: bool | None = None) -> Callable[[str], Progress]:
    """Bars with an ETA on a terminal, plain lines otherwise; ``live`` (the default on a
    terminal) adds the learning-curve chart for members trained in epochs."""
    tty = sys.stderr.isatty()
    if live if live is not None else tty:
        return Live
    return Bars if tty else Lines


def backend_options(func):
    func = click.option("--address", metavar="HOST:PORT", help="A Ray cluster to join (also $RAY_ADDRESS); "
                        "without it --backend ray starts a local Ray for the run.")(func)
    return click.option("--backend", default="local", show_default=True, metavar="|".join(BACKENDS),
                        help="Where the tasks run: this process, or Ray tasks (pip install -e '.[scale]').")(func)


def live_option(func):
    return click.option("--live/--no-live", default=None,
                        help="Redraw train and valid metrics per epoch in the terminal (default: on a terminal).")(func)


def _announce(stage: str, what: str) -> None:
    click.echo(f"{stage}: {what}", err=True)


def _params(flags: dict) -> dict:
    return {k: flags.pop(k) for k in PARAM_NAMES if k in flags}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pipeline")
@click.option("--workdir", type=click.Path(file_okay=False), envvar="PIPELINE_HOME",
              help="Workspace folder (default: $PIPELINE_HOME or the current directory).")
@click.option("--mirror", "mirrors", multiple=True, metavar="DIR|URL",
              help="Dataset mirror tried before the canonical URL (repeatable; also $PIPELINE_MIRROR).")
@click.option("--wait", type=float, default=0.0, help="Seconds to wait for another run's workspace lock.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-v", "--verbose", is_flag=True, help="Log each step (downloads, cache hits).")
@click.pass_context
def cli(click_ctx, workdir, mirrors, wait, debug, verbose):
    """A Kaggle competition pipeline: download, preprocess, cv, train, evaluate, submit, report."""
    from pipeline.api import Pipeline

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="pipeline: %(message)s")
    click_ctx.obj = Pipeline(workdir, mirrors, wait=wait, progress=_progress(False), announce=_announce)


@cli.command()
@click.argument("name")
@click.pass_obj
def download(p: Pipeline, name):
    """Download and verify a target's data (house, fashion, a declared target, a dataset or all)."""
    for path in p.download(name):
        click.echo(path)


@cli.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--name", help="The target's name (default: the folder's or the zip's).")
@click.pass_obj
def init(p: Pipeline, path, name):
    """Declare a competition from its files: a folder or a zip with train.csv, test.csv and
    sample_submission.csv (each may be zipped), or images (folders train/ and test/ with a labels
    CSV and the sample, or CSVs of pixels). Writes a commented [target.NAME] to pipeline.toml."""
    done = p.init(path, name)
    click.echo(done["declaration"])
    click.echo(f"\nadded to {done['config']}: check the guesses, then `pipeline run {done['target']}`")


@cli.command("hub")
@click.pass_obj
def hub_status(p: Pipeline):
    """List the registry: each dataset's URL, whether it is cached and verified."""
    click.echo(str(p.hub()))


@cli.command()
@click.argument("target")
@click.option("--fit-on", "fit_on", type=str)
@click.option("--log-skewed", "log_skewed", type=float)
@click.option("--clip-quantile", "clip_quantile", type=float)
@click.option("--scaling", "scaling", type=str)
@click.option("--numeric-bins", "numeric_bins", type=int)
@click.option("--text-words", "text_words", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def preprocess(p: Pipeline, target, as_json, **flags):
    """Turn the CSVs (or IDX files) into cached tensors under data/; a table's columns, their
    roles and the features they became."""
    summary = p.preprocess(target, **flags)
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(str(summary) or "up to date")
    if summary.get("columns"):
        from pipeline.results import Table

        click.echo(str(Table(summary["columns"], ["column", "role", "distinct", "missing", "features", "note"])))


@cli.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.pass_obj
def columns(p: Pipeline, target, as_json):
    """Each column's role (inferred or declared in pipeline.toml), distinct values, missing
    share and the features it became."""
    table = p.columns(target)
    click.echo(json.dumps(table, indent=2) if as_json else str(table))


@cli.command(cls=TargetCommand)
@click.argument("target")
@training_options
@live_option
@backend_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.pass_obj
def cv(p: Pipeline, target, device, live, backend, address, as_json, **flags):
    """K-fold cross-validation of the configured model; saves a report with learning curves."""
    p.progress = _progress(live)
    report = p.cv(target, device, backend, address, **_params(flags))
    click.echo(json.dumps(report, indent=2) if as_json else str(report))
    if any(f.get("failed_epoch") for f in report["folds"]):
        sys.exit(3)


@cli.command(cls=TargetCommand)
@click.argument("target")
@training_options
@live_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_obj
def train(p: Pipeline, target, device, live, as_json, **flags):
    """Train the final model on every training row and save it under models/."""
    p.progress = _progress(live)
    summary = p.train(target, device, **_params(flags))
    click.echo(json.dumps(summary, indent=2) if as_json else str(summary))


@cli.command(cls=TargetCommand)
@click.argument("target")
@training_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.pass_obj
def evaluate(p: Pipeline, target, device, as_json, **flags):
    """Test-set accuracy, per-class accuracy and confusion matrix (targets with test labels).

    Like every command, it first brings the model up to date with params.toml and the flags."""
    report = p.evaluate(target, device, **_params(flags))
    click.echo(json.dumps(report, indent=2) if as_json else str(report))
    if not as_json and sys.stdout.isatty():  # d2l's predict_ch3 grid, in the terminal itself
        from pipeline import plots

        plots.show_in_terminal(report.run_dir / "predictions.png")


@cli.command(cls=TargetCommand)
@click.argument("target")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the CSV here.")
@click.option("--test", type=click.Path(dir_okay=False), metavar="CSV",
              help="Predict this test file (the training table's columns) with the trained model.")
@click.option("--to-kaggle", "to_kaggle", is_flag=True, help="Also upload it to the target's competition on Kaggle "
              "(pip install -e '.[kaggle]', and your Kaggle credentials).")
@click.option("-m", "--message", help="The upload's description (with --to-kaggle).")
@training_options
@click.pass_obj
def submit(p: Pipeline, target, out, test, to_kaggle, message, device, **flags):
    """Write a checked Kaggle submission CSV (training the model first if needed)."""
    if message and not to_kaggle:
        raise click.UsageError("-m/--message describes an upload: add --to-kaggle")
    summary = p.submit(target, out, device, test, (message or "pipeline submit") if to_kaggle else None,
                       **_params(flags))
    click.echo(f"wrote {summary['rows']} rows to {summary['submission']}")
    if summary.get("kaggle"):
        click.echo(summary["kaggle"])


@cli.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def leaderboard(p: Pipeline, target, as_json):
    """Your submissions to the target's competition on Kaggle, with their scores, newest first."""
    board = p.leaderboard(target)
    click.echo(json.dumps(board, indent=2) if as_json else str(board) if board else "no submissions yet")


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Where to write the blended submission "
              "(default: submissions/TARGET-blend.csv).")
@click.option("--blend", "how", default="greedy", show_default=True, metavar="greedy|mean",
              help="Ensemble selection on the out-of-fold predictions, or equal weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.pass_obj
def blend(p: Pipeline, runs, out, how, as_json):
    """Blend CV runs of one target (run names from `pipeline runs`; after `pipeline submit` for
    each): their CV and the blend's, with weights fit without the scored fold, and the blended
    submission."""
    done = p.blend(list(runs), out, how)
    if as_json:
        click.echo(json.dumps(done, indent=2))
        return
    from pipeline.results import Table

    click.echo(str(Table(done["rows"], done["columns"])))
    click.echo(f"{done['metric']}: blend {done['blend']:.5f}; wrote {done['submission']}")


@cli.command(cls=TargetCommand)
@click.argument("target")
@click.option("--until", help="Stop after this stage.")
@click.option("--force", is_flag=True, help="Run every stage even when up to date.")
@training_options
@live_option
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.pass_obj
def run(p: Pipeline, target, until, force, device, live, as_json, **flags):
    """Run the stages in order, skipping those whose inputs, params and code are unchanged; print
    the CV score and where the report and the submission are."""
    p.progress = _progress(live)
    outcome = p.run(target, until, force, device, **_params(flags))
    click.echo(json.dumps(outcome, indent=2) if as_json else str(outcome))


@cli.command(cls=TargetCommand)
@click.argument("target")
@training_options
@click.pass_obj
def status(p: Pipeline, target, device, **flags):
    """Show each stage as up to date, stale (and why) or missing, like `make -n`."""
    click.echo(str(p.status(target, device, **_params(flags))))


@cli.command()
@click.option("--target", help="Only this target's runs.")
@click.option("--diff", nargs=2, metavar="RUN_A RUN_B", help="The params that differ and the change in score.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def runs(p: Pipeline, target, diff, as_json):
    """Leaderboard of every run in the workspace, best first, the best of each target marked *
    (like `dvc exp show`); --diff compares two runs (like `dvc exp diff`)."""
    result = p.diff(*diff) if diff else p.runs(target)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not result:
        click.echo(f"no runs yet: try `pipeline cv {target or p.first_target()}`")
    else:
        click.echo(str(result))


@cli.command(cls=TargetCommand)
@click.argument("target")
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2,…",
              help="A param and its values, e.g. lr=0.01,0.03 (repeatable; hidden=256,128x64).")
@click.option("--search", default="grid", show_default=True, metavar="grid|tpe",
              help="Every config of the grid, or configs proposed by Optuna's TPE from --range and --grid.")
@click.option("--range", "ranges", multiple=True, metavar="NAME=LOW..HIGH[:log]",
              help="A numeric param's range for --search tpe, e.g. lr=1e-4..1e-1:log (repeatable).")
@click.option("--trials", type=int, default=64, show_default=True, help="--search tpe: configs to train.")
@click.option("--batch", type=int, default=32, show_default=True,
              help="--search tpe: configs proposed at once, trained as one stacked model.")
@training_options
@live_option
@backend_options
@click.option("--json", "as_json", is_flag=True)
@click.option("--save/--no-save", default=True, show_default=True,
              help="Save the best config into params.toml for train and submit.")
@click.pass_obj
def sweep(p: Pipeline, target, grid, search, ranges, trials, batch, device, live, backend, address, as_json, save,
          **flags):
    """Cross-validate every config of a grid at once, or a TPE search of ranges; rank them; save
    the best as the params. A TPE study lives in reports/search.sqlite3: run it again to resume."""
    p.progress = _progress(live)
    report = p.sweep(target, list(grid), save, device, backend, address, search, list(ranges), trials, batch,
                     **_params(flags))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(str(report))
    click.echo(f"{len(report['leaderboard'])} configs x {report['folds']} folds in {report['seconds']:.2f} s "
               f"on {report['device']}")
    if save and report.get("saved"):
        click.echo(f"best config saved to {report['saved']}")


def _flags() -> dict[str, str]:
    """Each param that some command takes as an option, and that option's flag (``--range``)."""
    return {p.name: max(p.opts, key=len) for command in cli.commands.values() for p in command.params
            if isinstance(p, click.Option)}


def _one_line(exc: PipelineError) -> str:
    """A refused param named as the flag a CLI user typed."""
    flag = _flags().get(exc.param) if isinstance(exc, ParamError) else None
    return exc.as_flag(flag) if flag else str(exc)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        cli.main(args=argv, prog_name="pipeline", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("pipeline: aborted", err=True)
        sys.exit(130)
    except PipelineError as exc:
        if debug:
            raise
        click.echo(f"pipeline: error: {_one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("pipeline: interrupted; outputs are left as they were before the stage", err=True)
        sys.exit(130)
