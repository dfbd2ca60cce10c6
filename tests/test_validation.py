"""The validation study (issue #15): configs/validation.py builds a valid plan (every task, AdvQQP paired with
MRPC by config, the levels), and the verdicts (analysis/verdicts.py) come out of stage results with known answers:
supported, not supported and inconclusive, through the rule in code, and into the generated document."""
from __future__ import annotations

import collections
import dataclasses

import json
import pathlib

import numpy as np
import pytest

import analysis_synthetic as synth
import prompt_fixtures
import reproduce_fixtures
from configs import validation as validation_config
from skillneurons_jax import io as project_io
from skillneurons_jax import layout
from skillneurons_jax import robust  # noqa: F401  (registers the robust kinds, as launch.reproduce does)
from skillneurons_jax.analysis import provenance, results, verdicts
from skillneurons_jax.analysis.sections import validation as validation_section
from skillneurons_jax.pipeline import build, presence, settings as study_settings
from skillneurons_jax.pipeline.settings import StudySettings

SHARED_DATA = pathlib.Path("/work/shared/data")
MODEL = "tiny"


# ------------------------------------------------------------------------------------------------------------------
# The plan
# ------------------------------------------------------------------------------------------------------------------
def _data_with_advqqp(data_dir) -> pathlib.Path:
    data_dir = reproduce_fixtures.write_data(data_dir)
    dev = json.loads((data_dir / "advglue" / "dev.json").read_text())
    dev["qqp"] = [{"idx": i, "question1": t, "question2": t if y else " ".join(reversed(t.split())), "label": int(y)}
                  for i, (t, y) in enumerate(prompt_fixtures.sentences(10, 11))]
    (data_dir / "advglue" / "dev.json").write_text(json.dumps(dev))
    return data_dir


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation_world")
    return reproduce_fixtures.make_model(root / "models"), _data_with_advqqp(root / "data")


def _settings(model, data_dir, workdir, **overrides):
    config = validation_config.get_config()
    config.models = str(model)
    for key, value in overrides.items():
        setattr(config, key, value)
    return StudySettings.from_config(config, workdir, str(data_dir))


def test_validation_config_builds_the_plan(tiny_world, tmp_path):
    model, data_dir = tiny_world
    settings = _settings(model, data_dir, tmp_path)
    assert settings.seeds == (0, 1, 2, 3, 4)              # issue #29's power: >= 5 seeds, seeds before levels
    assert settings.suppression.levels == (0, 5, 15)
    assert settings.suppression.random_draws == 5
    assert settings.adversarial_prompts == {"advqqp": "mrpc"}
    tp = presence.plan_tasks(settings)
    assert set(tp.present) == {"sst2", "mrpc", "advsst2", "advqqp"}
    # the tasks whose files the tiny data lacks are skipped with the reason, not dropped
    assert set(tp.skipped) == {"movierationales", "qnli", "ethicsdeontology", "advqnli"}
    stages = {s.key: s for s in build.build_plan(settings)}
    m = reproduce_fixtures.MODEL
    assert f"predictivity/{m}/advqqp" in stages
    assert set(stages[f"predictivity/{m}/advqqp"].deps) == {f"tune/{m}/mrpc", f"predictivity/{m}/mrpc"}
    assert f"suppress/{m}/mrpc__advqqp" not in stages      # F6b curves only for the learned tasks' sets
    assert f"suppress/{m}/sst2__advsst2" in stages
    # the adversarial sets' own skill neurons on themselves answer no finding: not run
    assert not [k for k in stages if k.startswith(f"suppress/{m}/adv")]
    assert settings.tune.max_steps_by_task == validation_config.POWER_STEPS_BY_TASK
    assert (settings.tune.lr_schedule, settings.tune.select_metric) == ("cosine", "balanced_accuracy")
    transfer_outputs = {p.name for p in stages[f"transfer/{m}/mrpc"].outputs}
    assert {"mrpc__advqqp.json", "mrpc__sst2.json", "mrpc__advsst2.json"} <= transfer_outputs
    assert "report" in stages
    # the checks of issues #29/#30 as stages of their own: F6a's control pairs (another task type, at least the
    # set's size), F5 with slot 0 left out (the tasks the probe rule names, present here: SST-2), the probes
    assert {k: stages[k].settings["control"]["control_task"] for k in stages if k.startswith("control/")} == \
        {f"control/{m}/advsst2": "mrpc", f"control/{m}/advqqp": "sst2"}
    assert stages[f"control/{m}/advqqp"].deps == [f"tune/{m}/mrpc", f"predictivity/{m}/mrpc"]
    assert [k for k in stages if k.startswith("suppress_slots/")] == [f"suppress_slots/{m}/sst2__sst2"]
    assert sorted(k for k in stages if k.startswith("probe/")) == [f"probe/{m}/mrpc", f"probe/{m}/sst2"]
    assert stages[f"probe/{m}/sst2"].settings["probe"]["train_cap"] == 4000


