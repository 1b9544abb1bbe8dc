"""Params: a target's defaults, then a preset recipe, then ``params.toml``, then flags; grids.

``params.toml`` holds one table per target::

    [house]
    lr = 0.01   # comments, order and arrays of tables survive every write (tomlkit)

It is read with tomllib and written with tomlkit, so ``pipeline sweep --save`` changes the
swept values and nothing else: the user's comments, order and ``ensemble`` tables stay.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import tomlkit

from pipeline.errors import ConfigError, ParamError, UsageError
from pipeline.workspace import Workspace, write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

HEADER = "Params per target; flags override them. `pipeline sweep` writes the best config here."


def read_toml(path: Path) -> dict:
    """A workspace TOML file as a dict (empty when absent); a syntax error is one line."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def from_file(workspace: Workspace, target: str) -> dict:
    """The ``[target]`` table of ``params.toml`` (empty when absent)."""
    path = workspace.params_file
    table = read_toml(path).get(target, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{target}] must be a table")
    return dict(table)


def save(workspace: Workspace, target: str, values: dict) -> Path:
    """Set ``values`` in ``params.toml``'s ``[target]`` table, keeping everything else as written."""
    path = workspace.params_file
    read_toml(path)  # a file that is not TOML is refused before it is touched
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    if not document:
        document.add(tomlkit.comment(HEADER))
    if target not in document:
        document.add(target, tomlkit.table())
    table = document[target]
    # tomlkit keeps the comments and blank lines that head the next table at the end of this
    # one's body: a new key goes before them, so they stay with the table they describe.
    body = table.value.body
    trailing = []
    while body and body[-1][0] is None:
        trailing.insert(0, body.pop())
    for key, value in values.items():
        table[key] = list(value) if isinstance(value, tuple) else value
    body.extend(trailing)
    return write_text(path, tomlkit.dumps(document))


def resolve(target, workspace: Workspace, flags: dict, **options) -> tuple[dict, object]:
    """The target's params under ``params.toml``'s ``[target]`` table and ``flags``: as plain
    values, and as the target's typed config (a tabular target's recipe). Flags win over the file."""
    stored = {}
    for table in target.params_tables:
        found = from_file(workspace, table)
        if target.known is not None and set(found) - target.known:
            raise ConfigError(f"{workspace.params_file}: [{table}] has unknown param "
                              f"{sorted(set(found) - target.known)[0]!r} (known: {', '.join(sorted(target.known))})")
        stored.update(found)
    return target.configure(stored, {k: v for k, v in flags.items() if v is not None}, **options)


def parse_grid(items: list[str] | tuple[str, ...], defaults: dict, sweepable) -> dict[str, list]:
    """``["lr=0.01,0.03", "hidden=256,128x64"]`` -> ``{"lr": [0.01, 0.03], "hidden": [[256], [128, 64]]}``.

    Values are typed by the param's value in ``defaults``; only ``sweepable`` params are taken.
    """
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        key = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise UsageError(f"grid {item!r}: write NAME=V1,V2,… (e.g. lr=0.01,0.03)")
        if key not in sweepable:
            raise UsageError(f"grid {item!r}: unknown param {name!r} (sweepable: {', '.join(sorted(sweepable))})")
        grid[key] = [_typed(key, defaults[key], v.strip(), item) for v in values.split(",")]
    return grid


def _typed(key: str, default, text: str, item: str):
    try:
        if isinstance(default, bool) or default == "auto":  # a switch; log_target may also be "auto"
            if text.lower() == "auto" and default == "auto":
                return "auto"
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, (list, tuple)):
            return [int(w) for w in text.split("x")]
        return type(default)(text)
    except ValueError:
        raise UsageError(f"grid {item!r}: {text!r} is not a valid {key}") from None


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the grid's order, as dicts of overrides."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def plain(value):
    """A param value as JSON keeps it (tuples become lists), so recorded and current compare equal."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value
