"""Which package modules a stage's code is, read from the source's import statements: nothing
is imported, so ``status`` stays fast, and no list of modules can go stale.

A stage's code is the file its body is in and the modules its body reaches: those bound to the
names it reads (and the names the functions and classes of its own module that it calls read,
transitively), those its imports inside them bring, and, through the methods of the context's
target it calls (``ctx.target.fetch``, inherited ones included), the target's file, those of the
classes it inherits from (its methods and the engine's context call theirs: ``ctx.section``)
and what those methods reach the same way. Only what the body reaches counts of its module's
imports: ``download`` does not use the trainer that ``train`` beside it does. A module reached
counts whole, with every module it imports, at module level or inside a function (the package
defers heavy imports into functions), transitively. Python runs a module's parent packages'
``__init__.py`` first: they count, with what they import at module level, not inside their
functions (``pipeline.open`` imports the whole API). Annotations are never evaluated, so what
only they name does not count.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

PACKAGE = Path(__file__).resolve().parent  # the code's root; another copy of the package may be read instead
NAME = __name__.split(".")[0]


@dataclass
class Source:
    """One module as parsed: its top-level names and the package modules its imports bring."""

    defs: dict[str, list[ast.AST]] = field(default_factory=dict)  # name -> def, class or assignment
    bound: dict[str, set[str]] = field(default_factory=dict)  # name -> the modules its import brings
    imports: set[str] = field(default_factory=set)  # everywhere in the module
    top_imports: set[str] = field(default_factory=set)  # at module level: what importing it runs


def code_modules(function: Callable, target=None, root: Path | None = None) -> set[str]:
    """The modules of ``function``'s code (a stage's body); ``target``: the object its
    ``ctx.target`` is, whose methods it calls."""
    root, module = root or PACKAGE, function.__module__
    if not _lookup(_parse(root, module), function.__qualname__):  # a lambda or nested function: all its module uses
        return _closure(root, {module}, set())
    files, roots = _reached(root, module, function.__qualname__, target)
    return _closure(root, roots, files)


def code_hash(function: Callable, target=None, root: Path | None = None) -> str:
    """A hash of the bytes of ``function``'s code files in the order of their package-relative
    paths, which it hashes too (the same on every machine)."""
    root = root or PACKAGE
    digest = hashlib.sha1()
    for path in sorted(_path(root, m).relative_to(root).as_posix() for m in code_modules(function, target, root)):
        digest.update(path.encode() + b"\0" + (root / path).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def module_file(name: str, root: Path | None = None) -> Path:
    """Where module ``name`` (``pipeline.tabular.cv``) is under ``root``."""
    return _path(root or PACKAGE, name)


def _reached(root: Path, module: str, qualname: str, target) -> tuple[set[str], set[str]]:
    """(the modules whose files the walk from ``module.qualname`` went through, the modules that
    imports on the way bring)."""
    todo, seen, roots, through = [(module, qualname)], set(), set(), {module}
    while todo:
        where, name = todo.pop()
        if (where, name) in seen:
            continue
        seen.add((where, name))
        source, cls = _parse(root, where), name.rpartition(".")[0]
        for node in _lookup(source, name):
            for kind, value in _uses(node, where, _path(root, where).name == "__init__.py", root):
                if kind == "import":
                    roots |= value
                elif kind == "name" and value in source.defs:
                    todo.append((where, value))
                elif kind == "name":
                    roots |= source.bound.get(value, set())
                elif kind == "self" and cls and _lookup(source, f"{cls}.{value}"):
                    todo.append((where, f"{cls}.{value}"))
                elif kind == "target" and (method := _method(root, target, value)):
                    todo.append(method)
                    through |= _kinds(target)
    return through, roots


def _method(root: Path, target, name: str) -> tuple[str, str] | None:
    """(module, qualname) of the target's method (or property) ``name`` in the first class of its
    type's MRO that defines the name (a kind inherits what every target shares); None for a field."""
    for cls in type(target).__mro__ if target is not None else ():
        nodes = _lookup(_parse(root, cls.__module__), f"{cls.__qualname__}.{name}") if _ours(cls.__module__) else []
        if nodes:
            found = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in nodes)
            return (cls.__module__, f"{cls.__qualname__}.{name}") if found else None
    return None


def _kinds(target) -> set[str]:
    """The modules of the target's class and of the classes it inherits from."""
    return {cls.__module__ for cls in type(target).__mro__ if _ours(cls.__module__)}


