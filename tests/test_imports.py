"""Import structure: no import cycles, the library layers load no Lightning, nvc_train names no model.

The import graph is built statically from the source files with :mod:`ast` (nothing is imported to
draw it), one node per module of ``nvc_train/``, ``models/`` and ``datamodules/``. The rule for
what is an edge ("A depends on B"):

* **every** ``import`` / ``from ... import`` statement of A that names B, wherever it stands: at
  module level, in a function or method body, in a ``try`` block. A function-level import is a
  deferred dependency, not an absent one: it runs whenever the function does, and it is the usual
  way a cycle is hidden rather than removed (the cycles this test was written against,
  ``ctc`` <-> ``embedded`` and ``ctc_evaluation`` <-> ``wandb_media``, went through function bodies);
* **except** imports under ``if TYPE_CHECKING:``, which never run (annotations only);
* ``from P import x`` depends on the submodule ``P.x`` when that module exists, else on ``P``;
  relative imports are resolved against the importing module's package;
* importing ``P.Q`` is an edge to ``P.Q`` only, not to the package ``P``'s ``__init__`` that Python
  runs first: that is load order, not a use of ``P``'s contents, and counting it would turn every
  package whose ``__init__`` re-exports its submodules into a cycle with each of them;
* imports of anything outside the three packages (torch, lightning, ...) are not nodes.

A cycle is a strongly connected component of this graph; each is reported with one path through
it, every edge with the file and line of its import statement.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("nvc_train", "models", "datamodules")
#: Importing these (every module under them) must load no Lightning: they are usable alone, fast
#: to import, and the decoders and tables built on them run where Lightning is absent.
LIGHTNING_FREE = ("nvc_train.evaluation", "nvc_train.metrics", "nvc_train.bitstream", "nvc_train.video")
LIGHTNING_MODULES = ("lightning", "lightning.pytorch", "pytorch_lightning")


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of :data:`PACKAGES`."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} (line {self.line}) -> {self.target}"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth, except under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:  # the else branch does run
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ``modules`` that ``name`` (a dotted import target) loads, if any."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph() -> dict[str, list[Edge]]:
    """module -> its dependencies within :data:`PACKAGES`, by the rule of the module docstring."""
    modules = module_files()
    graph: dict[str, list[Edge]] = {name: [] for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                submodules = [f"{base}.{alias.name}" for alias in node.names]
                targets = [sub if sub in modules else base for sub in submodules]
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != name and owner not in {e.target for e in graph[name]}:
                    graph[name].append(Edge(name, owner, node.lineno))  # the first import of each
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted({e.target for e in graph[root]})))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted({e.target for e in graph[target]}))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def cycle_path(graph: dict[str, list[Edge]], component: list[str]) -> list[Edge]:
    """One cycle through the component, from its first module back to it (shortest, breadth-first)."""
    members, start = set(component), component[0]
    previous: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in sorted(graph[node], key=lambda e: (e.target, e.line)):
                if edge.target not in members:
                    continue
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, previous[path[0].source])
                    return path
                if edge.target not in previous:
                    previous[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle through {component}")  # pragma: no cover - a component has one


def describe_cycles(package: str) -> list[str]:
    """Each import cycle that touches ``package``, as its modules and one path with line numbers."""
    graph = import_graph()
    out = []
    for component in strongly_connected(graph):
        if not any(m == package or m.startswith(f"{package}.") for m in component):
            continue
        path = cycle_path(graph, component)
        steps = " -> ".join(f"{edge.source}:{edge.line}" for edge in path)
        out.append(f"{len(component)} modules {component}; e.g. {steps} -> {path[-1].target}")
    return out


def test_the_graph_sees_function_level_imports_and_skips_type_checking() -> None:
    """The rule of the module docstring on known lines of the code base."""
    graph = import_graph()
    targets = {name: {edge.target for edge in edges} for name, edges in graph.items()}
    assert "nvc_train.embedded" in targets["nvc_train.ctc"]  # inside _generate_embedded
    assert "nvc_train.ctc" not in targets["nvc_train.codecs.base"]  # under TYPE_CHECKING only
    assert "nvc_train.ctc" in targets["nvc_train.codecs.neural"]  # at module level
    assert "nvc_train.training.overfit" in targets["nvc_train.codecs.adaptive"]  # inside encode
    assert "nvc_train.callbacks.overfit_stages" in targets["nvc_train.training.overfit"]
    assert all(edge.line > 0 for edges in graph.values() for edge in edges)


def test_the_cycle_finder_reports_a_path() -> None:
    graph = {
        "a": [Edge("a", "b", 3)],
        "b": [Edge("b", "c", 5), Edge("b", "d", 6)],
        "c": [Edge("c", "a", 7)],
        "d": [],
    }
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert [str(e) for e in cycle_path(graph, ["a", "b", "c"])] == [
        "a (line 3) -> b",
        "b (line 5) -> c",
        "c (line 7) -> a",
    ]


@pytest.mark.parametrize(
    "package",
    [
        "nvc_train",
        "datamodules",
        "models",
    ],
)
def test_no_import_cycles(package: str) -> None:
    cycles = describe_cycles(package)
    assert not cycles, f"import cycles touching {package}:\n" + "\n".join(cycles)


def test_every_module_imports() -> None:
    """Each module of nvc_train/, models/ and datamodules/ imports on its own, in a fresh process,
    in sorted order (so a module that works only after another one was imported fails here)."""
    names = sorted(module_files())
    script = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_library_layers_load_no_lightning_and_no_model() -> None:
    """Importing every module of evaluation, metrics, bitstream and video (in a fresh process) loads
    neither Lightning nor ``models`` / ``datamodules``."""
    names = sorted(
        name for name in module_files() if any(name == p or name.startswith(f"{p}.") for p in LIGHTNING_FREE)
    )
    assert len(names) > len(LIGHTNING_FREE)
    script = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert not loaded & set(LIGHTNING_MODULES), sorted(loaded & set(LIGHTNING_MODULES))
    assert not {m for m in loaded if m.split(".")[0] in ("models", "datamodules")}


def test_only_the_training_loops_import_the_callbacks() -> None:
    """Callbacks sit on top of the library (runner, codecs, tables) and use it; the library never
    reaches up into them (evaluation -> callbacks and codecs.adaptive -> callbacks were the package
    cycles of issue 11). Only the loops that run callbacks (nvc_train.training) import them."""
    graph = import_graph()
    reaching_up = [
        str(edge)
        for name, edges in graph.items()
        if not name.startswith(("nvc_train.callbacks", "nvc_train.training"))
        for edge in edges
        if edge.target.startswith("nvc_train.callbacks")
    ]
    assert not reaching_up, reaching_up


def test_nvc_train_never_imports_models_or_datamodules_by_name() -> None:
    """Config ``_target_``s and the registry bind them (DESIGN.md); the one place that reaches the
    registry, nvc_train/networks.py, does it through importlib, documented there."""
    graph = import_graph()
    named = [
        str(edge)
        for name, edges in graph.items()
        if name.startswith("nvc_train")
        for edge in edges
        if edge.target.split(".")[0] in ("models", "datamodules")
    ]
    assert not named, named
