"""launch.reproduce end to end on a tiny random BERT and tiny SST-2 / MRPC / AdvSST-2 files (plus QNLI, whose
data is absent): the report with every figure type, interruption and resumption, reruns that recompute nothing,
corrupted outputs recomputed with their dependents only, the dry run, an unwritable workdir, the skipped task."""
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

import reproduce_fixtures as rf  # noqa: E402  (tests/ is on sys.path under pytest)
from skillneurons_jax import io as project_io, layout  # noqa: E402
from skillneurons_jax.pipeline import runner  # noqa: E402
from skillneurons_jax.pipeline import build, plan  # noqa: E402
from skillneurons_jax.pipeline.settings import StudySettings  # noqa: E402
from skillneurons_jax.stages import registry  # noqa: E402
from skillneurons_jax.pipeline.session import Session  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
M = rf.MODEL


class Interrupt(KeyboardInterrupt):
    """What Ctrl-C raises: not an Exception, so the plan does not catch it."""


def _settings(world, workdir, **kw):
    return StudySettings.from_config(rf.config(world["model"], world["data"], **kw), workdir)


def _run(world, workdir, calls=None, interrupt_at=None, session=None, **run_kw):
    calls = [] if calls is None else calls

    def hook(key):
        calls.append(key)
        if key == interrupt_at:
            raise Interrupt(key)

    hooks = {kind: hook for kind in registry.names()}
    res = runner.run_plan(_settings(world, workdir), printer=lambda *_: None, hooks=hooks, session=session,
                          **run_kw)
    return res, calls


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    return {"root": root, "model": rf.make_model(root), "data": rf.write_data(root / "data")}


@pytest.fixture(scope="module")
def done(world):
    """The plan interrupted in the middle (Ctrl-C inside the MRPC predictivity stage), then run to the end."""
    workdir = world["root"] / "work"
    first = []
    with pytest.raises(Interrupt):
        _run(world, workdir, first, interrupt_at=f"predictivity/{M}/mrpc")
    session = Session()
    res, second = _run(world, workdir, session=session)
    return {"workdir": workdir, "first": first, "second": second, "res": res, "session": session}


def test_whole_plan_writes_report_with_every_figure_type(done):
    w, res = done["workdir"], done["res"]
    assert not res["failed"], res["failed"]
    assert res["report"] == w / "report" / "index.html" and res["report"].exists()
    figures = {p.name for p in (w / "report" / "figures" / M).glob("*.png")}
    assert set(rf.FIGURES) <= figures, set(rf.FIGURES) - figures
    md = (w / "report" / "index.md").read_text()
    for task in ("sst2", "mrpc", "advsst2"):
        assert task in md
    for pair in ("sst2__sst2", "sst2__mrpc", "mrpc__advsst2", "sst2__advsst2"):
        assert (w / "transfer" / M / f"{pair}.json").exists()
    for pair in ("sst2__sst2", "mrpc__mrpc", "advsst2__advsst2", "sst2__advsst2"):
        assert (w / "suppression" / M / f"{pair}.json").exists()
    assert done["session"].loads == 1          # the model was loaded once for every stage of the rerun
    # the held-out test split (MRPC's labelled test file): own prompt and own skill neurons scored there too,
    # in the dev files' format under WORKDIR/test/, and reported beside Table 1 and the dev curves
    test_transfer = json.loads((w / "test" / "transfer" / M / "mrpc__mrpc.json").read_text())
    assert test_transfer["split"] == "test" and test_transfer["n_dev"] == 16
    test_suppression = json.loads((w / "test" / "suppression" / M / "mrpc__mrpc.json").read_text())
    assert test_suppression["split"] == "test" and len(test_suppression["labels"]) == 16
    summary = json.loads((w / "report" / "summary.json").read_text())
    # MRPC scores its labelled test file; SST-2 a test split carved out of train.tsv (reader notes say which rows)
    assert [row["task"] for row in summary["accuracy_test"]] == ["sst2", "mrpc"]
    assert "mrpc__mrpc" in summary["suppression_test"][M]
    assert "Held-out test split" in md
    # the report stage measured the clean tasks' label dependence from the data (issue 14) and the report shows it
    overlap = summary["specificity"][M]["label_overlap"]
    assert [(p["task_a"], p["task_b"]) for p in overlap["pairs"]] == [("sst2", "mrpc")]
    assert overlap["splits"] == ["train", "dev", "test"] and isinstance(overlap["pairs"][0]["shared_texts"], int)
    assert "Shared texts (label r): the texts both datasets contain over their train, dev, test splits" in md


