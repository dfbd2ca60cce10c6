"""The optional stage kinds control (F6a's control pairs), suppress_slots (F5 with prompt slot 0 left out) and
probe (the learnability reference) in the plan: which stages, their dependencies and outputs, their settings
checked, and, run on a tiny random BERT, the analysis reading their outputs (the F6a verdict against its control,
the F5 slot-0-excluded row, the probe beside Table 1)."""
from __future__ import annotations

import json
import re

import ml_collections
import pytest

import reproduce_fixtures as rf
from skillneurons_jax import io, layout
from skillneurons_jax.analysis import report, verdicts
from skillneurons_jax.pipeline import build
from skillneurons_jax.pipeline.settings import StudySettings
from skillneurons_jax.stages.control import ControlSettings
from skillneurons_jax.stages.probe import ProbeSettings
from skillneurons_jax.stages.suppress_slots import SlotSettings

M = rf.MODEL


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan_kinds")
    return {"root": root, "model": rf.make_model(root), "data": rf.write_data(root / "data")}


def _config(world, tasks="sst2,mrpc,advsst2", **blocks):
    c = rf.config(world["model"], world["data"], tasks=tasks)
    c.suppression.levels = "0,50"
    c.suppression.random_draws = 1
    c.transfer.enabled = False
    c.held_out = ml_collections.ConfigDict({"enabled": False})
    for key, block in blocks.items():
        setattr(c, key, ml_collections.ConfigDict(block))
    return c


def _plan(world, tmp_path, **blocks):
    return {s.key: s for s in build.build_plan(StudySettings.from_config(_config(world, **blocks), tmp_path))}


def test_control_and_slot_stages_are_planned_with_their_deps_and_outputs(world, tmp_path):
    plain = _plan(world, tmp_path)
    assert not [k for k in plain if k.startswith(("control/", "suppress_slots/"))]     # off without their blocks
    stages = _plan(world, tmp_path, control={"enabled": True}, suppress_slots={"tasks": "sst2"})
    # the existing stages are untouched: same keys and the same settings fingerprints
    assert {k: (s.settings, s.outputs) for k, s in plain.items() if k != "report"} == \
        {k: (s.settings, s.outputs) for k, s in stages.items() if k in plain and k != "report"}
    control = stages[f"control/{M}/advsst2"]
    assert set(control.deps) == {f"tune/{M}/sst2", f"predictivity/{M}/sst2"} and not control.skip_reason
    assert control.outputs[0] == layout.control_predictivity_path(tmp_path, M, "advsst2")
    assert control.settings["control"] == {"adversarial": "advsst2", "control_task": "mrpc"}   # another type
    assert control.group == f"{M}/sst2" and control.cost_s > 0
    slots = stages[f"suppress_slots/{M}/sst2__sst2"]
    assert set(slots.deps) == {f"predictivity/{M}/sst2", f"tune/{M}/sst2"}
    assert slots.outputs[0] == layout.suppression_slots_excluded_path(tmp_path, M, "sst2", "sst2")
    assert slots.settings["suppression"] == {**plain[f"suppress/{M}/sst2__sst2"].settings["suppression"],
                                             "excluded_prompt_slots": [0]}
    assert f"suppress_slots/{M}/mrpc__mrpc" not in stages                  # tasks: sst2 only
    assert {f"control/{M}/advsst2", f"suppress_slots/{M}/sst2__sst2"} <= set(stages["report"].deps)


def test_a_control_without_a_qualifying_set_is_a_skip_stage_that_says_why(world, tmp_path):
    c = _config(world, tasks="sst2,advsst2", control={"enabled": True})
    stages = {s.key: s for s in build.build_plan(StudySettings.from_config(c, tmp_path))}
    assert "another type" in stages[f"control/{M}/advsst2"].skip_reason


