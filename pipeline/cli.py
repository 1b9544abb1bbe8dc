"""The ``pipeline`` command: a thin click layer over :mod:`pipeline.stages` and friends.

Errors caused by input (:class:`PipelineError`) print one line and exit non-zero; a traceback
appears only with ``--debug``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import click

from pipeline import __version__, hub, reports, stages
from pipeline.errors import PipelineError, UsageError
from pipeline.folds import parse_grid
from pipeline.targets import all_targets, get_target
from pipeline.workspace import Workspace, mirrors_from_env

log = logging.getLogger("pipeline")


class State:
    def __init__(self, workdir, mirrors, wait):
        self.workspace = Workspace.resolve(workdir)
        self.mirrors = list(mirrors) + mirrors_from_env()
        self.wait = wait


def _hidden(value: str | None):
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give widths like 256 or 128,64") from None


TRAINING_OPTIONS = [
    click.option("--recipe", help="A preset: house has best (the default) and d2l (d2l 4.10)."),
    click.option("--model", help="house/declared: linear|mlp (a single model); fashion: softmax|mlp|lenet|cnn."),
    click.option("--hidden", callback=lambda c, p, v: _hidden(v), help="Hidden widths, e.g. 256 or 128,64."),
    click.option("--activation", type=click.Choice(["relu", "gelu", "tanh", "silu", "elu"])),
    click.option("--dropout", type=float),
    click.option("--epochs", type=int),
    click.option("--lr", type=float, help="Learning rate."),
    click.option("--weight-decay", type=float),
    click.option("--batch-size", type=int),
    click.option("--log-target/--no-log-target", default=None, help="Train on log(label)."),
    click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd"])),
    click.option("--schedule", type=click.Choice(["constant", "cosine", "none", "onecycle"])),
    click.option("--folds", type=int, help="K for K-fold cross-validation."),
    click.option("--split", type=click.Choice(["contiguous", "shuffled"]), help="Fold assignment."),
    click.option("--seed", type=int),
    click.option("--fit-on", type=click.Choice(["all", "train"]), help="Fit preprocessing on train+test or train."),
    click.option("--log-skewed", type=float, help="log1p numeric columns with |skew| above this (0: off)."),
    click.option("--clip-quantile", type=float, help="Clip numeric columns to their [q, 1-q] quantiles (0: off)."),
    click.option("--augment/--no-augment", default=None, help="Images: random crop and flip."),
    click.option("--valid-fraction", type=float, help="Images: held-out share when --folds < 2."),
    click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda"),
]
PARAM_FLAGS = ("recipe", "model", "hidden", "activation", "dropout", "epochs", "lr", "weight_decay", "batch_size",
               "log_target", "optimizer", "schedule", "folds", "split", "seed", "fit_on", "log_skewed",
               "clip_quantile", "augment", "valid_fraction")


def training_options(func):
    for option in reversed(TRAINING_OPTIONS):
        func = option(func)
    return func


def _flags_for(target, kwargs: dict) -> dict:
    """Flags given on the command line, checked against what the target takes."""
    given = {k: kwargs.pop(k) for k in PARAM_FLAGS if k in kwargs}
    given = {k: v for k, v in given.items() if v is not None}
    if target.kind == "image":
        if "hidden" in given:
            given["hidden"] = given["hidden"][0] if len(given["hidden"]) == 1 else given["hidden"]
        allowed = {"model", "valid_fraction", "folds", "seed", "hidden", "dropout", "epochs", "lr",
                   "weight_decay", "batch_size", "optimizer", "schedule", "augment"}
    else:
        allowed = set(target.defaults) | ({"recipe"} if target.presets else set())
    for key in given:
        if key not in allowed:
            raise UsageError(f"--{key.replace('_', '-')} does not apply to target {target.name}")
    return given


def _progress(desc: str):
    """An epoch callback: a tqdm bar on a terminal, else a plain line every ~10% of epochs."""
    state = {}

    def on_epoch(epoch: int, total: int) -> None:
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = state.get("bar") or state.setdefault("bar", tqdm(total=total, desc=desc, unit="epoch", leave=False))
            bar.update(1)
            if epoch == total:
                bar.close()
                state.clear()
        elif epoch == total or epoch % max(1, math.ceil(total / 10)) == 0:
            click.echo(f"{desc}: epoch {epoch}/{total}", err=True)

    return on_epoch


def _context(state: State, target_name: str, flags: dict, device: str = "auto", out=None) -> stages.Context:
    target = get_target(target_name, state.workspace)
    params = stages.resolve_params(target, state.workspace, _flags_for(target, flags))
    return stages.Context(state.workspace, target, params, state.mirrors, device, _progress, out)


def _announce(stage: str, what: str) -> None:
    click.echo(f"{stage}: {what}", err=True)


def _make(state: State, ctx: stages.Context, until: str, **options) -> dict:
    options.setdefault("always", True)
    with state.workspace.exclusive(state.wait):
        return stages.make(ctx, until, report=_announce, **options)


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
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="pipeline: %(message)s")
    click_ctx.obj = State(workdir, mirrors, wait)


@cli.command()
@click.argument("name")
@click.pass_obj
def download(state: State, name):
    """Download and verify a target's data (house, fashion, a declared target, a dataset or all)."""
    targets = all_targets(state.workspace)
    if name in targets:
        summary = _make(state, _context(state, name, {}), "download")
        files = summary.get("files", [])
    else:
        paths = hub.download_group(name, state.workspace.data, state.mirrors)
        files = [str(p) for p in paths.values()]
    for path in files:
        click.echo(path)


