"""``sync.__all__`` is the engine's public surface (after httpx's test of the same name): every name in it
exists, every name ``sync/__init__.py`` binds is in it, and the types users receive from it are in it. And the
packages import each other as DESIGN.md's layout says."""

from __future__ import annotations

import ast
import inspect
import types
import typing
from pathlib import Path
from typing import Any

import sync
import sync.errors

INCLUDED_PRIVATE_MEMBERS = {"__version__"}


def test_all_names_exist_once() -> None:
    assert len(sync.__all__) == len(set(sync.__all__))
    for name in sync.__all__:
        assert hasattr(sync, name), f"sync.__all__ names {name!r}, which sync does not define"


def test_all_imports_are_exported() -> None:
    public = {
        name
        for name, value in vars(sync).items()
        if not isinstance(value, types.ModuleType)
        and (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
    }
    assert set(sync.__all__) | INCLUDED_PRIVATE_MEMBERS == public


def test_all_matches_what_init_imports() -> None:
    tree = ast.parse(Path(sync.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == set(sync.__all__)


def test_every_error_is_exported() -> None:
    errors = {
        name
        for name, obj in vars(sync.errors).items()
        if inspect.isclass(obj) and issubclass(obj, sync.errors.SyncError)
    }
    assert errors <= set(sync.__all__), sorted(errors - set(sync.__all__))


def test_exported_names_are_the_defining_objects() -> None:
    "Re-exported once: ``sync.X`` is the very object its module defines"
    for name in sync.__all__:
        obj = getattr(sync, name)
        module = getattr(obj, "__module__", None)
        if module and module.startswith("sync.") and (inspect.isclass(obj) or inspect.isfunction(obj)):
            assert getattr(__import__(module, fromlist=[name]), obj.__name__) is obj


def _sync_classes(tp: Any) -> set[type]:
    "The classes defined in sync that an annotation names, however deeply nested"
    found = {tp} if isinstance(tp, type) and tp.__module__.startswith("sync.") else set()
    for arg in typing.get_args(tp):
        found |= _sync_classes(arg)
    return found


def _api_types() -> dict[str, set[str]]:
    "Every sync class that an exported class's fields, or a public method's or function's signature, names"
    seen: dict[str, set[str]] = {}
    for name in sync.__all__:
        obj = getattr(sync, name)
        hints: list[tuple[str, dict[str, Any]]] = []
        if inspect.isclass(obj):
            hints.append((name, typing.get_type_hints(obj)))
            for attr, member in vars(obj).items():
                fn = member.fget if isinstance(member, property) else member
                if inspect.isfunction(fn) and (not attr.startswith("_") or attr == "__init__"):
                    hints.append((f"{name}.{attr}", typing.get_type_hints(fn)))
        elif inspect.isfunction(obj):
            hints.append((name, typing.get_type_hints(obj)))
        for where, h in hints:
            for tp in h.values():
                for cls in _sync_classes(tp):
                    seen.setdefault(cls.__name__, set()).add(where)
    return seen


def test_types_the_public_api_hands_out_are_exported() -> None:
    "A user who receives a sync object from the API can import its class from ``sync`` to annotate it"
    missing = {name: sorted(where) for name, where in _api_types().items() if name not in sync.__all__}
    assert missing == {}


#: The only modules of client/ that import server/: the demo runs a whole hierarchy of nodes in one process,
#: and the ``cunsync`` command registers the node's commands (``server.cli``) beside the tablet's and refuses
#: a typed value as they do (``server.cli_common.checked``)
CLIENT_MAY_IMPORT_SERVER = {"client/demo.py": {"server"}, "client/cli.py": {"server.cli", "server.cli_common"}}


def _imported(path: Path) -> set[str]:
    "The modules a file imports, at any depth (a function's lazy imports too), as absolute names"
    package = path.parent.name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(f"{package}.{node.module or ''}".rstrip(".") if node.level else str(node.module))
    return found


def test_the_packages_import_each_other_only_downwards() -> None:
    """DESIGN.md's layout: ``sync/`` imports neither ``server/`` nor ``client/``, nor click (the engine has no
    command line: a problem becomes click's error in the CLIs; sqlite-utils and httpx load click for their
    own, so this is read from the source, not from ``sys.modules``); the tablet's code does not import the
    node's (what both need is in ``sync/``) but where it starts nodes and shares the node's CLI helpers; no
    node module imports the tablet's"""
    root = Path(sync.__file__).parent.parent
    wrong = []
    for package, forbidden in (("sync", ("server", "client", "click")), ("server", ("client",)),
                               ("client", ("server",))):
        for path in sorted((root / package).glob("*.py")):
            allowed = CLIENT_MAY_IMPORT_SERVER.get(f"{package}/{path.name}", set())
            for module in sorted(_imported(path)):
                top = module.split(".")[0]
                if top in forbidden and not any(module == a or module.startswith(a + ".") for a in allowed):
                    wrong.append(f"{package}/{path.name} imports {module}")
    assert wrong == []
