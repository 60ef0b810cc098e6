"""The architecture stays as the README draws it: no import circles, and no import up the layers.

Layers, top to bottom: ``tools`` → ``connectors`` → ``streams`` → ``models`` → ``schemas`` (``tests`` sit
above them all). A module may import its own layer and the layers below it. Every import counts — at module
level, inside a function, under ``TYPE_CHECKING`` — because each one is a dependency a reader has to follow.

Three checks, each naming the files at fault:

* no circle between modules;
* no import against the layer order;
* no circle between concept folders (``streams/pipeline/``, ``models/training/`` …; a module directly in a
  layer's folder, such as ``streams/app.py``, is a node of its own), so the folders themselves form a
  top-down graph.

Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``; those implicit imports are not
counted (``schemas/__init__.py`` re-exports its submodules, which is not a circle anyone has to follow).
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("schemas", "models", "streams", "connectors", "tools", "tests")  # bottom to top


class Import(NamedTuple):
    source: str  # importing module
    target: str  # imported project module
    line: int


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of the layer packages under ``root``, by dotted name (a package by its own name)."""
    modules = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports(modules: dict[str, Path]) -> list[Import]:
    """Each import of one project module by another, resolved to the module it names."""
    found = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node.module, node.level)
                # `from a.b import c` imports the module a.b.c when there is one, else a name of a.b
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                module = _known(target, modules)
                if module is not None and module != name:
                    found.append(Import(name, module, node.lineno))
    return sorted(set(found))


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _known(target: str, modules: dict[str, Path]) -> str | None:
    """The project module ``target`` names: itself, or the nearest enclosing one (``a.b.name`` → ``a.b``)."""
    parts = target.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def concept_of(module: str) -> str:
    """The concept folder a module belongs to: ``streams.pipeline.scoring`` → ``streams.pipeline``;
    ``streams.app`` → ``streams.app``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def upward_imports(found: Iterable[Import]) -> list[Import]:
    return [i for i in found if layer_of(i.target) > layer_of(i.source)]


def circles(edges: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """Each strongly connected component of more than one node (Tarjan) as (a shortest circle from its first
    node, all its nodes), sorted for a stable report."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [(_cycle_through(component, edges), component) for component in sorted(components)]


def _cycle_through(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest circle from the component's first node back to itself (breadth first)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(edges.get(node, ()) & members):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if succ not in previous:
                    previous[succ] = node
                    following.append(succ)
        frontier = following
    return component  # not reached: a component of two or more nodes has a circle through each node


def module_edges(found: Iterable[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in found:
        edges[i.source].add(i.target)
    return edges


def concept_edges(found: Iterable[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in found:
        source, target = concept_of(i.source), concept_of(i.target)
        if source != target:
            edges[source].add(target)
    return edges


def _where(root: Path, modules: dict[str, Path], module: str) -> str:
    return str(modules[module].relative_to(root))


def problems(root: Path) -> list[str]:
    """Every violation of the three rules in the tree under ``root``, one line each (empty: none)."""
    modules = project_modules(root)
    found = imports(modules)
    report = []
    for cycle, members in circles(module_edges(found)):
        files = " → ".join(_where(root, modules, m) for m in cycle)
        others = sorted(set(members) - set(cycle))
        more = f" (in the same knot: {', '.join(_where(root, modules, m) for m in others)})" if others else ""
        report.append(f"import circle between modules: {files}{more}")
    for i in upward_imports(found):
        report.append(
            f"{_where(root, modules, i.source)}:{i.line} imports {i.target}: "
            f"{LAYERS[layer_of(i.source)]} may not import {LAYERS[layer_of(i.target)]}, a layer above it"
        )
    by_concept = defaultdict(list)
    for i in found:
        by_concept[(concept_of(i.source), concept_of(i.target))].append(i)
    for cycle, _ in circles(concept_edges(found)):
        steps = []
        for a, b in itertools.pairwise(cycle):
            first = by_concept[(a, b)][0]
            steps.append(f"{a} → {b} ({_where(root, modules, first.source)}:{first.line})")
        report.append("import circle between concept folders: " + "; ".join(steps))
    return report


def test_the_project_keeps_its_layers_and_has_no_import_circles() -> None:
    found = problems(ROOT)
    assert not found, "\n".join(found)


def test_every_layer_package_is_seen() -> None:
    modules = project_modules(ROOT)
    found = imports(modules)
    assert {m.split(".")[0] for m in modules} == set(LAYERS)
    # the check is only as good as its import resolution: the wiring module's known imports are found
    targets = {i.target for i in found if i.source == "streams.app"}
    assert {"streams.runner", "streams.pipeline.scoring", "streams.web.views"} <= targets


def _tree(root: Path, files: dict[str, str]) -> Path:
    for layer in LAYERS:
        (root / layer).mkdir(parents=True, exist_ok=True)
        (root / layer / "__init__.py").write_text("")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    return root


def test_a_circle_between_modules_is_reported_with_its_files(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "streams/app.py": "from streams.runner import Runner\n",
            "streams/runner.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from streams.app import x\n"
            ),
        },
    )
    report = problems(root)
    assert report == [
        "import circle between modules: streams/app.py → streams/runner.py → streams/app.py",
        # two modules directly in streams/ are concept nodes of their own: the same circle, seen as folders
        "import circle between concept folders: streams.app → streams.runner (streams/app.py:1); "
        "streams.runner → streams.app (streams/runner.py:3)",
    ]


def test_an_import_up_the_layers_is_reported_even_inside_a_function(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "connectors/kafka_io.py": "def read():\n    pass\n",
            "streams/lifecycle/model_events.py": "def fold():\n    from connectors.kafka_io import read\n",
            "models/export.py": "import connectors.kafka_io\n",
            "tools/cli.py": "from connectors import kafka_io\nfrom models.export import x\n",
        },
    )
    report = problems(root)
    assert report == [
        "models/export.py:1 imports connectors.kafka_io: models may not import connectors, a layer above it",
        "streams/lifecycle/model_events.py:2 imports connectors.kafka_io: "
        "streams may not import connectors, a layer above it",
    ]


def test_a_circle_between_concept_folders_is_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "streams/pipeline/runner.py": "from streams.drift.counts import DriftCounter\n",
            "streams/pipeline/messages.py": "",
            "streams/drift/counts.py": "from streams.pipeline.messages import OutRecord\n",
        },
    )
    report = problems(root)
    assert report == [
        "import circle between concept folders: streams.drift → streams.pipeline "
        "(streams/drift/counts.py:1); streams.pipeline → streams.drift (streams/pipeline/runner.py:1)"
    ]


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "models/features/featurizer.py": "from . import cues\nfrom ..registry import store\n",
            "models/features/cues.py": "from .featurizer import Featurizer\n",
            "models/registry/store.py": "",
        },
    )
    found = {(i.source, i.target) for i in imports(project_modules(root))}
    assert found == {
        ("models.features.featurizer", "models.features.cues"),
        ("models.features.featurizer", "models.registry.store"),
        ("models.features.cues", "models.features.featurizer"),
    }
    assert problems(root) == [
        "import circle between modules: models/features/cues.py → models/features/featurizer.py → "
        "models/features/cues.py"
    ]
