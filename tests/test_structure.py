"""The package's shape (issue 22): short functions, and behaviour that lives on its owner. A
metric, task or model is asked what it does; only the module that defines it tests its name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
LONGEST = 60  # lines of one function, its docstring included

TASK_NAMES = ("regression", "classification")
METRIC_NAMES = ("rmse", "log_rmse", "rmsle", "mae", "accuracy", "logloss", "auc")
MODEL_NAMES = ("linear", "mlp", "lightgbm", "lasso", "ridge", "svr", "gbm", "glm", "logistic", "softmax", "lenet",
               "cnn", "resnet")
# each kind of name, and the modules allowed to test it: those that define them
OWNERS = {
    TASK_NAMES: {"tasks.py"},
    METRIC_NAMES: {"metrics.py"},
    MODEL_NAMES: {"tabular/stacked.py", "tabular/members/neural.py", "tabular/members/scikit.py",
                  "tabular/members/boosting.py", "images/models.py", "images/train.py"},
}


def _sources() -> list[tuple[str, str]]:
    return [(str(path.relative_to(PACKAGE)), path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))]


def _name_tests(source: str, names: tuple[str, ...]) -> list[str]:
    """Lines that compare something with one of ``names`` (``== "mlp"``, ``in ("linear", ...)``)."""
    quoted = "|".join(re.escape(n) for n in names)
    compare = re.compile(rf"""(==|!=)\s*["']({quoted})["']|["']({quoted})["']\s*(==|!=)""")
    member = re.compile(rf"""\b(not\s+)?in\s*[(\[{{]\s*["']({quoted})["']""")
    hits = []
    for line in source.splitlines():
        code = line.split("#")[0]
        if compare.search(code) or (member.search(code) and not re.match(r"\s*for\b|.*\bfor\b.*\bin\b", code)):
            hits.append(line.strip())
    return hits


def test_no_function_is_longer_than_the_limit():
    long = []
    for name, source in _sources():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST:
                    long.append(f"{name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


@pytest.mark.parametrize("names", list(OWNERS), ids=["tasks", "metrics", "models"])
def test_only_the_defining_module_tests_a_name(names):
    found = {name: hits for name, source in _sources() if name not in OWNERS[names]
             for hits in [_name_tests(source, names)] if hits}
    assert not found, found


def test_the_name_check_finds_what_it_looks_for():
    """The control: the patterns catch the switches the rule forbids, and not a loop over names."""
    assert _name_tests('    if metric.name == "rmsle":', METRIC_NAMES)
    assert _name_tests('    if task != "classification":', TASK_NAMES)
    assert _name_tests('            if model in ("linear", "mlp"):', MODEL_NAMES)
    assert _name_tests('    return "auc" if x else ("auc" == y)', METRIC_NAMES)
    assert not _name_tests('    for family in ("linear", "mlp"):', MODEL_NAMES)
    assert not _name_tests('    x = {"mlp": 1}  # model == "mlp" in a comment', MODEL_NAMES)
