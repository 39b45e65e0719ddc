"""The house's layout: no import circles, and every core module imports without Qt or napari."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"napari_csunet": ROOT / "src" / "napari_csunet", "csunet_train": ROOT / "training" / "csunet_train"}


def _modules() -> dict[str, Path]:
    """Every module of both packages by dotted name (a package by its ``__init__``)."""
    found = {}
    for root in PACKAGES.values():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its text (inside functions too: a lazy import
    is still a door, and a circle through one is still a circle)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def module_of(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {module_of(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]) if node.level \
                else node.module or ""
            found |= {module_of(f"{base.rstrip('.')}.{a.name}") for a in node.names}
    return found - {None, name}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return circles


def test_no_module_imports_itself_through_others() -> None:
    known = _modules()
    assert len(known) > 50
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert _circles(graph) == []


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_core_module_imports_without_qt_or_napari() -> None:
    """The core and the training backend run on a GPU server with no display: everything outside
    ``_qt`` imports with Qt and napari made unimportable."""
    core = sorted(n for n in _modules() if "._qt" not in n and not n.endswith("__main__"))
    code = ("import importlib, json, sys\n"
            "for blocked in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'superqt'):\n"
            "    sys.modules[blocked] = None\n"
            f"failed = {{}}\nfor name in {core!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception as exc:\n        failed[name] = repr(exc)[:200]\n"
            "print(json.dumps(failed))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}
