"""The robustness stages of the plan (issue 17, item 3) on a tiny random BERT and tiny SST-2 / AdvSST-2 files:
present only when configured, a whole robust plan that runs and is up to date on rerun, the plain arm equal to
the plain tune stage bit for bit, the per-arm evaluation and the patching output, the patching skip."""
import dataclasses
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

import prompt_fixtures  # noqa: E402
import reproduce_fixtures as rf  # noqa: E402
from skillneurons_jax import io, layout  # noqa: E402
from skillneurons_jax.data import tasks  # noqa: E402
from skillneurons_jax.pipeline import runner  # noqa: E402
from skillneurons_jax.pipeline import session as session_module  # noqa: E402
from skillneurons_jax.pipeline import build, presence  # noqa: E402
from skillneurons_jax.pipeline.settings import StudySettings  # noqa: E402
from skillneurons_jax.robust import perturbed_predictivity_stage as perturbed_stage  # noqa: E402
from skillneurons_jax.robust import tune_stage as robust_tune_stage  # noqa: E402
from skillneurons_jax.stages import predictivity as predictivity_stage  # noqa: E402
from skillneurons_jax.stages import registry  # noqa: E402
from skillneurons_jax.analysis import robust_tables as summary  # noqa: E402
from skillneurons_jax.robust import tuning  # noqa: E402

M = rf.MODEL
SEEDS = (0, 1)


def _config(world, *, robust=True, patching=True, data=None):
    c = rf.config(world["model"], data or world["data"], tasks="sst2,advsst2")
    c.transfer.enabled = False
    c.report.enabled = False
    if robust:
        c.robust = dict(tasks="sst2", arms="plain,perturbed,anchored",
                        perturbations={"char_swap": 0.3, "word_drop": 0.2, "neighbour": 0.3},
                        perturbation_mode="all", neighbour_k=2, protected_words="good,bad",
                        anchor=dict(strength=1.0, top_percent=25.0, margin=0.1),
                        extra_targets="sst2:mrpc")       # another clean task, of another type: a transfer row
    if patching:
        c.patching = dict(percents="10,50", source="original", random_draws=2, random_seed=0)
    return c


def _write_annotated(data_dir):
    """advglue/dev_ann.json: the AdvSST-2 records with an original sentence (the words reversed), one without."""
    records = []
    for i, (text, label) in enumerate(prompt_fixtures.sentences(12, 9)):
        record = {"idx": i, "sentence": text, "label": int(label)}
        if i != 3:
            record["original_sentence"] = " ".join(reversed(text.split()))
        records.append(record)
    (data_dir / "advglue" / "dev_ann.json").write_text(json.dumps({"sst2": records}))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust_plan")
    data = rf.write_data(root / "data")
    _write_annotated(data)
    return {"root": root, "model": rf.make_model(root), "data": data}


@pytest.fixture(scope="module")
def done(world):
    workdir = world["root"] / "work"
    settings = StudySettings.from_config(_config(world), workdir)
    first = runner.run_plan(settings, printer=lambda *_: None)
    calls = []
    hooks = {kind: calls.append for kind in registry.names()}
    second = runner.run_plan(StudySettings.from_config(_config(world), workdir), printer=lambda *_: None, hooks=hooks)
    return {"workdir": workdir, "first": first, "second": second, "second_calls": calls}


def test_stages_only_when_configured(world, tmp_path):
    def kinds(config):
        return {s.kind for s in build.build_plan(StudySettings.from_config(config, tmp_path / "w"))}

    assert not {"robust_tune", "patching"} & kinds(_config(world, robust=False, patching=False))
    assert "robust_tune" in kinds(_config(world, patching=False))
    assert "patching" not in kinds(_config(world, patching=False))
    assert "robust_tune" not in kinds(_config(world, robust=False))
    stages = {s.key: s for s in build.build_plan(StudySettings.from_config(_config(world), tmp_path / "w"))}
    anchored = stages[f"robust_tune/{M}/sst2/anchored"]
    # an arm is a group of its own (the hosts of a pod train the arms side by side)
    assert anchored.deps == [f"predictivity/{M}/sst2"] and anchored.cost_s > 0
    assert anchored.group == f"{M}/sst2/anchored"
    patch = stages[f"patching/{M}/sst2__advsst2.original"]
    assert set(patch.deps) == {f"tune/{M}/sst2", f"predictivity/{M}/sst2"} and patch.group == f"{M}/sst2"
    assert patch.skip_reason is None


