"""Transfer matrices on a hand-computable case, and the accuracy / suppression statistics of robustness.py."""
import numpy as np
import pytest

import analysis_synthetic as syn
from skillneurons_jax.analysis import results, robustness, transfer
from skillneurons_jax.prompt import metrics

# (source, target) -> accuracy per seed. advsst2 has no prompt: its "own" prompt is sst2's.
TABLE = {
    ("sst2", "sst2"): [0.8, 0.9], ("imdb", "sst2"): [0.4, 0.9],
    ("sst2", "imdb"): [0.6, 0.6], ("imdb", "imdb"): [0.75, 0.5],
    ("sst2", "advsst2"): [0.5, 0.3], ("imdb", "advsst2"): [0.25, 0.6],
}


def test_transfer_matrices_by_hand():
    tm = transfer.transfer_matrices({k: np.array(v) for k, v in TABLE.items()}, ["sst2", "imdb"],
                                    ["sst2", "imdb", "advsst2"])
    np.testing.assert_allclose(tm.absolute, [[0.85, 0.6, 0.4], [0.65, 0.625, 0.425]])
    # relative = mean over seeds of the per-seed ratio (NOT the ratio of means: imdb->sst2 would be 0.7647)
    np.testing.assert_allclose(tm.relative, [[1.0, np.mean([0.8, 1.2]), 1.0],
                                             [np.mean([0.5, 1.0]), 1.0, np.mean([0.5, 2.0])]])
    assert tm.relative[1, 0] == pytest.approx(0.75)
    assert tm.missing == [] and tm.missing_reference == []


def test_missing_pairs_and_references_are_nan_and_listed():
    table = {k: np.array(v) for k, v in TABLE.items() if k not in {("imdb", "sst2"), ("sst2", "advsst2")}}
    tm = transfer.transfer_matrices(table, ["sst2", "imdb"], ["sst2", "imdb", "advsst2"])
    assert np.isnan(tm.absolute[1, 0]) and ("imdb", "sst2") in tm.missing
    assert tm.missing_reference == ["advsst2"]
    assert np.all(np.isnan(tm.relative[:, 2])) and tm.absolute[1, 2] == pytest.approx(0.425)


def test_seeds_are_paired_by_id(tmp_path):
    syn.write_transfer(tmp_path, "m", "sst2", "sst2", [0.9, 0.8], seeds=[1, 0])
    syn.write_transfer(tmp_path, "m", "imdb", "sst2", [0.4, 0.9], seeds=[0, 1])
    table, errors = transfer.load_transfer_table(tmp_path, "m", [("sst2", "sst2"), ("imdb", "sst2")])
    assert errors == []
    np.testing.assert_allclose(transfer.paired_ratio(table[("imdb", "sst2")], table[("sst2", "sst2")]),
                               [0.4 / 0.8, 0.9 / 0.9])
    with pytest.raises(ValueError, match="cannot pair seeds"):
        transfer.paired_ratio(np.array([0.5, 0.6, 0.7]), np.array([0.5, 0.6]))


def test_load_transfer_table_reports_corrupt_file_by_path(tmp_path):
    syn.write_transfer(tmp_path, "m", "sst2", "sst2", [0.9])
    bad = results.transfer_path(tmp_path, "m", "imdb", "sst2")
    syn.write_text(bad, '{"accuracy": [0.5,')
    table, errors = transfer.load_transfer_table(tmp_path, "m", [("sst2", "sst2"), ("imdb", "sst2")])
    assert list(table) == [("sst2", "sst2")]
    assert len(errors) == 1 and str(bad) in str(errors[0])


