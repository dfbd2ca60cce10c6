"""Skill-neuron selection, random controls and the interventions built from them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillneurons_jax.models.ffn import Capture, InterceptFFN
from skillneurons_jax.neurons import suppression as sup

L, N = 4, 300


def make_pred(seed=0):
    pred = np.random.default_rng(seed).uniform(0.5, 1.0, size=(L, N)).astype(np.float32)
    pred[2, 10:20] = 0.75  # ties must still give nested masks and exact counts
    return pred


def test_counts_per_layer_for_each_level():
    pred = make_pred()
    masks = sup.skill_masks(pred, sup.DEFAULT_PERCENTS, "layer")
    assert masks.shape == (len(sup.DEFAULT_PERCENTS), L, N) and masks.dtype == bool
    for k, percent in enumerate(sup.DEFAULT_PERCENTS):
        expected = N * percent // 100   # 0, 3, 9, 15, 21, 27, 33, 39, 45
        assert (sup.counts_per_layer(masks[k]) == expected).all()
    for n in (N, 768, 1536, 3072):   # the original code's int(n / 100 * k) agrees for these sizes
        for percent in sup.DEFAULT_PERCENTS:
            assert sup.count_for(n, percent) == int(n / 100 * percent)


def test_selected_neurons_are_the_top_ones():
    pred = make_pred(1)
    mask = sup.skill_mask(pred, 5)
    for layer in range(L):
        chosen, rest = pred[layer][mask[layer]], pred[layer][~mask[layer]]
        assert chosen.min() >= rest.max()


def test_exact_floor_where_float_formula_slips():
    # int(29 / 100 * 100) == 28 in floating point; the exact floor is 29.
    assert sup.count_for(29, 100) == 29
    assert sup.count_for(3072, 2.5) == 76


def test_nesting_across_levels_and_global_scope():
    pred = make_pred(2)
    for scope in sup.SCOPES:
        masks = sup.skill_masks(pred, (1, 3, 5, 15), scope)
        for small, big in zip(masks[:-1], masks[1:]):
            assert not (small & ~big).any()   # top-3% is a subset of top-5%
    g = sup.skill_mask(pred, 5, "global")
    assert g.sum() == L * N * 5 // 100
    assert pred[g].min() >= pred[~g].max()


def test_global_scope_follows_predictivity_across_layers():
    pred = np.full((L, N), 0.5, np.float32)
    pred[3] = 0.9  # every top neuron lives in layer 3
    g = sup.skill_mask(pred, 10, "global")
    assert sup.counts_per_layer(g).tolist() == [0, 0, 0, L * N // 10]
    assert sup.counts_per_layer(sup.skill_mask(pred, 10, "layer")).tolist() == [N // 10] * L


def test_zero_level_is_empty_and_out_of_range_levels_raise():
    pred = make_pred(3)
    assert not sup.skill_mask(pred, 0).any()
    assert sup.skill_mask(pred, 100).all()
    for bad in (-1, 100.5, 250, "lots"):
        with pytest.raises(ValueError, match="suppression level"):
            sup.skill_masks(pred, (1, bad))
    with pytest.raises(ValueError, match="scope"):
        sup.skill_masks(pred, (1,), "model")
    with pytest.raises(ValueError, match="NaN"):
        sup.skill_masks(np.full((L, N), np.nan), (1,))


def test_random_controls_match_counts_differ_across_draws_and_repeat():
    pred = make_pred(4)
    masks = sup.skill_masks(pred, sup.DEFAULT_PERCENTS, "global")  # uneven counts per layer
    rand = sup.random_control_masks(masks, seed=0, draws=3)
    assert rand.shape == (3,) + masks.shape
    expected = np.broadcast_to(sup.counts_per_layer(masks), (3,) + masks.shape[:2])
    np.testing.assert_array_equal(sup.counts_per_layer(rand), expected)
    k = sup.DEFAULT_PERCENTS.index(15)
    assert not np.array_equal(rand[0, k], rand[1, k]) and not np.array_equal(rand[1, k], rand[2, k])
    assert not np.array_equal(rand[0, k], masks[k])
    for small, big in zip(rand[0, :-1], rand[0, 1:]):
        assert not (small & ~big).any()
    np.testing.assert_array_equal(rand, sup.random_control_masks(masks, seed=0, draws=3))
    assert not np.array_equal(rand, sup.random_control_masks(masks, seed=1, draws=3))


def _tiny_stack(num_layers=L, hidden=8, neurons=N):
    ffn = InterceptFFN(hidden=hidden, intermediate=neurons, activation="gelu")
    keys = jax.random.split(jax.random.key(0), num_layers)
    x = jax.random.normal(jax.random.key(1), (2, 5, hidden))
    params = [ffn.init(k, x, layer=i) for i, k in enumerate(keys)]
    return ffn, params, x


def test_one_compiled_evaluation_serves_every_level():
    ffn, params, x = _tiny_stack()
    traces = []

    @jax.jit
    def run(iv):
        traces.append(1)   # runs only while tracing
        h, caught = x, []
        for layer, p in enumerate(params):
            out, neurons = ffn.apply(p, h, layer=layer, capture=Capture(), intervention=iv)
            h, caught = h + out, caught + [neurons]
        return h, jnp.stack(caught)

    masks = sup.skill_masks(make_pred(5), sup.DEFAULT_PERCENTS)
    stacked = sup.stacked_interventions(masks, "zero")
    outs = [run(sup.take(stacked, i)) for i in range(len(masks))]
    assert len(traces) == 1
    for (_, neurons), mask in zip(outs, masks):
        caught = np.asarray(neurons)   # [L, B, T, N]
        assert (caught[np.broadcast_to(mask[:, None, None, :], caught.shape)] == 0).all()
    assert not np.allclose(outs[0][0], outs[-1][0])
    vm_h, _ = jax.vmap(run)(stacked)
    np.testing.assert_allclose(vm_h, np.stack([o[0] for o in outs]), rtol=1e-5, atol=1e-5)


def test_mean_and_gaussian_interventions():
    ffn, params, x = _tiny_stack(num_layers=1)
    masks = sup.skill_masks(make_pred(6)[:1], (0, 5, 10))
    means = np.linspace(-1, 1, N, dtype=np.float32)[None]
    baseline = np.broadcast_to(means[None, :, None, :], (3, 1, 4, N)).copy()
    np.testing.assert_allclose(sup.layer_means(baseline), means)
    iv = sup.stacked_interventions(masks, "mean", means=sup.layer_means(baseline))
    _, neurons = ffn.apply(params[0], x, layer=0, capture=Capture(), intervention=sup.take(iv, 2))
    m = masks[2][0]
    expected = np.broadcast_to(means[0, m], neurons.shape[:2] + (m.sum(),))
    np.testing.assert_allclose(np.asarray(neurons)[..., m], expected)
    _, clean = ffn.apply(params[0], x, layer=0, capture=Capture())
    gs = sup.stacked_interventions(masks, "gaussian", scale=0.5, rng=jax.random.key(3))
    _, noisy = ffn.apply(params[0], x, layer=0, capture=Capture(), intervention=sup.take(gs, 2))
    diff = np.asarray(noisy - clean)
    assert (diff[..., ~m] == 0).all() and 0.3 < diff[..., m].std() < 0.7
    with pytest.raises(ValueError, match="needs means"):
        sup.stacked_interventions(masks, "mean")
    with pytest.raises(ValueError, match="means have shape"):
        sup.stacked_interventions(masks, "mean", means=np.zeros((2, N)))
    with pytest.raises(ValueError, match="intervention kind"):
        sup.stacked_interventions(masks, "ablate")
