"""analysis.robust_tables.robust_tables on synthetic outputs: the per-arm table (intervals over seeds, paired differences
to the plain arm, clean-accuracy cost) and the patching table (skill vs random recovery per k)."""
import functools
import json
import math

import numpy as np
import pytest
from scipy import stats

from robust_outputs import patching_doc, write_arm_eval, write_patching, write_predictivity
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
    assert summary.robust_tables(tmp_path) == {"arms": [], "predictivity": [], "patching": []}
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
