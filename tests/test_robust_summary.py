"""analysis.robust_tables.robust_tables on synthetic outputs: the per-arm table (intervals over seeds, paired differences
to the plain arm, clean-accuracy cost) and the patching table (skill vs random recovery per k)."""
import functools
import json
import math

import numpy as np
import pytest
from scipy import stats

from robust_outputs import PERTURBED_DEV, patching_doc, write_arm_eval, write_patching, write_predictivity
from skillneurons_jax import io, layout
from skillneurons_jax.analysis import robust_tables as summary


def test_arm_rows_intervals_and_costs(tmp_path):
    write_arm_eval(tmp_path, "plain", [0.90, 0.92, 0.88], [0.40, 0.45, 0.50])
    write_arm_eval(tmp_path, "anchored", [0.86, 0.90, 0.85], [0.55, 0.50, 0.60])
    write_arm_eval(tmp_path, "perturbed", [0.80, 0.80, 0.80], [0.40, 0.45, 0.50], seeds=(0, 1, 5))
    rows = summary.robust_tables(tmp_path)["arms"]
    assert [(r["arm"], r["split"]) for r in rows] == [("plain", "clean"), ("plain", "adversarial"),
                                                      ("perturbed", "clean"), ("perturbed", "adversarial"),
                                                      ("anchored", "clean"), ("anchored", "adversarial")]
    plain_clean = rows[0]
    half = stats.t.ppf(0.975, 2) * np.std([0.90, 0.92, 0.88], ddof=1) / math.sqrt(3)
    assert plain_clean["accuracy_mean"] == pytest.approx(0.90)
    assert plain_clean["accuracy_low"] == pytest.approx(0.90 - half)
    assert plain_clean["accuracy_high"] == pytest.approx(0.90 + half)
    assert plain_clean["vs_plain_mean"] is None and plain_clean["clean_cost_mean"] is None
    anchored_clean, anchored_adv = rows[4], rows[5]
    assert anchored_clean["clean_cost_mean"] == pytest.approx(np.mean([0.04, 0.02, 0.03]))
    assert anchored_adv["vs_plain_mean"] == pytest.approx(np.mean([0.15, 0.05, 0.10]))
    assert anchored_adv["vs_plain_low"] < anchored_adv["vs_plain_mean"] < anchored_adv["vs_plain_high"]
    assert anchored_adv["n_dev"] == 40 and anchored_adv["target"] == "advsst2"
    # other seeds than the plain arm: no paired difference
    assert rows[2]["clean_cost_mean"] is None and rows[3]["vs_plain_mean"] is None


def test_patching_rows_skill_vs_random(tmp_path):
    doc = patching_doc()
    path = write_patching(tmp_path, doc)
    (row,) = summary.robust_tables(tmp_path)["patching"]
    assert row["k"] == 5 and row["clean"] == "sst2" and row["adversarial"] == "advsst2"
    assert row["skill_mean"] == pytest.approx(0.7) and row["random_mean"] == pytest.approx(0.5)
    assert row["skill_recovery_mean"] == pytest.approx(0.25)
    assert row["random_recovery_mean"] == pytest.approx(0.05)
    assert row["skill_minus_random_mean"] == pytest.approx(0.2)
    assert row["fraction_recovered"] == pytest.approx(0.25 / 0.4)
    doc["original_accuracy"] = [None, None]
    doc["patch_source"] = "mean"
    io.atomic_write_json(path, doc)
    assert summary.robust_tables(tmp_path)["patching"][0]["fraction_recovered"] is None


