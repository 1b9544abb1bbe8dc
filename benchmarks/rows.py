"""Tables of 10,000 to 1,000,000 rows (issue 24): where the default recipe's time and memory go,
against rows, and time limits.

On generated binary tables (25 numbers, categories of 3 to 1,000 levels, a date; metric AUC):
each step of `pipeline submit` with the defaults (preprocess; each member's CV; the rest of the
CV: in-fold encoders, blend, report; the final fit; the submission) and the peak memory of each
command, at 10k, 100k and 300k rows; the 200,000-row table's CV against
LightGBM with its defaults on the same folds; `pipeline submit --time-limit 15m` on 1,000,000
rows (with --million); and `pipeline cv --time-limit 2m` on each development competition against
its unlimited CV.

    python benchmarks/rows.py [--shared ../shared] [--million]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.api import Pipeline
from pipeline.folds import fold_rows
from pipeline.tabular.stages import load_features
from recipes import COMPETITIONS  # benchmarks/recipes.py
from tables import COMPETITIONS as WITH_DATES, command, declare, row  # benchmarks/tables.py

SIZES = (10_000, 100_000, 300_000)
TIGHT = "10s"  # a limit below every competition's CV time, to show what the budget gives up


def binary_table(folder: Path, rows: int, seed: int = 0, numbers: int = 25, levels=(3, 8, 20, 100, 1000)) -> dict:
    """25 numbers, categories of several cardinalities and a date; a binary label from a
    non-linear score of them (interactions, a sine, the season)."""
    r = np.random.default_rng(seed)
    n = rows + rows // 4
    X = r.normal(size=(n, numbers)).astype(np.float32)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(numbers)])
    score = X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + np.sin(2 * X[:, 3]) + 0.3 * X[:, 4] ** 2
    for j, k in enumerate(levels):
        codes = r.integers(0, k, n)
        frame[f"c{j}"] = np.array([f"L{v}" for v in range(k)])[codes]
        score += r.normal(0, 0.5, k)[codes]
    day = pd.Timestamp("2020-01-01") + pd.to_timedelta(r.integers(0, 730, n), unit="D")
    frame["day"] = day.strftime("%Y-%m-%d")
    score += 0.5 * np.sin(2 * np.pi * day.day_of_year.to_numpy() / 365)
    frame.loc[r.random(n) < 0.02, "x5"] = np.nan
    frame.insert(0, "id", np.arange(n))
    frame["target"] = np.where(score + r.logistic(size=n) > np.median(score), "yes", "no")
    folder.mkdir(parents=True, exist_ok=True)
    frame.iloc[:rows].to_csv(folder / "train.csv", index=False)
    frame.iloc[rows:].drop(columns="target").to_csv(folder / "test.csv", index=False)
    return {"train": str(folder / "train.csv"), "test": str(folder / "test.csv"), "id": "id", "label": "target",
            "task": "classification", "metric": "auc", "positive": "yes"}


def lock_seconds(root: Path, name: str) -> dict[str, float]:
    return {stage: record["seconds"] for stage, record in json.loads((root / "pipeline.lock").read_text())[name].items()}


def steps(root: Path, name: str) -> tuple[dict, float, float]:
    """`pipeline submit` with the defaults: the seconds of each step, its CV's report, and its
    wall seconds and peak MB."""
    seconds, peak = command(root, "submit", name)
    report = Pipeline(root).runs(name)[0]
    report = json.loads((root / "reports" / "runs" / report["run"] / "report.json").read_text())
    stages = lock_seconds(root, name)
    members = {f"cv: {m['model']}": m["seconds"] for m in report["members"]}
    out = {"preprocess": stages["preprocess"], **members,
           "cv: the rest (in-fold, blend, report)": stages["cv"] - sum(members.values()),
           "final fit": stages["train"], "submission": stages["submit"]}
    return {"steps": out, "report": report}, seconds, peak


def lightgbm_defaults(root: Path, name: str, folds: int, seed: int) -> float:
    """LightGBM's LGBMClassifier with its defaults on our folds and our native columns."""
    data = load_features(Pipeline(root).context(name))
    X, y = data.native.numpy(), data.y.numpy()
    scores = []
    for train, valid in fold_rows(data.y, folds, "shuffled", seed, stratify=True):
        model = lightgbm.LGBMClassifier(verbose=-1).fit(X[train.numpy()], y[train.numpy()],
                                                        categorical_feature=data.native_categorical)
        scores.append(roc_auc_score(y[valid.numpy()], model.predict_proba(X[valid.numpy()])[:, 1]))
    return float(np.mean(scores))