def test_patching_skips_a_set_scored_with_another_tasks_prompts(tiny_world, tmp_path):
    """AdvQQP is scored with MRPC's prompts: patching, which needs the set's own clean task (QQP, absent), gets no
    stage for it (before, its stage depended on a tune/<m>/qqp stage that does not exist and the plan failed)."""
    model, data_dir = tiny_world
    settings = _settings(model, data_dir, tmp_path,
                         patching=dict(percents="10", source="original", random_draws=1, random_seed=0))
    keys = [s.key for s in build.build_plan(settings)]
    assert [k for k in keys if k.startswith("patching/")] == [f"patching/{reproduce_fixtures.MODEL}/sst2__advsst2"
                                                               ".original"]


def test_advqqp_needs_the_option_to_pair_with_mrpc(tiny_world, tmp_path):
    model, data_dir = tiny_world
    settings = _settings(model, data_dir, tmp_path, adversarial_prompts="")
    tp = presence.plan_tasks(settings)
    assert "advqqp" not in tp.present and "qqp" in tp.skipped["advqqp"]


@pytest.mark.parametrize("value, problem", [("advqqp:sst2", "same type"), ("mrpc:sst2", "not an adversarial"),
                                            ("advqqp:advsst2", "itself adversarial"), ("advqqp", "adversarial:clean")])
def test_adversarial_prompts_errors(value, problem):
    with pytest.raises(ValueError, match=problem):
        study_settings.parse_adversarial_prompts(value)


@pytest.mark.skipif(not (SHARED_DATA / "MANIFEST.md").exists(), reason="the shared real data is not here")
def test_validation_plan_on_the_real_data_runs_every_task(tmp_path):
    config = validation_config.get_config()
    settings = StudySettings.from_config(config, tmp_path, str(SHARED_DATA))
    tp = presence.plan_tasks(settings)
    assert set(tp.present) == set(config.tasks.split(",")), tp.skipped


@pytest.mark.skipif(not (SHARED_DATA / "MANIFEST.md").exists(), reason="the shared real data is not here")
def test_validation_plan_fits_its_120_minutes_by_the_calibrated_cost_model(tmp_path):
    """The issue's budget, checked by the plan's own estimate at the config's CPU rate (calibrated on the two runs
    measured on this project's AVX-512 host, configs/validation.py's docstring), so that no change of the config
    can quietly grow the study past it; the run's real time is printed in the document."""
    config = validation_config.get_config()
    assert config.cost.flops_per_second == 2.1e11 and config.cost.stage_overhead_s == 2.0
    stages = build.build_plan(StudySettings.from_config(config, tmp_path, str(SHARED_DATA)))
    kinds = collections.Counter(stage.kind for stage in stages)
    # five clean tasks (ETHICS justice left out by its probe), their adversarial sets, held-out test accuracy;
    # suppression curves for the two learned tasks and SST-2's adversarial set, on dev only; the checks and probes
    assert kinds == {"tune": 5, "predictivity": 8, "suppress": 3, "transfer": 10, "explorer": 5, "prune": 1,
                     "control": 3, "suppress_slots": 2, "probe": 5, "report": 1}, kinds
    assert sum(stage.cost_s for stage in stages) <= 120 * 60


# ------------------------------------------------------------------------------------------------------------------
# The rule
# ------------------------------------------------------------------------------------------------------------------
def test_decide_rule():
    assert verdicts.decide(0.1, (0.05, 0.15), 0.0) == verdicts.SUPPORTED
    assert verdicts.decide(0.1, (0.05, 0.15), 0.0, p_value=0.2) == verdicts.INCONCLUSIVE   # test disagrees
    assert verdicts.decide(-0.1, (-0.15, -0.05), 0.0) == verdicts.NOT_SUPPORTED
    assert verdicts.decide(0.01, (-0.05, 0.07), 0.0) == verdicts.INCONCLUSIVE
    assert verdicts.decide(0.4, (0.3, 0.5), 0.5, direction=-1, inclusive=True) == verdicts.SUPPORTED
    assert verdicts.decide(0.4, (0.3, 0.5), 0.5, direction=-1) == verdicts.INCONCLUSIVE     # strict: touching
    assert verdicts.decide(0.1, None, 0.0) == verdicts.INCONCLUSIVE
    assert verdicts.decide(0.1, (0.05, 0.15), 0.0, p_value=0.01, min_p=0.1) == verdicts.INCONCLUSIVE


# ------------------------------------------------------------------------------------------------------------------
# Verdicts from synthetic results with known answers
# ------------------------------------------------------------------------------------------------------------------
KS = [0, 1, 5, 15]


def _suppression(skill_drop, random_drop, noise, seed=0, seeds=3, draws=2):
    rng = np.random.default_rng(seed)
    frac = np.asarray(KS, float)[:, None] / 15
    skill = np.clip(0.85 - skill_drop * frac + rng.normal(0, noise, (len(KS), seeds)), 0, 1)
    random = np.clip(0.85 - random_drop * frac[:, None] + rng.normal(0, noise, (len(KS), draws, seeds)), 0, 1)
    return skill, random