@cli.command("hub")
@click.pass_obj
def hub_status(state: State):
    """List the registry: each dataset's URL, whether it is cached and verified."""
    rows = hub.status(state.workspace.data)
    click.echo(reports.format_table(rows, ["name", "cached", "verified", "url"]))


@cli.command()
@click.argument("target")
@click.option("--fit-on", type=click.Choice(["all", "train"]))
@click.option("--log-skewed", type=float)
@click.option("--clip-quantile", type=float)
@click.pass_obj
def preprocess(state: State, target, **flags):
    """Turn the CSVs (or IDX files) into cached tensors under data/."""
    summary = _make(state, _context(state, target, flags), "preprocess")
    click.echo(json.dumps(summary))


def _print_cv(report: dict) -> None:
    rows = [{"fold": i + 1, "train": f["train"], "valid": f["valid"],
             "note": f"diverged at epoch {f['failed_epoch']}" if f.get("failed_epoch") else ""}
            for i, f in enumerate(report["folds"])]
    click.echo(reports.format_table(rows, ["fold", "train", "valid", "note"]))
    click.echo(f"{report['metric']}: mean valid {report['mean_valid']:.5f} ± {report['std_valid']:.5f}  "
               f"({report['seconds']:.2f} s on {report['device']})")
    click.echo(f"report: {Path('reports/runs') / report['run'] / 'report.md'}")


@cli.command()
@click.argument("target")
@training_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.pass_obj
def cv(state: State, target, device, as_json, **flags):
    """K-fold cross-validation of the configured model; saves a report with learning curves."""
    ctx = _context(state, target, flags, device)
    if ctx.target.kind == "image":
        raise UsageError("for fashion use `pipeline train fashion --folds K` (it reports the fold scores)")
    report = _make(state, ctx, "cv")
    click.echo(json.dumps(report, indent=2)) if as_json else _print_cv(report)
    if any(f.get("failed_epoch") for f in report["folds"]):
        sys.exit(3)


@cli.command()
@click.argument("target")
@training_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_obj
def train(state: State, target, device, as_json, **flags):
    """Train the final model on every training row and save it under models/."""
    summary = _make(state, _context(state, target, flags, device), "train")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif "history" in summary:
        last = summary["history"][-1][-1]
        click.echo(f"trained {summary['params']['model']}: train accuracy {last['train_accuracy']:.4f}"
                   + (f", valid accuracy {summary['valid_accuracy']:.4f}" if "valid_accuracy" in summary else "")
                   + f" ({summary['seconds']:.1f} s on {summary['device']})")
    else:
        click.echo(f"saved {summary['model']} (train {summary['train']:.5f}, "
                   f"{summary['seconds']:.2f} s on {summary['device']})")