def test_patching_skipped_without_the_annotated_file(world, tmp_path):
    data = rf.write_data(tmp_path / "data")          # dev.json only, no dev_ann.json
    stages = {s.key: s for s in build.build_plan(StudySettings.from_config(_config(world, data=data), tmp_path / "w"))}
    reason = stages[f"patching/{M}/sst2__advsst2.original"].skip_reason
    assert reason and "dev_ann.json" in reason
    assert stages[f"robust_tune/{M}/sst2/anchored"].skip_reason is None


def test_bad_robust_config_is_refused(world, tmp_path):
    c = _config(world)
    c.robust.arms = "plain,sturdy"
    with pytest.raises(ValueError, match="robust.arms"):
        StudySettings.from_config(c, tmp_path / "w")
    c = _config(world)
    c.robust.tasks = "advsst2"
    with pytest.raises(ValueError, match="clean tasks"):
        StudySettings.from_config(c, tmp_path / "w")
    c = _config(world)
    c.robust.perturbations = {}
    with pytest.raises(ValueError, match="perturbation"):
        StudySettings.from_config(c, tmp_path / "w")


def test_robust_plan_runs_and_is_up_to_date_on_rerun(done):
    first, second = done["first"], done["second"]
    assert not first["failed"] and not first["skipped"], (first["failed"], first["skipped"])
    ran = set(first["executed"])
    for arm in ("plain", "perturbed", "anchored"):
        assert f"robust_tune/{M}/sst2/{arm}" in ran
    assert f"patching/{M}/sst2__advsst2.original" in ran
    assert second["ran"] == 0 and not second["failed"] and done["second_calls"] == []


def _plain_arm(world, done, workdir, *, reuse: bool, **tune_overrides):
    """tuning.tune_arm of the plain arm under `workdir` with the plan's settings (`tune_overrides` changed)."""
    settings = StudySettings.from_config(_config(world), done["workdir"])
    tune_config = settings.tune.to_dict()
    for key, value in tune_overrides.items():
        tune_config[key] = value
    setup = session_module.Session().setup(str(world["model"]), "sst2", tune_config)
    return tuning.tune_arm(setup, "plain", settings.kind("robust"), SEEDS, workdir, settings.data_dir, tune_config,
                           model_path=str(world["model"]), max_examples=settings.max_examples,
                           reuse_tune_stage=reuse)


def test_plain_arm_trained_again_is_the_tune_stage_bit_for_bit(world, done, tmp_path):
    """What makes the plan's copy of the tune stage's prompts (the plain arm's stage) legitimate: the plain arm
    trained from scratch in another workdir gives the same bytes."""
    summary = _plain_arm(world, done, tmp_path / "fresh", reuse=False)
    assert "copied_from" not in summary and summary["steps"] > 0
    for seed in SEEDS:
        fresh = layout.robust_prompt_path(tmp_path / "fresh", M, "sst2", "plain", seed).read_bytes()
        assert fresh == layout.prompt_path(done["workdir"], M, "sst2", seed).read_bytes()


