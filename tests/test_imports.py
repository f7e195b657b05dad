"""robustlab's modules import each other in one direction only.

The graph is read from the source with ``ast``: every ``import`` counts, also one inside a
function, so an import cannot hide in a function to dodge a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import robustlab

PACKAGE_ROOT = Path(robustlab.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the robustlab modules it imports anywhere in its source."""
    paths = {module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                # ``from package import module`` imports the module; ``from module import name`` the module
                targets |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base for alias in node.names}
        graph[name] = {target for target in targets if target in paths}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_imports_inside_functions_and_finds_cycles(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "robustlab.train.step" in graph["robustlab.train.loop"]
    assert "robustlab.runs.checkpoint" in graph["robustlab.cli.certify"]  # imported inside ``run``


def test_no_two_modules_import_each_other():
    assert cycles(import_graph()) == []


# The pipeline's stages, first to last: a module imports from its own stage or earlier ones.
STAGES = [
    ("errors", "registry", "config", "files", "runtime", "progress", "records"),  # shared by every stage
    ("data", "nn"),
    ("certify",),
    ("runs",),
    ("train",),
    ("theory", "report"),
    ("experiments",),
    ("cli", "__main__", "hub", ""),  # "": robustlab/__init__.py, the researcher's entry points; hub: hubconf.py's
]


def stage(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for index, names in enumerate(STAGES):
        if part in names:
            return index
    raise AssertionError(f"{module}: add robustlab.{part} to one of the STAGES")


def test_data_flows_one_way_through_the_stages():
    backwards = [
        f"{module} -> {target}"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if stage(target) > stage(module)
    ]
    assert backwards == []