def test_empty_and_malformed(tmp_path):
    assert summary.robust_tables(tmp_path) == {"arms": [], "manipulation": [], "predictivity": [], "patching": []}
    path = layout.robust_eval_path(tmp_path, "m", "sst2", "plain")
    path.parent.mkdir(parents=True)
    path.write_text("{\n  \"model\": \n")
    with pytest.raises(ValueError, match=r"sst2.json: line 3"):
        summary.robust_tables(tmp_path)
    path.write_bytes(b'{"model": "\xff"}')
    with pytest.raises(ValueError, match=r"sst2.json: byte 11: not UTF-8"):
        summary.robust_tables(tmp_path)
    path.write_text(json.dumps({"model": "m", "task": "sst2", "arm": "plain", "seeds": [0]}))
    with pytest.raises(ValueError, match="missing fields"):
        summary.robust_tables(tmp_path)


def test_predictivity_rows_of_the_clean_skill_neurons_per_arm(tmp_path):
    """2 layers x 4 neurons; the main study's pred picks the top 50 % per layer: neurons 0, 1 of layer 0 and 2, 3
    of layer 1. Each arm's clean and adversarial Pred per seed are constants per seed, so every mean is by hand
    (the npz holds float32: compared to 1e-6)."""
    approx = functools.partial(pytest.approx, abs=1e-6)
    write_predictivity(tmp_path, "sst2", [[[0.9, 0.8, 0.5, 0.6], [0.5, 0.55, 0.7, 0.95]]], seeds=(0,))
    skill = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)

    def arm_values(skill_values, other):                      # [S] -> [S, 2, 4]: skill neurons vs the rest
        return [np.where(skill, v, other) for v in skill_values]

    # Under the arms' prompts the OTHER neurons are the most predictive on the clean dev (0.97): the table must
    # still follow the main study's choice, not each arm's own ranking.

    for arm, clean, adversarial in (("plain", [0.9, 0.8, 0.85], [0.6, 0.6, 0.65]),
                                    ("anchored", [0.88, 0.8, 0.84], [0.8, 0.7, 0.75])):
        write_arm_eval(tmp_path, arm, [0.9] * 3, [0.5] * 3)
        root = layout.robust_arm_dir(tmp_path, arm)
        write_predictivity(root, "sst2", arm_values(clean, 0.97))
        write_predictivity(root, "advsst2", arm_values(adversarial, 0.5))
        # a file of another prompt task in the folder (a stale result): not one of this arm's scored sets
        write_predictivity(root, "movierationales", arm_values(clean, 0.5), prompt_task="movierationales")
    rows = summary.robust_tables(tmp_path)["predictivity"]
    assert [(r["arm"], r["adversarial"], r["kind"]) for r in rows] == [("plain", "advsst2", "adversarial"),
                                                                      ("anchored", "advsst2", "adversarial")]
    plain, anchored = rows
    assert plain["n_neurons"] == 4 and plain["top_percent"] == 50.0 and plain["seeds"] == [0, 1, 2]
    assert plain["clean_pred_mean"] == approx(0.85) and plain["adversarial_pred_mean"] == approx(
        np.mean([0.6, 0.6, 0.65]))
    assert plain["drop_mean"] == approx(np.mean([0.3, 0.2, 0.2]))
    half = stats.t.ppf(0.975, 2) * np.std([0.3, 0.2, 0.2], ddof=1) / math.sqrt(3)
    assert plain["drop_low"] == approx(plain["drop_mean"] - half)
    assert plain["vs_plain_mean"] is None
    assert anchored["vs_plain_mean"] == approx(np.mean([0.2, 0.1, 0.1]))
    assert plain["adversarial_all_mean"] == approx((4 * np.mean([0.6, 0.6, 0.65]) + 4 * 0.5) / 8)
    # per layer, clean Pred ranks the other neurons first and adversarial Pred the skill neurons: rho = -1
    assert plain["spearman"] == approx(-1.0)
    # an adversarial file of other seeds is refused, naming it
    write_predictivity(layout.robust_arm_dir(tmp_path, "plain"), "advsst2", arm_values([0.6, 0.6], 0.5), seeds=(0, 1))
    with pytest.raises(ValueError, match="advsst2.npz"):
        summary.robust_tables(tmp_path)
    layout.predictivity_path(layout.robust_arm_dir(tmp_path, "plain"), "m", "advsst2").unlink()
    with pytest.raises(ValueError, match="advsst2.npz is missing"):
        summary.robust_tables(tmp_path)