def test_plain_arm_copies_only_the_same_finished_computation(world, done, tmp_path):
    def workdir_with_the_tune_stage(name):
        w = tmp_path / name
        shutil.copytree(layout.task_prompts_dir(done["workdir"], M, "sst2"), layout.task_prompts_dir(w, M, "sst2"))
        return w

    same = _plain_arm(world, done, workdir_with_the_tune_stage("same"), reuse=True)
    assert same["copied_from"] and same["steps"] == 2
    longer = _plain_arm(world, done, workdir_with_the_tune_stage("longer"), reuse=True, max_steps=3)
    assert "copied_from" not in longer and longer["steps"] == 3       # the tune stage stopped at 2: trained
    shorter = _plain_arm(world, done, workdir_with_the_tune_stage("shorter"), reuse=True, max_steps=1)
    assert "copied_from" not in shorter and shorter["steps"] == 1     # its best prompt may come from step 2
    faster = _plain_arm(world, done, workdir_with_the_tune_stage("faster"), reuse=True, learning_rate=0.5)
    assert "copied_from" not in faster
    w = workdir_with_the_tune_stage("unfinished")
    for seed in SEEDS:                                                 # the run ended before its planned steps
        metrics = layout.metrics_path(w, M, "sst2", seed)
        metrics.write_text("")
    assert "copied_from" not in _plain_arm(world, done, w, reuse=True)
    w = workdir_with_the_tune_stage("corrupt")
    layout.metrics_path(w, M, "sst2", SEEDS[1]).write_text('{"step": 2, "dev_accuracy"\n')   # cut mid-write
    corrupt = _plain_arm(world, done, w, reuse=True)                  # trains (and says why), does not stop
    assert "copied_from" not in corrupt and corrupt["steps"] == 2


def test_plain_arm_of_the_plan_is_copied_and_says_from_where(done):
    w = done["workdir"]
    for seed in SEEDS:
        plain = layout.robust_prompt_path(w, M, "sst2", "plain", seed)
        assert plain.read_bytes() == layout.prompt_path(w, M, "sst2", seed).read_bytes()
        for path in (plain, layout.robust_metrics_path(w, M, "sst2", "plain", seed)):
            meta = json.loads(io.sidecar_path(path).read_text())
            assert meta["copied_from"] == str(layout.run_dir(w, M, "sst2", seed)) and meta["robust_arm"] == "plain"
        assert not (plain.parent / "state").exists()        # a finished copy, no checkpoint
        # the other arms trained on other inputs and another loss: their prompts differ
        for arm in ("perturbed", "anchored"):
            other = np.load(layout.robust_prompt_path(w, M, "sst2", arm, seed))
            assert not np.array_equal(other, np.load(layout.prompt_path(w, M, "sst2", seed))), arm
    anchored = np.load(layout.robust_prompt_path(w, M, "sst2", "anchored", 0))
    perturbed = np.load(layout.robust_prompt_path(w, M, "sst2", "perturbed", 0))
    assert not np.array_equal(anchored, perturbed)


def test_each_arm_is_scored_on_clean_and_adversarial_dev(done):
    w = done["workdir"]
    for arm in ("plain", "perturbed", "anchored"):
        doc = json.loads(layout.robust_eval_path(w, M, "sst2", arm).read_text())
        assert doc["arm"] == arm and doc["seeds"] == list(SEEDS)
        assert doc["clean"]["n_dev"] == 16 and len(doc["clean"]["accuracy"]) == 2
        assert set(doc["adversarial"]) == {"advsst2"} and doc["adversarial"]["advsst2"]["n_dev"] == 12
        assert all(0.0 <= a <= 1.0 for a in doc["adversarial"]["advsst2"]["accuracy"])
        # per-example outcomes of every seed, in the split's row order: they average to the accuracies
        for row in (doc["clean"], doc["adversarial"]["advsst2"]):
            correct = np.asarray(row["correct"])
            assert correct.shape == (2, row["n_dev"]) and len(row["labels"]) == row["n_dev"]
            np.testing.assert_allclose(correct.mean(axis=1), row["accuracy"])
        if arm != "plain":
            # the manipulation check: each evaluation logs the loss's terms; the perturbed control measures the
            # anchored arm's term without training on it
            log = [json.loads(line) for line in
                   layout.robust_metrics_path(w, M, "sst2", arm, SEEDS[0]).read_text().splitlines()]
            trained = [r for r in log if r.get("train_loss") is not None]
            assert trained and all(r["train_anchor"] > 0 for r in trained)
            assert all(r["train_ce"] > 0 and r["train_perturbed_ce"] > 0 for r in trained)
    # the arms table pairs the anchored arm with its control per example
    rows = {(r["arm"], r["split"]): r for r in summary.arm_rows(w)}
    assert rows[("anchored", "clean")]["vs_perturbed_p"] is not None
    assert rows[("perturbed", "adversarial")]["vs_plain_p"] is not None
    # the plain arm's clean dev accuracy is the plain prompts' (the same files), scored the same way
    plain = json.loads(layout.robust_eval_path(w, M, "sst2", "plain").read_text())
    metrics = [json.loads(line) for line in layout.metrics_path(w, M, "sst2", 0).read_text().splitlines()]
    assert plain["clean"]["accuracy"][0] in {m.get("dev_accuracy", m.get("accuracy")) for m in metrics}