def test_interrupted_run_resumes_without_redoing_finished_stages(done):
    first, second = done["first"], done["second"]
    interrupted = f"predictivity/{M}/mrpc"
    assert first[-1] == interrupted
    finished_before = set(first[:-1])
    assert finished_before and not finished_before & set(second), finished_before & set(second)
    assert interrupted in second
    everything = [s.key for s in done["res"]["stages"] if not s.skip_reason]
    assert sorted(first[:-1] + second) == sorted(everything)      # each stage ran exactly once to completion


def test_rerun_recomputes_nothing(world, done):
    res, calls = _run(world, done["workdir"])
    assert calls == [] and res["ran"] == 0 and not res["failed"]


def test_corrupted_output_recomputes_the_stage_and_its_dependents_only(world, done):
    w = done["workdir"]
    npz = w / "predictivity" / M / "advsst2.npz"
    npz.write_bytes(npz.read_bytes()[:100])         # truncated
    (w / "transfer" / M / "mrpc__sst2.json").unlink()
    res, calls = _run(world, w)
    assert not res["failed"]
    # advsst2's statistics and what reads them (its own suppression curve, sst2's explorer record, which holds
    # advsst2's top neurons), mrpc's transfer, and the report; not sst2's statistics, nor any tuning
    assert sorted(calls) == sorted([f"predictivity/{M}/advsst2", f"suppress/{M}/advsst2__advsst2",
                                    f"explorer/{M}/sst2", f"transfer/{M}/mrpc", "report"])
    res, calls = _run(world, w)
    assert calls == []


def test_missing_data_task_is_skipped_with_reason_and_listed_in_the_report(world, done):
    skipped = done["res"]["skipped"]
    assert f"tune/{M}/qnli" in skipped and "data absent" in skipped[f"tune/{M}/qnli"]
    assert "QNLI" in skipped[f"tune/{M}/qnli"]
    md = (done["workdir"] / "report" / "index.md").read_text()
    assert "task qnli" in md and "data absent: qnli" in md


def test_dry_run_lists_the_plan_and_does_no_work(world, tmp_path):
    lines = []
    workdir = tmp_path / "fresh"
    res = runner.run_plan(_settings(world, workdir), dry_run=True, printer=lines.append)
    text = "\n".join(lines)
    assert not workdir.exists()
    assert res["todo"] == len([s for s in res["stages"] if not s.skip_reason]) and res["skip"] == 1
    for key in (f"tune/{M}/sst2", f"transfer/{M}/mrpc", f"predictivity/{M}/advsst2", f"suppress/{M}/sst2__advsst2",
                "report"):
        assert key in text
    assert "skip" in text and "data absent: qnli" in text and "estimated time" in text


def test_dry_run_of_a_finished_workdir_shows_it_done(world, done):
    lines = []
    res = runner.run_plan(_settings(world, done["workdir"]), dry_run=True, printer=lines.append)
    assert res["todo"] == 0 and res["done"] > 0 and res["todo_s"] == 0