@pytest.mark.parametrize("cls, block, message", [
    (ControlSettings, {"pairs": "advsst2:sst2x"}, "sst2x"),
    (ControlSettings, {"pairs": "advsst2:movierationales"}, "another task type"),
    (ControlSettings, {"pairs": "sst2:mrpc"}, "not an adversarial set"),
    (ControlSettings, {"pairs": "advsst2"}, "'adversarial:control'"),
    (ControlSettings, {"tasks": "sst2"}, "clean task"),
    (ControlSettings, {"set": "mrpc"}, "--config.control.set: unknown key"),
    (SlotSettings, {"slots": "0,x"}, "--config.suppress_slots.slots='0,x'"),
    (SlotSettings, {"slots": "-1"}, "--config.suppress_slots.slots='-1'"),
    (SlotSettings, {"tasks": "advsst2"}, "adversarial set"),
    (SlotSettings, {"slot": 0}, "--config.suppress_slots.slot: unknown key"),
    (ProbeSettings, {"train_cap": 0}, "--config.probe.train_cap=0: allowed: an integer >= 1"),
    (ProbeSettings, {"encodings": "sometimes"}, "--config.probe.encodings='sometimes'"),
    (ProbeSettings, {"splits": "dev,train"}, "--config.probe.splits='dev,train'"),
    (ProbeSettings, {"tasks": "advsst2"}, "adversarial set"),
    (ProbeSettings, {"train_rows": 5}, "--config.probe.train_rows: unknown key"),
])
def test_their_settings_are_checked_with_field_and_problem(cls, block, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cls.from_config(block)


def test_explicit_control_pairs_replace_the_rule(world, tmp_path):
    assert ControlSettings.from_config({"pairs": "advsst2:mrpc"}).pairs == (("advsst2", "mrpc"),)
    assert SlotSettings.from_config({}).slots == (0,)
    c = _config(world, control={"pairs": "advsst2:mrpc"}, suppress_slots={"slots": "9"})
    with pytest.raises(ValueError, match=r"suppress_slots.slots=\[9\]: the prompts have 4 slots"):
        build.build_plan(StudySettings.from_config(c, tmp_path))


@pytest.fixture(scope="module")
def ran(world):
    pytest.importorskip("torch")
    from skillneurons_jax.pipeline import runner
    workdir = world["root"] / "work"
    c = _config(world, control={"enabled": True}, suppress_slots={"tasks": "sst2"})
    c.report.validation_doc = str(world["root"] / "docs" / "VALIDATION.md")
    result = runner.run_plan(StudySettings.from_config(c, workdir), printer=lambda *_: None)
    assert not result["failed"], result["failed"]
    return workdir


@pytest.mark.slow
def test_the_stages_run_and_the_verdicts_use_their_outputs(world, ran):
    control = layout.control_predictivity_path(ran, M, "advsst2")
    meta = json.loads(io.sidecar_path(control).read_text())
    assert (meta["task"], meta["control_for"], meta["prompt_task"], meta["baseline_task"]) == \
        ("mrpc", "advsst2", "sst2", "sst2")
    adv = json.loads(io.sidecar_path(layout.predictivity_path(ran, M, "advsst2")).read_text())
    assert meta["n_dev"] == adv["n_dev"]                              # the control has the adversarial set's size
    slots = json.loads(layout.suppression_slots_excluded_path(ran, M, "sst2", "sst2").read_text())
    assert slots["excluded_prompt_slots"] == [0]
    found = verdicts.study_verdicts(ran, M, ["sst2", "mrpc"], {"advsst2": "sst2"}).verdicts
    f6a = next(v for v in found if v.finding == "F6a")
    assert "control pair" in f6a.test and "ρ(control" in f6a.statistic
    assert any(v.finding == "F5" and v.subject == "sst2 (slot 0 excluded)" for v in found)
    assert not any(v.finding == "F5" and v.subject == "mrpc (slot 0 excluded)" for v in found)
    text = (world["root"] / "docs" / "VALIDATION.md").read_text()
    assert "| F5 | sst2 (slot 0 excluded) |" in text and "ρ(control mrpc, clean)" in text


def test_held_out_suppression_can_be_left_out_while_the_test_accuracy_stays(world, tmp_path):
    """config.suppression.held_out = False drops the suppression curves on the TEST split, keeps the test
    transfer (accuracy) stages and leaves every other stage's fingerprint as it was; a non-bool is refused."""
    def plan(**suppression):
        c = _config(world)
        c.held_out = ml_collections.ConfigDict({"enabled": True})
        c.transfer.enabled = True
        for key, value in suppression.items():
            c.suppression[key] = value
        return {s.key: s for s in build.build_plan(StudySettings.from_config(c, tmp_path))}
    full, lean = plan(), plan(held_out=False)
    dropped = {k for k in full if k not in lean}
    assert dropped and all(k.startswith("suppress/") and k.endswith(".test") for k in dropped)
    assert [k for k in lean if k.startswith("transfer/") and k.endswith(".test")]
    assert {k: (s.settings, s.outputs) for k, s in lean.items() if k != "report"} == \
        {k: (s.settings, s.outputs) for k, s in full.items() if k in lean and k != "report"}
    with pytest.raises(ValueError, match=r"suppression\.held_out='no'"):
        plan(held_out="no")


PROBE = {"train_cap": 20, "batch_size": 8, "max_text_tokens": 12}


def test_probe_stages_are_planned_for_every_clean_task_without_dependencies(world, tmp_path):
    stages = _plan(world, tmp_path, probe=PROBE)
    for task in ("sst2", "mrpc"):
        st = stages[f"probe/{M}/{task}"]
        assert st.deps == [] and st.outputs[0] == layout.probe_path(tmp_path, M, task) and st.cost_s > 0
        assert st.settings == {"model": M, "probe": ProbeSettings.from_config(PROBE).to_dict()}
        assert f"probe/{M}/{task}" in stages["report"].deps
    assert f"probe/{M}/advsst2" not in stages
    only = _plan(world, tmp_path, probe={**PROBE, "tasks": "mrpc"})
    assert [k for k in only if k.startswith("probe/")] == [f"probe/{M}/mrpc"]
    # launch.probe parses its flags with the same settings type, errors named as the flags spell them
    with pytest.raises(ValueError, match=re.escape("--probe_seed=-1: allowed")):
        ProbeSettings.from_config({"seed": -1}, where="--", spelled={"seed": "probe_seed"})


@pytest.mark.slow
def test_the_probe_reference_stands_beside_table_1_and_its_rule_leaves_tasks_out(world, ran, tmp_path):
    from skillneurons_jax.pipeline import runner
    c = _config(world, control={"enabled": True}, suppress_slots={"tasks": "sst2"}, probe=PROBE)
    c.held_out = ml_collections.ConfigDict({"enabled": True})
    doc = tmp_path / "VALIDATION.md"
    c.report.validation_doc = str(doc)
    result = runner.run_plan(StudySettings.from_config(c, ran), printer=lambda *_: None)
    assert not result["failed"], result["failed"]
    probes = {t: json.loads(layout.probe_path(ran, M, t).read_text()) for t in ("sst2", "mrpc")}
    assert probes["sst2"]["settings"]["train_cap"] == 20
    text = doc.read_text()
    assert "Learnability (tiny-bert): the prompts beside the frozen-feature probe, dev and test" in text
    for task, r in probes.items():
        ref = r["probes"][r["reference"]]
        for split in ("dev", "test"):
            lo, hi = ref[split]["interval"]
            cell = f"{ref[split]['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"
            assert re.search(rf"\| {M} \| {task} \| {split} \| 2 \| \d+ \| [\d.]+ \| [\d.]+ ± [\d.]+ \| "
                             rf"[\d.]+ ± [\d.]+ \| {re.escape(cell)} \|", text), (task, split)
    # the rule, from the study's own probes: sst2's probe and prompts made near chance -> left out of the verdicts
    # (with AdvSST-2, scored with its prompts); MRPC's probe far above chance -> kept
    probe_file = layout.probe_path(ran, M, "sst2")
    edited = probes["sst2"]
    edited["probes"][edited["reference"]]["dev"]["balanced_accuracy"] = 0.5
    probe_file.write_text(json.dumps(edited))
    side = io.sidecar_path(layout.predictivity_path(ran, M, "sst2"))
    meta = json.loads(side.read_text())
    meta["model_confusion"] = [[[4, 4], [4, 4]] for _ in meta["model_confusion"]]
    side.write_text(json.dumps(meta))
    config = json.loads((ran / "report" / "index.md.json").read_text())["config"]
    config["report"]["validation_doc"] = str(tmp_path / "V2.md")
    report.build_report(ran, tmp_path / "out", config)
    text = (tmp_path / "V2.md").read_text()
    assert "Left out of the verdicts by the rule: sst2 (probe dev balanced accuracy 0.500 and prompts' 0.500" in text
    assert "| F5 | mrpc |" in text and "| F5 | sst2" not in text and "| F6a |" not in text
    saved = json.loads((tmp_path / "validation" / "verdicts.json").read_text())
    assert saved["learnability"][M]["beyond_model"].keys() == {"sst2"}
