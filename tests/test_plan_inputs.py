"""plan.py's input tracking: a stage is redone when what it read changed, not when its dependency merely ran
again with the same result; the report-like stage with soft dependencies runs after failures; records survive a
moved workdir."""
import shutil

from skillneurons_jax import io
from skillneurons_jax.pipeline import plan


def _stages(root, calls, content):
    def writer(name, text_fn, reads=()):
        def run():
            calls.append(name)
            io.atomic_write_text(root / f"{name}.txt", text_fn() + "".join((root / f"{r}.txt").read_text()
                                                                            for r in reads))
        return run

    return [
        plan.Stage("a", "x", [root / "a.txt"], writer("a", lambda: content["a"]), group="g"),
        plan.Stage("b", "x", [root / "b.txt"], writer("b", lambda: "B", reads=("a",)), deps=["a"], group="g"),
        plan.Stage("c", "x", [root / "c.txt"], writer("c", lambda: "C", reads=("b",)), deps=["b"], group="g"),
        plan.Stage("r", "report", [root / "r.txt"], writer("r", lambda: "R"), deps=["a", "b", "c"], soft_deps=True),
    ]


def test_changed_input_reruns_dependents_and_identical_one_does_not(tmp_path):
    calls, content = [], {"a": "A1"}
    quiet = dict(printer=lambda *_: None)
    plan.run(_stages(tmp_path, calls, content), tmp_path, **quiet)
    assert calls == ["a", "b", "c", "r"]
    # a's output deleted; it comes back byte-identical: nothing downstream reruns
    (tmp_path / "a.txt").unlink()
    calls.clear()
    res = plan.run(_stages(tmp_path, calls, content), tmp_path, **quiet)
    assert calls == ["a"] and set(res["up_to_date"]) == {"b", "c", "r"} and res["already_done"] == []
    calls.clear()
    res = plan.run(_stages(tmp_path, calls, content), tmp_path, **quiet)   # everything done: nothing runs
    assert calls == [] and res["already_done"] == ["a", "b", "c", "r"] and res["up_to_date"] == []
    # a's output corrupted and regenerated with new content: everything that read it reruns
    (tmp_path / "a.txt").write_text("garbage")
    content["a"] = "A2"
    calls.clear()
    plan.run(_stages(tmp_path, calls, content), tmp_path, **quiet)
    assert calls == ["a", "b", "c", "r"]
    assert [r["state"] for r in plan.describe(_stages(tmp_path, [], content), tmp_path)] == ["done"] * 4


def test_describe_marks_downstream_of_todo_as_todo(tmp_path):
    calls, content = [], {"a": "A"}
    plan.run(_stages(tmp_path, calls, content), tmp_path, printer=lambda *_: None)
    (tmp_path / "b.txt").unlink()
    states = {r["key"]: r["state"] for r in plan.describe(_stages(tmp_path, [], content), tmp_path)}
    assert states == {"a": "done", "b": "todo", "c": "todo", "r": "todo"}


def test_soft_dependencies_run_after_a_failure(tmp_path):
    calls = []
    stages = _stages(tmp_path, calls, {"a": "A"})

    def boom():
        raise RuntimeError("broken")

    stages[1].run = boom
    res = plan.run(stages, tmp_path, printer=lambda *_: None, continue_on_error=True)
    assert set(res["failed"]) == {"b", "c"} and calls == ["a", "r"]


def test_records_survive_a_moved_workdir(tmp_path):
    calls = []
    src = tmp_path / "src"
    src.mkdir()
    plan.run(_stages(src, calls, {"a": "A"}), src, printer=lambda *_: None)
    dst = tmp_path / "moved"
    shutil.copytree(src, dst)
    calls.clear()
    res = plan.run(_stages(dst, calls, {"a": "A"}), dst, printer=lambda *_: None)
    assert calls == [] and res["ran"] == 0