@pytest.mark.parametrize("skill_drop, random_drop, noise, expected", [
    (0.4, 0.02, 0.005, verdicts.SUPPORTED),          # skill neurons hurt far more, every seed
    (0.02, 0.4, 0.005, verdicts.NOT_SUPPORTED),      # random neurons hurt more
    (0.05, 0.05, 0.05, verdicts.INCONCLUSIVE)])      # the same drop, noisy seeds
def test_suppression_verdicts(tmp_path, skill_drop, random_drop, noise, expected):
    skill, random = _suppression(skill_drop, random_drop, noise)
    synth.write_suppression(tmp_path, MODEL, "sst2", "sst2", KS, skill, random)
    res = results.load_suppression(tmp_path, MODEL, "sst2", "sst2")
    verdict = verdicts.suppression_verdict("F5", res, n_flips=200)
    assert verdict.verdict == expected, verdict
    assert np.isclose(verdict.estimate, random[1:].mean() - skill[1:].mean())


def test_suppression_on_a_set_scored_below_chance_is_inconclusive(tmp_path):
    """Prompts at 0.30 on an adversarial set (their answers flipped): suppressing their skill neurons moves the
    answers toward chance, accuracy rises, and "random - skill" is negative. That is no evidence that skill neurons
    matter less; the verdict says inconclusive and why, with the rule's verdict in the note."""
    rng = np.random.default_rng(0)
    frac = np.asarray(KS, float)[:, None] / 15
    skill = 0.30 + 0.15 * frac + rng.normal(0, 0.005, (len(KS), 3))                  # [K, S] toward 0.5
    random = np.full((len(KS), 1, 3), 0.30) + rng.normal(0, 0.005, (len(KS), 1, 3))
    synth.write_suppression(tmp_path, MODEL, "sst2", "advsst2", KS, skill, random)
    unlabelled = results.load_suppression(tmp_path, MODEL, "sst2", "advsst2")
    # without per-example labels the chance rate is unknown: the rule's verdict stands
    assert verdicts.suppression_verdict("F6b", unlabelled, n_flips=200).verdict == verdicts.NOT_SUPPORTED
    res = dataclasses.replace(unlabelled, labels=np.array([0] * 24 + [1] * 24))
    verdict = verdicts.suppression_verdict("F6b", res, n_flips=200)
    assert verdict.estimate < 0 and verdict.verdict == verdicts.INCONCLUSIVE
    assert "every seed below chance, 0.500" in verdict.note and "rule alone: not supported" in verdict.note
    assert np.allclose(verdicts.unsuppressed_accuracy(res), skill[0])
    # the same curves from 0.80 down: above chance, the rule's verdict stands
    synth.write_suppression(tmp_path, MODEL, "sst2", "sst2", KS, 1.1 - skill, 1.1 - random)
    above = dataclasses.replace(results.load_suppression(tmp_path, MODEL, "sst2", "sst2"), labels=res.labels)
    above = verdicts.suppression_verdict("F6b", above, n_flips=200)
    assert above.verdict == verdicts.SUPPORTED and "chance" not in above.note
    # on a set of 70 % one label, prompts at 0.55 are below what a trivial answer scores: the rule applies
    skewed = dataclasses.replace(results.load_suppression(tmp_path, MODEL, "sst2", "sst2"), skill=skill + 0.25,
                                 random=random + 0.25, labels=np.array([0] * 34 + [1] * 14))
    assert "chance, 0.708" in verdicts.suppression_verdict("F6b", skewed, n_flips=200).note
    # one seed above chance: the rule does not apply
    mixed = skill.copy()
    mixed[0, 0] = 0.6
    mixed = dataclasses.replace(res, skill=mixed)
    assert "chance" not in verdicts.suppression_verdict("F6b", mixed, n_flips=200).note


def test_f6_correlation_estimate_is_the_centre_of_its_interval():
    """The estimate is the mean of the per-seed correlations (the interval's centre); the correlation of the
    seed-averaged Pred, larger because averaging removes seed noise, is the permutation test's and is in the note
    (before, it was the estimate and could lie outside the interval: 0.082 against [0.053, 0.074])."""
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(2, 50))                                 # [L, N] what the two sets share
    clean = np.stack([shared + rng.normal(0, 2.0, (2, 50)) for _ in range(3)])       # [S, L, N]
    adversarial = np.stack([shared + rng.normal(0, 2.0, (2, 50)) for _ in range(3)])
    verdict = verdicts.f6_correlation("advsst2", "sst2", adversarial, clean, n_perm=200)
    low, high = verdict.interval
    assert low <= verdict.estimate <= high
    averaged = float(verdict.note.split("seed-averaged Pred ")[1].split(";")[0])
    assert averaged > verdict.estimate and verdict.p_value is not None


