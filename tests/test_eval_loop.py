"""The one evaluation loop (prompt/eval_loop.py): fixed-shape batches, filler rows masked, one compile for every
batch, outputs handed on in order; and scoring.evaluate (training's dev evaluation, transfer, evaluate) runs
through it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillneurons_jax import parallel
from skillneurons_jax.data import batches as batching
from skillneurons_jax.prompt import eval_loop, scoring


def _encoded(n: int) -> batching.Encoded:
    """n rows; row i holds the token i + 1 (its length 3), label i % 2."""
    return batching.Encoded(input_ids=[[i + 1] * 3 for i in range(n)], labels=(np.arange(n) % 2).astype(np.int32),
                            lengths=np.full(n, 3, np.int32), pad_id=0, task="sst2", family="bert",
                            max_text_tokens=8, truncated=0)


def _batches(n: int, batch_size: int) -> list:
    return list(batching.iterate(_encoded(n), batch_size, seed=None, buckets=(4,)))


def test_rows_in_fixed_batches_filler_masked_and_one_compile():
    traces = []

    @jax.jit
    def step(batch):                     # [B, T] -> (masked row sums [B], real rows)
        traces.append(batch["input_ids"].shape)
        mask = batch["example_mask"].astype(jnp.int32)
        return jnp.sum(batch["input_ids"], axis=1) * mask, jnp.sum(mask)

    mesh = parallel.make_mesh()
    batches = _batches(7, 3)             # 7 rows in batches of 3: the third batch holds 1 row and 2 filler rows
    seen, real = [], []

    def accumulate(placed, out):
        sums, n = out
        assert isinstance(placed.device["input_ids"], jax.Array)
        assert "index" in placed.host and "index" not in placed.device      # host-only key stays on the host
        seen.append((placed.number, placed.size, placed.examples, int(n)))
        real.append(placed.real(np.asarray(sums)))

    count = eval_loop.run(lambda b: step(b.device), batches, mesh, accumulate)
    assert count == 3
    assert seen == [(0, 3, 3, 3), (1, 3, 3, 3), (2, 3, 1, 1)]
    assert np.array_equal(np.concatenate(real), 3 * np.arange(1, 8))         # every row once, filler rows out
    assert np.array_equal(batches[2]["example_mask"], [True, False, False])
    assert len(traces) == 1, f"one compile for every batch, got {traces}"


def test_sum_and_scoring_evaluate_count_each_real_row_once():
    total = eval_loop.Sum(np.float64)
    for value in (np.float32([1.5, 2.0]), np.float32([0.25, 1.0])):
        total.add(value)
    assert total.total.dtype == np.float64 and np.array_equal(total.total, [1.75, 3.0])

    def score(params, prompt, batch):    # [B, 2]: answers label 1 for even tokens (odd rows), so every real row is right
        odd = (batch["input_ids"][:, 0] % 2 == 0).astype(jnp.float32)
        return jnp.stack([1 - odd, odd], -1) + prompt[0, 0]

    mesh = parallel.make_mesh()
    step = scoring.make_eval_step(score, mesh)
    prompts = jnp.zeros((2, 1, 1))                                             # [S, P, H]
    confusion, loss = scoring.evaluate(step, prompts, None, _batches(5, 2), mesh)
    assert confusion.shape == (2, 2, 2) and confusion.sum(axis=(1, 2)).tolist() == [5, 5]
    assert np.array_equal(confusion[0], [[3, 0], [0, 2]])
    assert loss.shape == (2,) and np.allclose(loss, np.log1p(np.exp(-1.0)))


def test_a_changed_batch_size_and_no_batches_are_errors():
    batches = _batches(4, 2) + _batches(3, 3)
    with pytest.raises(ValueError, match="batch 2 has 3 rows, the first had 2"):
        eval_loop.run(lambda b: None, batches, None, lambda b, out: None)
    with pytest.raises(ValueError, match="the dev split is empty"):
        eval_loop.run(lambda b: None, [], None, lambda b, out: None, empty="the dev split is empty")
    placed = next(eval_loop.place(_batches(1, 2), None))
    assert placed.device is placed.host                                       # mesh None: the batch as given
