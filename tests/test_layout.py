"""The package's shape (issue 22): no import cycle anywhere in the tree, few flat modules, none too long, and the
run directory's file names spelled once (gpt2dist/run/layout.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "gpt2dist"
MAX_FLAT = 20
MAX_LINES = 450
# The two per-rank entry points the launchers start stay flat: `python -m gpt2dist.train`, `-m gpt2dist.commbench`.


def module_name(path: Path) -> str:
    """gpt2dist/x/y.py -> gpt2dist.x.y; launcher/ installs as gpt2dist.launcher; bench/ scripts as bench.*."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "launcher":
        parts = ["gpt2dist", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def tree_modules() -> dict[str, Path]:
    files = [*PACKAGE.rglob("*.py"), *(REPO / "launcher").rglob("*.py"), *(REPO / "bench").rglob("*.py")]
    return {module_name(p): p for p in files if "__pycache__" not in p.parts}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every module of the tree that `path` imports, at module level or inside a function (a lazy import still
    closes a cycle as soon as it runs). `from pkg import sub` names the submodule when there is one."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for block in ast.walk(tree):  # `if TYPE_CHECKING:` imports never run: annotations only
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test):
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_cycle_finder_finds_a_planted_cycle():
    """The detector itself: a -> b -> c -> a is one cycle, d -> a is not part of it."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_anywhere():
    modules = tree_modules()
    graph = {name: imports_of(path, name, modules) for name, path in modules.items()}
    assert graph["gpt2dist.planning.scaling"], "the import parser found nothing: the check would pass vacuously"
    assert find_cycles(graph) == []


def test_few_flat_modules_none_too_long():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= MAX_FLAT, flat
    long = {str(p.relative_to(REPO)): n for p in [*PACKAGE.rglob("*.py"), *(REPO / "launcher").glob("*.py")]
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("literal", ['"train_state.json"', '"config.yaml"', '"checkpoints"', '"metrics.jsonl"',
                                     '"status.json"', '".lock"', '"latest"', '"gpt2dist_export.json"'])
def test_run_dir_names_are_spelled_once(literal):
    """A run-dir file name as a string literal lives in run/layout.py alone (comments aside): renaming one is then
    a one-line change."""
    pattern = re.compile(rf"^[^#\n]*{re.escape(literal)}", re.M)
    hits = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py")
            if p.name != "layout.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert hits == []