def test_an_edited_config_reruns_what_it_changes_and_keeps_the_rest(world, done):
    """The same workdir, the config edited: more steps for one task retrain that task (and what reads its
    prompts), other suppression levels recompute only the curves; the finished stages of the old settings are
    not reported as done."""
    def states(edit):
        config = rf.config(world["model"], world["data"])
        edit(config)
        res = runner.run_plan(StudySettings.from_config(config, done["workdir"]), dry_run=True, printer=lambda *_: None)
        rows = plan.describe(res["stages"], done["workdir"])
        return {r["key"] for r in rows if r["state"] == "todo"}

    assert states(lambda c: None) == set()
    todo = states(lambda c: setattr(c.tune, "max_steps_by_task", "mrpc:3"))
    assert {f"tune/{M}/mrpc", f"transfer/{M}/mrpc", f"predictivity/{M}/mrpc", "report"} <= todo
    assert not {k for k in todo if k.startswith("tune/") and k != f"tune/{M}/mrpc"}
    todo = states(lambda c: setattr(c.suppression, "levels", "0,20"))
    assert todo and all(k.startswith("suppress/") for k in todo - {"report"}) and "report" in todo
    assert states(lambda c: setattr(c.tune, "progress", True)) == {"report"}     # nothing the stages write


def test_an_edited_config_really_retrains_and_keeps_the_old_run(world, done, tmp_path):
    """Rerun for real in a copy of the finished workdir: one step for mrpc, whose run went past that budget, is
    trained from scratch (not resumed nor refused) and the old run is set aside beside it, not deleted; sst2,
    unchanged, is not touched."""
    workdir = tmp_path / "w"
    shutil.copytree(done["workdir"], workdir)
    config = rf.config(world["model"], world["data"])
    config.tune.max_steps_by_task = "mrpc:1"
    calls = []
    hooks = {kind: calls.append for kind in registry.names()}
    res = runner.run_plan(StudySettings.from_config(config, workdir), printer=lambda *_: None, hooks=hooks)
    assert not res["failed"], res["failed"]
    assert f"tune/{M}/mrpc" in calls and f"tune/{M}/sst2" not in calls
    for seed in (0, 1):
        rows = [json.loads(line) for line in layout.metrics_path(workdir, M, "mrpc", seed).read_text().splitlines()]
        assert [r["step"] for r in rows] == [1], rows
        kept = list(layout.run_dir(workdir, M, "mrpc", seed).parent.glob(f"seed_{seed}.superseded-*"))
        assert len(kept) == 1 and (kept[0] / "prompt.npy").read_bytes() == \
            layout.prompt_path(done["workdir"], M, "mrpc", seed).read_bytes()
        assert not list(layout.run_dir(workdir, M, "sst2", seed).parent.glob("*.superseded-*"))
    res = runner.run_plan(StudySettings.from_config(config, workdir), printer=lambda *_: None)
    assert res["ran"] == 0                                    # and now it is done


def test_a_larger_budget_trains_on_from_the_checkpoint(world, done, tmp_path):
    """More steps for mrpc (2 -> 4; it evaluates every 2): the run trains on from its step-2 checkpoint, keeps its
    logged evaluation, sets nothing aside, and ends where a 4-step run from scratch ends."""
    workdir = tmp_path / "w"
    shutil.copytree(done["workdir"], workdir)
    config = rf.config(world["model"], world["data"])
    config.tune.max_steps_by_task = "mrpc:4"

    def tune_stage(folder):                                  # the tune stage alone: what reads it is not asked
        return next(s for s in build.build_plan(StudySettings.from_config(config, folder)) if s.key == f"tune/{M}/mrpc")
    tune_stage(workdir).run()
    fresh = tmp_path / "fresh"                               # the same 4-step tune stage, from scratch
    tune_stage(fresh).run()
    for seed in (0, 1):
        old = layout.metrics_path(done["workdir"], M, "mrpc", seed).read_text().splitlines()
        rows = layout.metrics_path(workdir, M, "mrpc", seed).read_text().splitlines()
        assert rows[:len(old)] == old and [json.loads(r)["step"] for r in rows] == [2, 4]
        assert not list(layout.run_dir(workdir, M, "mrpc", seed).parent.glob("*.superseded-*"))
        scratch = [json.loads(r) for r in layout.metrics_path(fresh, M, "mrpc", seed).read_text().splitlines()]
        assert np.isclose(json.loads(rows[-1])["dev_loss"], scratch[-1]["dev_loss"], atol=1e-5)


