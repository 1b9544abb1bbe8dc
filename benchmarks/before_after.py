"""A change's cost and effect, side by side in one run: ``pipeline cv`` with no flags on house
and the four development competitions, by the code at a git revision and by this checkout.

The revision is checked out into a temporary git worktree; each command runs in a fresh
process whose ``PYTHONPATH`` puts one checkout's package first, the two alternating target by
target so that the machine's noise falls on both. Prints both CV scores, both times and their
ratio. A refactor must leave the scores equal (issue 30); the times are what to compare.

    python benchmarks/before_after.py REV [--shared ../shared] [--targets house,hotel,...] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COMPETITIONS = {  # as ../shared/competitions/README.md declares them
    "computers": {"id": "Id", "label": "price", "task": "regression", "metric": "rmsle"},
    "benefits": {"id": "Id", "label": "ui", "task": "classification", "metric": "auc", "positive": "yes"},
    "hotel": {"id": "Id", "label": "avg_price_per_room", "task": "regression", "metric": "rmsle"},
    "strikes": {"id": "Id", "label": "multiple", "task": "classification", "metric": "auc", "positive": "yes"},
}
# run in the child process: one cv through the library API, its score and time as JSON
CHILD = """
import json, sys, time
from pipeline.api import Pipeline
started = time.perf_counter()
report = Pipeline(sys.argv[1], mirrors=[sys.argv[3]]).cv(sys.argv[2], seed=int(sys.argv[4]))
print(json.dumps({"score": report["mean_valid"], "seconds": time.perf_counter() - started}))
"""


def declare(shared: Path) -> str:
    lines = []
    for name, table in COMPETITIONS.items():
        files = {"train": shared / "competitions" / name / "train.csv", "test": shared / "competitions" / name / "test.csv"}
        lines += [f"[target.{name}]", *[f'{k} = "{v}"' for k, v in {**files, **table}.items()], ""]
    return "\n".join(lines)


def cv(code: Path, workspace: Path, target: str, shared: Path, seed: int) -> dict:
    """``pipeline cv TARGET --seed SEED`` by the package in ``code``, in a workspace of its own."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(workspace), target, str(shared / "datasets"), str(seed)],
                          env=env, capture_output=True, text=True, cwd=code)
    if done.returncode:
        raise SystemExit(f"{code}: cv {target} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare against (e.g. HEAD~3)")
    parser.add_argument("--shared", type=Path, default=HERE.parent / "shared")
    parser.add_argument("--targets", default="house," + ",".join(COMPETITIONS))
    parser.add_argument("--seeds", default="0", help="the folds' seeds to run each target at (noise shows as their spread)")
    args = parser.parse_args()
    shared = args.shared.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(before), args.rev], check=True,
                       capture_output=True)
        try:
            print(f"{'target':<10} {'seed':>4} {args.rev + ' CV':>14} {'this CV':>10} {'before s':>9} {'this s':>8} "
                  f"{'ratio':>6}")
            for target, seed in itertools.product(args.targets.split(","), map(int, args.seeds.split(","))):
                runs = {}
                for side, code in (("before", before), ("this", HERE)):
                    workspace = Path(tmp) / "workspaces" / side / str(seed)
                    workspace.mkdir(parents=True, exist_ok=True)
                    (workspace / "pipeline.toml").write_text(declare(shared))
                    runs[side] = cv(code, workspace, target, shared, seed)
                b, t = runs["before"], runs["this"]
                print(f"{target:<10} {seed:>4} {b['score']:>14.4f} {t['score']:>10.4f} {b['seconds']:>9.1f} {t['seconds']:>8.1f} "
                      f"{t['seconds'] / b['seconds']:>6.2f}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(before)], capture_output=True)


if __name__ == "__main__":
    main()
