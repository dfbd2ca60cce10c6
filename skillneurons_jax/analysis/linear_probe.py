"""A linear probe on frozen features: L2-regularised logistic regression, its strength chosen on a carve of the
train rows, and balanced accuracy with a bootstrap interval (the learnability reference of a task, stages.probe).

    fit = fit_probe(x_train [n, d], y_train [n], seed=0)        # -> ProbeFit (weights, bias, l2, carve scores)
    scores = score(fit, x [m, d], y [m], seed=0)                 # -> {"balanced_accuracy", "interval", ...}

Pure numpy / scipy: no model, no file. The features are standardised with the train rows' mean and standard
deviation; the loss weights each class by n / (classes * n_class) ("balanced" weights), so that a skewed train split
does not pull the probe toward its majority and balanced accuracy is what it is fitted for.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import optimize

from skillneurons_jax.prompt import metrics

# Candidate L2 strengths (penalty l2 / 2 * ||w||^2 added to the mean weighted log-loss), tried on the carve.
L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
CARVE_FRACTION = 0.2          # the share of the train rows held out to choose the strength
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class ProbeFit:
    """weights [d, C] and bias [C] on standardised features (mean [d], scale [d]); `l2` the chosen strength,
    `carve_scores` {l2: balanced accuracy on the held-out carve of train}, `train_rows` the rows of the final fit."""
    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    l2: float
    carve_scores: dict
    train_rows: int
    num_classes: int

    def predict(self, x) -> np.ndarray:
        """[m, d] -> int [m]: the class of highest score."""
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        return np.argmax(z @ self.weights + self.bias, axis=-1)


def _class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return w[y]


def _fit_standardised(z: np.ndarray, y: np.ndarray, num_classes: int, l2: float):
    """Multinomial logistic regression on standardised z [n, d] by L-BFGS -> (weights [d, C], bias [C])."""
    n, d = z.shape
    sample_w = _class_weights(y, num_classes) / n
    onehot = np.eye(num_classes)[y]

    def loss_and_grad(theta):
        w = theta[:d * num_classes].reshape(d, num_classes)
        b = theta[d * num_classes:]
        logits = z @ w + b
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -(sample_w * (onehot * log_p).sum(axis=1)).sum() + 0.5 * l2 * (w * w).sum()
        residual = (np.exp(log_p) - onehot) * sample_w[:, None]          # [n, C]
        grad_w = z.T @ residual + l2 * w
        return loss, np.concatenate([grad_w.ravel(), residual.sum(axis=0)])

    theta0 = np.zeros(d * num_classes + num_classes)
    res = optimize.minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[:d * num_classes].reshape(d, num_classes), res.x[d * num_classes:]


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-8, scale, 1.0)


def _balanced(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    conf = np.zeros((num_classes, num_classes))
    np.add.at(conf, (y_true, y_pred), 1)
    return float(metrics.balanced_accuracy(conf))


def check_inputs(x, y, what: str = "train") -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"probe {what}: features must be [n, d] and labels [n], got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"probe {what}: the features hold NaN or inf")
    if len(y) and (y.min() < 0 or not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"probe {what}: labels must be non-negative integers")
    return x, y.astype(np.int64)


def fit_probe(x, y, *, num_classes: int = 2, seed: int = 0, l2_grid: Sequence[float] = L2_GRID,
              carve_fraction: float = CARVE_FRACTION) -> ProbeFit:
    """Chooses the L2 strength on a random `carve_fraction` of the rows (fitted on the rest; the highest balanced
    accuracy, the stronger penalty on a tie), then fits on every row with it. x [n, d], y [n]."""
    x, y = check_inputs(x, y)
    if len(np.unique(y)) < 2:
        raise ValueError(f"probe train: the labels hold {len(np.unique(y))} class; a probe needs two")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_held = max(1, int(round(carve_fraction * len(y))))
    held, kept = order[:n_held], order[n_held:]
    mean, scale = _standardiser(x[kept])
    z_kept, z_held = (x[kept] - mean) / scale, (x[held] - mean) / scale
    carve_scores = {}
    for l2 in sorted(l2_grid, reverse=True):
        w, b = _fit_standardised(z_kept, y[kept], num_classes, l2)
        carve_scores[float(l2)] = _balanced(y[held], np.argmax(z_held @ w + b, axis=-1), num_classes)
    best = max(carve_scores, key=lambda l2: (carve_scores[l2], l2))
    mean, scale = _standardiser(x)
    w, b = _fit_standardised((x - mean) / scale, y, num_classes, best)
    return ProbeFit(weights=w, bias=b, mean=mean, scale=scale, l2=best, carve_scores=carve_scores,
                    train_rows=len(y), num_classes=num_classes)


def bootstrap_balanced(y_true, y_pred, num_classes: int = 2, *, resamples: int = BOOTSTRAP_RESAMPLES,
                       confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of balanced accuracy over examples (the unit of replication: one example,
    resampled with replacement; the probe is held fixed)."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(resamples, len(y_true)))
    cell = y_true[idx] * num_classes + y_pred[idx]                                   # [R, n]
    conf = np.stack([np.bincount(row, minlength=num_classes * num_classes) for row in cell])
    values = metrics.balanced_accuracy(conf.reshape(resamples, num_classes, num_classes))
    alpha = (1 - confidence) / 2
    lo, hi = np.nanquantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def score(fit: ProbeFit, x, y, *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
          confidence: float = CONFIDENCE) -> dict:
    """The probe on one split: balanced accuracy with its bootstrap interval, accuracy, the split's majority
    rate, n and label counts (plain JSON)."""
    x, y = check_inputs(x, y, "scoring")
    pred = fit.predict(x)
    conf = np.zeros((fit.num_classes, fit.num_classes))
    np.add.at(conf, (y, pred), 1)
    s = metrics.summary(conf)
    lo, hi = bootstrap_balanced(y, pred, fit.num_classes, resamples=resamples, confidence=confidence, seed=seed)
    return {"balanced_accuracy": s["balanced_accuracy"], "interval": [lo, hi], "confidence": confidence,
            "accuracy": s["accuracy"], "majority_rate": s["majority_rate"], "n": s["examples"],
            "label_counts": {str(c): int(n) for c, n in enumerate(np.bincount(y, minlength=fit.num_classes))}}