def test_a_study_reuses_another_studys_finished_computation(world, done, tmp_path):
    """config.reuse_from: the tune runs and predictivity results of the same computation are copied from another
    workdir (their sidecars say from where), with the same bytes; a task tuned differently is trained here."""
    config = rf.config(world["model"], world["data"])
    config.data_dir = str(world["data"]) + "/./"              # the same folder, spelled otherwise
    config.reuse_from = str(done["workdir"])
    # mrpc is another computation now, trained here. One step, not three: with three, the best dev checkpoint
    # was step 2 again, the same prompt bytes, and its predictivity was then rightly copied.
    config.tune.max_steps_by_task = "mrpc:1"
    calls = []
    hooks = {kind: calls.append for kind in registry.names()}
    res = runner.run_plan(StudySettings.from_config(config, tmp_path / "w"), printer=lambda *_: None, hooks=hooks)
    assert not res["failed"]
    new, old = tmp_path / "w", done["workdir"]
    for seed in (0, 1):
        copy = layout.prompt_path(new, M, "sst2", seed)
        assert copy.read_bytes() == layout.prompt_path(old, M, "sst2", seed).read_bytes()
        assert json.loads(project_io.sidecar_path(copy).read_text())["copied_from"] == str(
            layout.run_dir(old, M, "sst2", seed))
        assert "copied_from" not in json.loads(project_io.sidecar_path(layout.prompt_path(new, M, "mrpc", seed))
                                               .read_text())
        assert layout.prompt_path(new, M, "mrpc", seed).read_bytes() != layout.prompt_path(old, M, "mrpc",
                                                                                             seed).read_bytes()
    sst2 = layout.predictivity_path(new, M, "sst2")
    assert sst2.read_bytes() == layout.predictivity_path(old, M, "sst2").read_bytes()
    assert json.loads(project_io.sidecar_path(sst2).read_text())["copied_from"]
    assert "copied_from" not in json.loads(project_io.sidecar_path(layout.predictivity_path(new, M, "mrpc"))
                                           .read_text())
    # a copy of that copy (the robustness study's plain arm copies the main study's predictivity, which reuse_from
    # copied): it names its immediate source and the first computation's commit and time (before, it failed with
    # "multiple values for keyword argument 'copied_from'")
    config.reuse_from = str(new)
    res = runner.run_plan(StudySettings.from_config(config, tmp_path / "again"), printer=lambda *_: None)
    assert not res["failed"], res["failed"]
    original = json.loads(project_io.sidecar_path(layout.predictivity_path(old, M, "sst2")).read_text())
    twice = json.loads(project_io.sidecar_path(layout.predictivity_path(tmp_path / "again", M, "sst2")).read_text())
    assert twice["copied_from"] == str(sst2)
    assert (twice["source_git_commit"], twice["source_created"]) == (original["git_commit"], original["created"])
    assert layout.predictivity_path(tmp_path / "again", M, "sst2").read_bytes() == sst2.read_bytes()
    with pytest.raises(ValueError, match="own workdir"):
        config.reuse_from = str(tmp_path / "w")
        StudySettings.from_config(config, tmp_path / "w")
    with pytest.raises(ValueError, match="is not a folder"):
        config.reuse_from = str(tmp_path / "nowhere")
        StudySettings.from_config(config, tmp_path / "w")