def test_other_clean_task_is_scored_as_a_transfer(done):
    doc = json.loads(layout.robust_eval_path(done["workdir"], M, "sst2", "anchored").read_text())
    assert set(doc["transfer"]) == {"mrpc"} and doc["transfer"]["mrpc"]["kind"] == "transfer, other type"
    assert doc["adversarial"]["advsst2"]["kind"] == "adversarial" and doc["clean"]["kind"] == "clean"
    rows = summary.arm_rows(done["workdir"])
    assert {(r["arm"], r["split"]) for r in rows if r["target"] == "mrpc"} == {
        (arm, "transfer, other type") for arm in ("plain", "perturbed", "anchored")}


def test_arm_predictivity_stages(world, done, tmp_path):
    """Each arm's predictivity on the clean task and its adversarial set (not on the transfer target). The plain
    arm's is copied from the main study's, which is legitimate because computed again under the plain arm's own
    prompts it is the same, exactly; the other arms' prompts differ."""
    w = done["workdir"]
    assert {f"robust_predictivity/{M}/sst2/{arm}" for arm in ("plain", "perturbed", "anchored")} <= set(
        done["first"]["executed"])
    settings = StudySettings.from_config(_config(world), w)
    fresh_root = tmp_path / "plain_again"
    shutil.copytree(layout.robust_arm_dir(w, "plain") / "prompts", fresh_root / "prompts")
    session = session_module.Session()
    for task in ("sst2", "advsst2"):
        copied = layout.predictivity_path(layout.robust_arm_dir(w, "plain"), M, task)
        assert json.loads(io.sidecar_path(copied).read_text())["copied_from"] == str(
            layout.predictivity_path(w, M, task))
        predictivity_stage.predictivity(
            session.setup(str(world["model"]), task, settings.tune), fresh_root, settings.data_dir, SEEDS,
            model_path=str(world["model"]), max_text_tokens=int(settings.tune["max_text_tokens"]),
            eval_batch_size=int(settings.tune["eval_batch_size"]), options=settings.stats,
            max_examples=settings.max_examples, prompt_task="sst2", baseline_task="sst2")
        with np.load(layout.predictivity_path(w, M, task)) as main, \
                np.load(layout.predictivity_path(fresh_root, M, task)) as fresh:
            np.testing.assert_array_equal(fresh["pred_per_seed"], main["pred_per_seed"])
    for task in ("sst2", "advsst2"):
        with np.load(layout.predictivity_path(w, M, task)) as main, \
                np.load(layout.predictivity_path(layout.robust_arm_dir(w, "plain"), M, task)) as plain, \
                np.load(layout.predictivity_path(layout.robust_arm_dir(w, "anchored"), M, task)) as anchored:
            np.testing.assert_array_equal(plain["pred_per_seed"], main["pred_per_seed"])
            assert not np.array_equal(anchored["pred_per_seed"], main["pred_per_seed"])
    assert not layout.predictivity_path(layout.robust_arm_dir(w, "plain"), M, "mrpc").exists()
    rows = summary.predictivity_rows(w)
    assert [(r["arm"], r["adversarial"], r["kind"]) for r in rows] == [
        (a, t, k) for a in ("plain", "perturbed", "anchored")
        for t, k in (("advsst2", "adversarial"), ("sst2", summary.PERTURBED_DEV_KIND))]
    assert rows[0]["vs_plain_mean"] is None and rows[4]["vs_plain_mean"] is not None
    assert rows[5]["vs_plain_mean"] is not None and rows[5]["vs_perturbed_mean"] is not None
    assert all(0.0 <= r["adversarial_pred_mean"] <= 1.0 for r in rows)


