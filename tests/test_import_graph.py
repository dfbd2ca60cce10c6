"""The house is one-way: the library (skillneurons_jax/) never imports launch/, configs/ or benchmarks/;
benchmarks/ never import launch/; no module of the library imports another one inside a function (the dodge
of an import cycle, which hides the real dependency). Walks every module's syntax tree; nothing is imported."""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "skillneurons_jax"
FORBIDDEN = {PACKAGE: ("launch", "configs", "benchmarks"), "benchmarks": ("launch",)}


def _imported(node: ast.AST, module: str) -> list[str]:
    """Absolute names an import statement brings in (relative imports resolved against `module`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[:-node.level]
            return [".".join(base + ([node.module] if node.module else []))]
        return [node.module or ""]
    return []


def violations(source: str, module: str) -> list[str]:
    """The rule breaks of one module's source (`module`: its dotted name)."""
    top = module.split(".")[0]
    tree = ast.parse(source)
    local = set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local.update(id(n) for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom)))
    found = []
    for node in ast.walk(tree):
        for name in _imported(node, module):
            root = name.split(".")[0]
            if root in FORBIDDEN.get(top, ()):
                found.append(f"{module}:{node.lineno} imports {name} ({top} must not import {root})")
            if top == PACKAGE and root == PACKAGE and id(node) in local:
                found.append(f"{module}:{node.lineno} imports {name} inside a function")
    return found


def _modules(folder: str):
    for path in sorted((REPO / folder).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1] + ["__init__"]
        yield path, ".".join(parts)


@pytest.mark.parametrize("folder", [PACKAGE, "benchmarks"])
def test_imports_point_one_way(folder):
    found = [v for path, module in _modules(folder) for v in violations(path.read_text(), module)]
    assert not found, "\n".join(found)


def test_the_checker_sees_each_kind_of_break():
    assert violations("from launch import common\n", "skillneurons_jax.stages.tune")
    assert violations("import configs.tune\n", "skillneurons_jax.pipeline.stages")
    assert violations("def f():\n    from benchmarks import ours\n", "skillneurons_jax.x")
    assert violations("from launch.predictivity import make_forward\n", "benchmarks.ours")
    assert violations("def f():\n    from skillneurons_jax.data import tasks\n", "skillneurons_jax.data.readers")
    assert violations("def f():\n    from . import readers\n", "skillneurons_jax.data.tasks")
    assert not violations("from skillneurons_jax.data import tasks\n", "skillneurons_jax.data.readers")
    assert not violations("def f():\n    import torch\n", "skillneurons_jax.prompt.files")
    assert not violations("def f():\n    from skillneurons_jax import io\n", "benchmarks.run")
