"""The make engine: stages, the lock file, status and make.

Each stage declares its upstream stages and params; its code is what its body imports, read
from the source (:mod:`pipeline.code_graph`). Each records what it read and wrote in
``pipeline.lock``, so that a later run skips it while nothing it used changed.
A stage is up to date when its recorded outputs exist with the recorded hashes and its inputs
(by SHA-1), params and code are what they were when it last ran; otherwise ``status`` says
which one changed, like ``dvc status``. Every output is written atomically, and the lock record
is written after the outputs, so a stage killed midway is simply stale the next time.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline import code_graph, reports
from pipeline.errors import UsageError
from pipeline.backends import Local
from pipeline.hub import sha1_file
from pipeline.params import plain
from pipeline.progress import Progress
from pipeline.workspace import Workspace, write_json

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What every stage gets: where to work, which target, the resolved params, how to report."""

    workspace: Workspace
    target: object  # a pipeline.targets.Target: the engine asks it for its stages and lock sections
    params: dict  # the resolved params as plain values
    config: object = None  # the same, typed: a tabular target's Recipe
    mirrors: list[str] = field(default_factory=list)
    device: str = "auto"
    progress: Callable[[str], Progress] = Progress  # desc -> where the stage's long steps report
    out: Path | None = None  # submit: where to copy the submission as well
    backend: object = field(default_factory=Local)  # where a CV's or sweep's tasks run (pipeline.backends)
    deadline: float | None = None  # time.monotonic() by which the command must be done (a time limit)
    until: str = ""  # the last stage the command brings up to date

    @property
    def section(self) -> str:
        """The lock's key for this target and params (image targets keep one per model)."""
        return self.target.section(self.params)

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.workspace.root))
        except ValueError:
            return str(path.resolve())


@dataclass(frozen=True)
class Stage:
    """``run`` is the stage's body, whose module and what it imports are its code;
    ``params(ctx)`` are the params it reads, which the lock records."""

    name: str
    after: tuple[str, ...]  # upstream stages: their outputs are this stage's inputs
    params: Callable[[Context], dict]
    run: Callable[[Context], tuple[list[Path], dict]]  # -> outputs, summary for the caller


def keys(*names: str) -> Callable[[Context], dict]:
    """A stage's params: these of the context's."""
    return lambda ctx: {k: plain(ctx.params[k]) for k in names if k in ctx.params}


def every_param(besides: tuple[str, ...] = ()) -> Callable[[Context], dict]:
    """A stage's params: all of the context's but ``besides`` (which only later stages read)."""
    return lambda ctx: {k: plain(v) for k, v in sorted(ctx.params.items()) if k not in besides}


def code_version(stage: Stage, target) -> str:
    """A hash of the stage's code (its body's module, what the body imports, transitively, and
    the methods of ``target`` it calls): editing any of it makes the stage stale."""
    return code_graph.code_hash(stage.run, target)


def get_stage(target, name: str) -> Stage:
    for stage in target.stages:
        if stage.name == name:
            return stage
    raise UsageError(f"target {target.name} has no stage {name!r}; "
                     f"its stages: {', '.join(s.name for s in target.stages)}")


# ----------------------------------------------------------------------------- lock and status

def recorded(ctx: Context, stage: str | None = None) -> list[Path]:
    """The outputs the lock records for ``ctx``'s target (of ``stage``, or of every stage)."""
    records = read_lock(ctx.workspace).get(ctx.section, {})
    chosen = records.values() if stage is None else [records.get(stage, {})]
    return [ctx.workspace.root / out for record in chosen for out in record.get("outs", {})]


def read_lock(workspace: Workspace) -> dict:
    path = workspace.lock_file
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("%s is unreadable; every stage will run again", path)
        return {}


def _inputs(stage: Stage, ctx: Context, lock: dict) -> dict:
    """The files upstream stages recorded as their outputs."""
    records = lock.get(ctx.section, {})
    files = {}
    for upstream in stage.after:
        files.update(records.get(upstream, {}).get("outs", {}))
    return files


