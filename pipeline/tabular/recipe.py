"""A recipe: the typed description of what a tabular CV trains. The features' params, the
folds', the members (each with its family's own params) and how their predictions blend.

``params.toml`` and flags are flat (``lr = 0.01``, ``--epochs 5``); :func:`resolve` turns them,
with a target's defaults and presets, into a :class:`Recipe`. A flat value goes to every member
whose family declares that param: ``--epochs 5`` shortens the auto recipe's MLP and leaves its
LightGBM alone, which has no epochs. A flag that no member uses is refused; a key of
``params.toml`` that this recipe does not use is kept for the recipes that do.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields

from pipeline.errors import ParamError, UsageError
from pipeline.folds import SPLITS
from pipeline.params import plain
from pipeline.tabular import members as families
from pipeline.tabular.budget import seconds
from pipeline.tabular.ensemble import BLENDS
from pipeline.tabular.features import FeatureParams
from pipeline.tabular.members import Member
from pipeline.tabular.trainer import TrainParams


@dataclass(frozen=True)
class FoldParams:
    """K-fold CV: ``contiguous`` is d2l's split (fold i is the i-th block of rows), ``shuffled``
    scikit-learn's (stratified for classification); the seed also seeds every member's fit."""

    folds: int = 5
    split: str = "contiguous"
    seed: int = 0

    def __post_init__(self):  # folds are checked against the rows (pipeline.folds.fold_rows)
        if self.split not in SPLITS:
            raise ParamError("split", self.split, f"not one of {', '.join(SPLITS)}")


log = logging.getLogger(__name__)

RECIPE_KEYS = ("recipe", "model", "ensemble", "stack", "seeds", "blend", "time_limit", "final")
# What predicts the submission: each member refit on every row, or the fold models of its CV
# averaged (AutoGluon's bagging; see pipeline.tabular.model.bagged)
FINALS = ("refit", "folds")
FEATURE_KEYS = tuple(f.name for f in fields(FeatureParams))
FOLD_KEYS = tuple(f.name for f in fields(FoldParams))


@dataclass(frozen=True)
class Recipe:
    """``seeds``: each member is trained that many times and averaged (torch members from as
    many initialisations, scikit-learn members with a ``random_state`` from consecutive states;
    the others are deterministic and fit once); ``auto``: as many as the time limit leaves room
    for (see :func:`pipeline.tabular.cv.cross_validate_recipe`), one without a limit. ``blend``:
    ``mean`` or ``greedy`` (ensemble selection) of every member, of both levels. ``stack``:
    level-2 members, trained on the members' out-of-fold predictions besides the features
    (:mod:`pipeline.tabular.stacking`). ``time_limit``: the seconds a command may spend, planned
    as :mod:`pipeline.tabular.budget` says. ``final``: what predicts the submission, each member
    refit on every row (``refit``) or its CV's fold models averaged (``folds``, no refit)."""

    name: str
    features: FeatureParams
    folds: FoldParams
    members: tuple[Member, ...]
    blend: str = "mean"
    seeds: int | str = 1
    time_limit: float | None = None  # seconds for a command's whole work (see pipeline.tabular.budget)
    stack: tuple[Member, ...] = ()
    final: str = "refit"

    def __post_init__(self):
        if self.final not in FINALS:
            raise ParamError("final", self.final, f"not one of {', '.join(FINALS)}")
        if self.final == "folds" and self.stack:
            raise ParamError("final", self.final, "a stacked recipe refits its members: drop stack or use refit")
        if self.blend not in BLENDS:
            raise ParamError("blend", self.blend, f"not one of {', '.join(BLENDS)}")
        if self.seeds != "auto" and (isinstance(self.seeds, bool) or not isinstance(self.seeds, int)
                                     or self.seeds < 1):
            raise ParamError("seeds", self.seeds, "must be at least 1, or auto")

    def used_params(self, task) -> dict:
        """The params this recipe uses on ``task``, as its report and the lock record them: the
        folds', the features', and each member's own (one member's at the top level)."""
        out = {"recipe": self.name} if self.name else {}
        out.update(asdict(self.folds))
        out.update(asdict(self.features))
        out.update(seeds=self.seeds)
        if self.time_limit is not None:
            out.update(time_limit=self.time_limit)
        if self.final != "refit":
            out.update(final=self.final)
        used = [{k: plain(v) for k, v in m.used_params(task).items()} for m in self.members]
        if len(used) == 1 and not self.stack:
            out.update(used[0])
        else:
            out.update(blend=self.blend, ensemble=used)
        if self.stack:
            out.update(stack=[{k: plain(v) for k, v in m.used_params(task).items()} for m in self.stack])
        return dict(sorted(out.items()))

    @property
    def every_member(self) -> tuple[Member, ...]:
        """The members of both levels, the level-1 ones first (as a CV's results list them)."""
        return self.members + self.stack

    def torch_config(self) -> TrainParams:
        """The one torch model a sweep trains."""
        config = self.members[0].sweep_config() if len(self.members) == 1 else None
        if config is None:
            raise UsageError("a sweep trains one torch model at a time: choose model linear or mlp")
        return config


