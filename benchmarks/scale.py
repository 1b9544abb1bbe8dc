"""Sweeps on Ray and Optuna's TPE (issue 16), in one run on the same house folds:

- the 36-config MLP sweep (lr x weight decay x dropout x width, the MLP's own defaults
  otherwise), on the local backend and on a local Ray with this machine's CPUs: Ray's overhead
  as a time ratio, the tasks' sizes and what travels through the object store;
- TPE against that grid at the same budget, at three seeds: 36 configs proposed 12 at a time
  from ranges that hold the grid, best score found by each.

    python benchmarks/scale.py [--shared ../shared]     (needs the extra: pip install -e ".[scale]")
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

GRID = {"lr": [1e-3, 3e-3, 1e-2], "weight_decay": [1e-5, 1e-3, 1e-1], "dropout": [0.0, 0.2], "hidden": [[128], [256]]}
RANGES = ["lr=1e-3..1e-2:log", "weight_decay=1e-5..1e-1:log", "dropout=0..0.2"]  # the grid's span
TPE_GRID = {"hidden": [[128], [256]]}  # a category, as in the grid
TRIALS, BATCH = 36, 12
SEEDS = (0, 1, 2)  # one seed's best of 36 is a noisy draw; TPE must match the grid at each
# one network per config and fold: a sweep ranks configs, the MLP member's 4 submodels are for its final fit
SWEPT = {"model": "mlp", "submodels": 1}


def house_workspace(shared: Path, folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    for name in ("kaggle_house_pred_train.csv", "kaggle_house_pred_test.csv"):
        os.symlink(shared / "datasets" / name, folder / "data" / name)
    return folder


def row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<42} {value:>16}  {note}", flush=True)


def object_store_traffic(pipeline) -> tuple[float, float]:
    """MB put into the object store once (features and folds), and MB a task's result carries."""
    from pipeline.tabular.cv import FoldScores, _shared
    from pipeline.tabular.recipe import FoldParams
    from pipeline.tabular.stages import load_features
    ctx = pipeline.context("house", SWEPT)
    features = load_features(ctx)
    shared = _shared(features, FoldParams(5, "contiguous"), "cpu")
    one_score = FoldScores("x", [0.1] * 5, [0.1] * 5, [0] * 5, [[0.1] * 5] * 30, [[0.1] * 5] * 30)
    return len(pickle.dumps(shared)) / 1e6, len(pickle.dumps(one_score)) / 1e6


def bench_scale(shared: Path) -> list[bool]:
    try:
        import optuna  # noqa: F401
        import ray
    except ImportError:
        print("  skipped: the [scale] extra is not installed (pip install -e \".[scale]\")", flush=True)
        return []
    from pipeline.api import Pipeline
    from pipeline.backends import Ray
    from pipeline.tabular.cv import sweep_tasks
    from pipeline.params import expand_grid
    from pipeline.tabular.trainer import TrainParams

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(house_workspace(shared, Path(tmp) / "ws"))
        pipeline.preprocess("house", **SWEPT)
        boards, seconds = {}, {}
        for backend in ("local", "ray"):
            started = time.perf_counter()
            if backend == "ray":  # Ray's start-up is part of its cost
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
                ready = time.perf_counter() - started
            report = pipeline.sweep("house", GRID, save=False, backend=backend, **SWEPT)
            seconds[backend] = time.perf_counter() - started
            boards[backend] = [(r["params"], r["mean_valid"]) for r in report["leaderboard"]]
        workers = Ray().workers
        ray.shutdown()
        same = [p for p, _ in boards["local"]] == [p for p, _ in boards["ray"]] and all(
            abs(a - b) <= 1e-4 for (_, a), (_, b) in zip(boards["local"], boards["ray"]))
        configs = [TrainParams(**overrides) for overrides in expand_grid(GRID)]
        tasks, _ = sweep_tasks(configs, workers)
        put_mb, result_mb = object_store_traffic(pipeline)
        grid_best = boards["local"][0][1]
        row("36-config MLP sweep, local (s)", f"{seconds['local']:.1f}")
        row("36-config MLP sweep, ray (s)", f"{seconds['ray']:.1f}",
            f"{seconds['ray'] / seconds['local']:.2f}x local; Ray start {ready:.1f} s")
        row("  ray tasks x configs each", f"{len(tasks)} x {len(configs) // len(tasks)}", f"on {workers} CPUs")
        row("  object store: put once / per task back", f"{put_mb:.1f} MB / {result_mb * len(configs) / len(tasks):.3f} MB")
        results.append(same)
        row("  same leaderboard, local and ray", "yes" if same else "NO", "PASS" if same else "FAIL")

        grids = {0: (grid_best, seconds["local"])}  # seed 0's grid ran above
        for seed in SEEDS:
            if seed not in grids:
                started = time.perf_counter()
                board = pipeline.sweep("house", GRID, save=False, seed=seed, **SWEPT)["leaderboard"]
                grids[seed] = board[0]["mean_valid"], time.perf_counter() - started
            grid_best, grid_seconds = grids[seed]
            started = time.perf_counter()
            tpe = pipeline.sweep("house", TPE_GRID, save=False, search="tpe", ranges=RANGES, trials=TRIALS,
                                 batch=BATCH, seed=seed, **SWEPT)
            tpe_seconds = time.perf_counter() - started
            tpe_best = tpe["leaderboard"][0]
            results.append(tpe_best["mean_valid"] <= grid_best)
            row(f"seed {seed}: grid best of {len(configs)} configs", f"{grid_best:.4f}", f"{grid_seconds:.1f} s")
            row(f"seed {seed}: TPE best of {TRIALS} trials ({BATCH} a batch)", f"{tpe_best['mean_valid']:.4f}",
                f"{tpe_seconds:.1f} s; {'PASS' if results[-1] else 'FAIL'} (<= grid)")
            chosen = {k: tpe_best["params"][k] for k in ("lr", "weight_decay", "dropout", "hidden")}
            print(f"    TPE's best: {chosen}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    print("sweeps on Ray, and TPE against the grid (house, 5 contiguous folds):", flush=True)
    results = bench_scale(args.shared)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