def test_arm_rows_with_per_example_outcomes_bootstrap_over_seeds_and_examples_and_test_per_example(tmp_path):
    """Every seed scored on the same rows: with per-example outcomes the intervals are two-level bootstraps (seeds
    x examples), so five seeds that agree exactly still leave the rows' sampling error (a t interval over seeds
    would have zero width); the decisive contrast anchored - perturbed gets a per-example sign-flip p, Holm within
    its family; a real effect is found, no effect is not."""
    rng = np.random.default_rng(0)
    seeds, n = (0, 1, 2, 3, 4), 300
    plain = np.tile(rng.random(n) < 0.7, (5, 1)).astype(int)                  # every seed the same answers
    perturbed = plain.copy()
    anchored = plain.copy()
    wrong = np.flatnonzero(plain[0] == 0)[:40]
    anchored[:, wrong] = 1                                                     # +40 rows right: +13.3 points
    adversarial_plain = (rng.random((5, 80)) < 0.4).astype(int)
    adversarial_noise = adversarial_plain.copy()
    flip = rng.choice(80, 10, replace=False)
    adversarial_noise[:, flip] = 1 - adversarial_noise[:, flip]               # no systematic effect
    for arm, clean, adv in (("plain", plain, adversarial_plain), ("perturbed", perturbed, adversarial_plain),
                            ("anchored", anchored, adversarial_noise)):
        write_arm_eval(tmp_path, arm, None, None, seeds=seeds, clean_correct=clean, adversarial_correct=adv)
    rows = {(r["arm"], r["split"]): r for r in summary.arm_rows(tmp_path)}
    clean_plain = rows[("plain", "clean")]
    assert clean_plain["interval"] == "seeds x examples (two-level bootstrap)"
    assert clean_plain["accuracy_high"] - clean_plain["accuracy_low"] > 0.05     # binomial: about +-5.2 points
    assert clean_plain["vs_perturbed_mean"] is None and clean_plain["vs_plain_mean"] is None
    decisive = rows[("anchored", "clean")]
    assert decisive["vs_perturbed_mean"] == pytest.approx(40 / n)
    assert decisive["vs_perturbed_low"] > 0 and decisive["vs_perturbed_p"] < 0.001
    # the smallest effect the row could detect: about 2.8 bootstrap standard errors, below the planted 13.3 points
    assert 0.01 < decisive["vs_perturbed_mde"] < 40 / n
    assert decisive["vs_perturbed_p_holm"] <= 2 * decisive["vs_perturbed_p"] + 1e-12
    assert decisive["clean_cost_mean"] == pytest.approx(-40 / n) and decisive["clean_cost_high"] < 0
    null = rows[("anchored", "adversarial")]
    assert null["vs_perturbed_p"] > 0.05 and null["vs_perturbed_low"] < 0 < null["vs_perturbed_high"]
    assert rows[("perturbed", "clean")]["vs_perturbed_mean"] is None       # only the anchored arm's contrast
    # a file whose outcomes do not average to its accuracies is corrupt
    path = write_arm_eval(tmp_path, "perturbed", None, None, seeds=seeds, clean_correct=perturbed,
                          adversarial_correct=adversarial_plain)
    doc = json.loads(path.read_text())
    doc["clean"]["accuracy"][0] += 0.1
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="does not average to 'accuracy'"):
        summary.arm_rows(tmp_path)


