"""Skill-neuron selection, random controls and the interventions built from them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillneurons_jax.models.ffn import Capture, InterceptFFN
from skillneurons_jax.neurons import suppression as sup
from skillneurons_jax.stages import suppress as suppress_stage

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
    stacked = suppress_stage.stacked_interventions(masks, "zero")
    outs = [run(suppress_stage.take(stacked, i)) for i in range(len(masks))]
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
    iv = suppress_stage.stacked_interventions(masks, "mean", means=sup.layer_means(baseline))
    _, neurons = ffn.apply(params[0], x, layer=0, capture=Capture(), intervention=suppress_stage.take(iv, 2))
    m = masks[2][0]
    expected = np.broadcast_to(means[0, m], neurons.shape[:2] + (m.sum(),))
    np.testing.assert_allclose(np.asarray(neurons)[..., m], expected)
    _, clean = ffn.apply(params[0], x, layer=0, capture=Capture())
    gs = suppress_stage.stacked_interventions(masks, "gaussian", scale=0.5, rng=jax.random.key(3))
    _, noisy = ffn.apply(params[0], x, layer=0, capture=Capture(), intervention=suppress_stage.take(gs, 2))
    diff = np.asarray(noisy - clean)
    assert (diff[..., ~m] == 0).all() and 0.3 < diff[..., m].std() < 0.7
    with pytest.raises(ValueError, match="needs means"):
        suppress_stage.stacked_interventions(masks, "mean")
    with pytest.raises(ValueError, match="means have shape"):
        suppress_stage.stacked_interventions(masks, "mean", means=np.zeros((2, N)))
    with pytest.raises(ValueError, match="intervention kind"):
        suppress_stage.stacked_interventions(masks, "ablate")


def test_position_means_keep_each_position_and_fill_unseen_ones():
    rng = np.random.default_rng(0)
    baseline = rng.normal(size=(3, 2, 5, 7))
    baseline[:, 1, 4, 0] = np.nan                                   # a position no seed saw
    means = sup.position_means(baseline)
    assert means.shape == (2, 5, 7) and means.dtype == np.float32
    np.testing.assert_allclose(means[0], baseline[:, 0].mean(0), rtol=1e-6)
    np.testing.assert_allclose(means[1, 4, 0], baseline[:, 1, :4, 0].mean(0).mean(), rtol=1e-5)
    # the stacked "mean" intervention takes them: each captured position gets its own mean, the rest is kept
    ffn, params, x = _tiny_stack(num_layers=1, neurons=7)
    masks = np.zeros((2, 1, 7), bool)
    masks[1, 0, 3] = True
    per_position = np.zeros((1, 3, 7), np.float32)
    per_position[0, :, 3] = [1.0, 2.0, 3.0]
    iv = suppress_stage.stacked_interventions(masks, "mean", means=per_position)
    _, clean = ffn.apply(params[0], x, layer=0, capture=Capture())
    _, got = ffn.apply(params[0], x, layer=0, capture=Capture(), intervention=suppress_stage.take(iv, 1))
    np.testing.assert_array_equal(np.asarray(got)[:, :3, 3], np.broadcast_to([1.0, 2.0, 3.0], (2, 3)))
    np.testing.assert_array_equal(np.asarray(got)[:, 3:], np.asarray(clean)[:, 3:])
    with pytest.raises(ValueError, match="means have shape"):
        suppress_stage.stacked_interventions(masks, "mean", means=np.zeros((2, 3, 7)))


def test_train_std_and_relative_gaussian_scale():
    rng = np.random.default_rng(1)
    # activations [S, E, L, T, N] with a different spread per neuron
    spread = np.array([[0.1, 1.0, 5.0]])
    acts = rng.normal(2.0, 1.0, size=(2, 4000, 1, 3, 3)) * spread
    baseline, baseline_sq = acts.mean(1), (acts ** 2).mean(1)
    std = sup.neuron_train_std(baseline, baseline_sq)
    np.testing.assert_allclose(std, acts.transpose(2, 4, 0, 1, 3).reshape(1, 3, -1).std(-1), rtol=1e-4)
    assert sup.gaussian_scale(0.5) == 0.5
    relative = sup.gaussian_scale(0.5, "train_std", std=std)
    np.testing.assert_allclose(relative, 0.5 * std, rtol=1e-6)
    with pytest.raises(ValueError, match="needs each neuron's std"):
        sup.gaussian_scale(0.5, "train_std")
    with pytest.raises(ValueError, match="allowed"):
        sup.gaussian_scale(0.5, "percent")
    # the per-neuron scale reaches the noise: neuron 2's noise is 50x neuron 0's
    ffn, params, x = _tiny_stack(num_layers=1, neurons=3)
    masks = np.ones((1, 1, 3), bool)
    iv = suppress_stage.stacked_interventions(masks, "gaussian", scale=relative, rng=jax.random.key(0))
    x = jnp.tile(x, (40, 1, 1))
    _, clean = ffn.apply(params[0], x, layer=0, capture=Capture())
    _, noisy = ffn.apply(params[0], x, layer=0, capture=Capture(), intervention=suppress_stage.take(iv, 0))
    noise_sd = np.asarray(noisy - clean).reshape(-1, 3).std(0)
    np.testing.assert_allclose(noise_sd, relative[0], rtol=0.15)


def test_example_correctness_places_rows_by_index_and_matches_the_confusion_accuracy():
    rng = np.random.default_rng(2)
    n, seeds, masks_count = 11, 2, 3
    labels = rng.integers(0, 2, n)
    scores = rng.normal(size=(masks_count, seeds, n, 2))
    order = rng.permutation(n)                                      # batches sorted some other way
    batches = []
    for start in range(0, n, 4):
        rows = order[start:start + 4]
        pad = 4 - rows.size                                        # filler rows at the end
        index = np.concatenate([rows, -np.ones(pad, int)])
        batch_scores = np.concatenate([scores[:, :, rows], np.zeros((masks_count, seeds, pad, 2))], axis=2)
        batch_labels = np.concatenate([labels[rows], np.zeros(pad, int)])
        batches.append((batch_scores, batch_labels, index, index >= 0))
    correct, got_labels = sup.example_correctness(batches, n)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(correct, (scores.argmax(-1) == labels).astype(np.int8))
    with pytest.raises(ValueError, match="evaluated"):
        sup.example_correctness(batches[:-1], n)                    # rows never seen
    with pytest.raises(ValueError, match="evaluated"):
        sup.example_correctness(batches + batches[:1], n)           # rows seen twice
    # fields for 2 levels x (1 skill + 2 random draws) masks, where two masks were identical (index shares a row)
    fields = sup.suppression_example_fields(correct, [0, 1, 0, 2, 0, 1], labels, ["0", "5"], draws=2)
    assert fields["labels"] == labels.tolist()
    assert fields["skill_correct"]["5"] == correct[1].tolist()
    assert np.asarray(fields["random_correct"]["0"]).shape == (2, seeds, n)
    assert fields["random_correct"]["5"][0] == correct[2].tolist() and fields["random_correct"]["5"][1] == \
        correct[1].tolist()
    with pytest.raises(ValueError, match="mask_index"):
        sup.suppression_example_fields(correct, [0, 1], labels, ["0", "5"], draws=2)


def test_random_controls_from_the_rest_never_hold_a_skill_neuron():
    from skillneurons_jax.neurons import suppression as sup
    rng = np.random.default_rng(0)
    pred = rng.random((3, 40))
    masks = sup.skill_masks(pred, (5, 25, 50), "layer")                      # [K, L, N]
    every = sup.random_control_masks(masks, seed=1, draws=6)
    rest = sup.random_control_masks(masks, seed=1, draws=6, random_from="rest")
    assert (rest.sum(-1) == masks.sum(-1)[None]).all()                        # the same count per layer and level
    assert not (rest & masks[None]).any()                                     # none of the level's skill neurons
    assert (every & masks[None]).any()                                        # "all" may draw them (the default)
    np.testing.assert_array_equal(every, sup.random_masks(sup.counts_per_layer(masks), 40, 1, 6))
    with pytest.raises(ValueError, match="left outside"):
        sup.random_masks(np.array([[30]]), 40, 0, 1, exclude=np.arange(40)[None, None] < 20)
    with pytest.raises(ValueError, match="drawn from one of"):
        sup.random_control_masks(masks, 0, 1, random_from="skill")