def test_perturbed_dev_predictivity_stages(world, done, tmp_path):
    """The manipulation check's held-out half: each arm's Pred on a perturbed copy of the clean dev rows, perturbed
    with the arms' training perturbations and a fixed seed that the stage's settings and the sidecar record; the
    TRAIN baseline is the arm's clean result's; the Pred differs from the clean dev's (the rows were perturbed)."""
    w = done["workdir"]
    record = {"kind": "perturbed", "rows": "dev (measure)", "seed": perturbed_stage.PERTURBED_DEV_SEED,
              "perturbations": {"char_swap": 0.3, "word_drop": 0.2, "neighbour": 0.3}, "mode": "all",
              "neighbour_k": 2, "protected_words": ["good", "bad"]}
    stages = {s.key: s for s in build.build_plan(StudySettings.from_config(_config(world), tmp_path / "w"))}
    for arm in ("plain", "perturbed", "anchored"):
        stage = stages[f"robust_perturbed_predictivity/{M}/sst2/{arm}"]
        assert stage.settings["perturbed_dev"] == record and stage.settings["arm"] == arm
        assert stage.deps == [f"robust_predictivity/{M}/sst2/{arm}"] and stage.group == f"{M}/sst2/{arm}"
        assert stage.key in done["first"]["executed"]
        root = layout.robust_arm_dir(w, arm)
        path = layout.perturbed_predictivity_path(root, M, "sst2")
        side = json.loads(io.sidecar_path(path).read_text())
        assert side["dev_transform"] == record and side["prompt_task"] == "sst2"
        assert side["reused_baseline_from"] == str(layout.predictivity_path(root, M, "sst2"))
        with np.load(path) as perturbed, np.load(layout.predictivity_path(root, M, "sst2")) as clean:
            np.testing.assert_array_equal(perturbed["baseline"], clean["baseline"])
            assert not np.array_equal(perturbed["pred_per_seed"], clean["pred_per_seed"])
        assert side["n_dev"] == json.loads(io.sidecar_path(layout.predictivity_path(root, M, "sst2")).read_text())[
            "n_dev"]
    off = _config(world)
    off.robust.predictivity = False
    assert "robust_perturbed_predictivity" not in {
        s.kind for s in build.build_plan(StudySettings.from_config(off, tmp_path / "w2"))}


def test_scored_set_kinds_and_within_type_targets(world, tmp_path):
    assert tasks.scored_kind("sst2", "sst2") == "clean"
    assert tasks.scored_kind("sst2", "advsst2") == "adversarial"
    assert tasks.scored_kind("mrpc", "advqqp") == "adversarial transfer"
    assert tasks.scored_kind("sst2", "movierationales") == "transfer, same type"
    assert tasks.scored_kind("sst2", "qnli") == "transfer, other type"
    settings = StudySettings.from_config(_config(world), tmp_path / "w")
    plan_of = presence.TaskPlan(present=["sst2", "movierationales", "qnli", "advsst2"], skipped={}, dropped={})
    ctx = build.PlanContext(settings, None, plan_of)
    # its adversarial set, robust.extra_targets (mrpc, data present), the plan's other sentiment task
    assert robust_tune_stage.scored_sets(ctx, "sst2") == ["advsst2", "mrpc", "movierationales"]
    robust = dataclasses.replace(settings.kind("robust"), transfer_within_type=False)
    ctx = build.PlanContext(settings.replace(kinds={**settings.kinds, "robust": robust}), None, plan_of)
    assert robust_tune_stage.scored_sets(ctx, "sst2") == ["advsst2", "mrpc"]


