"""The house rules of docs/ARCHITECTURE.md, checked on the source itself (issue 17): imports go
downwards only, with no cycle; no private name crosses a module; a function-local import says
why it is local; no function is longer than a screen and a half; only unique import names are
installed. Each rule is read from the files with `ast`, independently of the code it checks."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# folder -> the import name it installs as (pyproject.toml's package-dir)
PACKAGES = {
    "proximity": "proximity",
    "training": "proximity.training",
    "analysis": "proximity.analysis",
}
MAX_LINES = 80


def modules() -> dict[str, Path]:
    """Every module of the three folders, by its installed import name."""
    found = {}
    for folder, name in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def layer(module: str) -> str:
    if module.startswith("proximity.training"):
        return "training"
    if module.startswith("proximity.analysis"):
        return "analysis"
    return "proximity"


def own_imports(path: Path, known: set[str]) -> list[tuple[ast.AST, str, list[str]]]:
    """(node, imported module, names) for every import of one of our modules."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [alias.name for alias in node.names]
            if node.module in known:
                subs = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in known]
                plain = [n for n in names if f"{node.module}.{n}" not in known]
                found += [(node, sub, []) for sub in subs]
                if plain:
                    found.append((node, node.module, plain))
        elif isinstance(node, ast.Import):
            found += [(node, a.name, []) for a in node.names if a.name in known]
    return found


def test_every_folder_installs_under_one_unique_top_level_name():
    """`training` and `analysis` are generic names a user's notebook may own: they install as
    proximity.training and proximity.analysis, and the installed copy is the one imported."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {name.split(".")[0] for name in config["packages"]} == {"proximity"}
    assert config["package-dir"] == {
        "proximity.training": "training",
        "proximity.analysis": "analysis",
    }
    # asked from a folder of the user's: the repository root itself holds the source folders
    probe = (
        "import importlib.util as u, json, sys; "
        "print(json.dumps({n: getattr(u.find_spec(n), 'origin', None) for n in sys.argv[1:]}))"
    )
    names = [*PACKAGES.values(), "training", "analysis"]
    done = subprocess.run(
        [sys.executable, "-c", probe, *names],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        check=True,
    )
    origins = json.loads(done.stdout)
    for folder, name in PACKAGES.items():
        assert Path(origins[name]).parent == REPO / folder, name
    assert origins["training"] is None and origins["analysis"] is None


def test_imports_go_downwards_and_form_no_cycle():
    found = modules()
    known = set(found)
    allowed = {"proximity": {"proximity"}, "training": {"proximity", "training"}}
    allowed["analysis"] = {"proximity", "training", "analysis"}
    graph: dict[str, set[str]] = {}
    upward = []
    for module, path in found.items():
        graph[module] = set()
        for node, target, _ in own_imports(path, known):
            if layer(target) not in allowed[layer(module)]:
                upward.append(f"{path.relative_to(REPO)}:{node.lineno} imports {target}")
            if not isinstance(node, ast.ImportFrom) or target != module.rsplit(".", 1)[0]:
                graph[module].add(target)
    assert not upward, upward
    # a package's __init__ importing its own modules is not a cycle through them
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target.startswith(module + ".") or module.startswith(target + "."):
                continue
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_no_private_name_is_imported_from_another_module():
    found = modules()
    crossing = [
        f"{path.relative_to(REPO)}:{node.lineno} imports {name} from {target}"
        for module, path in found.items()
        for node, target, names in own_imports(path, set(found))
        for name in names
        if name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert not crossing, crossing


def test_a_function_local_import_says_why_it_is_local():
    """Imports inside functions hide the dependency graph; the ones that keep a heavy library off
    a path that does not need it stay, with the reason in a comment on or just above them."""
    silent = []
    for path in modules().values():
        lines = path.read_text().splitlines()
        for func in ast.walk(ast.parse(path.read_text())):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and node.col_offset > 0:
                    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                        continue
                    first = node.lineno - 1
                    block = lines[max(0, first - 3) : node.end_lineno]
                    if not any("#" in line for line in block):
                        silent.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not silent, silent


def test_no_function_is_longer_than_a_screen_and_a_half():
    """At most one function may be longer than 80 lines, and its docstring must say why."""
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES:
                    long.append(
                        (path.relative_to(REPO), node.name, length, ast.get_docstring(node))
                    )
    assert len(long) <= 1, [entry[:3] for entry in long]
    for path, name, length, docstring in long:
        assert docstring and "80 lines" in docstring, (
            f"{path}::{name} ({length} lines) says not why"
        )


@pytest.mark.parametrize("shim", ["training/evaluate.py"])
def test_no_module_only_re_exports_another(shim: str):
    """A module whose body is only imports is a shim: its callers should import the real one."""
    tree = ast.parse((REPO / shim).read_text())
    body = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom, ast.Expr))]
    assert body, f"{shim} only re-exports"
