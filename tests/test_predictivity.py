"""Streaming skill-neuron statistics against a plain NumPy reference of eqs. 2-5."""
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from skillneurons_jax.neurons import predictivity as statistics
from skillneurons_jax.neurons.stats_options import StatsOptions

REPO = pathlib.Path(__file__).resolve().parents[1]
S, L, T, N = 2, 3, 4, 6
E_TRAIN, E_DEV = 45, 38


def make_data(seed=0):
    """Random activations [S, L, E, T, N] for TRAIN and DEV, DEV labels [E] with both classes."""
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(S, L, E_TRAIN, T, N)).astype(np.float32)
    dev = rng.normal(size=(S, L, E_DEV, T, N)).astype(np.float32)
    labels = rng.integers(0, 2, size=E_DEV).astype(np.int32)
    return train, dev, labels


def blocks(acts, labels, batch, token_mask=None):
    """Cuts [S, L, E, T, N] into batches of `batch` rows; the last is padded with filler rows full of
    huge values and a bogus label, which must not count."""
    e = acts.shape[2]
    for i in range(0, e, batch):
        k = min(batch, e - i)
        a = np.full(acts.shape[:2] + (batch,) + acts.shape[3:], 1e6, np.float32)
        a[:, :, :k] = acts[:, :, i:i + k]
        mask = np.arange(batch) < k
        lab = np.full(batch, 7, np.int32)
        tm = None
        if labels is not None:
            lab[:k] = labels[i:i + k]
        if token_mask is not None:
            tm = np.ones((batch, acts.shape[3]), bool)
            tm[:k] = token_mask[i:i + k]
        yield statistics.ActivationBlock(a, mask, lab if labels is not None else None, tm)


# ---------------------------------------------------------------- the plain NumPy reference of eqs. 2-5

def ref_baseline(train, token_mask=None):
    """eq. 2: mean over TRAIN examples, float64 [S, L, T, N] (over the examples valid at each position)."""
    if token_mask is None:
        return train.astype(np.float64).mean(axis=2)
    w = token_mask[None, None, :, :, None]
    return (train.astype(np.float64) * w).sum(axis=2) / w.sum(axis=2)