def test_two_tasks_measuring_one_adversarial_set_are_refused(world, tmp_path):
    """robust_predictivity keeps one file per set: SST-2's arms and MRPC's both scored on AdvSST-2 would overwrite
    each other's."""
    c = _config(world)
    c.tasks = "sst2,mrpc,advsst2"
    c.robust.tasks = "sst2,mrpc"
    c.robust.extra_targets = "mrpc:advsst2"
    with pytest.raises(ValueError, match="advsst2"):
        build.build_plan(StudySettings.from_config(c, tmp_path / "w"))
    c.robust.predictivity = False                                      # no predictivity file: allowed
    assert any(s.key.startswith("robust_tune/") for s in build.build_plan(StudySettings.from_config(c, tmp_path / "w")))


def test_patching_output(done):
    doc = json.loads(layout.patching_path(done["workdir"], M, "sst2", "advsst2", "original").read_text())
    assert doc["ks"] == [0, 10, 50] and doc["patch_source"] == "original"
    assert doc["n_pairs_used"] == 11 and doc["pairs"]["skipped"]
    # per level, draw, seed and pair: the per-example test of skill against random patches
    assert np.asarray(doc["skill_correct"]["50"]).shape == (2, 11)
    assert np.asarray(doc["random_correct"]["50"]).shape[1:] == (2, 11)
    assert all(r["skill_minus_random_p"] is not None for r in summary.patching_rows(done["workdir"]))


def test_robust_settings_arms_share_one_budget():
    settings = tuning.RobustSettings.from_mapping({"perturbations": "char_swap:0.1,word_drop:0.05",
                                                   "anchor": {"strength": 2.0, "top_percent": 5.0}})
    plain, perturbed, anchored = (settings.arm(a) for a in ("plain", "perturbed", "anchored"))
    assert not plain.active
    assert perturbed.perturbed_weight == anchored.perturbed_weight == 1.0
    assert perturbed.strength == 0.0 and anchored.strength == 2.0
    assert perturbed.top_percent == anchored.top_percent == 5.0
    assert settings.perturbations.to_dict()["perturbations"] == {"char_swap": 0.1, "word_drop": 0.05}
    with pytest.raises(ValueError, match="unknown robust keys"):
        tuning.RobustSettings.from_mapping({"perturbation": {"char_swap": 0.1}})


def test_extra_targets_are_scored_where_their_data_is(world, tmp_path):
    """MRPC's arms on AdvSST-2 (as configs/robust.py puts MRPC's on AdvQQP): the evaluation part of the stage's cost
    grows by that set; a set whose data is absent (QNLI here) adds nothing."""
    def cost(extra):
        c = _config(world, patching=False)
        c.tasks = "sst2,mrpc,advsst2"
        c.robust.tasks = "mrpc"
        c.robust.extra_targets = extra
        stages = {s.key: s for s in build.build_plan(StudySettings.from_config(c, tmp_path / "w"))}
        assert f"robust_tune/{M}/sst2/plain" not in stages
        return stages[f"robust_tune/{M}/mrpc/plain"].cost_s

    assert cost("mrpc:advsst2") > cost("")
    assert cost("mrpc:qnli") == cost("")
    c = _config(world)
    c.robust.extra_targets = "mrpc"
    with pytest.raises(ValueError, match="clean:target"):
        StudySettings.from_config(c, tmp_path / "w")
