"""The layering holds: no import cycle between stagecrew's modules, lazy imports included.

Every ``import`` statement in the package counts, also the ones inside functions: a lazy
import is still a dependency, and a cycle through one is the same knot a reader must untie.
Only ``stagecrew/orchestrator`` may import ray; ``tools``, ``memory``, ``judge`` and ``llm``
import neither ray nor litellm at module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stagecrew"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The stagecrew modules this file imports, anywhere in it (``TYPE_CHECKING`` blocks too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            # ``from stagecrew.x import y``: y is a module or a name in x; keep what exists.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != "stagecrew":
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py")]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (lazy imports included):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_the_checker_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_orchestrator_imports_ray() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "orchestrator" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mods = [node.module]
            if any(m == "ray" or m.startswith("ray.") for m in mods):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, f"ray imported outside orchestrator/: {sorted(set(offenders))}"


def test_domain_libraries_import_no_heavy_module_at_load() -> None:
    heavy = {"ray", "litellm", "duckdb"}
    offenders = []
    for sub in ("tools", "memory", "judge", "llm"):
        for path in (PACKAGE / sub).rglob("*.py"):
            if heavy & _top_level_imports(path):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, f"heavy imports at module level: {offenders}"