@cli.command()
@click.argument("target")
@training_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.pass_obj
def evaluate(state: State, target, device, as_json, **flags):
    """Test-set accuracy, per-class accuracy and confusion matrix (targets with test labels).

    Like every command, it first brings the model up to date with params.toml and the flags."""
    ctx = _context(state, target, flags, device)
    if ctx.target.kind != "image":
        raise UsageError(f"target {target} has no test labels to evaluate on; use `pipeline cv {target}`")
    report = _make(state, ctx, "evaluate")
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(reports.format_table([{"class": k, "accuracy": v} for k, v in report["per_class"].items()],
                                    ["class", "accuracy"]))
    click.echo(f"test accuracy {report['test_accuracy']:.4f} ({report['seconds']:.1f} s on {report['device']})")
    click.echo(f"report: {Path('reports/runs') / report['run'] / 'report.md'}")


@cli.command()
@click.argument("target")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the CSV here.")
@training_options
@click.pass_obj
def submit(state: State, target, out, device, **flags):
    """Write a checked Kaggle submission CSV (training the model first if needed)."""
    summary = _make(state, _context(state, target, flags, device, Path(out) if out else None), "submit")
    click.echo(f"wrote {summary['rows']} rows to {summary['submission']}")


@cli.command()
@click.argument("target")
@click.option("--until", help="Stop after this stage.")
@click.option("--force", is_flag=True, help="Run every stage even when up to date.")
@click.option("--device", default="auto", show_default=True)
@click.pass_obj
def run(state: State, target, until, force, device):
    """Run the stages in order, skipping those whose inputs, params and code are unchanged."""
    ctx = _context(state, target, {}, device)
    last = until or stages.stages_of(ctx.target)[-1].name
    _make(state, ctx, last, always=False, force=force, in_order=True)


@cli.command()
@click.argument("target")
@training_options
@click.pass_obj
def status(state: State, target, device, **flags):
    """Show each stage as up to date, stale (and why) or missing, like `make -n`."""
    rows = stages.status(_context(state, target, flags, device))
    click.echo(reports.format_table(rows, ["stage", "state", "reason"]))


@cli.command()
@click.option("--target", help="Only this target's runs.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def runs(state: State, target, as_json):
    """Leaderboard of every run in the workspace, best score first (like `dvc exp show`)."""
    rows = reports.leaderboard(state.workspace, target)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no runs yet: try `pipeline cv house`")
    else:
        click.echo(reports.format_table(rows, ["target", "kind", "metric", "score", "model", "seconds", "device", "run"]))


@cli.command()
@click.argument("target")
@click.option("--grid", "grid", multiple=True, required=True, metavar="NAME=V1,V2,…",
              help="A param and its values, e.g. lr=0.01,0.03 (repeatable; hidden=256,128x64).")
@training_options
@click.option("--json", "as_json", is_flag=True)
@click.option("--save/--no-save", default=True, show_default=True,
              help="Save the best config into params.toml for train and submit.")
@click.pass_obj
def sweep(state: State, target, grid, device, as_json, save, **flags):
    """Cross-validate every config of a grid at once; rank them; save the best as the params."""
    ctx = _context(state, target, flags, device)
    if ctx.target.kind == "image":
        raise UsageError(f"sweep works on tabular targets; {target} is an image target")
    with state.workspace.exclusive(state.wait):
        stages.make(ctx, "preprocess", always=False, report=_announce)
        report = stages.run_sweep(ctx, parse_grid(grid), save=save)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    rows = [{**{k: r["params"][k] for k in report["grid"]}, "mean_valid": r["mean_valid"], "std": r["std_valid"]}
            for r in report["leaderboard"]]
    click.echo(reports.format_table(rows[:20], [*report["grid"], "mean_valid", "std"]))
    click.echo(f"{len(rows)} configs x {report['folds']} folds in {report['seconds']:.2f} s on {report['device']}")
    if save and report.get("saved"):
        click.echo(f"best config saved to {report['saved']}")


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
        click.echo(f"pipeline: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("pipeline: interrupted; outputs are left as they were before the stage", err=True)
        sys.exit(130)