def ref_lower_median(train):
    """The ceil(n/2)-th smallest TRAIN value per [S, L, T, N]."""
    n = train.shape[2]
    return np.sort(train, axis=2)[:, :, (n + 1) // 2 - 1]


def ref_correct(dev, labels, threshold, token_mask=None):
    """eq. 3 numerator: sum over DEV of 1[ 1[a > b] == y ], int [S, L, T, N]."""
    fires = dev > threshold[:, :, None]
    hit = fires == (labels == 1)[None, None, :, None, None]
    if token_mask is not None:
        hit = hit & token_mask[None, None, :, :, None]
    return hit.sum(axis=2)


def ref_pred(correct, n, token_agg="max", seed_agg="mean"):
    acc = correct / n
    pred_tok = np.maximum(acc, 1 - acc)                         # eq. 4
    per_seed = {"max": np.max, "mean": np.mean}[token_agg](pred_tok, axis=2)
    return {"mean": np.mean, "min": np.min}[seed_agg](per_seed, axis=0), per_seed   # eq. 5


# ------------------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("batch", [64, 8, 5])
def test_streamed_equals_reference_across_batch_sizes(batch):
    train, dev, labels = make_data()
    st = statistics.compute_statistics(lambda: blocks(train, None, batch), blocks(dev, labels, batch))
    assert st.n_train == E_TRAIN and st.n_dev == E_DEV
    np.testing.assert_allclose(st.baseline, ref_baseline(train), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(st.threshold, st.baseline)
    # Counts exactly, both against the streamed threshold and against the float64 reference threshold.
    np.testing.assert_array_equal(st.correct, ref_correct(dev, labels, st.threshold))
    np.testing.assert_array_equal(st.correct, ref_correct(dev, labels, ref_baseline(train)))
    pred, per_seed = ref_pred(st.correct, E_DEV)
    np.testing.assert_allclose(st.pred, pred, rtol=0, atol=1e-6)
    np.testing.assert_allclose(st.pred_per_seed, per_seed, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(st.dev_label_counts, np.bincount(labels, minlength=2))


def test_batch_size_does_not_change_results():
    train, dev, labels = make_data(1)
    big = statistics.compute_statistics(lambda: blocks(train, None, 64), blocks(dev, labels, 64))
    small = statistics.compute_statistics(lambda: blocks(train, None, 4), blocks(dev, labels, 4))
    np.testing.assert_array_equal(big.correct, small.correct)
    np.testing.assert_allclose(big.baseline, small.baseline, rtol=0, atol=1e-6)


@pytest.mark.parametrize("token_agg,seed_agg", [("max", "mean"), ("mean", "mean"), ("max", "min"), ("mean", "min")])
def test_aggregation_options(token_agg, seed_agg):
    train, dev, labels = make_data(2)
    opts = StatsOptions(token_aggregation=token_agg, seed_aggregation=seed_agg)
    st = statistics.compute_statistics(lambda: blocks(train, None, 16), blocks(dev, labels, 16), opts)
    pred, per_seed = ref_pred(st.correct, E_DEV, token_agg, seed_agg)
    np.testing.assert_allclose(st.pred, pred, rtol=0, atol=1e-6)
    np.testing.assert_allclose(st.pred_per_seed, per_seed, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bins", [2, 16])
def test_median_threshold_is_exact(bins):
    train, dev, labels = make_data(3)
    train[0, 0, :, 0, 0] = 0.0  # ReLU-like ties at zero must be handled exactly too
    opts = StatsOptions(threshold="median", median_bins=bins, median_max_passes=40)
    st = statistics.compute_statistics(lambda: blocks(train, None, 8), blocks(dev, labels, 8), opts)
    assert st.median_width == 0.0
    assert st.median_passes <= int(np.ceil(32 / np.log2(bins)))
    np.testing.assert_array_equal(st.threshold, ref_lower_median(train))
    np.testing.assert_array_equal(st.correct, ref_correct(dev, labels, ref_lower_median(train)))
    np.testing.assert_allclose(st.baseline, ref_baseline(train), rtol=0, atol=1e-6)


def test_median_stopped_early_brackets_the_median():
    train, dev, labels = make_data(4)
    opts = StatsOptions(threshold="median", median_bins=4, median_max_passes=2)
    st = statistics.compute_statistics(lambda: blocks(train, None, 16), blocks(dev, labels, 16), opts)
    assert st.median_passes == 2 and st.median_width > 0
    assert np.all(np.abs(st.threshold - ref_lower_median(train)) <= st.median_width / 2 + 1e-6)


def test_median_pass_over_different_data_is_an_error():
    train, _, _ = make_data(5)
    state = statistics.init_baseline((S, L, T, N))
    for blk in blocks(train, None, 16):
        state = statistics.update_baseline(state, blk.acts, blk.example_mask)
    med = statistics.init_median(state, 4)
    blk = next(blocks(train, None, 16))
    med = statistics.update_median(med, blk.acts, blk.example_mask)
    with pytest.raises(ValueError, match="same TRAIN data"):
        statistics.refine_median(med)


def test_token_mask_positions_all():
    """With every position captured, padding positions (token_mask False) do not count."""
    train, dev, labels = make_data(6)
    rng = np.random.default_rng(0)
    tm_train = rng.random((E_TRAIN, T)) < 0.7
    tm_dev = rng.random((E_DEV, T)) < 0.7
    train_dirty = np.where(tm_train[None, None, :, :, None], train, 50.0).astype(np.float32)
    dev_dirty = np.where(tm_dev[None, None, :, :, None], dev, -50.0).astype(np.float32)
    st = statistics.compute_statistics(lambda: blocks(train_dirty, None, 8, tm_train),
                                       blocks(dev_dirty, labels, 8, tm_dev), StatsOptions(positions="all"))
    np.testing.assert_allclose(st.baseline, ref_baseline(train, tm_train), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(st.correct, ref_correct(dev, labels, st.threshold, tm_dev))
    acc = st.correct / tm_dev.sum(axis=0)[None, None, :, None]
    np.testing.assert_allclose(st.acc, acc, rtol=0, atol=1e-6)


def test_planted_neuron_ranks_first():
    """A neuron that fires above its baseline exactly for label-1 examples (on some prompt token) has
    predictivity 1 and ranks first in its layer and overall."""
    train, dev, labels = make_data(7)
    rng = np.random.default_rng(1)
    train_labels = rng.integers(0, 2, size=E_TRAIN)
    layer, neuron, token = 1, 4, 2
    for acts, y in ((train, train_labels), (dev, labels)):
        acts[:, layer, :, token, neuron] = np.where(y == 1, 3.0, -3.0)[None] + 0.1 * rng.normal(size=(S, len(y)))
    st = statistics.compute_statistics(lambda: blocks(train, None, 16), blocks(dev, labels, 16))
    assert st.pred[layer, neuron] == 1.0
    assert np.argmax(st.pred) == layer * N + neuron
    assert np.sort(st.pred.ravel())[-2] < 1.0


def test_single_label_dev_warns():
    train, dev, labels = make_data(8)
    ones = np.ones_like(labels)
    with pytest.warns(statistics.SingleLabelWarning, match="label 1 only"):
        statistics.compute_statistics(lambda: blocks(train, None, 16), blocks(dev, ones, 16))


def test_bad_inputs_raise_clear_errors():
    state = statistics.init_baseline((S, L, T, N))
    bad = np.zeros((S, L, 4, T + 1, N), np.float32)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 5, 6\).*\(2, 3, 4, 6\)"):
        statistics.update_baseline(state, bad, np.ones(4, bool))
    with pytest.raises(ValueError, match="example_mask has shape"):
        statistics.update_baseline(state, np.zeros((S, L, 4, T, N), np.float32), np.ones(3, bool))
    with pytest.raises(ValueError, match=r"\[seeds, layers, batch, tokens, neurons\]"):
        statistics.update_baseline(state, np.zeros((L, 4, T, N), np.float32), np.ones(4, bool))
    acc = statistics.init_accuracy(np.zeros((S, L, T, N), np.float32))
    acc = statistics.update_accuracy(acc, np.zeros((S, L, 4, T, N), np.float32), np.array([0, 1, 2, 1]),
                                     np.ones(4, bool))
    with pytest.raises(ValueError, match="outside"):
        statistics.neuron_accuracy(acc)
    with pytest.raises(ValueError, match="no TRAIN examples"):
        statistics.baseline_mean(statistics.init_baseline((S, L, T, N)))
    for field, value in [("threshold", "mode"), ("token_aggregation", "sum"), ("seed_aggregation", "max"),
                         ("positions", "text")]:
        with pytest.raises(ValueError, match=field):
            StatsOptions(**{field: value})
    with pytest.raises(ValueError, match="unknown statistics option"):
        StatsOptions.from_mapping({"treshold": "mean"})


def test_streams_share_one_pass():
    """Two named streams (T5 encoder + first decoder step) fed by the same blocks equal separate runs."""
    train, dev, labels = make_data(9)
    dec_train, dec_dev = train[:, :, :, :1] * 2 + 1, dev[:, :, :, :1] * 2 + 1

    def both(enc, dec, lab):
        for a, b in zip(blocks(enc, lab, 16), blocks(dec, lab, 16)):
            yield {"encoder": a, "decoder": b}

    out = statistics.compute_statistics(lambda: both(train, dec_train, None), both(dev, dec_dev, labels))
    alone = statistics.compute_statistics(lambda: blocks(dec_train, None, 16), blocks(dec_dev, labels, 16))
    assert set(out) == {"encoder", "decoder"}
    assert out["decoder"].acc.shape == (S, L, 1, N)
    np.testing.assert_array_equal(out["decoder"].correct, alone.correct)


_FOUR_DEVICES = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path[:0] = [{repo!r}, {tests!r}]
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as PS
    assert jax.device_count() == 4, jax.devices()
    import test_predictivity as tp
    from skillneurons_jax.neurons import predictivity as statistics
    from skillneurons_jax.neurons.stats_options import StatsOptions
    mesh = Mesh(np.array(jax.devices()), ("data",))
    def shard(blk):
        put = lambda x, spec: None if x is None else jax.device_put(x, NamedSharding(mesh, spec))
        out = statistics.ActivationBlock(put(blk.acts, PS(None, None, "data")), put(blk.example_mask, PS("data")),
                                put(blk.labels, PS("data")), put(blk.token_mask, PS("data")))
        assert len(out.acts.sharding.device_set) == 4
        return out
    train, dev, labels = tp.make_data(11)
    res = {{}}
    for th in ("mean", "median"):
        st = statistics.compute_statistics(lambda: map(shard, tp.blocks(train, None, 8)),
                                  map(shard, tp.blocks(dev, labels, 8)), StatsOptions(threshold=th))
        res[th] = st
    np.savez({out!r}, **{{f"{{th}}_{{k}}": getattr(st, k) for th, st in res.items()
                         for k in ("baseline", "threshold", "correct", "pred")}})
""")


def test_one_device_equals_four_devices(tmp_path):
    out = tmp_path / "four.npz"
    code = _FOUR_DEVICES.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    four = np.load(out)
    train, dev, labels = make_data(11)
    for th in ("mean", "median"):
        one = statistics.compute_statistics(lambda: blocks(train, None, 8), blocks(dev, labels, 8),
                                            StatsOptions(threshold=th))
        np.testing.assert_array_equal(four[f"{th}_correct"], one.correct)
        np.testing.assert_array_equal(four[f"{th}_pred"], one.pred)
        np.testing.assert_allclose(four[f"{th}_baseline"], one.baseline, rtol=0, atol=1e-6)
        if th == "median":  # order statistics do not depend on the reduction order: bit-exact
            np.testing.assert_array_equal(four[f"{th}_threshold"], one.threshold)
        np.testing.assert_array_equal(four[f"{th}_correct"], ref_correct(dev, labels, one.threshold))


def test_label_columns_equal_the_reference_on_their_rows():
    """The label-permutation null and matched-n subsamples are counted in the same DEV pass (one matmul per
    block); each column's Pred equals eqs. 3-5 computed directly on its permuted labels / its subsample's rows,
    with filler rows (huge values, bogus labels) and a token mask not counted."""
    train, dev, labels = make_data(3)
    rng = np.random.default_rng(0)
    tm = rng.random((E_DEV, T)) > 0.2
    tm[:, 0] = True
    columns, sizes = statistics.label_columns(labels, 3, subsample_sizes=(20, 99), subsample_draws=2, seed=5)
    assert columns.shape == (E_DEV, 5) and sizes.tolist() == [E_DEV] * 3 + [20, 20]   # 99 >= n: no column
    assert all(sorted(columns[:, c]) == sorted(labels) for c in range(3))
    assert ((columns[:, 3:] >= 0).sum(0) == 20).all()
    summary = statistics.summarize_train(lambda: blocks(train, None, 16))

    def with_columns(batch):
        for i, blk in enumerate(blocks(dev, labels, batch, tm)):
            col = np.full((batch, columns.shape[1]), -1, np.int32)
            rows = columns[i * batch:(i + 1) * batch]
            col[:len(rows)] = rows
            yield blk._replace(columns=col)

    stats = statistics.evaluate_dev(summary, with_columns(16))
    plain = statistics.evaluate_dev(summary, blocks(dev, labels, 16, tm))
    np.testing.assert_array_equal(stats.pred, plain.pred)          # the columns leave the main result alone
    for c in range(columns.shape[1]):
        keep = columns[:, c] >= 0
        mask = tm[keep]
        correct = ref_correct(dev[:, :, keep], columns[keep, c], summary.threshold, mask)
        n = mask.sum(0)[None, None, :, None]
        want, want_per_seed = ref_pred(correct, n)
        np.testing.assert_allclose(stats.column_pred[c], want, rtol=1e-6)
        np.testing.assert_allclose(stats.column_pred_per_seed[c], want_per_seed, rtol=1e-6)
    null = statistics.null_summary(stats.column_pred[:3], stats.column_pred_per_seed[:3])
    assert null["null_pred_max"].shape == (3,) and null["null_pred_layer_mean"].shape == (3, L)
    np.testing.assert_allclose(null["null_pred_max"], stats.column_pred[:3].reshape(3, -1).max(1))
