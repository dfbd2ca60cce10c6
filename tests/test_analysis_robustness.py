"""Skill vs random suppression: the paired sign-flip test over dev examples, the interval over seeds, the
computed verdict, and the optional per-example fields of the suppression JSON."""
import itertools
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

import analysis_synthetic as syn
from skillneurons_jax.analysis import results, robustness
from skillneurons_jax.neurons import suppression as sup

MODEL = "m"


def test_sign_flip_test_exact_matches_brute_force_and_monte_carlo_agrees():
    d = np.array([0.5, 1.0, -0.5, 0.0, 1.0, 0.5, -1.0, 0.5])
    p, exact, flips = robustness.sign_flip_test(d)
    null = [np.mean(np.array(s) * d) for s in itertools.product((1, -1), repeat=d.size)]
    assert exact and flips == 256 and p == pytest.approx(np.mean(np.asarray(null) >= d.mean() - 1e-12))
    rng = np.random.default_rng(0)
    big = rng.normal(0.1, 1.0, 400)
    p_mc, exact, flips = robustness.sign_flip_test(big, n_flips=20000, seed=1)
    assert not exact and flips == 20000
    # large n: the sign-flip null is nearly normal with sd sqrt(sum d^2) / n
    z = big.mean() / (np.sqrt(np.sum(big ** 2)) / big.size)
    assert p_mc == pytest.approx(scipy_stats.norm.sf(z), abs=0.01)


def test_difference_interval_is_a_t_interval_over_seeds():
    skill = np.array([0.60, 0.62, 0.58])
    random = np.array([[0.70, 0.69, 0.71], [0.72, 0.70, 0.66]])       # [draws, seeds]
    (low, high), units = robustness.difference_interval(skill, random)
    per_seed = random.mean(0) - skill
    half = scipy_stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / np.sqrt(3)
    assert units == "seeds" and (low, high) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))
    (low, high), units = robustness.difference_interval(skill[:1], random[:, :1])
    assert units == "draws (one seed)" and low < high
    assert robustness.difference_interval(skill[:1], random[:1, :1])[0] is None


