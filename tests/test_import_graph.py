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
    assert violations("import configs.tune\n", "skillneurons_jax.pipeline.settings")
    assert violations("def f():\n    from benchmarks import ours\n", "skillneurons_jax.x")
    assert violations("from launch.predictivity import make_forward\n", "benchmarks.ours")
    assert violations("def f():\n    from skillneurons_jax.data import tasks\n", "skillneurons_jax.data.readers")
    assert violations("def f():\n    from . import readers\n", "skillneurons_jax.data.tasks")
    assert not violations("from skillneurons_jax.data import tasks\n", "skillneurons_jax.data.readers")
    assert not violations("def f():\n    import torch\n", "skillneurons_jax.prompt.files")
    assert not violations("def f():\n    from skillneurons_jax import io\n", "benchmarks.run")


# The declared layer order inside the package, lowest first: a subpackage (or top-level module) imports only
# units of LOWER layers, so no cycle can form; a new unit must be given its layer here.
LAYERS = (
    ("layout", "fields", "accelerators"),
    ("io", "parallel"),
    ("data", "models"),
    ("prompt",),
    ("neurons",),
    ("analysis",),
    ("stages",),
    ("pipeline", "robust"),     # both build on the stage kinds; the core never imports robust/ (it registers itself)
)
# Edges the order alone would allow but the house forbids: statistics never import models; robust and analysis
# stay apart (the report renders tables analysis computes, robust's kinds never import the report's code).
FORBIDDEN_EDGES = {("neurons", "models"), ("analysis", "models"), ("accelerators", "pipeline"),
                   ("robust", "analysis"), ("analysis", "robust")}


def _unit(name: str):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def _unit_edges(sources) -> set:
    """{(importing unit, imported unit)} of `sources`: [(source text, dotted module name)]."""
    edges = set()
    for source, module in sources:
        me = _unit(module.removesuffix(".__init__"))
        for node in ast.walk(ast.parse(source)):
            names = _imported(node, module)
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                other = _unit(name)
                if me and other and other != me:
                    edges.add((me, other))
    return edges


def layer_violations(edges) -> list[str]:
    layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    found = [f"{a} is not in LAYERS (declare its layer)" for a in sorted({u for e in edges for u in e} - set(layer))]
    for a, b in sorted(edges):
        if a in layer and b in layer and layer[b] >= layer[a]:
            found.append(f"{a} (layer {layer[a]}) imports {b} (layer {layer[b]}): only lower layers")
        if (a, b) in FORBIDDEN_EDGES:
            found.append(f"{a} imports {b}: forbidden")
    return found


def test_units_import_only_lower_layers():
    edges = _unit_edges((path.read_text(), module) for path, module in _modules(PACKAGE))
    found = layer_violations(edges)
    assert not found, "\n".join(found)


def test_the_layer_check_sees_each_kind_of_break():
    assert layer_violations({("neurons", "models")})               # allowed by order, forbidden by the house
    assert layer_violations({("analysis", "robust")}) and layer_violations({("robust", "analysis")})
    assert layer_violations({("accelerators", "pipeline")})
    assert layer_violations({("stages", "robust")}) and layer_violations({("pipeline", "robust")})   # core
    assert layer_violations({("analysis", "stages"), ("stages", "analysis")})                        # a cycle
    assert layer_violations({("newroom", "io")})
    assert not layer_violations({("stages", "analysis"), ("robust", "stages"), ("pipeline", "stages")})
    assert _unit_edges([("from skillneurons_jax.models.ffn import Intervention\n",
                         "skillneurons_jax.neurons.suppression")]) == {("neurons", "models")}
    assert _unit_edges([("from skillneurons_jax import pipeline\n", "skillneurons_jax.accelerators")]) == {
        ("accelerators", "pipeline")}