def _lookup(source: Source, qualname: str) -> list[ast.AST]:
    """The nodes that define ``qualname``: a top-level name, or ``Class.member``."""
    first, _, rest = qualname.partition(".")
    nodes = source.defs.get(first, [])
    if not rest:
        return nodes
    return [n for node in nodes if isinstance(node, ast.ClassDef) for n in _defined(node.body).get(rest, [])]


def _uses(node: ast.AST, module: str, package: bool, root: Path) -> Iterator[tuple[str, object]]:
    """What running ``node`` may reach: ("import", modules), ("name", a name it reads),
    ("self", an attribute of self) and ("target", an attribute of a ``.target``)."""
    for child in _walk(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield "import", {m for _, brought in _imported(child, module, package, root) for m in brought}
        elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
            yield "name", child.id
        elif isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name) and child.value.id == "self":
            yield "self", child.attr
        elif isinstance(child, ast.Attribute) and isinstance(child.value, ast.Attribute) \
                and child.value.attr == "target":
            yield "target", child.attr


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node`` but annotations, which are never run here (postponed evaluation)."""
    yield node
    for name, value in ast.iter_fields(node):
        if name in ("annotation", "returns"):
            continue
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, ast.AST):
                yield from _walk(child)


def _closure(root: Path, roots: set[str], files: set[str]) -> set[str]:
    """``files`` and ``roots``, each with what it imports, transitively, and their parent packages."""
    whole, run = set(), set(files)
    todo = [(name, True) for name in roots] + [(p, False) for name in files for p in _parents(name)]
    while todo:
        name, everything = todo.pop()
        if name in whole or (not everything and name in run):
            continue
        (whole if everything else run).add(name)
        source = _parse(root, name)
        todo += [(m, True) for m in (source.imports if everything else source.top_imports)]
        todo += [(p, False) for p in _parents(name)]
    return whole | run


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _parse(root: Path, name: str) -> Source:
    path = _path(root, name)
    return _parsed(root, name, path.name == "__init__.py", path.read_bytes())


@functools.lru_cache(maxsize=None)
def _parsed(root: Path, name: str, package: bool, data: bytes) -> Source:
    """Keyed by the file's bytes, so that an edited file is parsed again."""
    tree = ast.parse(data)
    source, top = Source(_defined(tree.body)), set(map(id, _statements(tree.body)))
    for node in _statements(tree.body, nested=True):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for bound, brought in _imported(node, name, package, root):
                source.imports |= brought
                if id(node) in top:
                    source.bound.setdefault(bound, set()).update(brought)
                    source.top_imports |= brought
    return source


def _defined(body: list[ast.stmt]) -> dict[str, list[ast.AST]]:
    """The names a module or class body defines, with the nodes that define them."""
    defs: dict[str, list[ast.AST]] = {}
    for node in _statements(body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs.setdefault(node.name, []).append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for name in (n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)
                         and isinstance(n.ctx, ast.Store)):
                defs.setdefault(name, []).append(node)
    return defs


def _statements(body: list[ast.stmt], nested: bool = False) -> Iterator[ast.stmt]:
    """The statements of a body, those in its blocks (``if``, ``try``...) included, and those in
    its functions and classes when ``nested``. Imports are statements: walking no expression
    saves most of the time."""
    for node in body:
        yield node
        if not nested and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for name, value in ast.iter_fields(node):
            if name in ("body", "orelse", "finalbody"):
                yield from _statements(value, nested)
            elif name in ("handlers", "cases"):
                for part in value:
                    yield from _statements(part.body, nested)


def _imported(node: ast.Import | ast.ImportFrom, module: str, package: bool, root: Path) -> list[tuple[str, set[str]]]:
    """(the name an import binds, the package modules it brings) for each of its names; an
    import from outside the package brings none."""
    if isinstance(node, ast.Import):
        return [(a.asname or a.name.split(".")[0], {a.name} if _ours(a.name) else set()) for a in node.names]
    base = _absolute(node, module, package)
    if not _ours(base):
        return [(a.asname or a.name, set()) for a in node.names]
    # ``from pipeline.tabular import members`` brings the submodule; ``from pipeline.x import f``, x
    return [(a.asname or a.name, {f"{base}.{a.name}"} if _path(root, f"{base}.{a.name}").is_file() else {base})
            for a in node.names]


def _absolute(node: ast.ImportFrom, module: str, package: bool) -> str:
    """The module a ``from`` import names, relative imports resolved."""
    if not node.level:
        return node.module
    parts = module.split(".")
    base = parts[: len(parts) - node.level + (1 if package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _ours(name: str) -> bool:
    return name == NAME or name.startswith(NAME + ".")


def _path(root: Path, name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    package = root / rel / "__init__.py"
    return package if package.is_file() else root / rel.with_suffix(".py")
