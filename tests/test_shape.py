"""The project's shape, checked on every run: Ray is called only from actors/ and the executor, no
function in package code is 80 lines or more, and no package imports one above it (entry points that
compose the top floors are [project.scripts] targets that nothing imports)."""

from __future__ import annotations

import ast
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ["selection", "dataio", "training", "actors", "jobs", "experiments", "reporting"]  # bottom first
RAY_CALLS = ("ray.get(", "ray.wait(", ".remote(", ".options(")
EXECUTOR = "jobs/executor.py"


def package_files() -> list[Path]:
    return sorted(f for floor in FLOORS for f in (ROOT / floor).rglob("*.py"))


def entry_modules() -> set[str]:
    """The files of the installed package's console scripts ([project.scripts])."""
    scripts = [e for e in distribution("ingenious-ray").entry_points if e.group == "console_scripts"]
    return {e.value.split(":")[0].replace(".", "/") + ".py" for e in scripts}


def imported_modules(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
    return out


def test_only_actors_and_the_executor_call_ray():
    offenders = [
        str(f.relative_to(ROOT))
        for f in package_files()
        if f.parts[len(ROOT.parts)] != "actors"
        and str(f.relative_to(ROOT)) != EXECUTOR
        and any(call in f.read_text() for call in RAY_CALLS)
    ]
    assert offenders == []


def test_no_function_is_80_lines_or_more():
    long = [
        f"{f.relative_to(ROOT)}:{n.lineno} {n.name}"
        for f in package_files()
        for n in ast.walk(ast.parse(f.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno >= 80
    ]
    assert long == []


def test_no_package_imports_one_above_it():
    entries = entry_modules()
    upward = []
    for f in package_files():
        rel = str(f.relative_to(ROOT))
        if rel in entries:
            continue
        floor = FLOORS.index(f.parts[len(ROOT.parts)])
        for module in imported_modules(ast.parse(f.read_text())):
            top = module.split(".")[0]
            if top in FLOORS and FLOORS.index(top) > floor:
                upward.append(f"{rel} imports {module}")
    assert upward == []


def test_nothing_imports_an_entry_point():
    entries = {e.removesuffix(".py").replace("/", ".") for e in entry_modules()}
    importers = [
        f"{f.relative_to(ROOT)} imports {m}"
        for f in package_files()
        for m in imported_modules(ast.parse(f.read_text()))
        if m in entries
    ]
    assert importers == []
