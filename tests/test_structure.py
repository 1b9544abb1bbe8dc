"""The package's shape (issues 22 and 30): short functions, and behaviour that lives on its
owner. A task, metric, model family, column role or target is asked what it does; only the
modules that define it test its name or its class. The names come from the registries, so a
new member of any kind is covered with no edit here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipeline.images.models import MODELS as IMAGE_MODELS
from pipeline.metrics import METRICS
from pipeline.tabular.members import FAMILIES
from pipeline.tabular.roles import ROLES, declarable
from pipeline.targets import BUILTIN, DeclaredImages, HubImages, ImageTarget, SeveralLabels, TabularTarget
from pipeline.tasks import TASKS

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
LONGEST = 60  # lines of one function, its docstring included


def _under(*folders: str) -> set[str]:
    """The package's modules in ``folders`` (relative to the package)."""
    return {str(path.relative_to(PACKAGE)) for folder in folders for path in (PACKAGE / folder).rglob("*.py")}


def _registering_metrics() -> set[str]:
    """metrics.py and the modules of metrics registered on their own (``register(Metric(...))``)."""
    return {"metrics.py"} | {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                             if "register(Metric(" in path.read_text()}


# Each kind of name, read from its registry, and the modules allowed to test it: those that
# define its members. A new family, role, metric or target is covered with no edit here.
KINDS = {
    "tasks": (tuple(TASKS), {"tasks.py"}),
    "metrics": (tuple(METRICS), _registering_metrics()),
    "models": ((*FAMILIES, *IMAGE_MODELS), {*_under("tabular/members"), "tabular/stacked.py", "images/models.py",
                                            "images/train.py"}),
    "roles": ((*ROLES, *declarable()), _under("tabular/roles")),
    "targets": (tuple(BUILTIN), _under("targets")),
}
# the classes whose kind only their own modules may test (isinstance), by the same owners
KIND_CLASSES = {
    "models": {cls.__name__ for cls in FAMILIES.values()},
    "roles": {type(role).__name__ for role in ROLES.values()},
    "targets": {cls.__name__ for cls in (TabularTarget, ImageTarget, HubImages, DeclaredImages, SeveralLabels)},
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


@pytest.mark.parametrize("kind", list(KINDS))
def test_only_the_defining_module_tests_a_name(kind):
    names, owners = KINDS[kind]
    found = {name: hits for name, source in _sources() if name not in owners
             for hits in [_name_tests(source, names)] if hits}
    assert not found, found


def _kind_tests(source: str, classes: set[str]) -> list[str]:
    """``isinstance(x, C)`` of one of ``classes``, and ``getattr``/``hasattr`` probes of a target."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2:
            tested = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} | \
                     {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
            probed = ast.unparse(node.args[0])
            if node.func.id == "isinstance" and tested & classes:
                hits.append(ast.unparse(node))
            elif node.func.id in ("getattr", "hasattr") and "target" in probed:
                hits.append(ast.unparse(node))
    return hits


@pytest.mark.parametrize("kind", list(KIND_CLASSES))
def test_only_the_defining_modules_ask_an_objects_kind(kind):
    """Callers ask a family, role or target what to do; they never test which one it is."""
    owners = KINDS[kind][1]
    found = {name: hits for name, source in _sources() if name not in owners
             for hits in [_kind_tests(source, KIND_CLASSES[kind])] if hits}
    assert not found, found


def test_the_name_check_finds_what_it_looks_for():
    """The control: the patterns catch the switches the rule forbids, and not a loop over names."""
    metrics, tasks, models, roles = (KINDS[kind][0] for kind in ("metrics", "tasks", "models", "roles"))
    assert _name_tests('    if metric.name == "rmsle":', metrics)
    assert _name_tests('    if task != "classification":', tasks)
    assert _name_tests('            if model in ("linear", "mlp"):', models)
    assert _name_tests('    return "auc" if x else ("auc" == y)', metrics)
    assert _name_tests('    elif column.role == "date":', roles)
    assert not _name_tests('    for family in ("linear", "mlp"):', models)
    assert not _name_tests('    x = {"mlp": 1}  # model == "mlp" in a comment', models)
    assert _kind_tests("if isinstance(chosen, SeveralLabels):\n    pass", {"SeveralLabels"})
    assert _kind_tests("slug = getattr(get_target(name), 'kaggle', None)", set())
    assert not _kind_tests("if isinstance(value, (list, tuple)):\n    pass", {"SeveralLabels"})


def test_the_registries_hold_what_the_names_list():
    """The checks above read the registries: they must hold the kinds' known members."""
    assert {"regression", "classification"} <= set(KINDS["tasks"][0])
    assert {"rmse", "log_rmse", "auc", "logloss"} <= set(KINDS["metrics"][0])
    assert {"linear", "mlp", "lightgbm", "glm", "cnn", "resnet"} <= set(KINDS["models"][0])
    assert {"number", "date", "category", "text", "id", "drop"} <= set(KINDS["roles"][0])
    assert {"house", "fashion"} <= set(KINDS["targets"][0])
