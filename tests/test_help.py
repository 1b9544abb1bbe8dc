"""Help that shows what applies (issue 25): `pipeline COMMAND TARGET --help` lists only the
params TARGET takes, with its own choices, and every one it lists is accepted; `pipeline --help`
answers without loading torch or scikit-learn."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import make_competition, run_cli
from pipeline.cli import PARAM_OPTIONS, TargetCommand, cli
from pipeline.targets import all_targets
from pipeline.workspace import Workspace

COMMANDS = sorted(name for name, command in cli.commands.items() if isinstance(command, TargetCommand))
TYPES = {name: value_type for name, value_type, _ in PARAM_OPTIONS}
VALUES = {int: "2", float: "0.1", str: "16"}
SPECIAL = {"time_limit": "10m", "hidden": "16"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_competition(tmp_path_factory.mktemp("help") / "ws")


def _listed(out: str) -> list[str]:
    """The params whose flags a help page lists: ``--weight-decay`` is weight_decay."""
    flags = re.findall(r"^\s+--([a-z-]+)", out, flags=re.MULTILINE)
    return [f.replace("-", "_") for f in flags if f.replace("-", "_") in TYPES]


def _flag(target, param: str) -> list[str]:
    """The flag with a value the target takes: its first choice, else a plain one of the type."""
    flag = "--" + param.replace("_", "-")
    if TYPES[param] is bool:
        return [flag]
    choices = target.choices.get(param)
    return [flag, str(choices[0]) if choices else SPECIAL.get(param, VALUES[TYPES[param]])]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", ["house", "fashion", "toy"])
def test_every_option_a_targets_help_lists_is_accepted_with_its_choices(ws, capsys, command, name):
    target = all_targets(Workspace(ws))[name]
    code, out, _ = run_cli(ws, capsys, command, name, "--help")
    assert code == 0
    listed = _listed(out)
    assert set(listed) == {p for p in TYPES if p in target.flags}, out
    for param, choices in target.choices.items():
        if param in listed and choices:
            assert ", ".join(map(str, choices)) in " ".join(out.split()), (param, out)
    for param in listed:  # status resolves the params exactly as every training command does
        assert _accepted(ws, capsys, name, _flag(target, param), target.choices.get("model", ())), param


def _accepted(ws, capsys, name: str, flag: list[str], models) -> bool:
    """Accepted as it is, or with a model that uses it (a member's own param, --hidden for one,
    is refused where no member of the recipe uses it: that is not a flag help should hide)."""
    code, _, err = run_cli(ws, capsys, "status", name, *flag)
    if code == 0:
        return True
    assert "no member of this recipe" in err, err
    return any(run_cli(ws, capsys, "status", name, *flag, "--model", model)[0] == 0
               for model in models if flag[0] != "--model")


def test_help_without_a_target_says_the_options_depend_on_it(ws, capsys):
    code, out, _ = run_cli(ws, capsys, "cv", "--help")
    assert code == 0 and "`pipeline COMMAND TARGET --help` lists them" in " ".join(out.split())
    assert {"tta", "recipe", "blend"} <= set(_listed(out))  # every param of some target


def test_declared_targets_are_not_offered_a_preset_they_refuse(ws, capsys):
    """The help once offered house's presets to declared targets, which then refused d2l."""
    _, out, _ = run_cli(ws, capsys, "cv", "toy", "--help")
    assert "A preset recipe (auto, best)." in " ".join(out.split())
    _, out, _ = run_cli(ws, capsys, "cv", "house", "--help")
    assert "A preset recipe (d2l, best, auto)." in " ".join(out.split())


def test_pipeline_help_loads_neither_torch_nor_scikit_learn():
    """What makes `pipeline --help` answer in a fraction of a second (benchmarks time it)."""
    code = ("import sys; from pipeline.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'lightgbm', 'matplotlib', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