def test_f6_correlation_needs_a_control_pair():
    """The clean and adversarial Pred share the prompt and the baseline, which correlate them by themselves: the
    neuron-permutation test cannot tell, the control pair (an unrelated set through the same prompt and baseline)
    can. Without a control: inconclusive; with one that is as correlated: not supported; with a control that shares
    only the prompt's part while the adversarial set also shares the data's: supported."""
    rng = np.random.default_rng(0)
    prompt = rng.normal(size=(2, 200))                               # what the shared prompt and baseline give
    data = rng.normal(size=(2, 200))                                 # what the clean and adversarial data share
    noise = lambda: rng.normal(0, 1.0, (3, 2, 200))
    clean = prompt + data + noise()
    adversarial = prompt + data + noise()
    control = prompt + noise()
    alone = verdicts.f6_correlation("advsst2", "sst2", adversarial, clean, n_perm=200)
    assert alone.p_value < 0.01 and alone.verdict == verdicts.INCONCLUSIVE and "without a control" in alone.note
    found = verdicts.f6_correlation("advsst2", "sst2", adversarial, clean, pred_control=control, control="imdb",
                                    n_perm=200)
    assert found.verdict == verdicts.SUPPORTED and found.estimate > 0.1 and found.mde is not None
    same = verdicts.f6_correlation("advsst2", "sst2", prompt + noise(), clean, pred_control=control,
                                   control="imdb", n_perm=200)
    assert same.verdict != verdicts.SUPPORTED


def test_f2_tests_the_paired_drop_by_exact_mcnemar():
    """F2 tests the drop from the originals to their adversarial versions, paired by example (exact McNemar per
    seed, the largest p), beside 'at or below chance'."""
    rng = np.random.default_rng(0)
    original = (rng.random((3, 120)) < 0.85).astype(int)
    flipped = np.where(rng.random((3, 120)) < 0.4, 0, original)                   # 40 % of right answers lost
    drop = verdicts.f2_drop("advsst2", "sst2", original, flipped)
    assert drop.verdict == verdicts.SUPPORTED and drop.family == "F2 drop" and drop.estimate > 0.25
    assert drop.p_value < 1e-6 and "McNemar" in drop.test and drop.mde < drop.estimate
    same = verdicts.f2_drop("advsst2", "sst2", original, original[:, rng.permutation(120)])
    assert same.verdict != verdicts.SUPPORTED and same.p_value > 0.05


@pytest.mark.parametrize("accuracy, majority, expected", [
    ([0.46, 0.47, 0.45], 0.55, verdicts.SUPPORTED),
    ([0.80, 0.82, 0.81], 0.55, verdicts.NOT_SUPPORTED),
    ([0.40, 0.70, 0.55], 0.50, verdicts.INCONCLUSIVE)])
def test_adversarial_verdicts(accuracy, majority, expected):
    verdict = verdicts.f2_adversarial("advsst2", "sst2", accuracy, majority)
    assert verdict.verdict == expected and verdict.reference == max(0.5, majority)


def _typed_preds(rng, signal: float, seeds: int = 3, layers: int = 3, neurons: int = 60):
    """The study's six clean tasks in four types (2, 1, 1, 2): tasks of one type share a pattern with weight
    `signal`, plus noise per seed."""
    types = {"sst2": "sentiment", "movierationales": "sentiment", "mrpc": "paraphrase", "qnli": "nli",
             "ethicsdeontology": "ethics", "ethicsjustice": "ethics"}
    patterns = {t: rng.normal(size=(layers, neurons)) for t in set(types.values())}
    common = rng.normal(size=(layers, neurons))
    preds = {task: 0.75 + 0.01 * (signal * patterns[kind] + common + rng.normal(size=(seeds, layers, neurons)))
             for task, kind in types.items()}
    return preds, types


def test_specificity_verdicts():
    rng = np.random.default_rng(0)
    preds, types = _typed_preds(rng, signal=3.0)
    assert verdicts.f4_specificity(preds, types=types).verdict == verdicts.SUPPORTED
    # types assigned against the structure: pairs that share nothing are called "same type"
    crossed = {"sst2": "a", "mrpc": "a", "movierationales": "b", "ethicsdeontology": "c", "qnli": "d",
               "ethicsjustice": "d"}
    assert verdicts.f4_specificity(preds, types=crossed).verdict == verdicts.NOT_SUPPORTED
    null_preds, _ = _typed_preds(np.random.default_rng(1), signal=0.0)
    assert verdicts.f4_specificity(null_preds, types=types).verdict == verdicts.INCONCLUSIVE