def _per_example_result(tmp_path, skill_rate, random_rate, n=300, seeds=3, draws=2, ks=(0, 10), seed=0):
    """A suppression JSON written through the suppression stage's own helpers (example_correctness and
    suppression_example_fields), so the reader sees exactly what the stage would write."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    rows = []                                            # [(1 + D) K, S, E] correctness per mask
    for is_skill in [True] * len(ks) + [False] * (draws * len(ks)):
        rate = skill_rate if is_skill else random_rate
        rows.append(rng.uniform(size=(seeds, n)) < rate)
    correct = np.asarray(rows, np.int8)
    scores = np.where(correct[..., None] == 1, np.eye(2)[labels], np.eye(2)[1 - labels])   # [M, S, E, 2]
    batch = (scores, labels, np.arange(n), np.ones(n, bool))
    got, got_labels = sup.example_correctness([batch], n)
    keys = [str(k) for k in ks]
    fields = sup.suppression_example_fields(got, np.arange(got.shape[0]), got_labels, keys, draws)
    acc = got.mean(-1)
    skill = acc[:len(ks)]
    random = acc[len(ks):].reshape(draws, len(ks), seeds).transpose(1, 0, 2)
    path = syn.write_suppression(tmp_path, MODEL, "sst2", "sst2", ks, skill, random)
    obj = json.loads(path.read_text())
    obj.update(fields)
    path.write_text(json.dumps(obj))
    return path


def test_compare_levels_says_yes_for_a_real_effect_and_no_for_none(tmp_path):
    _per_example_result(tmp_path, skill_rate=0.55, random_rate=0.8)
    res = results.load_suppression(tmp_path, MODEL, "sst2", "sst2")
    assert res.skill_correct.shape == (2, 3, 300) and res.random_correct.shape == (2, 2, 3, 300)
    assert res.label_counts == np.bincount(res.labels, minlength=2).tolist()
    top = robustness.compare_levels(res, n_flips=2000)[-1]
    assert top.verdict == "yes" and top.p_value < 0.01 and top.interval[0] > 0 and top.n_examples == 300
    sentence = robustness.verdict_sentence("sst2 → sst2", top, 0.05)
    assert "skill neurons hurt more than random: yes" in sentence and f"p = {top.p_value:.4f}" in sentence
    _per_example_result(tmp_path, skill_rate=0.8, random_rate=0.8, seed=1)
    res = results.load_suppression(tmp_path, MODEL, "sst2", "sst2")
    top = robustness.compare_levels(res, n_flips=2000)[-1]
    assert top.verdict == "inconclusive" and top.interval[0] < 0 < top.interval[1]       # no effect: not shown
    assert "hurt more than random: inconclusive — " in robustness.verdict_sentence("x", top, 0.05)
    _per_example_result(tmp_path, skill_rate=0.9, random_rate=0.6, seed=2)   # random neurons hurt more
    res = results.load_suppression(tmp_path, MODEL, "sst2", "sst2")
    top = robustness.compare_levels(res, n_flips=2000)[-1]
    assert top.verdict == "no" and top.interval[1] < 0
    assert "hurt more than random: no (" in robustness.verdict_sentence("x", top, 0.05)


def test_a_per_example_effect_over_too_few_seeds_is_inconclusive_not_no():
    """The default study's case: the paired test rejects on the dev examples, two seeds cannot carry the interval."""
    assert robustness.level_verdict(0.126, (-0.446, 0.698), 0.0001, 0.05) == "inconclusive"
    assert robustness.level_verdict(0.126, (0.02, 0.2), 0.0001, 0.05) == "yes"
    assert robustness.level_verdict(0.126, (0.02, 0.2), 0.2, 0.05) == "inconclusive"
    assert robustness.level_verdict(-0.1, (-0.2, -0.01), 0.9, 0.05) == "no"
    assert robustness.level_verdict(0.1, None, None, 0.05) == "inconclusive"


def test_without_per_example_fields_the_comparison_says_so(tmp_path):
    skill, random = syn.suppression_arrays([0, 10], seeds=3, draws=2, rng=np.random.default_rng(0))
    syn.write_suppression(tmp_path, MODEL, "sst2", "sst2", [0, 10], skill, random)
    res = results.load_suppression(tmp_path, MODEL, "sst2", "sst2")
    assert res.skill_correct is None and res.label_counts is None
    top = robustness.compare_levels(res)[-1]
    assert top.p_value is None and top.interval is not None
    assert "no per-example data" in robustness.verdict_sentence("x", top, 0.05)
    assert "no per-example data" in robustness.comparison_rows([top])[0][5]


def test_per_example_fields_that_contradict_the_accuracies_are_corrupt(tmp_path):
    path = _per_example_result(tmp_path, 0.6, 0.8, n=20)
    obj = json.loads(path.read_text())
    obj["skill_correct"]["10"][0][0] = 1 - obj["skill_correct"]["10"][0][0]
    path.write_text(json.dumps(obj))
    with pytest.raises(results.CorruptResultError, match="reproduce the accuracies"):
        results.load_suppression(tmp_path, MODEL, "sst2", "sst2")
    del obj["labels"]
    path.write_text(json.dumps(obj))
    with pytest.raises(results.CorruptResultError, match="must come together"):
        results.load_suppression(tmp_path, MODEL, "sst2", "sst2")


def test_data_facts_reader_tolerates_absence_and_reads_the_fields():
    assert results.data_facts({}).truncation is None
    facts = results.data_facts({"truncation": {"dev": {"examples": 256, "truncated": 114, "max_text_tokens": 32},
                                               "bogus": 3},
                                "excluded_adversarial_originals": 67}, "x.json")
    assert facts.truncation_text() == "dev 114/256 at 32" and facts.excluded_text() == "67"
    assert results.data_facts({"excluded_adversarial_originals": {"count": 5, "matched_on": "text"}}).excluded_text() \
        == "5"