def test_accuracy_rows_show_every_metric_with_n_and_majority_and_no_f1_headline():
    # advqqp: 2 seeds; confusion rows = true label: 60 of label 0, 20 of label 1
    confusion = np.array([[[50, 10], [10, 10]], [[55, 5], [15, 5]]])
    balanced = metrics.balanced_accuracy(confusion)
    assert balanced == pytest.approx([(50 / 60 + 10 / 20) / 2, (55 / 60 + 5 / 20) / 2])
    entries = [robustness.AccuracyEntry("m", "advqqp", "qqp", np.array([0.75, 0.75]), np.array([0.5, 0.33]),
                                        balanced_accuracy=balanced, n_examples=80, label_counts=[60, 20]),
               robustness.AccuracyEntry("m", "sst2", "sst2", np.array([0.8, 0.9, 1.0]))]
    rows = robustness.accuracy_rows(entries)
    header = robustness.ACCURACY_HEADER
    col = {name: header.index(name) for name in header}
    assert [r[1] for r in rows] == ["sst2", "advqqp"]                     # display order: clean tasks first
    assert rows[0][col["accuracy (%)"]] == f"90.0 ± {100 * np.std([0.8, 0.9, 1.0], ddof=1):.1f}"   # ddof=1: 10.0
    assert rows[0][col["F1 (%)"]] == "–" and rows[0][col["majority class (%)"]] == "–"
    adv = rows[1]
    assert adv[col["prompt"]] == "qqp" and adv[col["accuracy (%)"]] == "75.0 ± 0.0"
    assert adv[col["n (dev)"]] == "80" and adv[col["majority class (%)"]] == "75.0"
    assert adv[col["balanced accuracy (%)"]] == f"{100 * balanced.mean():.1f} ± {100 * balanced.std(ddof=1):.1f}"
    # the paper's Table 1 reports accuracy for every task: no column claims F1 is its metric for AdvQQP
    assert "reported metric" not in header and "f1" not in adv
    records = robustness.accuracy_records(entries)
    assert records[1]["balanced_accuracy"]["per_seed"] == pytest.approx(balanced)
    assert records[1]["majority_rate"] == pytest.approx(0.75) and records[1]["n_examples"] == 80
    assert records[0]["balanced_accuracy"] is None and records[0]["seeds"] == 3
    md = robustness.markdown_table(header, rows)
    assert md.count("\n") == 4 and "| advqqp |" in md
    assert "<td>75.0 ± 0.0</td>" in robustness.html_table(header, rows)


def test_curve_stats_by_hand():
    ks = np.array([0.0, 5.0])
    skill = np.array([[0.8, 0.6], [0.5, 0.3]])                          # [K, S]
    random = np.array([[[0.8, 0.6], [0.8, 0.6]], [[0.7, 0.5], [0.9, 0.7]]])  # [K, D, S]
    st = robustness.curve_stats(ks, skill, random)
    np.testing.assert_allclose(st.skill_mean, [0.7, 0.4])
    np.testing.assert_allclose(st.skill_sem, [0.1, 0.1])                # std(ddof=1)=0.1414 / sqrt(2)
    np.testing.assert_allclose(st.random_mean, [0.7, 0.7])
    np.testing.assert_allclose(st.random_sem, [0.1, 0.1])               # per-seed draw means 0.8, 0.6
    assert (st.n_seeds, st.n_draws) == (2, 2)
    one = robustness.curve_stats(ks, skill[:, :1], random[:, :, :1])
    np.testing.assert_allclose(one.skill_sem, 0.0)
    with pytest.raises(ValueError, match="expected ks"):
        robustness.curve_stats(ks, skill, random[:, :, :1])


def test_suppression_rows(tmp_path):
    rng = np.random.default_rng(0)
    skill, random = syn.suppression_arrays([0, 5, 15], seeds=3, draws=2, rng=rng)
    syn.write_suppression(tmp_path, "m", "qqp", "advqqp", [0, 5, 15], skill, random)
    res = results.load_suppression(tmp_path, "m", "qqp", "advqqp")
    (row,) = robustness.suppression_rows([("m", res)])
    assert row[1] == "qqp → advqqp" and row[2] == "3 × 2" and row[3] == "15"
    assert float(row[7]) > 20                                          # skill neurons hurt ~25 points more