def test_top_neuron_verdicts():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.5, 0.6, size=(3, 4, 50))
    pred[:, 3, :3] = [[0.90], [0.91], [0.92]]                  # the best neurons: last layer, above the model
    depth = verdicts.f3_depth("sst2", pred, top_fraction=0.01)
    assert depth.verdict == verdicts.SUPPORTED and depth.estimate == 1.0
    low = pred.copy()
    low[:, 3, :3], low[:, 0, :3] = 0.5, [[0.90], [0.91], [0.92]]
    assert verdicts.f3_depth("sst2", low, top_fraction=0.01).verdict == verdicts.NOT_SUPPORTED
    # F3a has a label-permutation null: without it the max of noise is unknown, and the verdict says so
    no_null = verdicts.f3_top_neuron("sst2", pred, [0.80, 0.85, 0.82])
    assert no_null.verdict == verdicts.INCONCLUSIVE and "rule alone: supported" in no_null.note
    noise = np.linspace(0.60, 0.70, 50)                        # the max Pred of 50 permutations
    assert verdicts.f3_top_neuron("sst2", pred, [0.80, 0.85, 0.82], null_max=noise).verdict == verdicts.SUPPORTED
    assert verdicts.f3_top_neuron("sst2", pred, [0.97, 0.98, 0.99], null_max=noise).verdict == \
        verdicts.NOT_SUPPORTED
    # a max that noise reaches as often as not: inconclusive whatever the model's accuracy
    weak = verdicts.f3_top_neuron("sst2", pred, [0.80, 0.85, 0.82], null_max=np.linspace(0.85, 0.95, 50))
    assert weak.verdict == verdicts.INCONCLUSIVE and weak.p_value > 0.3


def test_relabelling_symmetry_bounds_the_smallest_p():
    """Three types of two tasks each: 90 assignments, but the 6 renamings of the types give the same statistic,
    so p cannot go below 6/90 > 0.05 whatever the data: inconclusive, and the note says why."""
    preds, _ = _typed_preds(np.random.default_rng(0), signal=3.0)
    types = {"sst2": "s", "movierationales": "s", "mrpc": "p", "qnli": "p", "ethicsdeontology": "e",
             "ethicsjustice": "e"}
    verdict = verdicts.f4_specificity(preds, types=types)
    assert verdict.verdict == verdicts.INCONCLUSIVE and "smallest attainable p 0.067" in verdict.note


def test_transfer_verdict():
    tasks = ["sst2", "movierationales", "mrpc", "qnli", "ethicsdeontology", "ethicsjustice"]
    types = {t: results.task_type(t) for t in tasks}
    rng = np.random.default_rng(0)
    table = {}
    for s in tasks:
        for t in tasks:
            level = 0.9 if s == t else 0.8 if types[s] == types[t] else 0.55
            table[(s, t)] = level + rng.normal(0, 0.01, 3)
    assert verdicts.f1_transfer(table, tasks, types=types).verdict == verdicts.SUPPORTED
    flipped = {k: (np.full(3, 0.3) if types[k[0]] == types[k[1]] and k[0] != k[1] else v) for k, v in table.items()}
    assert verdicts.f1_transfer(flipped, tasks, types=types).verdict == verdicts.NOT_SUPPORTED


# ------------------------------------------------------------------------------------------------------------------
# From stage results on disk to the document
# ------------------------------------------------------------------------------------------------------------------
def _write_pred(workdir, task, pred_per_seed, model_accuracy, null: int = 0):
    """With null = R, the label-permutation arrays the stage writes with options.label_permutations = R (a null
    whose max Pred is far below the planted 0.75 + ...: F3a can be supported) and acc [S, L, 2, N]."""
    path = results.predictivity_path(workdir, MODEL, task)
    extra = {}
    if null:
        rng = np.random.default_rng(len(task))
        S, L, N = pred_per_seed.shape
        null_pred = rng.uniform(0.5, 0.6, size=(null, L, N)).astype(np.float32)
        extra = dict(null_pred=null_pred, null_pred_layer_mean=null_pred.mean(2), null_pred_layer_max=null_pred.max(2),
                     null_pred_max=null_pred.reshape(null, -1).max(1),
                     null_pred_per_seed_max=np.repeat(null_pred.reshape(null, -1).max(1)[:, None], S, 1),
                     acc=np.stack([pred_per_seed, pred_per_seed - 0.01], 2).astype(np.float32))
    project_io.atomic_save_npz(path, pred=pred_per_seed.mean(0).astype(np.float32),
                        pred_per_seed=pred_per_seed.astype(np.float32), **extra)
    project_io.atomic_write_json(path.with_name(path.name + ".json"),
                          {"task": task, "model_accuracy": list(model_accuracy), "dev_label_counts": [60, 40]})


