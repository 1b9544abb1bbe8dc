"""A workspace's targets: the built-in ones and those its ``pipeline.toml`` declares."""

from __future__ import annotations

from pipeline.errors import UsageError
from pipeline.targets.base import Target
from pipeline.targets.builtin import BUILTIN
from pipeline.targets.declared import declared_targets
from pipeline.workspace import Workspace


def all_targets(workspace: Workspace) -> dict[str, Target]:
    return {**BUILTIN, **declared_targets(workspace)}


def get_target(name: str, workspace: Workspace) -> Target:
    targets = all_targets(workspace)
    if name not in targets:
        raise UsageError(f"unknown target {name!r}; choose from {', '.join(targets)} "
                         f"(declare more in {workspace.config_file.name})")
    return targets[name]
