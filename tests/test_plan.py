"""The stage plan: skips finished stages, recomputes corrupted ones, keeps dependency order, shards by group."""
import json
import threading

import pytest

from skillneurons_jax import io, layout
from skillneurons_jax.pipeline import plan, runner


def _stages(tmp_path, calls):
    def writer(name, text):
        def run():
            calls.append(name)
            io.atomic_write_text(tmp_path / f"{name}.txt", text)
        return run

    return [
        plan.Stage("b", "x", [tmp_path / "b.txt"], writer("b", "B"), deps=["a"], group="g1"),
        plan.Stage("a", "x", [tmp_path / "a.txt"], writer("a", "A"), group="g1"),
        plan.Stage("c", "x", [tmp_path / "c.txt"], writer("c", "C"), group="g2"),
    ]


def test_runs_in_dependency_order_and_skips_done(tmp_path):
    calls = []
    plan.run(_stages(tmp_path, calls), tmp_path, printer=lambda *_: None)
    assert calls == ["a", "b", "c"]
    calls.clear()
    plan.run(_stages(tmp_path, calls), tmp_path, printer=lambda *_: None)
    assert calls == []


def test_corrupted_output_is_recomputed(tmp_path):
    calls = []
    plan.run(_stages(tmp_path, calls), tmp_path, printer=lambda *_: None)
    (tmp_path / "b.txt").write_text("half-writ")
    (tmp_path / "c.txt").unlink()
    calls.clear()
    plan.run(_stages(tmp_path, calls), tmp_path, printer=lambda *_: None)
    assert calls == ["b", "c"]
    assert (tmp_path / "b.txt").read_text() == "B"


def test_failure_blocks_dependents_only(tmp_path):
    calls = []
    stages = _stages(tmp_path, calls)

    def boom():
        raise RuntimeError("no data")

    stages[1].run = boom  # "a" fails
    res = plan.run(stages, tmp_path, printer=lambda *_: None, continue_on_error=True)
    assert set(res["failed"]) == {"a", "b"}
    assert calls == ["c"]
    with pytest.raises(RuntimeError, match="no data"):
        plan.run(stages, tmp_path, printer=lambda *_: None)


def test_skip_reason_and_describe(tmp_path):
    calls = []
    stages = _stages(tmp_path, calls)
    stages[2].skip_reason = "data absent: glue/QQP/train.tsv"
    rows = {r["key"]: r for r in plan.describe(stages, tmp_path)}
    assert rows["c"]["state"] == "skip" and "QQP" in rows["c"]["reason"]
    plan.run(stages, tmp_path, printer=lambda *_: None)
    assert calls == ["a", "b"]


def test_shard_keeps_groups_whole(tmp_path):
    stages = _stages(tmp_path, [])
    mine0 = {s.key for s in plan.shard(stages, 0, 2)}
    mine1 = {s.key for s in plan.shard(stages, 1, 2)}
    assert mine0 | mine1 == {"a", "b", "c"} and not mine0 & mine1
    assert {"a", "b"} <= mine0 or {"a", "b"} <= mine1
    with pytest.raises(ValueError, match="host index"):
        plan.shard(stages, 2, 2)


def test_cycle_and_unknown_dependency(tmp_path):
    s = [plan.Stage("a", "x", [], lambda: None, deps=["b"]), plan.Stage("b", "x", [], lambda: None, deps=["a"])]
    with pytest.raises(ValueError, match="cycle"):
        plan.order(s)
    with pytest.raises(ValueError, match="unknown stage"):
        plan.order([plan.Stage("a", "x", [], lambda: None, deps=["zz"])])


def test_changed_settings_rerun_the_stage_and_what_depends_on_it(tmp_path, caplog):
    """A config edited between two runs in one workdir: the stages whose settings changed run again (a finished
    stage is not 'done' with outputs computed under other settings); unchanged ones are kept."""
    def stages(calls, a_steps, c_levels):
        made = _stages(tmp_path, calls)
        made[1].settings = {"tune": {"max_steps": a_steps}, "seeds": [0, 1]}
        made[2].settings = {"suppression": {"levels": c_levels}}
        return made

    calls = []
    plan.run(stages(calls, 150, [0, 5]), tmp_path, printer=lambda *_: None)
    assert calls == ["a", "b", "c"]
    record = json.loads(layout.stage_record_path(tmp_path, "a").read_text())
    assert record["settings"] == {"seeds": [0, 1], "tune": {"max_steps": 150}}        # readable in the record
    assert record["settings_sha256"] == plan.settings_sha256({"tune": {"max_steps": 150}, "seeds": (0, 1)})
    calls.clear()
    plan.run(stages(calls, 150, [0, 5]), tmp_path, printer=lambda *_: None)
    assert calls == []
    assert [r["state"] for r in plan.describe(stages([], 450, [0, 5]), tmp_path)] == ["todo", "todo", "done"]
    with caplog.at_level("WARNING"):
        plan.run(stages(calls, 450, [0, 5]), tmp_path, printer=lambda *_: None)
    assert calls == ["a"]                  # b waited for a; a.txt came back byte-identical, so b is up to date
    assert "settings changed since it ran (tune)" in caplog.text
    calls.clear()
    plan.run(stages(calls, 450, [0, 5, 15]), tmp_path, printer=lambda *_: None)
    assert calls == ["c"]


