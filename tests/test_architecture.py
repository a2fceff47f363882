"""The shape of the house (docs/architecture.md): imports point one way and never in a circle.

Reads every module's imports with ``ast`` (nothing is imported), so the checks see exactly what
the source says, including imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "dgs_core"
PAGES = ROOT / "app_pages"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The dgs_core modules ``path`` imports (``from dgs_core.x import y`` counts y when it is a
    module of its own)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}")
    return {name for name in found if name == "dgs_core" or name.startswith("dgs_core.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # "dgs_core.optim.registry.get" → the longest prefix that is a module
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if state.get(target) is None:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def test_the_core_has_no_import_circle() -> None:
    graph = _graph()
    # A package's __init__ imports its submodules to re-export them; a submodule importing a
    # sibling through the package would close a circle through it, which counts too.
    cycle = _cycle(graph)
    assert cycle is None, " → ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_never_imports_streamlit(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        assert not any(n == "streamlit" or n.startswith("streamlit.") for n in names), path


def test_nothing_below_viz_imports_it() -> None:
    graph = _graph()
    for module, targets in graph.items():
        if module.startswith("dgs_core.viz") or module == "dgs_core.cli":
            continue  # the figures, and the CLI that draws them for its bundles
        assert not any(t.startswith("dgs_core.viz") for t in targets), (module, sorted(targets))


def test_page_scripts_stay_thin() -> None:
    for path in PAGES.glob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 320, f"{path.name} has {lines} lines: pages stay thin (~300)"


@pytest.mark.xfail(strict=True, reason="issue #13: diagnostics.py is being split into dgs_core/diagnostics/")
def test_core_modules_stay_small() -> None:
    for path in CORE.rglob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 760, f"{path.relative_to(ROOT)} has {lines} lines (core modules ≤ ~700)"


def test_the_product_never_cites_the_shared_folder() -> None:
    for path in [
        ROOT / "README.md",
        *PAGES.rglob("*.py"),
        *CORE.rglob("*.py"),
        *(ROOT / "assets").rglob("*"),
    ]:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            assert "../shared" not in text and "SPEC.md" not in text and "SPEC §" not in text, path