def test_verdict_table_and_document_from_stage_results(tmp_path):
    workdir, doc = tmp_path / "work", tmp_path / "docs" / "VALIDATION.md"
    rng = np.random.default_rng(0)
    preds, _ = _typed_preds(rng, signal=3.0)
    clean = ["sst2", "movierationales", "mrpc", "qnli", "ethicsdeontology", "ethicsjustice"]
    for task in clean:
        _write_pred(workdir, task, preds[task], [0.8, 0.81, 0.79], null=40 if task == "sst2" else 0)
        for target in clean:
            synth.write_transfer(workdir, MODEL, task, target, [0.8, 0.8, 0.8] if task == target else [0.6] * 3,
                                 seeds=[0, 1, 2])
        if task == "sst2":     # the stage with prompt slot 0 excluded from the selection: no effect left there
            variant = layout.suppression_slots_excluded_path(workdir, MODEL, task, task)
            variant.parent.mkdir(parents=True, exist_ok=True)
            synth.write_suppression(workdir, MODEL, task, task, KS, *_suppression(0.02, 0.02, 0.005)).rename(variant)
        skill, random = _suppression(0.4, 0.02, 0.005, seed=len(task))
        synth.write_suppression(workdir, MODEL, task, task, KS, skill, random)
    # a held-out test result of SST-2 (where the test transfer stage writes it)
    synth.write_transfer(layout.split_root(workdir, "test"), MODEL, "sst2", "sst2", [0.7, 0.72, 0.74],
                         seeds=[0, 1, 2])
    # AdvQQP through the MRPC prompts (config adversarial_prompts): below chance on every seed
    _write_pred(workdir, "advqqp", preds["mrpc"] + 0.001, [0.40, 0.41, 0.42])
    synth.write_transfer(workdir, MODEL, "mrpc", "advqqp", [0.40, 0.41, 0.42], seeds=[0, 1, 2])
    skill, random = _suppression(0.02, 0.4, 0.005)
    synth.write_suppression(workdir, MODEL, "mrpc", "advqqp", KS, skill, random)
    # the robust study's patching result with per-example outcomes: a large paired drop (F2 drop, McNemar)
    original = (np.arange(60) % 10 < 8).astype(int)
    project_io.atomic_write_json(layout.patching_path(workdir, MODEL, "mrpc", "advqqp", "original"), {
        "original_correct": [original.tolist()] * 3, "adversarial_correct": [(original * (np.arange(60) % 2)).tolist()] * 3})
    config = validation_config.get_config().to_dict()
    config["tasks"] = clean + ["advqqp"]
    config["report"]["validation_doc"] = str(doc)
    config["analysis"].update(n_permutations=20, sign_flips=200, dpi=30)
    built = synth.build_report(workdir, workdir / "report", config)
    assert built.errors == []
    text = doc.read_text()
    for header in verdicts.VERDICT_HEADER[:3]:
        assert header in text
    found = json.loads((doc.parent / "validation" / "verdicts.json").read_text())["verdicts"][MODEL]
    by_key = {(v["finding"], v["subject"]): v["verdict"] for v in found}
    assert by_key[("F2", "advqqp (mrpc prompts)")] == verdicts.SUPPORTED
    assert by_key[("F6b", "mrpc → advqqp")] == verdicts.NOT_SUPPORTED
    assert by_key[("F2", "advqqp drop (mrpc prompts)")] == verdicts.SUPPORTED
    assert by_key[("F5", "sst2 (slot 0 excluded)")] != verdicts.SUPPORTED
    assert ("F5", "mrpc (slot 0 excluded)") not in by_key
    assert all(by_key[("F5", t)] == verdicts.SUPPORTED for t in clean)
    assert by_key[("F4", "clean tasks")] == verdicts.SUPPORTED
    assert "F6a" in {v["finding"] for v in found}
    # the new nulls, floors, MDEs and corrected p-values reach the document and the report
    for column in ("MDE (80% power)", "p (Holm, per finding)", "p (Holm, table)"):
        assert column in text
    by_row = {(v["finding"], v["subject"]): v for v in found}
    f3a = by_row[("F3a", "sst2")]
    assert "label permutation of the max Pred (40 permutations" in f3a["test"] and f3a["p_value"] <= 1 / 41 + 1e-9
    assert by_row[("F3a", "mrpc")]["verdict"] == verdicts.INCONCLUSIVE              # no null recorded
    assert ("F3b", "sst2 (slot 0 excluded)") in by_row and ("F3b", "mrpc (slot 0 excluded)") not in by_row
    assert all(v["mde"] is not None and v["p_adjusted"] is not None for v in found if v["p_value"] is not None)
    f5 = [v for v in found if v["finding"] == "F5"]
    assert all(np.isclose(v["p_adjusted"], min(1.0, v["p_value"] * len(f5))) or v["p_adjusted"] >= v["p_value"]
               for v in f5)
    index = (workdir / "report" / "index.md").read_text()
    assert "floor: null mean Pred (all layers)" in index and "| sst2 | 40 |" in index
    assert "No label-permutation null recorded for" in index
    assert "accuracy on the held-out test split" in text
    assert f"| {MODEL} | sst2 | sst2 | 3 | – | – | 72.0 ± 2.0 |" in text      # std over seeds with ddof = 1
    # Table 1 labels AdvQQP with the prompt it really used, in the document and in the report (and its console)
    assert "| advqqp | mrpc |" in text
    summary = json.loads((workdir / "report" / "summary.json").read_text())
    assert next(r for r in summary["accuracy"] if r["task"] == "advqqp")["prompt"] == "mrpc"
    figures = list((doc.parent / "validation").glob("*.png"))
    assert figures and sum(f.stat().st_size for f in figures) < 2 * 1024 * 1024
    # what differs from the paper: the plan's own tasks, types and caps, not a typed-in count
    assert ("6 clean tasks in 4 types, with same-type groups: ethicsdeontology / ethicsjustice (ethics), sst2 / "
            "movierationales (sentiment)") in text
    assert "splits capped at 1200 rows" in text and "at most 400 dev rows with 5 random draws per level" in text


