"""A sweep: every config of a grid of one torch model's params cross-validated at once, or
Optuna's TPE proposing them from ranges; ranked, reported, and the best saved to params.toml."""

from __future__ import annotations

import math
import time
from dataclasses import replace

from pipeline import params as params_file, plots, reports
from pipeline.devices import resolve_device
from pipeline.make import Context
from pipeline.tabular.cv import cross_validate
from pipeline.tabular.members import TorchMember
from pipeline.tabular.search import search
from pipeline.tabular.stages import load_features
from pipeline.tabular.trainer import TrainParams


def sweep(ctx: Context, grid: dict[str, list], save: bool = True, space: dict | None = None,
          trials: int = 0, batch: int = 32) -> dict:
    """Cross-validate every config of ``grid`` over the recipe's torch model, or, with a ``space``
    of ranges, ``trials`` configs proposed by Optuna's TPE ``batch`` at a time; rank them all and
    save the best one's swept params. Nothing is written unless every config trained."""
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    recipe = ctx.config
    base = recipe.torch_config()
    options = dict(device=device, backend=ctx.backend, progress=ctx.progress(f"sweep {ctx.target.name}"))
    started = time.perf_counter()
    if space is None:
        configs = [base.with_(**overrides) for overrides in params_file.expand_grid(grid)]
        result = cross_validate(features, configs, recipe.folds, curves=False, **options)
        board = [{"params": s.params.to_dict(), "mean_valid": s.mean_valid, "std_valid": s.std_valid,
                  "valid": s.valid, "failed_epoch": s.failed_epoch} for s in result.ranked()]
        swept = list(grid)
    else:
        board = search(features, base, space, grid, recipe.folds, trials=trials, batch=batch, target=ctx.target.name,
                       storage=ctx.workspace.reports / "search.sqlite3", **options)
        swept = [*space, *grid]
    metric = features.spec.scorer
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "sweep")
    best = board[0] if board else {"params": base.to_dict(), "mean_valid": float("nan")}
    picture = plots.sweep_png(board, swept, run_dir / "sweep.png", metric.name)
    best_recipe = replace(recipe, members=(TorchMember(TrainParams.from_dict(best["params"])),))
    report = {"run": run_dir.name, "target": ctx.target.name, "command": "sweep", "metric": metric.name,
              "params": best_recipe.used_params(metric.task), "grid": swept, "search": "grid" if space is None else "tpe",
              "best_mean_valid": best["mean_valid"], "leaderboard": board, "folds": recipe.folds.folds,
              "seconds": time.perf_counter() - started, "device": str(device), "backend": ctx.backend.name,
              "created": reports.now(), "plots": [picture.name]}
    if save and not math.isnan(best["mean_valid"]):
        chosen = {k: best["params"][k] for k in swept}
        report["saved"] = str(params_file.save(ctx.workspace, ctx.target.name, chosen))
    reports.save_report(run_dir, report, ctx.workspace)
    return report
