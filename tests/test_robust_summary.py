"""robust.summary.robust_tables on synthetic outputs: the per-arm table (intervals over seeds, paired differences
to the plain arm, clean-accuracy cost) and the patching table (skill vs random recovery per k)."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from robust_outputs import patching_doc, write_arm_eval, write_patching
from skillneurons_jax import io, layout
from skillneurons_jax.robust import summary


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
    assert summary.robust_tables(tmp_path) == {"arms": [], "patching": []}
    path = layout.robust_eval_path(tmp_path, "m", "sst2", "plain")
    path.parent.mkdir(parents=True)
    path.write_text("{\n  \"model\": \n")
    with pytest.raises(ValueError, match=r"sst2.json: line 3"):
        summary.robust_tables(tmp_path)
    path.write_text(json.dumps({"model": "m", "task": "sst2", "arm": "plain", "seeds": [0]}))
    with pytest.raises(ValueError, match="missing fields"):
        summary.robust_tables(tmp_path)