def test_learning_curves_section_reads_every_evaluation_and_the_probe(tmp_path):
    """The document shows each clean task's selection-rows curve (mean +- sd over the seeds evaluated at a step,
    a seed that stopped early dropping out), the step each seed kept, the last gain and the probe's reference."""
    workdir, doc = tmp_path / "work", tmp_path / "docs" / "VALIDATION.md"
    curves = {0: [0.55, 0.70, 0.74], 1: [0.57, 0.72, 0.76], 2: [0.59, 0.68]}      # seed 2 stopped after step 200
    for seed, values in curves.items():
        d = results.prompt_dir(workdir, MODEL, "sst2", seed)
        project_io.atomic_save_npy(d / "prompt.npy", np.zeros((4, 8), np.float32))
        best = 0
        for i, value in enumerate(values):
            best = (i + 1) * 100 if value >= max(values[: i + 1]) else best
            project_io.append_jsonl(d / "metrics.jsonl", {
                "step": (i + 1) * 100, "dev_accuracy": value + 0.01, "dev_balanced_accuracy": value,
                "dev_examples": 60, "train_loss": 0.7 - 0.1 * i, "best_step": best})
    project_io.atomic_write_json(layout.probe_path(workdir, MODEL, "sst2"), {
        "reference": "joint/mean", "probes": {"joint/mean": {"dev": {
            "balanced_accuracy": 0.78, "interval": [0.75, 0.81], "n": 872, "majority_rate": 0.509}}}})
    config = validation_config.get_config().to_dict()
    config["tasks"] = ["sst2"]
    config["report"]["validation_doc"] = str(doc)
    config["analysis"].update(dpi=30)
    synth.build_report(workdir, workdir / "report", config)
    text = doc.read_text()
    assert "## Learning curves (tiny)" in text
    row = next(line for line in text.splitlines() if line.startswith("| sst2 | 60 | 3 |"))
    assert "100: 0.570 +- 0.020 (3)" in row and "300: 0.750 +- 0.014 (2)" in row
    assert "| 300, 300, 200 |" in row and "+0.057" in row and row.endswith("| 0.780 |")
    assert (doc.parent / "validation" / f"{MODEL}_learning_curves.png").stat().st_size > 0
    record = json.loads((doc.parent / "validation" / "verdicts.json").read_text())["learning_curves"][MODEL]["sst2"]
    assert record["seeds_evaluated"] == [3, 3, 2] and record["probe_reference"] == 0.78


# ------------------------------------------------------------------------------------------------------------------
# End to end on the tiny world: AdvQQP really runs on the MRPC prompts and baseline, and the document is written
# ------------------------------------------------------------------------------------------------------------------
def test_a_verdict_on_prompts_that_did_not_learn_is_inconclusive():
    """The premise of every finding is a learned prompt: a verdict naming a task below the learning target (or a
    comparison over all clean tasks while one is) becomes inconclusive, and its note keeps the rule's verdict."""
    def verdict(subject, outcome):
        return verdicts.Verdict("F3a", subject, "claim", "statistic", 0.2, 0.0, (0.1, 0.3), "seeds", 0.95, "none",
                                None, outcome, "a note")

    below = ["mrpc", "sst2"]
    assert validation_section.premise_checked(verdict("qnli", verdicts.SUPPORTED), below).verdict == verdicts.SUPPORTED
    checked = validation_section.premise_checked(verdict("mrpc", verdicts.SUPPORTED), below)
    assert checked.verdict == verdicts.INCONCLUSIVE and "rule alone: supported" in checked.note
    assert checked.note.startswith("a note; premise not met: the prompts of mrpc")
    # whole task names only: advsst2 is not sst2, but "sst2 → advsst2" names sst2
    assert validation_section.premise_checked(verdict("advsst2 (qnli prompts)", verdicts.NOT_SUPPORTED),
                                              below).verdict == verdicts.NOT_SUPPORTED
    assert validation_section.premise_checked(verdict("sst2 → advsst2", verdicts.NOT_SUPPORTED),
                                              below).verdict == verdicts.INCONCLUSIVE
    assert validation_section.premise_checked(verdict("clean tasks", verdicts.SUPPORTED),
                                              below).verdict == verdicts.INCONCLUSIVE
    assert validation_section.premise_checked(verdict("clean tasks", verdicts.SUPPORTED), []).verdict == \
        verdicts.SUPPORTED


