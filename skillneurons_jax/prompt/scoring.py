"""Scoring every seed's prompt at once: the one evaluation of training, transfer, launch.evaluate, predictivity's
model accuracy and suppression.

    step = make_eval_step(readout.score_fn(), mesh)
    confusion, mean_loss = evaluate(step, prompts [S, P, H], params, batches, mesh)   # [S, C, C], [S]
    confusion, correct, labels = example_outcomes(make_outcome_step(score_fn, mesh), prompts, params, batches, mesh)
                                                                          # [S, C, C], [S, E], [E] (row order)

The prompts of all seeds are one vmapped argument of one compiled step, so S seeds cost one compile per batch
length. Stages whose forward does more than score (predictivity captures activations, suppression intervenes)
turn their scores into counts with `seed_confusion`, the same counting the step does. The batches go through
the one evaluation loop (eval_loop).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax import parallel
from skillneurons_jax.prompt import eval_loop, metrics

ScoreFn = Callable[[Any, jax.Array, Mapping[str, jax.Array]], jax.Array]


def seed_confusion(scores: jax.Array, labels: jax.Array, example_mask: jax.Array) -> jax.Array:
    """scores [S, B, C] of S prompts on one batch, labels [B], example_mask [B] -> confusion counts [S, C, C]."""
    labels = jnp.broadcast_to(labels, scores.shape[:-1])
    mask = jnp.broadcast_to(example_mask, scores.shape[:-1])
    return metrics.confusion(scores, labels, mask)


def seed_loss_sum(scores: jax.Array, labels: jax.Array, example_mask: jax.Array) -> jax.Array:
    """scores [S, B, C] -> summed cross-entropy over the real examples [S]."""
    labels = jnp.broadcast_to(labels, scores.shape[:-1])
    mask = jnp.broadcast_to(example_mask, scores.shape[:-1])
    log_probs = jax.nn.log_softmax(scores.astype(jnp.float32), -1)
    nll = -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), -1)[..., 0]
    return jnp.sum(nll * mask, -1)


def make_eval_step(score_fn: ScoreFn, mesh):
    """(prompts [S,P,H], params, batch [B,...]) -> (confusion [S,C,C] int32, loss sum [S]); one jit."""

    def evaluate_batch(prompts, params, batch):
        scores = jax.vmap(lambda prompt: score_fn(params, prompt, batch))(prompts)          # [S, B, C]
        return (seed_confusion(scores, batch["labels"], batch["example_mask"]),
                seed_loss_sum(scores, batch["labels"], batch["example_mask"]))

    replicated = parallel.replicated(mesh)
    return jax.jit(evaluate_batch, out_shardings=(replicated, replicated))


def evaluate(eval_step, prompts, params, batches: Sequence[Mapping[str, np.ndarray]], mesh
             ) -> tuple[np.ndarray, np.ndarray]:
    """Confusion counts [S, C, C] and mean loss [S] of every seed's prompt over all `batches` (eval_loop: one
    global batch size, filler rows masked by the step)."""
    confusion, loss_sum = eval_loop.Sum(), eval_loop.Sum(np.float64)   # per-batch float32 sums, added in float64
    examples = 0

    def accumulate(placed, out):
        nonlocal examples
        counts, losses = out
        confusion.add(counts)
        loss_sum.add(losses)
        examples += placed.examples

    # host_only=(): every key of the batch goes to the step, as the callers' batches are made for it
    eval_loop.run(lambda placed: eval_step(prompts, params, placed.device), batches, mesh, accumulate,
                  host_only=(), empty="no dev batches: the dev split is empty")
    return confusion.total, loss_sum.total / max(examples, 1)


def make_outcome_step(score_fn: ScoreFn, mesh):
    """jit (prompts [S, P, H], params, batch [B, ...]) -> (confusion [S, C, C], correct int8 [S, B]): the counts and
    whether each seed's answer (argmax, as the confusion counts it) is the row's label, from ONE set of scores, so
    that the per-example outcomes always average to the accuracy (filler rows: the caller drops them)."""

    def outcome_batch(prompts, params, batch):
        scores = jax.vmap(lambda prompt: score_fn(params, prompt, batch))(prompts)          # [S, B, C]
        correct = (jnp.argmax(scores, axis=-1) == batch["labels"][None]).astype(jnp.int8)
        return seed_confusion(scores, batch["labels"], batch["example_mask"]), correct

    replicated = parallel.replicated(mesh)
    return jax.jit(outcome_batch, out_shardings=(replicated, replicated))


def example_outcomes(outcome_step, prompts, params, batches: Sequence[Mapping[str, np.ndarray]], mesh
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confusion [S, C, C], correct int8 [S, E], labels [E]) of every seed's prompt on every real row of
    `batches`, the outcomes in the split's row order (the batches' "index"; data.batches.iterate), for paired
    per-example tests between prompts scored on the same rows."""
    correct, labels, index = [], [], []
    confusion = eval_loop.Sum()

    def accumulate(placed, out):
        counts, outcome = out
        confusion.add(counts)
        correct.append(placed.real(outcome, axis=1))
        labels.append(placed.real(placed.host["labels"]))
        index.append(placed.real(placed.host["index"]) if "index" in placed.host else None)

    eval_loop.run(lambda placed: outcome_step(prompts, params, placed.device), batches, mesh, accumulate,
                  empty="no dev batches: the dev split is empty")
    correct, labels = np.concatenate(correct, axis=1), np.concatenate(labels).astype(np.int32)
    if all(i is not None for i in index):                   # else the batches' order is the rows' order
        order = np.argsort(np.concatenate(index), kind="stable")
        correct, labels = correct[:, order], labels[order]
    return confusion.total, correct, labels


def per_seed(confusion: np.ndarray) -> dict[str, list[float]]:
    """confusion [S, C, C] -> {"accuracy": [S], "f1": [S], "confusion": [S][C][C]} as plain lists (what result
    files hold; the confusion gives the report balanced accuracy and the label counts)."""
    return {"accuracy": metrics.accuracy(confusion).tolist(), "f1": metrics.f1(confusion).tolist(),
            "confusion": np.asarray(confusion).astype(int).tolist()}
