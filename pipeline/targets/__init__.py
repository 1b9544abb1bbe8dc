"""Competition targets: the built-in ``house`` and ``fashion``, and tabular and image targets
declared in the workspace's ``pipeline.toml`` (:mod:`pipeline.targets.declared`), each a
:class:`~pipeline.targets.base.Target`.

A target knows where its data come from, its stage graph and the commands it takes, its
params' defaults and choices; a tabular target's params resolve into a typed recipe
(:mod:`pipeline.tabular.recipe`).

Each name below loads its module when first asked for. A stage's code holds its target's
module and, as Python runs them first, that module's parent packages with what they import
(:mod:`pipeline.code_graph`): were every kind imported here, a tabular stage's code would be the
image target's too, and an image stage's every tabular module.
"""

from __future__ import annotations

from importlib import import_module

HOMES = {"Target": "base", "TabularTarget": "tabular", "ImageTarget": "images", "HubImages": "images",
         "DeclaredImages": "declared_images", "SeveralLabels": "several",
         "HOUSE": "builtin", "FASHION": "builtin", "BUILTIN": "builtin", "declared_targets": "declared",
         "all_targets": "lookup", "get_target": "lookup"}


def __getattr__(name: str):
    if name not in HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{HOMES[name]}"), name)
