"""Our ``best`` recipe against AutoGluon-Tabular's ``best_quality`` preset, side by side in one
run: the same time limit, the same 80/20 split of each development competition's train.csv,
both scored here on the held-out 20% by the same functions. Prints both scores and times.

Why: AutoGluon is the strongest off-the-shelf tabular AutoML; a recipe worth its time should
come close to it on tables neither was tuned for. AutoGluon runs in its own environment
(``--autogluon-python``, else ``$AUTOGLUON_PYTHON``: a virtual environment made with ``pip
install torch==2.13.0 "autogluon.tabular[lightgbm,catboost,xgboost]"``) and is never imported
here, nor by the package or its tests. Ours runs in a fresh process whose ``PYTHONPATH`` is
this checkout, through the library API (``submit``: preprocess, CV, train, submit). The two
sides alternate which goes first, run by run (a competition on one split), so that the
machine's noise falls on both.

    python benchmarks/autogluon.py [--time-limit 10m] [--targets computers,benefits,hotel,strikes]
        [--seed 0[,1,...]] [--only ours|autogluon] [--ours-recipe best] [--ours-params JSON] [--shared ../shared]

``--seed`` picks another split, or several (``--seed 0,1,2,3,4``: a row each and their mean),
which is how noisy a competition is: benefits' 700 held-out rows move our AUC by 0.05 between
splits; ``--ours-params '{"folds": 8}'`` runs our preset with params over it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before_after import COMPETITIONS  # noqa: E402  (the competitions as their README declares them)

HERE = Path(__file__).resolve().parents[1]
HIGHER_IS_BETTER = {"rmsle": False, "auc": True}
# ours, in a fresh process: argv = workspace, target, recipe, seconds, params (JSON); prints the submission and time
OURS = """
import json, sys, time
from pipeline.api import Pipeline
started = time.perf_counter()
summary = Pipeline(sys.argv[1]).submit(sys.argv[2], recipe=sys.argv[3], time_limit=sys.argv[4], **json.loads(sys.argv[5]))
print(json.dumps({"submission": dict(summary).get("submission"), "seconds": time.perf_counter() - started}))
"""
# AutoGluon, by its own interpreter: argv = folder (fit.csv, valid.csv), seconds, JSON of the competition.
# rmsle: AutoGluon's own root_mean_squared_log_error where the installed version has one; else
# the label's log1p fit with root_mean_squared_error and the predictions expm1'd back (1.6.3,
# the version this was written with, has no rmsle: the log1p route is what runs).
AUTOGLUON = """
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from autogluon.core.metrics import METRICS
from autogluon.tabular import TabularPredictor
folder, limit, c = Path(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
fit, valid = pd.read_csv(folder / "fit.csv").drop(columns=c["id"]), pd.read_csv(folder / "valid.csv")
rmsle_native = "root_mean_squared_log_error" in METRICS.get("regression", {})
metric = {"auc": "roc_auc", "rmsle": "root_mean_squared_log_error" if rmsle_native else "root_mean_squared_error"}
if c["metric"] == "rmsle" and not rmsle_native:
    fit[c["label"]] = np.log1p(fit[c["label"]])
started = time.perf_counter()
predictor = TabularPredictor(label=c["label"], eval_metric=metric[c["metric"]], path=str(folder / "ag"),
                             problem_type="binary" if c["task"] == "classification" else "regression")
predictor.fit(fit, presets="best_quality", time_limit=limit)
features = valid.drop(columns=c["id"])
if c["metric"] == "auc":
    predicted = predictor.predict_proba(features)[c["positive"]]
else:
    predicted = predictor.predict(features) if rmsle_native else np.expm1(predictor.predict(features))
pd.DataFrame({c["id"]: valid[c["id"]], c["label"]: np.asarray(predicted)}).to_csv(folder / "autogluon.csv", index=False)
print(json.dumps({"submission": str(folder / "autogluon.csv"), "seconds": time.perf_counter() - started,
                  "rmsle": "native" if rmsle_native else "log1p + rmse"}))
"""


def seconds(value: str) -> float:
    """``600``, ``90s``, ``10m``, ``1.5h`` -> seconds (the pipeline's own time-limit forms)."""
    units = {"s": 1, "m": 60, "h": 3600}
    return float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)


def score(metric: str, truth: pd.Series, predicted: np.ndarray, positive=None) -> float:
    if metric == "rmsle":  # negative predictions clipped at 0, as any submission of a price would be
        return float(np.sqrt(np.mean((np.log1p(np.clip(predicted, 0, None)) - np.log1p(truth)) ** 2)))
    return float(roc_auc_score(truth == positive, predicted))


def child(command: list[str], env: dict | None = None) -> dict:
    """Run one side; its last stdout line is its JSON. A failure prints its stderr's tail."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=HERE)
    if done.returncode:
        raise RuntimeError(f"exit {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ours(folder: Path, name: str, table: dict, recipe: str, limit: float, params: dict) -> dict:
    """``submit NAME --recipe RECIPE --time-limit LIMIT`` with ``params`` in a workspace declaring fit/valid."""
    workspace = folder / "workspace"
    workspace.mkdir()
    files = {"train": folder / "fit.csv", "test": folder / "valid.csv"}
    (workspace / "pipeline.toml").write_text("\n".join(
        [f"[target.{name}]", *[f'{k} = "{v}"' for k, v in {**files, **table}.items()], ""]))
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    out = child([sys.executable, "-c", OURS, str(workspace), name, recipe, str(limit), json.dumps(params)], env)
    out["submission"] = out["submission"] or str(workspace / "submissions" / f"{name}.csv")
    return out


def autogluon(folder: Path, python: str, table: dict, limit: float) -> dict:
    return child([python, "-c", AUTOGLUON, str(folder), str(limit), json.dumps(table)])


def compare(args, name: str, train: pd.DataFrame, seed: int, sides: list[str], first: int) -> dict:
    """One competition on one 80/20 split of its ``train``: each side's held-out score and seconds, and who won."""
    table = COMPETITIONS[name]
    classify = table["task"] == "classification"
    fit, valid = train_test_split(train, test_size=0.2, random_state=seed,
                                  stratify=train[table["label"]] if classify else None)
    truth = valid.set_index(table["id"])[table["label"]]  # the labels stay in this process
    row = {"competition": name, "seed": seed, "metric": table["metric"]}
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides if first % 2 == 0 else sides[::-1]:  # alternate who goes first
            folder = Path(tmp) / side
            folder.mkdir()
            fit.to_csv(folder / "fit.csv", index=False)
            valid.drop(columns=table["label"]).to_csv(folder / "valid.csv", index=False)
            print(f"{name} (seed {seed}): {side} ...", file=sys.stderr, flush=True)
            try:
                out = (ours(folder, name, table, args.ours_recipe, args.limit, args.ours_params) if side == "ours"
                       else autogluon(folder, args.autogluon_python, table, args.limit))
                predicted = pd.read_csv(out["submission"]).set_index(table["id"])[table["label"]]
                row[side] = score(table["metric"], truth, predicted.reindex(truth.index).to_numpy(),
                                  table.get("positive"))
            except Exception as failed:  # noqa: BLE001 - one side's failure must not end the others
                print(f"{name} (seed {seed}): {side} failed: {type(failed).__name__}: {failed}",
                      file=sys.stderr, flush=True)
                continue
            row[f"{side}_seconds"] = out["seconds"]
            print(f"{name} (seed {seed}): {side} {table['metric']} {row[side]:.4f} in {out['seconds']:.0f} s",
                  file=sys.stderr, flush=True)
    return judged(row)


def judged(row: dict) -> dict:
    """``row`` with its winner, where both sides scored."""
    if "ours" in row and "autogluon" in row:
        better = row["ours"] > row["autogluon"] if HIGHER_IS_BETTER[row["metric"]] else row["ours"] < row["autogluon"]
        row["winner"] = "tie" if row["ours"] == row["autogluon"] else "ours" if better else "AutoGluon"
    return row


def means(rows: list[dict]) -> dict:
    """The mean over a competition's splits of each side's score and seconds; none for a side that
    failed on one of them (a mean over fewer splits would not compare)."""
    mean = {"competition": rows[0]["competition"], "seed": "mean", "metric": rows[0]["metric"]}
    for key in ("autogluon", "ours", "autogluon_seconds", "ours_seconds"):
        if all(key in row for row in rows):
            mean[key] = float(np.mean([row[key] for row in rows]))
    return judged(mean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-limit", default="600", help="for each side on each competition: 600, 90s, 10m")
    parser.add_argument("--targets", default=",".join(COMPETITIONS))
    parser.add_argument("--seed", type=lambda text: [int(s) for s in text.split(",")], default=[0],
                        help="the 80/20 split's seed, or several (0,1,2,3,4): a row each and their mean")
    parser.add_argument("--only", choices=("ours", "autogluon"), help="run one side alone")
    parser.add_argument("--ours-recipe", default="best", help="our preset recipe (auto where best is missing)")
    parser.add_argument("--ours-params", type=json.loads, default={},
                        help='params over our recipe, as JSON: \'{"folds": 8}\'')
    parser.add_argument("--autogluon-python", default=os.environ.get("AUTOGLUON_PYTHON"),
                        help="the python of AutoGluon's own environment (default: $AUTOGLUON_PYTHON)")
    parser.add_argument("--shared", type=Path, default=HERE.parent / "shared")
    args = parser.parse_args()
    args.limit = seconds(args.time_limit)
    if args.only != "ours" and not args.autogluon_python:
        parser.error("give --autogluon-python (or set AUTOGLUON_PYTHON): an environment with "
                     'pip install torch==2.13.0 "autogluon.tabular[lightgbm,catboost,xgboost]"')
    sides = [s for s in ("autogluon", "ours") if args.only in (None, s)]
    results, runs = [], 0
    for name in args.targets.split(","):
        train = pd.read_csv(args.shared.resolve() / "competitions" / name / "train.csv")
        rows = [compare(args, name, train, seed, sides, runs + k) for k, seed in enumerate(args.seed)]
        runs += len(rows)
        results += rows + ([means(rows)] if len(rows) > 1 else [])
    cell = lambda row, key, form: format(row[key], form) if key in row else "-"  # noqa: E731
    print(f"\ntime limit {args.limit:.0f} s per side, ours = recipe {args.ours_recipe} {args.ours_params or ''}\n")
    print(f"| competition | seed | metric | AutoGluon best_quality | ours {args.ours_recipe} | AG seconds "
          "| ours seconds | winner |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['competition']} | {row['seed']} | {row['metric']} | {cell(row, 'autogluon', '.4f')} "
              f"| {cell(row, 'ours', '.4f')} | {cell(row, 'autogluon_seconds', '.0f')} "
              f"| {cell(row, 'ours_seconds', '.0f')} | {row.get('winner', '-')} |")
    print("\n" + json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