def test_a_record_without_settings_is_not_trusted(tmp_path, caplog):
    calls = []
    plan.run(_stages(tmp_path, calls), tmp_path, printer=lambda *_: None)     # stages without settings
    calls.clear()
    made = _stages(tmp_path, calls)
    made[2].settings = {"levels": [0, 5]}
    with caplog.at_level("WARNING"):
        plan.run(made, tmp_path, printer=lambda *_: None)
    assert calls == ["c"] and "predates settings fingerprints" in caplog.text


def test_the_time_left_scales_by_the_stages_that_did_their_work(tmp_path, monkeypatch):
    """The estimate of the time left is scaled by real / estimated seconds of the stages run so far, leaving out a
    stage done in under a twentieth of its estimate (a copy): with it, a 1000-s estimate done in 0 s made every
    later estimate about 0."""
    clock = {"now": 0.0}
    monkeypatch.setattr(plan.time, "time", lambda: clock["now"])

    def takes(seconds):
        def run():
            clock["now"] += seconds
        return run

    stages = [plan.Stage("copied", "x", [], takes(0.0), cost_s=1000.0),
              plan.Stage("half", "x", [], takes(60.0), cost_s=120.0),
              plan.Stage("last", "x", [], takes(1.0), cost_s=600.0)]
    printed = []
    plan.run(stages, tmp_path, printer=printed.append)
    assert any("last  (about 5.0 min left, measured in this run" in line for line in printed), printed
    assert any("copied  (about 28.7 min left, cost model" in line for line in printed), printed


def test_the_time_left_scales_each_kind_by_its_own_measured_stages(tmp_path, monkeypatch):
    """Training and evaluation stages run at different fractions of the cost model's speed: one ratio for all,
    set by the first (training) stage, made the estimate jump. Each kind takes its own measured ratio."""
    clock = {"now": 0.0}
    monkeypatch.setattr(plan.time, "time", lambda: clock["now"])

    def takes(seconds):
        def run():
            clock["now"] += seconds
        return run

    stages = [plan.Stage("tune1", "tune", [], takes(300.0), cost_s=100.0),
              plan.Stage("eval1", "eval", [], takes(10.0), cost_s=100.0, deps=["tune1"]),
              plan.Stage("tune2", "tune", [], takes(1.0), cost_s=100.0, deps=["eval1"]),
              plan.Stage("eval2", "eval", [], takes(1.0), cost_s=300.0, deps=["tune2"])]
    printed = []
    plan.run(stages, tmp_path, printer=printed.append)
    # tune2 at 3x its estimate, eval2 at 0.1x: 300 + 30 s (one ratio for both would say (310 / 200) x 400 s)
    assert any("tune2  (about 5.5 min left, measured in this run; 5.2 min so far)" in line for line in printed), printed
    # eval1, before any eval stage was measured, takes the ratio of everything measured: 3 x (100 + 100 + 300)
    assert any("eval1  (about 25.0 min left" in line for line in printed), printed


def test_a_rerun_that_leaves_the_outputs_unchanged_keeps_the_seconds_that_computed_them(tmp_path, monkeypatch):
    """A stage rerun because its settings record changed, whose work was done (its outputs come back byte for
    byte), must not replace the record's computing time by the rerun's few seconds: documents sum those times as
    the study's cost. A rerun that changes an output records its own time."""
    clock = {"now": 0.0}
    monkeypatch.setattr(plan.time, "time", lambda: clock["now"])

    def stage(text, cost, settings):
        def run():
            clock["now"] += cost
            io.atomic_write_text(tmp_path / "a.txt", text)
        return [plan.Stage("a", "x", [tmp_path / "a.txt"], run, settings=settings)]

    def record():
        return json.loads(layout.stage_record_path(tmp_path, "a").read_text())

    plan.run(stage("A", 300.0, {"v": 1}), tmp_path, printer=lambda *_: None)
    assert record()["seconds"] == 300.0 and "rerun_seconds" not in record()
    plan.run(stage("A", 2.0, {"v": 2}), tmp_path, printer=lambda *_: None)       # same bytes: nothing recomputed
    assert (record()["seconds"], record()["rerun_seconds"]) == (300.0, 2.0)
    plan.run(stage("B", 40.0, {"v": 3}), tmp_path, printer=lambda *_: None)      # a new output: its own time
    assert record()["seconds"] == 40.0 and "rerun_seconds" not in record()


