"""The pipeline's Session loads each model once through the loader it was given and passes loaded models to the
stage functions: no module attribute of the library is ever replaced (the old cache monkeypatched
models.load_pretrained). Per-task facts live in the task table."""
import ast
import pathlib

from skillneurons_jax import models
from skillneurons_jax.analysis import results
from skillneurons_jax.data import tasks
from skillneurons_jax.pipeline.session import Session

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_session_loads_through_its_loader_once_per_model():
    calls = []
    session = Session(loader=lambda path, dtype: calls.append(path) or {"path": path})
    assert session.load("a") is session.load("a") and calls == ["a"] and session.loads == 1
    session.load("b")                       # one model at a time by default: "a" is dropped
    session.load("a")
    assert calls == ["a", "b", "a"] and session.loads == 3
    assert Session().loader is models.load_pretrained


def test_no_module_attribute_is_assigned_in_the_library():
    for path in sorted((REPO / "skillneurons_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and \
                        target.value.id in ("models", "skillneurons_jax"):
                    raise AssertionError(f"{path}:{node.lineno} assigns {target.value.id}.{target.attr}")


def test_per_task_facts_are_in_the_task_table():
    assert results.TASK_ORDER == tasks.DISPLAY_ORDER and tasks.PAPER_TASKS[0] == "sst2"
    assert set(tasks.PAPER_TASKS) <= set(tasks.TASKS)
    assert tasks.size_hint("qqp") == (363846, 40430, 30) and tasks.size_hint("tweetsubj") == tasks.DEFAULT_SIZE_HINT
    assert all(name in tasks.task_names_help() for name in tasks.TASKS)
    assert tasks.clean_task_of("advqnli") == "qnli" and tasks.clean_task_of("sst2") == "sst2"
