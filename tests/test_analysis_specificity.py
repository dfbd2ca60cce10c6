"""Task specificity: Spearman matrices against scipy, the z-scored matrix, and the permutation test's validity."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from skillneurons_jax.analysis import specificity


def _pred(rng, L=4, N=60, decimals=None):
    p = rng.uniform(0.5, 1.0, size=(L, N))
    return np.round(p, decimals) if decimals else p


def test_layer_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    a, b = _pred(rng, decimals=2), _pred(rng, decimals=2)      # rounding makes ties
    b[1] = a[1] + rng.normal(0, 0.05, a.shape[1])              # one correlated layer
    got = specificity.layer_spearman(a, b)
    want = [spearmanr(a[l], b[l]).statistic for l in range(a.shape[0])]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got[1] > 0.5


def test_spearman_matrix_is_layer_average_of_scipy():
    rng = np.random.default_rng(1)
    preds = {"sst2": _pred(rng), "imdb": _pred(rng), "qqp": _pred(rng)}
    preds["imdb"] = preds["sst2"] + rng.normal(0, 0.1, preds["sst2"].shape)
    res = specificity.spearman_matrix(preds)
    assert res.tasks == ["sst2", "imdb", "qqp"]
    assert res.per_layer.shape == (4, 3, 3) and res.mean.shape == (3, 3)
    for i, a in enumerate(res.tasks):
        for j, b in enumerate(res.tasks):
            want = np.mean([spearmanr(preds[a][l], preds[b][l]).statistic for l in range(4)])
            assert res.mean[i, j] == pytest.approx(want, abs=1e-12)
    np.testing.assert_allclose(np.diag(res.mean), 1.0)
    np.testing.assert_allclose(res.mean, res.mean.T)


def test_constant_layer_is_left_out_of_the_mean():
    rng = np.random.default_rng(2)
    a, b = _pred(rng), _pred(rng)
    a[2] = 0.5                                                  # undefined rank correlation in layer 2
    rho = specificity.layer_spearman(a, b)
    assert np.isnan(rho[2]) and np.all(np.isfinite(rho[[0, 1, 3]]))
    res = specificity.spearman_matrix({"a": a, "b": b})
    assert res.mean[0, 1] == pytest.approx(np.mean(rho[[0, 1, 3]]))
    perm = specificity.permutation_test(a, b, n_perm=50, seed=0)
    assert perm.statistic == pytest.approx(res.mean[0, 1])


def test_shape_mismatch_is_a_clear_error():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="one \\[layers, neurons\\] shape"):
        specificity.spearman_matrix({"a": _pred(rng, L=3), "b": _pred(rng, L=4)})
    with pytest.raises(ValueError, match="at least 2 datasets"):
        specificity.spearman_matrix({"a": _pred(rng)})


def test_zscore_matrix_by_hand():
    m = np.array([[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]])
    v = np.array([0.2, 0.4, 0.6])
    z = specificity.zscore_matrix(m)
    np.testing.assert_allclose(z, (m - v.mean()) / v.std())
    assert z[0, 1] == pytest.approx(-np.sqrt(1.5))              # (0.2 - 0.4) / std(ddof=0) = -1.2247
    with pytest.raises(ValueError, match="at least 3 datasets"):
        specificity.zscore_matrix(np.array([[1.0, 0.3], [0.3, 1.0]]))


def test_permutation_p_small_for_correlated_and_large_for_independent():
    rng = np.random.default_rng(4)
    a = _pred(rng, L=3, N=80)
    b = a + rng.normal(0, 0.05, a.shape)
    strong = specificity.permutation_test(a, b, n_perm=199, seed=0)
    assert strong.p_value == pytest.approx(1 / 200)            # no permutation reaches the observed value
    assert strong.null.shape == (199,) and abs(strong.null.mean()) < 0.05
    indep = specificity.permutation_test(a, _pred(rng, L=3, N=80), n_perm=199, seed=0)
    assert indep.p_value > 0.05
    assert 1 / 200 <= indep.p_value <= 1.0


def test_permutation_is_reproducible_and_seeded():
    rng = np.random.default_rng(5)
    a, b = _pred(rng, L=2, N=40), _pred(rng, L=2, N=40)
    r1 = specificity.permutation_test(a, b, n_perm=64, seed=7)
    r2 = specificity.permutation_test(a, b, n_perm=64, seed=7)
    r3 = specificity.permutation_test(a, b, n_perm=64, seed=8)
    np.testing.assert_array_equal(r1.null, r2.null)
    assert not np.array_equal(r1.null, r3.null)
    # p = (1 + #{null >= observed}) / (1 + n_perm), computed from the returned null
    assert r1.p_value == pytest.approx((1 + np.sum(r1.null >= r1.statistic - 1e-12)) / 65)


def test_permutation_null_is_valid():
    """Under independence the p-value is (super-)uniform: P(p <= alpha) <= alpha up to sampling noise."""
    rng = np.random.default_rng(6)
    ps = np.array([specificity.permutation_test(_pred(rng, L=3, N=30), _pred(rng, L=3, N=30), n_perm=99,
                                                seed=i).p_value for i in range(150)])
    assert 0.4 < ps.mean() < 0.6
    assert np.mean(ps <= 0.1) <= 0.18          # expected 0.10; binomial sd ~0.025
    assert np.mean(ps <= 0.5) == pytest.approx(0.5, abs=0.13)


def test_pairwise_pvalues_match_single_test_and_are_symmetric():
    rng = np.random.default_rng(7)
    a = _pred(rng, L=2, N=50)
    preds = {"a": a, "b": a + rng.normal(0, 0.05, a.shape), "c": _pred(rng, L=2, N=50)}
    p = specificity.permutation_pvalues(preds, n_perm=99, seed=3)
    assert np.all(np.isnan(np.diag(p)))
    np.testing.assert_array_equal(p, p.T)
    assert p[0, 1] == pytest.approx(0.01)
    assert p[0, 2] == pytest.approx(specificity.permutation_test(preds["a"], preds["c"], n_perm=99, seed=3).p_value)


def test_analyse_and_within_between():
    rng = np.random.default_rng(8)
    base = _pred(rng, L=2, N=50)
    preds = {"sst2": base, "imdb": base + rng.normal(0, 0.05, base.shape), "qqp": _pred(rng, L=2, N=50)}
    res = specificity.analyse(preds, n_perm=20, seed=0)
    assert res.zscored is not None and res.pvalues is not None and res.n_perm == 20
    wb = specificity.within_between(res.mean, res.tasks, {"sst2": "sentiment", "imdb": "sentiment",
                                                          "qqp": "paraphrase"})
    assert wb["n_within"] == 1 and wb["n_between"] == 2
    assert wb["within"] == pytest.approx(res.mean[0, 1]) and wb["within"] > wb["between"]


def _brute_force_type_p(matrix, types):
    """p over every permutation of the labels (each distinct assignment is counted equally often)."""
    import itertools
    D = len(types)

    def stat(labels):
        within = [matrix[i, j] for i in range(D) for j in range(i + 1, D) if labels[i] == labels[j]]
        between = [matrix[i, j] for i in range(D) for j in range(i + 1, D) if labels[i] != labels[j]]
        return np.mean(within) - np.mean(between)
    observed = stat(types)
    null = [stat(perm) for perm in itertools.permutations(types)]
    return observed, np.mean(np.asarray(null) >= observed - 1e-12)


def test_type_permutation_test_is_exact_and_matches_brute_force():
    rng = np.random.default_rng(11)
    tasks = ["a", "b", "c", "d", "e", "f"]
    types = ["x", "x", "x", "y", "y", "z"]
    m = rng.uniform(-0.1, 0.3, (6, 6))
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1.0)
    res = specificity.type_permutation_test(m, tasks, dict(zip(tasks, types)))
    observed, p = _brute_force_type_p(m, types)
    assert res.exact and res.n_assignments == 60            # 6! / (3! 2! 1!)
    assert res.statistic == pytest.approx(observed) and res.p_value == pytest.approx(p)
    assert res.min_p == pytest.approx(1 / 60) and res.null.size == 60


def test_type_permutation_test_separates_real_types_and_not_shuffled_ones():
    # 4 sentiment + 4 paraphrase datasets: correlations 0.4 within type, 0.05 between
    tasks = [f"s{i}" for i in range(4)] + [f"p{i}" for i in range(4)]
    types = {t: ("sentiment" if t[0] == "s" else "paraphrase") for t in tasks}
    same = np.array([[types[a] == types[b] for b in tasks] for a in tasks])
    m = np.where(same, 0.4, 0.05)
    res = specificity.type_permutation_test(m, tasks, types)
    assert res.exact and res.n_assignments == 70 and res.statistic == pytest.approx(0.35)
    assert res.p_value == pytest.approx(2 / 70)                 # the real labels and their swap are the extremes
    assert res.min_p == pytest.approx(2 / 70)                   # two types of 4: renaming them ties, so 2/70 is
                                                                # the floor, not 1/70
    sizes_2211 = specificity.type_permutation_test(np.where(same, 0.4, 0.05)[:6, :6], tasks[:3] + tasks[4:7],
                                                   {**types, "s2": "third", "p2": "fourth"})
    assert sizes_2211.n_assignments == 180 and sizes_2211.min_p == pytest.approx(4 / 180)
    # labels that do not follow the correlations: no evidence
    shuffled = {t: ("sentiment" if t in ("s0", "s1", "p0", "p1") else "paraphrase") for t in tasks}
    assert specificity.type_permutation_test(m, tasks, shuffled).p_value > 0.3
    # Monte Carlo with a seed when the assignments are too many to enumerate: close to the exact p, reproducible
    mc = specificity.type_permutation_test(m, tasks, types, max_exact=10, n_perm=4000, seed=1)
    assert not mc.exact and mc.n_perm == 4000 and mc.p_value == pytest.approx(2 / 70, abs=0.01)
    assert mc.p_value == specificity.type_permutation_test(m, tasks, types, max_exact=10, n_perm=4000,
                                                           seed=1).p_value


def test_type_permutation_test_excludes_shared_prompt_pairs_and_reports_the_design_floor():
    tasks = ["sst2", "advsst2", "imdb", "qqp"]
    types = {"sst2": "sentiment", "advsst2": "sentiment", "imdb": "sentiment", "qqp": "paraphrase"}
    m = np.full((4, 4), 0.1)
    m[0, 1] = m[1, 0] = 0.9                                      # clean/adversarial: one prompt, alike anyway
    res = specificity.type_permutation_test(m, tasks, types, exclude_pairs=[("advsst2", "sst2")])
    assert res.n_within == 2 and res.within == pytest.approx(0.1) and res.statistic == pytest.approx(0.0)
    assert res.min_p == pytest.approx(1 / 4)                    # one dataset of another type: 4 assignments
    with pytest.raises(ValueError, match="same task type"):
        specificity.type_permutation_test(m[:2, :2], tasks[:2], types)     # no between-type pair


def test_seed_split_reliability_bounds():
    rng = np.random.default_rng(3)
    signal = rng.uniform(0.5, 1.0, (3, 80))
    same = np.broadcast_to(signal, (4, 3, 80))
    res = specificity.seed_split_reliability(same)
    assert res.split_half == pytest.approx(1.0) and res.n_splits == 3       # {01|23, 02|13, 03|12}
    noise = rng.uniform(0.5, 1.0, (5, 3, 80))                                # seeds share nothing
    res = specificity.seed_split_reliability(noise)
    assert abs(res.split_half) < 0.15 and res.n_splits == 10
    noisy = signal + rng.normal(0, 0.1, (6, 3, 80))
    res = specificity.seed_split_reliability(noisy)
    assert 0.5 < res.split_half < res.spearman_brown < 1.0
    assert res.spearman_brown == pytest.approx(2 * res.split_half / (1 + res.split_half))
    acc = rng.uniform(0, 1, (2, 3, 4, 80))
    np.testing.assert_allclose(specificity.per_seed_predictivity(acc), np.maximum(acc, 1 - acc).max(2))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        specificity.seed_split_reliability(noise[:1])


def test_the_type_verdict_says_when_the_design_cannot_show_a_difference():
    from skillneurons_jax.analysis.sections import specificity as section
    tasks = [f"s{i}" for i in range(4)] + [f"p{i}" for i in range(4)]
    types = {t: ("sentiment" if t[0] == "s" else "paraphrase") for t in tasks}
    same = np.array([[types[a] == types[b] for b in tasks] for a in tasks])
    strong = specificity.type_permutation_test(np.where(same, 0.4, 0.05), tasks, types)
    assert "between-type: yes (" in section._type_verdict(strong, 0.05)
    flat = specificity.type_permutation_test(np.where(same, 0.05, 0.4), tasks, types)
    assert "between-type: not shown (" in section._type_verdict(flat, 0.05)
    pick = [0, 1, 4]                                             # s0, s1, p0: 3 assignments, floor p = 1/3
    three = specificity.type_permutation_test(np.where(same, 0.4, 0.05)[np.ix_(pick, pick)],
                                              [tasks[i] for i in pick], types)
    assert three.statistic > 0 and three.min_p == pytest.approx(1 / 3)
    sentence = section._type_verdict(three, 0.05)
    assert "cannot be shown with these datasets (inconclusive)" in sentence and "smallest attainable p" in sentence