def test_hosts_wait_for_each_others_stages_in_the_plans_order(tmp_path):
    """A stage may depend on another host's group: each host runs its share in the whole plan's order and waits
    for the other's stage (runner.wait_for_stages). The list order here would make host 0 run b, which waits for
    x, which waits for host 0's a, first: a deadlock unless the host keeps the plan's order (plan.order_within)."""
    calls = []

    def writer(name):
        def run():
            calls.append(name)
            io.atomic_write_text(tmp_path / f"{name}.txt", name)
        return run

    stages = [plan.Stage("b", "x", [tmp_path / "b.txt"], writer("b"), deps=["x"], group="g1"),
              plan.Stage("x", "x", [tmp_path / "x.txt"], writer("x"), deps=["a"], group="g2"),
              plan.Stage("a", "x", [tmp_path / "a.txt"], writer("a"), group="g1")]
    owners = plan.host_of_groups(stages, 2)
    assert owners == {"g1": 0, "g2": 1}
    assert [s.key for s in plan.order_within(plan.shard(stages, 0, 2), plan.shard(stages, 1, 2))] == ["a", "b"]
    results, errors = {}, []

    def host(index):
        mine = plan.shard(stages, index, 2)
        others = [s for s in stages if s not in mine]
        try:
            results[index] = plan.run(
                mine, tmp_path, printer=lambda *_: None, elsewhere=others,
                wait_for=lambda deps: runner.wait_for_stages(deps, stages, tmp_path, owners, wait_s=20, poll_s=0.05,
                                                             printer=lambda *_: None))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=host, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert calls == ["a", "x", "b"]
    assert results[0]["executed"] == ["a", "b"] and results[1]["executed"] == ["x"]
    # the record of b hashes x's output as its input: a single-host rerun finds everything done
    assert plan.run(stages, tmp_path, printer=lambda *_: None)["ran"] == 0
    # a host without a way to wait is told which stage it lacks
    (tmp_path / "x.txt").unlink()
    with pytest.raises(ValueError, match="depends on x, which another host runs"):
        plan.run(plan.shard(stages, 0, 2), tmp_path, printer=lambda *_: None, elsewhere=plan.shard(stages, 1, 2))


def test_another_hosts_pending_stage_makes_mine_pending_and_its_failure_ends_the_wait(tmp_path):
    """(1) My stage b is done on x's old output, but x (another host's) is pending: b is pending too (x is about to
    be rewritten). (2) A stage that failed leaves a failure record: the host waiting for it stops at once with the
    reason; a retry removes it. (3) A dependency skipped on another host blocks my stage at once, as on one host."""
    calls = []

    def writer(name, text):
        def run():
            calls.append(name)
            io.atomic_write_text(tmp_path / f"{name}.txt", text)
        return run

    x = plan.Stage("x", "x", [tmp_path / "x.txt"], writer("x", "X"), group="g2")
    b = plan.Stage("b", "x", [tmp_path / "b.txt"], writer("b", "B"), deps=["x"], group="g1")
    plan.run([x, b], tmp_path, printer=lambda *_: None)
    assert plan.pending([b], tmp_path, [x]) == []
    x.settings = {"changed": 1}                              # x's settings changed: it reruns on its host
    assert [s.key for s in plan.pending([b], tmp_path, [x])] == ["b"]
    stages = [x, b]
    owners = {"g1": 0, "g2": 1}
    assert "not done after 0 s" in runner.wait_for_stages([x], stages, tmp_path, owners, wait_s=0, poll_s=0.01,
                                                          printer=lambda *_: None)

    def boom():
        raise RuntimeError("no data")

    x.run = boom
    res = plan.run([x], tmp_path, printer=lambda *_: None, continue_on_error=True)
    assert "x" in res["failed"] and plan.failure_path(tmp_path, "x").read_text().startswith("RuntimeError")
    assert runner.wait_for_stages([x], stages, tmp_path, owners, wait_s=60, poll_s=0.01,
                                  printer=lambda *_: None) == "dependency x failed on host 1"
    x.run = writer("x", "X2")
    plan.run([x], tmp_path, printer=lambda *_: None)
    assert not plan.failure_path(tmp_path, "x").exists()
    skipped = plan.Stage("s", "x", [tmp_path / "s.txt"], writer("s", "S"), group="g2", skip_reason="data absent")
    c = plan.Stage("c", "x", [tmp_path / "c.txt"], writer("c", "C"), deps=["s"], group="g1")
    res = plan.run([c], tmp_path, printer=lambda *_: None, continue_on_error=True, elsewhere=[skipped],
                   wait_for=lambda deps: pytest.fail("a skipped dependency is not waited for"))
    assert res["failed"] == {"c": "dependency s did not finish"}
