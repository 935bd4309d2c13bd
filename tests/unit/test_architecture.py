"""The import graph is the pipeline: no cycles, no stage importing a later one, small modules.

Ranks follow docs/architecture.md: foundations (configuration, statuses, logs, UIDs, image
views) → the state store and the frame reader → the CT series reader and metrics → the
stages in the order data flows → the node's wiring → its faces (status page, CLI, demo) and
the phantom tool.  A module may import only modules of a lower rank, or of its own package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "l3node"
MAX_LINES = 400

RANK = {
    "config": 0, "version": 0, "statuses": 0, "logs": 0, "uids": 0, "heap": 0,
    "tls": 1, "dimse_guard": 1, "reactor": 2, "views": 3,
    "state": 1, "frames": 1, "metrics": 2, "series": 2,
    "spool": 3, "receive": 4, "select": 5, "localize": 6, "compose": 7, "dispatch": 8,
    "export": 9, "pipeline": 10, "warmup": 10, "schedule": 11, "node": 12, "cohort": 12,
    "web": 13, "phantom": 13, "cli_admin": 14, "cli_predict": 14, "cli_cohort": 14,
    "cli_phantom": 14, "demo": 14, "cli": 15, "__main__": 16, "__init__": 16,
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """l3node modules imported by ``name`` (also under TYPE_CHECKING and inside functions)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("l3node"):
                mod = node.module.removeprefix("l3node").lstrip(".")
            else:
                continue
            targets = [f"{mod}.{a.name}".strip(".") for a in node.names] + [mod]
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("l3node").lstrip(".") for a in node.names
                       if a.name.startswith("l3node.")]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _top(mod: str) -> str:
    return mod.split(".")[0] if mod else "__init__"


def test_no_import_cycles(graph):
    # a package's __init__ re-exports its modules: an edge to one's own package is no cycle
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t):], t]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_no_stage_imports_a_later_one(graph):
    wrong = []
    for m, targets in graph.items():
        top = _top(m)
        assert top in RANK, f"{top}: give the new module a rank in this test and the doc"
        for t in targets:
            tt = _top(t)
            if tt != top and RANK[tt] >= RANK[top]:
                wrong.append(f"{m} imports {t}")
    assert not wrong, "imports against the flow: " + "; ".join(sorted(wrong))


def test_modules_are_small():
    big = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