def check(stage: Stage, ctx: Context, lock: dict, stale_upstream: set[str]) -> tuple[str, str]:
    """(state, reason): ``up to date``, ``stale`` or ``missing``."""
    record = lock.get(ctx.section, {}).get(stage.name)
    if not record:
        return "missing", "never run"
    for rel, digest in record["outs"].items():
        path = ctx.workspace.root / rel
        if not path.exists():
            return "missing", f"output {rel} is missing"
        if sha1_file(path) != digest:
            return "stale", f"output {rel} was changed"
    for upstream in stage.after:
        if upstream in stale_upstream:
            return "stale", f"upstream stage {upstream} is not up to date"
    now_inputs = _inputs(stage, ctx, lock)
    for rel in sorted(set(now_inputs) | set(record["deps"])):
        if now_inputs.get(rel) != record["deps"].get(rel):
            return "stale", f"input {rel} changed"
    params = stage.params(ctx)
    if params != record["params"]:
        name, old, new = _first_change(record["params"], params)
        return "stale", f"param {name} changed: {old!r} -> {new!r}"
    if code_version(stage, ctx.target) != record["code"]:
        return "stale", "code changed"
    return "up to date", ""


def _first_change(old, new, path: str = "") -> tuple[str, object, object]:
    """Where two params differ, down to the value: ``("ensemble.mlp.lr", 0.05, 0.07)``; scalars
    first (a changed lr is the news, the member tables it changed come after it); a member in a
    list is named by its model."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=lambda k: (isinstance(new.get(k, old.get(k)), (list, dict)), k))
        key = next(k for k in keys if old.get(k) != new.get(k))
        return _first_change(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        i = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
        name = new[i].get("model", i) if isinstance(new[i], dict) else i
        return _first_change(old[i], new[i], f"{path}.{name}")
    return path, old, new


def status(ctx: Context, until: str | None = None) -> list[dict]:
    lock = read_lock(ctx.workspace)
    rows, not_ok = [], set()
    for stage in _upto(ctx.target, until):
        state, reason = check(stage, ctx, lock, not_ok)
        if state != "up to date":
            not_ok.add(stage.name)
        rows.append({"stage": stage.name, "state": state, "reason": reason})
    return rows


def _upto(target, until: str | None) -> tuple[Stage, ...]:
    """Every stage in declared order, through ``until``."""
    stages = target.stages
    if until is None:
        return stages
    names = [s.name for s in stages]
    get_stage(target, until)
    return stages[: names.index(until) + 1]


def _needed(target, name: str) -> tuple[Stage, ...]:
    """``name`` and the stages it depends on (transitively), in declared order."""
    wanted, todo = set(), [name]
    while todo:
        stage = get_stage(target, todo.pop())
        if stage.name not in wanted:
            wanted.add(stage.name)
            todo.extend(stage.after)
    return tuple(s for s in target.stages if s.name in wanted)


def execute(stage: Stage, ctx: Context) -> dict:
    """Run one stage and record it in the lock (after its outputs are in place)."""
    lock = read_lock(ctx.workspace)
    inputs = _inputs(stage, ctx, lock)
    started = time.perf_counter()
    outs, summary = stage.run(ctx)
    lock = read_lock(ctx.workspace)
    lock.setdefault(ctx.section, {})[stage.name] = {
        "deps": inputs, "params": stage.params(ctx), "code": code_version(stage, ctx.target),
        "outs": {ctx.rel(p): sha1_file(p) for p in outs},
        "finished": reports.now(), "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(ctx.workspace.lock_file, lock)
    return summary


def make(ctx: Context, until: str, *, force: bool = False, always: bool = False, in_order: bool = False,
         report: Callable[[str, str], None] = lambda stage, what: None) -> dict:
    """Bring ``until`` and what it depends on up to date; ``always`` reruns ``until`` itself.

    ``in_order`` takes every stage declared before ``until`` instead (``pipeline run``).
    Returns the last stage's summary (empty when it was up to date and skipped).
    """
    summary: dict = {}
    ctx.until = until
    for stage in (_upto if in_order else _needed)(ctx.target, until):
        # Upstream stages already ran (or were fresh), so their recorded outputs tell the truth.
        state, reason = check(stage, ctx, read_lock(ctx.workspace), set())
        last = stage.name == until
        if force or state != "up to date" or (always and last):
            report(stage.name, f"running ({reason or 'requested'})")
            summary = execute(stage, ctx)
        else:
            report(stage.name, "up to date, skipped")
            summary = {}
    return summary
