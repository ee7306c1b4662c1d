"""The boundary between the pure layers and the processes above them.

``raftmp/core`` must stay pure (see its ``__init__``): it may import only the
standard library's pure modules and its own siblings. This test reads each
module's imports from its syntax tree, so it fails on an import hidden inside
a function too, and on any use of a clock, a sleep, the global ``random`` or
``os``/``socket`` I/O.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

CORE = pathlib.Path(__file__).resolve().parent.parent / "raftmp" / "core"

# Standard-library modules a pure layer may use.
ALLOWED = {"__future__", "bisect", "collections", "dataclasses", "enum", "heapq", "itertools",
           "math", "operator", "random", "typing", "zlib", "struct", "json", "pickle"}
# Names that read a clock, sleep or draw from the process-wide random generator.
FORBIDDEN_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "sleep"),
                   ("time", "perf_counter"), ("random", "random"), ("random", "randint"),
                   ("random", "uniform"), ("random", "choice"), ("random", "shuffle"),
                   ("random", "getrandbits"), ("random", "seed")}


def core_modules() -> list[pathlib.Path]:
    return sorted(CORE.glob("*.py"))


def imports_of(tree: ast.AST) -> list[tuple[str, int]]:
    """(module, level) of every import in the tree, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_is_pure(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for module, level in imports_of(tree):
        if level == 1:
            assert (CORE / f"{module.split('.')[0]}.py").exists() or module == "", \
                f"{path.name} imports .{module}, which is not a core module"
            continue
        assert level == 0, f"{path.name} imports from above the core (level {level}): {module}"
        top = module.split(".")[0]
        assert top in ALLOWED, f"{path.name} imports {module}: not allowed in the pure core"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in FORBIDDEN_CALLS, \
                f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}"
        if isinstance(node, ast.Name):
            assert node.id not in ("open", "print", "input"), \
                f"{path.name}:{node.lineno} uses {node.id}()"


def test_a_forbidden_import_is_caught(tmp_path: pathlib.Path) -> None:
    """The check above can fail: an I/O import hidden in a function is found."""
    tree = ast.parse("def f():\n    import socket\n    from ..storage import FileStorage\n")
    found = imports_of(tree)
    assert ("socket", 0) in found and ("storage", 2) in found


# Above the core, each module imports only from the floors below its own (a
# package's __init__ and __main__ sit on top). The processes stay apart: a
# client never loads a worker or storage, the router never loads the core's
# Raft, and nothing below the launcher forks anything.
FLOORS = [
    ["core"],
    ["cli", "faults", "history", "identity", "logformat", "metrics", "procs", "seeds"],
    ["storage", "transports"],
    ["router_control", "snapshots"],
    ["checker", "client", "router", "worker"],
    ["cs3700", "launcher", "scenario_file", "serve", "sim", "tcp_client", "workload"],
    ["cluster", "serve_local"],
    ["console", "cs3700_suite", "scenario"],
    ["__init__", "__main__"],
]
FLOOR = {name: n for n, names in enumerate(FLOORS) for name in names}
PACKAGE = CORE.parent


def raftmp_imports(tree: ast.AST, depth: int = 1) -> set[str]:
    """The raftmp modules (first component below the package) a module imports.

    ``depth`` is how deep the module sits: 1 for ``raftmp/x.py``, 2 for a
    subpackage's ``raftmp/transports/x.py`` (whose siblings are not counted).
    """
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == depth:
            names = [node.module] if node.module else [a.name for a in node.names]
            found.update(n.split(".")[0] for n in names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("raftmp."):
            found.add(node.module.split(".")[1])
    return found


SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")
                     if p.parent.name not in ("core", "scenarios"))


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py"))
                         + [p for sub in SUBPACKAGES for p in sorted((PACKAGE / sub).glob("*.py"))],
                         ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_modules_import_only_downward(path: pathlib.Path) -> None:
    """A subpackage's modules sit on its floor: they import each other freely."""
    inner = path.parent != PACKAGE
    me = path.parent.name if inner else path.stem
    assert me in FLOOR, f"{path.name} is on no floor of FLOORS: place it"
    for other in raftmp_imports(ast.parse(path.read_text(), str(path)), 2 if inner else 1):
        if other != "scenarios":
            assert FLOOR[other] < FLOOR[me], \
                f"{me} (floor {FLOOR[me]}) imports {other} (floor {FLOOR[other]})"


def test_an_upward_import_is_caught() -> None:
    tree = ast.parse("def f():\n    from .worker import connect_router\n"
                     "from .core.kv import Limits\nfrom raftmp.storage import FileStorage\n")
    assert raftmp_imports(tree) == {"worker", "core", "storage"}
    assert FLOOR["worker"] >= FLOOR["client"]   # so client.py importing worker fails
    inside = ast.parse("from .checks import Violation\nfrom ..cluster import Cluster\n")
    assert raftmp_imports(inside, depth=2) == {"cluster"}
    assert FLOOR["cluster"] > FLOOR["sim"]      # so sim/run.py importing cluster fails


def test_every_subpackage_is_shipped() -> None:
    """``pip install .`` installs only the packages pyproject.toml lists: a
    subpackage missing there works from the source tree and fails installed."""
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    listed = set(text.split("packages = [", 1)[1].split("]", 1)[0].replace('"', "").split(", "))
    found = {"raftmp"} | {"raftmp." + p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"