def known_params() -> set[str]:
    """Every key that params.toml may set for a tabular target."""
    return {*families.every_param(), *FEATURE_KEYS, *FOLD_KEYS, *RECIPE_KEYS}


def resolve(target, stored: dict, flags: dict, *, single: bool = False) -> Recipe:
    """The recipe of ``target`` under ``params.toml``'s values (``stored``) and ``flags``.

    The recipe is the ``recipe`` asked for, else (when a ``model`` is asked for) that model
    alone, else the target's default preset. ``single`` asks for the one model alone whatever
    the presets (a sweep). A preset's members take the values given for their params; members
    written in params.toml keep their own."""
    given = {**stored, **flags}
    preset, name = _preset(target, given, single)
    flat = {**target.defaults, **{k: v for k, v in preset.items() if k != "ensemble"}, **given}
    written = "ensemble" in given and not single
    tables = (given["ensemble"] if written else preset.get("ensemble")) or [{"model": flat.get("model", "linear")}]
    members = _installed(_members(target, "ensemble", tables, given, written), written or not name)
    stacked = "stack" in given and not single
    stack = _installed(_members(target, "stack", (given["stack"] if stacked else preset.get("stack")) or [], given,
                                stacked), stacked)
    _check_used(flags, members + stack, target)
    try:
        return Recipe(name, FeatureParams(**{k: flat[k] for k in FEATURE_KEYS if k in flat}),
                      FoldParams(**{k: flat[k] for k in FOLD_KEYS if k in flat}), members,
                      flat.get("blend", "mean"), _seeds(flat.get("seeds", 1)), seconds(flat.get("time_limit")), stack,
                      flat.get("final", "refit"))
    except TypeError as exc:  # a value of the wrong type, e.g. folds = "five"
        raise UsageError(f"target {target.name}: {exc}") from None


def _seeds(value) -> int | str:
    """``seeds`` as a recipe takes it: a count (``3``, ``3.0``, ``"3"``) or ``"auto"``."""
    if value == "auto":
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ParamError("seeds", value, "must be at least 1, or auto") from None


def _preset(target, given: dict, single: bool) -> tuple[dict, str]:
    """The preset the params ask for, and its name ("" for a model alone)."""
    name = "" if single else given.get("recipe") or ("" if "model" in given else target.default_preset or "")
    if name and name not in target.presets:
        raise ParamError("recipe", name, f"not one of {', '.join(target.presets)} for target {target.name}")
    if name:
        return target.presets[name], name
    model = given.get("model", target.defaults.get("model", "linear"))
    return target.model_presets.get(model, {"ensemble": [{"model": model}]}), ""


def _installed(members: tuple[Member, ...], written: bool) -> tuple[Member, ...]:
    """A preset's members whose library is installed (the others left out, with a warning); a
    member the user wrote whose library is not is a one-line error, before any work."""
    for member in members:
        if member.missing() and written:
            raise UsageError(f"model {member.label} is not installed: {member.missing()}")
        if member.missing():
            log.warning("the recipe's %s member is left out: it is not installed (%s)", member.label, member.missing())
    return tuple(member for member in members if not member.missing())


def _members(target, key: str, tables, given: dict, written: bool) -> tuple[Member, ...]:
    if not isinstance(tables, list):
        raise ParamError(key, tables, "must be a list of member tables")
    return tuple(_member(target, key, table, given, written) for table in tables)


def _member(target, key: str, table, given: dict, written: bool) -> Member:
    """A member table over its family's defaults and the target's: given values override a
    preset's table, and a table written by the user overrides the given values."""
    if not isinstance(table, dict) or not isinstance(table.get("model"), str):
        raise ParamError(key, table, f"each member is a table with a model, one of {', '.join(families.FAMILIES)}")
    family = table["model"]
    if family not in families.FAMILIES:
        raise ParamError("model", family, f"not one of {', '.join(families.FAMILIES)}")
    declared = families.declared(family)
    values = {k: v for k, v in target.family_defaults.get(family, {}).items() if k in declared}
    own = {k: v for k, v in table.items() if k != "model"}
    shared = {k: given[k] for k in declared if k in given}
    values.update({**shared, **own} if written else {**own, **shared})
    return families.build(family, values)


def _check_used(flags: dict, members: tuple[Member, ...], target) -> None:
    """A flag that no member (nor the features, folds or blend) uses would silently do nothing."""
    used = {*FEATURE_KEYS, *FOLD_KEYS, *RECIPE_KEYS}
    for member in members:
        used |= set(families.declared(member.family))
    for key, value in flags.items():
        if key not in used:
            labels = ", ".join(m.label for m in members)
            raise ParamError(key, value, f"no member of this recipe ({labels}) uses it for target {target.name}")