def test_tiny_run_pairs_advqqp_with_mrpc_and_writes_the_document(tiny_world, tmp_path):
    pytest.importorskip("torch")
    from skillneurons_jax.pipeline import runner
    model, data_dir = tiny_world
    config = reproduce_fixtures.config(model, data_dir, tasks="mrpc,advqqp")
    config.adversarial_prompts = "advqqp:mrpc"
    config.suppression.levels = "0,10"
    config.suppression.random_draws = 1
    config.report.validation_doc = str(tmp_path / "docs" / "VALIDATION.md")
    settings = StudySettings.from_config(config, tmp_path / "work")
    runner.run_plan(settings, printer=lambda *_: None)
    m = reproduce_fixtures.MODEL
    sidecar = json.loads(results.predictivity_path(tmp_path / "work", m, "advqqp").with_suffix(".npz.json")
                         .read_text())
    assert sidecar["prompt_task"] == "mrpc" and sidecar["baseline_task"] == "mrpc"
    suppression = json.loads(results.suppression_path(tmp_path / "work", m, "mrpc", "advqqp").read_text())
    assert suppression["prompt_task"] == "mrpc"
    assert results.transfer_path(tmp_path / "work", m, "mrpc", "advqqp").exists()
    text = (tmp_path / "docs" / "VALIDATION.md").read_text()
    assert f"| {m} | advqqp | mrpc |" in text and "| F2 | advqqp (mrpc prompts) |" in text
    # the commit the stages computed at comes from their sidecars (the document may be regenerated later)
    commit = project_io.git_commit()
    stated = "unknown (no sidecar records a commit)" if commit is None else f"{commit} ("
    assert f"Commits recorded by the stages' sidecars: {stated}" in text and "Run time: " in text
    # and the CPU they computed on (its vector instruction set changes float rounding, hence prompts)
    machine = project_io.machine()
    assert sidecar["machine"] == machine and machine["vector_isa"] in ("avx512", "avx2", "other", "unknown")
    assert f"Machines recorded by the stages' sidecars: {machine['cpu']} ({machine['vector_isa']}, " in text
    # the stages' own times, from their completion records (a resumed run's pause is not in them)
    records = [json.loads(r.read_text()) for r in (tmp_path / "work" / ".stages").glob("*.json")]
    own = sum(r["seconds"] for r in records if r["kind"] != "report")
    stages = sum(r["kind"] != "report" for r in records)
    assert f"the stages' own times sum to {own / 60:.1f} min ({stages} stages" in text


def test_stage_seconds_sum_the_plans_stages_only(tmp_path):
    """The document's cost of the study: the plan's stage records, not the report's own, nor a stage that an
    earlier plan in this workdir ran and this one no longer has; unreadable records are skipped."""
    records = {"tune/m/sst2": ("tune", 600.0), "suppress/m/advsst2__advsst2": ("suppress", 90.0),
               "transfer/m/sst2": ("transfer", 60.0), "report": ("report", 20.0)}
    for key, (kind, seconds) in records.items():
        project_io.atomic_write_json(layout.stage_record_path(tmp_path, key),
                                     {"key": key, "kind": kind, "seconds": seconds})
    layout.stage_record_path(tmp_path, "predictivity/m/sst2").write_text("{")
    plan_keys = ["tune/m/sst2", "transfer/m/sst2", "predictivity/m/sst2"]
    assert provenance.stage_seconds(tmp_path, plan_keys) == \
        "the stages' own times sum to 11.0 min (2 stages, this document's stage excluded)"
    assert "12.5 min (3 stages" in provenance.stage_seconds(tmp_path)
    assert "unknown" in provenance.stage_seconds(tmp_path / "nowhere")


def test_copied_results_are_credited_to_the_commit_and_machine_that_computed_them():
    """A copy's own stamps say where it was copied; the documents count its source's (io.copied_from)."""
    machine = {"cpu": "X", "vector_isa": "avx2", "cores": 2, "platform": "p"}
    sidecars = [{"versions": {}, "git_commit": "aaa", "machine": machine},
                {"versions": {}, "git_commit": "bbb", "machine": {**machine, "vector_isa": "avx512"},
                 "copied_from": "/elsewhere/x.npz", "source_git_commit": "aaa", "source_machine": machine},
                {"versions": {}, "git_commit": "bbb", "copied_from": "/old/y.npz", "source_git_commit": "ccc"},
                {"accuracy": [0.5]}]                                   # a result file, not a sidecar
    assert provenance.stage_commits(sidecars) == "aaa (2 files, 1 of them copied), ccc (1 files, 1 of them copied)"
    assert provenance.stage_machines(sidecars) == ("X (avx2, 2 cores, p) (2 files, 1 of them copied), not recorded "
                                                   "(1 files, 1 of them copied)")
