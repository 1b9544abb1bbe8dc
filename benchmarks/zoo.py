"""What each member of a recipe earns (issue 31): one ``pipeline cv`` of the recipe on each
development competition, then the honest blend (each fold's weights fit on the other folds'
out-of-fold predictions, as the CV scores it) of every member, and of every member but one, from
the out-of-fold predictions that CV kept. A member earns its place where the blend without it
is worse; its seconds are what it cost.

    python benchmarks/zoo.py [--recipe best] [--targets computers,benefits,hotel,strikes] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before_after import COMPETITIONS, declare  # noqa: E402  (the competitions as their README declares them)

from pipeline import checkpoints  # noqa: E402
from pipeline.api import Pipeline  # noqa: E402
from pipeline.folds import fold_rows  # noqa: E402
from pipeline.tabular.ensemble import blend, fit_weights  # noqa: E402
from pipeline.tabular.stages import OOF_FORMAT, load_features  # noqa: E402


def honest_blend(oof: torch.Tensor, y: torch.Tensor, valid_rows: list, metric, how: str) -> float:
    """The mean fold score of the blend of ``oof`` (M, rows, outputs), each fold weighed without it."""
    scores = []
    for rows in valid_rows:
        others = torch.ones(len(y), dtype=torch.bool)
        others[rows] = False
        weights = fit_weights(how, oof[:, others], y[others], metric)
        blended = blend(list(oof[:, rows]), metric, weights)
        scores.append(float(metric.score(metric.task.scored(blended), y[rows])))
    return float(np.mean(scores))


def zoo(pipe: Pipeline, name: str, recipe: str) -> None:
    started = time.perf_counter()
    report = pipe.cv(name, recipe=recipe)
    seconds = time.perf_counter() - started
    ctx = pipe.context(name, {"recipe": recipe})
    features, metric = load_features(ctx), ctx.target.spec.scorer
    kept = checkpoints.load(ctx.workspace.data / name / "oof.pt", OOF_FORMAT, "out-of-fold", "cv")
    oof, params = kept["predictions"].double(), report["params"]
    valid = [va for _, va in fold_rows(features.y, params["folds"], params["split"], params["seed"],
                                       stratify=metric.task.stratify)]
    how, members = params.get("blend", "mean"), report["members"]
    whole = honest_blend(oof, features.y, valid, metric, how)
    print(f"\n{name} ({metric.name}, {'higher' if metric.higher_is_better else 'lower'} is better), recipe {recipe}: "
          f"blend {report['mean_valid']:.4f} in {seconds:.0f} s (preprocess included)", flush=True)
    print(f"| member | alone | weight | seconds | blend without it | it earns |\n|---|---:|---:|---:|---:|---:|")
    for i, member in enumerate(members):
        without = honest_blend(oof[[j for j in range(len(members)) if j != i]], features.y, valid, metric, how)
        earns = (whole - without) * (1 if metric.higher_is_better else -1)
        print(f"| {member['model']} | {member['mean_valid']:.4f} | {member['weight']:.2f} | {member['seconds']:.0f} "
              f"| {without:.4f} | {earns:+.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="best")
    parser.add_argument("--targets", default=",".join(COMPETITIONS))
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "pipeline.toml").write_text(declare(args.shared.resolve()))
        pipe = Pipeline(folder)
        for name in args.targets.split(","):
            zoo(pipe, name, args.recipe)


if __name__ == "__main__":
    main()