def test_patching_rows_with_per_example_outcomes_test_skill_against_random_per_example(tmp_path):
    """Patching files with per-example outcomes: skill - random gets a two-level bootstrap interval and a one-sided
    per-example sign-flip p (Holm over the levels of one pair); the means stay the accuracies'."""
    rng = np.random.default_rng(1)
    seeds, n, draws = [0, 1, 2, 3, 4], 60, 2
    adversarial = (rng.random((5, n)) < 0.3).astype(int)
    skill = {"5": np.maximum(adversarial, (rng.random((5, n)) < 0.5)).astype(int),        # recovers
             "10": adversarial.copy()}                                                  # does nothing
    random = {k: np.stack([adversarial] * draws) for k in skill}
    mean = lambda a: a.mean(axis=-1).tolist()  # noqa: E731
    doc = {"model": "m", "source": "sst2", "target": "advsst2", "seeds": seeds, "ks": [0, 5, 10],
           "skill": {"0": mean(adversarial), **{k: mean(v) for k, v in skill.items()}},
           "random": {"0": [mean(adversarial)] * draws, **{k: mean(v) for k, v in random.items()}},
           "skill_correct": {"0": adversarial.tolist(), **{k: v.tolist() for k, v in skill.items()}},
           "random_correct": {"0": [adversarial.tolist()] * draws, **{k: v.tolist() for k, v in random.items()}},
           "labels": [1] * n, "adversarial_accuracy": mean(adversarial), "original_accuracy": [0.9] * 5,
           "patch_source": "original", "n_examples": n}
    write_patching(tmp_path, doc)
    rows = {float(r["k"]): r for r in summary.patching_rows(tmp_path)}
    assert rows[5.0]["interval"] == "seeds x examples (two-level bootstrap)"
    assert rows[5.0]["skill_minus_random_mean"] == pytest.approx(float(np.mean(skill["5"] - adversarial)))
    assert rows[5.0]["skill_minus_random_low"] > 0 and rows[5.0]["skill_minus_random_p"] < 0.001
    assert rows[10.0]["skill_minus_random_p"] == pytest.approx(1.0) and rows[10.0]["skill_minus_random_p_holm"] == 1
    assert rows[5.0]["skill_minus_random_p_holm"] == pytest.approx(min(1, 2 * rows[5.0]["skill_minus_random_p"]))


def test_manipulation_rows_compare_the_anchor_term_of_the_arms_step_by_step(tmp_path):
    """The arms' tuning logs (train_ce, train_perturbed_ce, train_anchor per evaluation) -> one row per arm and
    step, seed means, the term weighted by the arm's strength; the plain arm and rows without the terms are left
    out."""
    seeds = (0, 1)
    for arm, strength in (("plain", 0.0), ("perturbed", 0.0), ("anchored", 2.0)):
        path = write_arm_eval(tmp_path, arm, [0.8, 0.8], [0.5, 0.5], seeds=seeds)
        doc = json.loads(path.read_text())
        doc["anchor"] = {"strength": strength}
        path.write_text(json.dumps(doc))
        for seed in seeds:
            log = layout.robust_metrics_path(tmp_path, "m", "sst2", arm, seed)
            log.parent.mkdir(parents=True, exist_ok=True)
            anchor = 0.5 if arm != "anchored" else 0.1 + 0.1 * seed
            rows = [{"seed": seed, "step": 0, "dev_accuracy": 0.5}]       # the start: no training terms yet
            rows += [{"seed": seed, "step": step, "dev_accuracy": 0.7, "dev_balanced_accuracy": 0.6 + 0.1 * seed,
                      "train_loss": 1.0, "train_ce": 0.4, "train_perturbed_ce": 0.6, "train_anchor": anchor}
                     for step in (100, 200)]
            log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = summary.manipulation_rows(tmp_path)
    assert [(r["step"], r["arm"]) for r in rows] == [(100, "perturbed"), (100, "anchored"), (200, "perturbed"),
                                                     (200, "anchored")]
    anchored = rows[1]
    assert anchored["anchor_mean"] == pytest.approx(0.15) and anchored["weighted_anchor_mean"] == pytest.approx(0.3)
    assert anchored["seeds"] == [0, 1] and anchored["dev_balanced_accuracy_mean"] == pytest.approx(0.65)
    assert rows[0]["anchor_mean"] == pytest.approx(0.5) and rows[0]["weighted_anchor_mean"] == 0


