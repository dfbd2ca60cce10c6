"""Classification metrics from confusion counts (streamed: counts add up over batches, seeds stay apart).

A confusion matrix is int `[..., C, C]`, rows = true label, columns = prediction. F1 is the F1 of class 1 for
binary tasks (GLUE's convention for MRPC/QQP) and the macro average over classes otherwise.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion(scores: jax.Array, labels: jax.Array, example_mask: jax.Array) -> jax.Array:
    """scores [..., B, C], labels [..., B] int, example_mask [..., B] bool -> int32 counts [..., C, C].

    Filler rows (example_mask False) count nowhere. Ties go to the lowest label id (argmax).
    """
    num_labels = scores.shape[-1]
    pred = jnp.argmax(scores, axis=-1)
    true_1h = jax.nn.one_hot(labels, num_labels, dtype=jnp.int32) * example_mask[..., None].astype(jnp.int32)
    pred_1h = jax.nn.one_hot(pred, num_labels, dtype=jnp.int32)
    return jnp.einsum("...bi,...bj->...ij", true_1h, pred_1h)


def accuracy(conf) -> np.ndarray:
    """[..., C, C] -> [...] float (NaN for no examples)."""
    conf = np.asarray(conf, np.float64)
    total = conf.sum((-1, -2))
    right = np.trace(conf, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, right / np.maximum(total, 1), np.nan)


def f1(conf) -> np.ndarray:
    """[..., C, C] -> [...]: F1 of class 1 when C == 2, macro F1 otherwise (0 for a class never predicted
    nor present, as sklearn's zero_division=0)."""
    conf = np.asarray(conf, np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    pred_pos = conf.sum(-2)
    true_pos = conf.sum(-1)
    denom = pred_pos + true_pos
    per_class = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    if conf.shape[-1] == 2:
        return per_class[..., 1]
    return per_class.mean(-1)


def balanced_accuracy(conf) -> np.ndarray:
    """[..., C, C] -> [...]: the mean over classes of the recall (diagonal / row sum), over the classes that have
    examples (a class absent from the labels has no recall; sklearn's balanced_accuracy_score agrees); NaN for no
    examples. Chance is 1 / C whatever the class balance, so a prompt that always answers the majority class
    scores 0.5 on a binary task, however skewed the split."""
    conf = np.asarray(conf, np.float64)
    support = conf.sum(-1)                                            # [..., C] examples per true class
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    present = support > 0
    recall = np.where(present, tp / np.maximum(support, 1), 0.0)
    n_present = present.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_present > 0, recall.sum(-1) / np.maximum(n_present, 1), np.nan)


def majority_rate(conf) -> np.ndarray:
    """[..., C, C] -> [...]: the accuracy of always answering the most frequent true class (NaN for none)."""
    conf = np.asarray(conf, np.float64)
    support = conf.sum(-1)
    total = support.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, support.max(-1) / np.maximum(total, 1), np.nan)


def summary(conf) -> dict:
    """One confusion matrix [C, C] -> {"accuracy", "f1", "balanced_accuracy", "majority_rate", "examples"} as
    plain Python numbers."""
    conf = np.asarray(conf)
    return {"accuracy": float(accuracy(conf)), "f1": float(f1(conf)),
            "balanced_accuracy": float(balanced_accuracy(conf)), "majority_rate": float(majority_rate(conf)),
            "examples": int(conf.sum())}


# ---------------------------------------------------------------------------------------------------------------
# THE rule that picks the best checkpoint: training keeps a seed's prompt when an evaluation improves on it
# (prompt.train.record_evaluation), and the analysis reads that same choice back from metrics.jsonl
# (analysis.results.load_tuning_runs). Strictly greater dev accuracy: the first best wins ties.
# ---------------------------------------------------------------------------------------------------------------
def improves(accuracy, best):
    """accuracy [S] > best [S] (elementwise, strict): whether an evaluation replaces the kept prompt."""
    return np.asarray(accuracy) > np.asarray(best)


def best_evaluation(rows, key: str = "dev_accuracy") -> dict:
    """The row the training kept, of `rows` (one seed's evaluations in order, each with `key`): the first row
    that no later row improves on (`improves`)."""
    best = None
    for row in rows:
        if best is None or improves(float(row[key]), float(best[key])):
            best = row
    if best is None:
        raise ValueError(f"no evaluation with {key!r}")
    return best