def test_a_malformed_per_task_budget_is_an_error_before_any_work(world, tmp_path):
    config = rf.config(world["model"], world["data"])
    config.tune.max_steps_by_task = "sst-2:450"
    with pytest.raises(ValueError, match="--config.tune.max_steps_by_task.*unknown task 'sst-2'"):
        StudySettings.from_config(config, tmp_path / "w")
    config = rf.config(world["model"], world["data"])
    config.tune.learning_rate = -1.0                  # named as this command spells it, not as launch.tune does
    with pytest.raises(ValueError, match=r"^--config\.tune\.learning_rate=-1\.0: allowed: a number > 0"):
        StudySettings.from_config(config, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_unwritable_workdir_fails_before_any_work(world, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    calls = []
    with pytest.raises(ValueError, match="not writable"):
        _run(world, blocker / "work", calls)
    assert calls == []


def test_cli_dry_run_and_unwritable_workdir(world, tmp_path):
    base = [sys.executable, "-m", "launch.reproduce", "--config=configs/default.py",
            f"--config.models={world['model']}", "--config.tasks=sst2,advsst2", "--config.optional_tasks=",
            f"--data_dir={world['data']}"]
    out = subprocess.run(base + [f"--workdir={tmp_path / 'w'}", "--dry_run"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"tune/{M}/sst2" in out.stdout and "stages:" in out.stdout and not (tmp_path / "w").exists()
    (tmp_path / "f").write_text("")
    out = subprocess.run(base + [f"--workdir={tmp_path / 'f' / 'w'}"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "not writable" in out.stderr and "Traceback" not in out.stderr


def test_unknown_task_in_config_is_an_error(world, tmp_path):
    with pytest.raises(ValueError, match="unknown task 'sst3'"):
        _settings(world, tmp_path, tasks="sst2,sst3")


def test_pod_sharding_keeps_every_dependency_on_its_host(world, tmp_path):
    stages = build.build_plan(_settings(world, tmp_path, tasks="sst2,mrpc,advsst2"), Session())
    group = {s.key: s.group for s in stages}
    for s in stages:
        if s.kind != "report":
            assert all(group[d] == s.group for d in s.deps), s.key
    shares = [runner.host_stages(stages, i, 2) for i in range(2)]
    keys = [{s.key for s in mine} for mine, _ in shares]
    assert not keys[0] & keys[1] and keys[0] | keys[1] == {s.key for s in stages if s.kind != "report"}
    assert {s.group for s in stages if s.key in keys[0]} != {s.group for s in stages if s.key in keys[1]}
    # host 0 waits for the others: with nothing done, every stage is still pending at the deadline
    assert len(runner.wait_for_others(stages, tmp_path, 0.0, 0.0, printer=lambda *_: None)) == len(keys[0] | keys[1])


def test_pod_hosts_split_the_work_and_host_0_writes_the_report(world, done, tmp_path):
    """Two hosts on a finished workdir copy with one stage of each host and the report deleted: each host redoes
    only its own stage, and host 0 the report. (The suppression files come back byte-identical.)"""
    import shutil
    w = tmp_path / "pod"
    shutil.copytree(done["workdir"], w)
    stages = build.build_plan(_settings(world, w), Session())
    mine1 = {s.key for s in runner.host_stages(stages, 1, 2)[0]}
    victims = {1: next(k for k in mine1 if k.startswith("suppress/")),
               0: next(s.key for s in stages if s.kind == "suppress" and s.key not in mine1)}
    by_key = {s.key: s for s in stages}
    for key in victims.values():          # a dev or a held-out (.test) suppression stage: its own output files
        for output in by_key[key].outputs:
            pathlib.Path(output).unlink()
    (w / "report" / "index.html").unlink()
    runs = {}
    for host in (1, 0):
        res, calls = _run(world, w, process_index=host, process_count=2, wait_s=5.0, poll_s=0.1)
        runs[host] = calls
        if host == 1:
            assert not (w / "report" / "index.html").exists()
    assert runs[1] == [victims[1]]
    assert runs[0] == [victims[0], "report"]
    assert (w / "report" / "index.html").exists()
