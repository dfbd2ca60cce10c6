"""neurons/predictivity.py reduces over the batch either with XLA's reduce (sharded meshes) or, on one CPU device,
with an unrolled elementwise chain (_fold_batch; several times faster there). Both must give the same statistics:
integer counts exactly, float sums to float32 rounding, with filler rows and token masks respected."""
import jax.numpy as jnp
import numpy as np

from skillneurons_jax.neurons import predictivity as statistics

S, L, B, T, N = 2, 3, 5, 4, 6


def _block(seed):
    rng = np.random.default_rng(seed)
    acts = rng.normal(size=(S, L, B, T, N)).astype(np.float32)
    acts[:, :, :, 0] = np.round(acts[:, :, :, 0])          # ties with the threshold exercise the '>' comparison
    example_mask = np.array([True, True, False, True, True])
    token_mask = rng.random((B, T)) > 0.2
    labels = rng.integers(0, 2, size=B).astype(np.int32)
    return jnp.asarray(acts), jnp.asarray(example_mask), jnp.asarray(token_mask), jnp.asarray(labels)


def test_unrolled_and_reduce_paths_agree():
    acts, ex, tok, labels = _block(0)
    for token_mask in (None, tok):
        base = statistics.init_baseline((S, L, T, N))
        a = statistics._update_baseline(base, acts, ex, token_mask, unrolled=False)
        b = statistics._update_baseline(base, acts, ex, token_mask, unrolled=True)
        np.testing.assert_allclose(np.asarray(a.total), np.asarray(b.total), rtol=1e-6, atol=1e-6)
        for field in ("count", "minimum", "maximum"):
            np.testing.assert_array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)))
        # A filler row (example_mask False) with huge values must not leak into either path.
        poisoned = acts.at[:, :, 2].set(1e6)
        c = statistics._update_baseline(base, poisoned, ex, token_mask, unrolled=True)
        np.testing.assert_array_equal(np.asarray(c.maximum), np.asarray(b.maximum))

        threshold = jnp.asarray(np.round(np.asarray(statistics.baseline_mean(a))))
        acc = statistics.init_accuracy(threshold)
        x = statistics._update_accuracy(acc, acts, labels, ex, token_mask, unrolled=False)
        y = statistics._update_accuracy(acc, acts, labels, ex, token_mask, unrolled=True)
        np.testing.assert_array_equal(np.asarray(x.correct), np.asarray(y.correct))
        # ... and both equal a NumPy count.
        valid = np.asarray(ex)[:, None] & (np.ones((B, T), bool) if token_mask is None else np.asarray(tok))
        hit = ((np.asarray(acts) > np.asarray(threshold)[:, :, None]) == (np.asarray(labels) == 1)[:, None, None])
        want = np.sum(hit & valid[None, None, :, :, None], axis=2)
        np.testing.assert_array_equal(np.asarray(y.correct), want)

        med = statistics.init_median(a, bins=4)
        m1 = statistics._update_median(med, acts, ex, token_mask, unrolled=False)
        m2 = statistics._update_median(med, acts, ex, token_mask, unrolled=True)
        np.testing.assert_array_equal(np.asarray(m1.counts), np.asarray(m2.counts))
        np.testing.assert_array_equal(np.asarray(m1.seen), np.asarray(m2.seen))


def test_public_updates_unroll_on_one_cpu_device():
    acts, ex, _, _ = _block(1)
    # one CPU device here; a sharded mesh keeps XLA's reduce (tests/test_predictivity.py)
    assert statistics._unrolled(acts)