def test_perturbed_dev_rows_per_arm_against_plain_and_the_perturbed_control(tmp_path):
    """The manipulation check's held-out half: each arm's robust_perturbed_predictivity result (the clean task's dev
    rows perturbed as in training) is a row of its own beside the adversarial set, with the clean skill neurons'
    Pred, the drop from the clean dev (same rows, same n), vs plain and, for the anchored arm, vs the perturbed
    control, paired by seed; its sidecar's perturbation settings and seed are carried."""
    approx = functools.partial(pytest.approx, abs=1e-6)
    write_predictivity(tmp_path, "sst2", [[[0.9, 0.8, 0.5, 0.6], [0.5, 0.55, 0.7, 0.95]]], seeds=(0,))
    skill = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)

    def arm_values(skill_values, other):
        return [np.where(skill, v, other) for v in skill_values]

    perturbed_dev = {"plain": [0.7, 0.6, 0.65], "perturbed": [0.72, 0.7, 0.68], "anchored": [0.8, 0.75, 0.7]}
    for arm, values in perturbed_dev.items():
        write_arm_eval(tmp_path, arm, [0.9] * 3, [0.5] * 3)
        root = layout.robust_arm_dir(tmp_path, arm)
        write_predictivity(root, "sst2", arm_values([0.9, 0.8, 0.85], 0.97), n_dev=100)
        write_predictivity(root, "advsst2", arm_values([0.6, 0.6, 0.65], 0.5), n_dev=40)
        write_predictivity(root, "sst2", arm_values(values, 0.5), n_dev=100, dev_transform=PERTURBED_DEV,
                           null_pred_layer_mean=np.full((5, 2), 0.55))
    rows = summary.predictivity_rows(tmp_path)
    kind = summary.PERTURBED_DEV_KIND
    assert [(r["arm"], r["adversarial"], r["kind"]) for r in rows] == [
        (arm, target, k) for arm in ("plain", "perturbed", "anchored")
        for target, k in (("advsst2", "adversarial"), ("sst2", kind))]
    by = {(r["arm"], r["kind"]): r for r in rows}
    plain, control, anchored = (by[(arm, kind)] for arm in ("plain", "perturbed", "anchored"))
    assert plain["adversarial_pred_mean"] == approx(0.65) and plain["adversarial_n"] == 100
    assert plain["drop_mean"] == approx(np.mean([0.2, 0.2, 0.2])) and plain["drop_basis"] == "same n = 100"
    assert plain["adversarial_floor"] == approx(0.55)
    assert plain["perturbation"] == PERTURBED_DEV and by[("plain", "adversarial")]["perturbation"] is None
    assert plain["vs_plain_mean"] is None and plain["vs_perturbed_mean"] is None
    assert control["vs_plain_mean"] == approx(np.mean([0.02, 0.1, 0.03])) and control["vs_perturbed_mean"] is None
    assert anchored["vs_plain_mean"] == approx(np.mean([0.1, 0.15, 0.05]))
    assert anchored["vs_perturbed_mean"] == approx(np.mean([0.08, 0.05, 0.02]))
    assert anchored["vs_perturbed_low"] < anchored["vs_perturbed_mean"] < anchored["vs_perturbed_high"]
    # on the adversarial set the anchored arm is compared with its control too (equal there: 0)
    assert by[("anchored", "adversarial")]["vs_perturbed_mean"] == approx(0.0)
    # a result without its perturbation record is not taken for the perturbed dev
    write_predictivity(layout.robust_arm_dir(tmp_path, "anchored"), "sst2", arm_values([0.8] * 3, 0.5),
                       dev_transform="perturbed")
    with pytest.raises(ValueError, match=r"predictivity_perturbed_dev/m/sst2.npz: not a perturbed dev"):
        summary.predictivity_rows(tmp_path)