def bench_sizes(root: Path, sizes) -> None:
    print(f"  {'rows':>9} {'step':<40} {'seconds':>9}", flush=True)
    for rows in sizes:
        name = f"t{rows}"
        table = binary_table(root / name, rows)
        (root / "pipeline.toml").write_text(declare({name: table}))
        done, seconds, peak = steps(root, name)
        for step, spent in done["steps"].items():
            print(f"  {rows:>9,} {step:<40} {spent:>9.1f}", flush=True)
        auc = done["report"]["mean_valid"]
        print(f"  {rows:>9,} {'submit, all of it (AUC ' + f'{auc:.4f})':<40} {seconds:>9.1f}   peak {peak:,.0f} MB",
              flush=True)


def bench_200k(root: Path) -> list[bool]:
    name = "t200000"
    (root / "pipeline.toml").write_text(declare({name: binary_table(root / name, 200_000)}))
    seconds, peak = command(root, "cv", name)
    report = Pipeline(root).runs(name)[0]
    ours = report["score"]
    theirs = lightgbm_defaults(root, name, 5, 0)
    results = [seconds < 300 and peak < 3072, ours >= theirs]
    row("200,000 rows: pipeline cv with the defaults", f"{seconds:.0f} s, {peak:,.0f} MB", "< 300 s, 3 GB",
        results[0])
    row("  its CV AUC against LightGBM's defaults, same folds", f"{ours:.4f} vs {theirs:.4f}", "at least",
        results[1])
    return results


def bench_million(root: Path, rows: int = 1_000_000) -> list[bool]:
    name = f"t{rows}"
    (root / "pipeline.toml").write_text(declare({name: binary_table(root / name, rows)}))
    seconds, peak = command(root, "submit", name, "--time-limit", "15m")
    report = Pipeline(root).runs(name)[0]
    report = json.loads((root / "reports" / "runs" / report["run"] / "report.json").read_text())
    written = len(pd.read_csv(root / "submissions" / f"{name}.csv")) == rows // 4
    results = [seconds < 15 * 60 + 60 and peak < 8192 and written]
    row(f"{rows:,} rows: pipeline submit --time-limit 15m", f"{seconds:.0f} s, {peak:,.0f} MB", "< 961 s, 8 GB",
        results[0])
    limit = report["time_limit"]
    row("  its CV AUC; what the limit cut or shortened", f"{report['mean_valid']:.4f}",
        f"cut {[c['member'] for c in limit['cut']]}, shortened {[s['member'] for s in limit['shortened']]}")
    return results


def bench_limits(shared: Path, root: Path) -> list[bool]:
    targets = {name: {"train": str(shared / "competitions" / name / "train.csv"),
                      "test": str(shared / "competitions" / name / "test.csv"), **table}
               for name, table in {**COMPETITIONS, **{n: t for n, (t, _) in WITH_DATES.items()}}.items()}
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.toml").write_text(declare(targets))
    pipe, results = Pipeline(root), []
    for name in targets:
        pipe.preprocess(name)
        started = time.perf_counter()
        unlimited = pipe.cv(name)["mean_valid"]
        free = time.perf_counter() - started
        metric = pipe.context(name).target.spec.scorer
        for limit in ("2m", TIGHT):
            started = time.perf_counter()
            limited = pipe.cv(name, time_limit=limit)
            seconds = time.perf_counter() - started
            worse = (unlimited - limited["mean_valid"]) if metric.higher_is_better else \
                (limited["mean_valid"] - unlimited)
            if limit == TIGHT:  # shown, not judged: what a limit shorter than the CV gives up
                spent = limited["time_limit"]
                row(f"  --time-limit {TIGHT}: cut {[c['member'] for c in spent['cut']]}, shortened "
                    f"{[c['member'] for c in spent['shortened']]}", f"{limited['mean_valid']:.4f}", f"{seconds:.0f} s")
                continue
            results.append(seconds <= 120 and worse <= 0.02 * abs(unlimited))
            row(f"{name}: cv --time-limit 2m against no limit ({free:.0f} s)",
                f"{limited['mean_valid']:.4f} vs {unlimited:.4f}", f"{seconds:.0f} s", results[-1])
    return results


def bench_rows(shared: Path, million: bool = False) -> list[bool]:
    """Every part of this benchmark: sizes (printed), 200k against LightGBM, 1M, time limits."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("the default recipe's steps against rows:", flush=True)
        bench_sizes(root / "sizes", SIZES)
        results += bench_200k(root / "200k")
        if million:
            results += bench_million(root / "million")
        results += bench_limits(shared.resolve(), root / "limits")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--million", action="store_true", help="Also 1,000,000 rows under --time-limit 15m.")
    args = parser.parse_args()
    results = bench_rows(args.shared, args.million)
    print(f"{sum(results)} of {len(results)} row checks passed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
