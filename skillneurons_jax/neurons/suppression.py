"""Which neurons to suppress: top-k% by predictivity (skill neurons) and random controls, as masks [L, N].

Selection (ARCHITECTURE.md "The method, exactly"):
  * scope "layer" (the original code, robust-neurons src/utils.py init_mask): in every layer the
    floor(N * k / 100) neurons of highest Pred. The original computes `int(N / 100 * k)` in floating point;
    we take the same floor in exact rational arithmetic so that e.g. N = 100, k = 29 gives 29, not 28.
  * scope "global": the floor(L * N * k / 100) neurons of highest Pred over all layers.
  Ties are broken by the lower (layer, neuron) index, a fixed total order: so the top-3% mask is always a
  subset of the top-5% mask.
  * Random controls: in every layer the same number of neurons as the skill mask, drawn uniformly without
    replacement. Draw d uses numpy Generator([seed, d]) and one permutation per layer, shared by all k, so
    random masks are nested across k as well and any run is reproducible from (seed, draws).

Interventions (built as models.ffn.Intervention by stages.suppress.stacked_interventions: statistics never
import models): "zero" (the paper), "mean", "gaussian" (keep the activation, add N(0, scale^2)).
  * mean: `position_means(baseline)` [L, T, N] replaces position j by the TRAIN mean of position j (averaged over
    seeds), at the T positions the predictivity stage captured (the prompt with positions="prompt"; the prompt
    and the text with positions="all"); positions beyond T keep their activation, because no mean was measured
    there. `layer_means(baseline)` [L, N] (one value per neuron, averaged over positions) is the old behaviour: it
    writes prompt-position means into text positions when the suppression covers every position, mixing two
    distributions (issue 14), so the suppression stage should pass `position_means`.
  * gaussian: `noise_scale` is absolute by default (the same sigma for every neuron, Wang et al. 2022);
    `gaussian_scale(sigma, "train_std", std=neuron_train_std(baseline, baseline_sq))` makes it relative: sigma
    times each neuron's TRAIN standard deviation [L, N], so the noise means the same thing for neurons of very
    different ranges. The std needs the TRAIN mean of squares `baseline_sq` [S, L, T, N] beside `baseline`.
Per-example results (for the paired skill-vs-random test of analysis.robustness): `example_correctness` turns the
evaluation's scores into 0/1 per dev example in file order, `suppression_example_fields` into the suppression
JSON's optional fields `skill_correct`, `random_correct`, `labels`. Masks for many
levels are stacked [K, L, N]; stages.suppress.stacked_interventions gives one Intervention whose every leaf has the
leading K axis, so one compiled evaluation serves every level (jax.vmap, jax.lax.map, or a Python loop over
`take(stacked, i)` — the shapes never change, so nothing recompiles).
"""
from __future__ import annotations

import warnings
from fractions import Fraction
from typing import Sequence

import numpy as np


SCOPES = ("layer", "global")
DEFAULT_PERCENTS = (0, 1, 3, 5, 7, 9, 11, 13, 15)
INTERVENTION_KINDS = ("zero", "mean", "gaussian")
NOISE_SCALES = ("absolute", "train_std")


def _check_percent(percent) -> Fraction:
    try:
        p = Fraction(str(percent))
    except (ValueError, TypeError):
        raise ValueError(f"suppression level {percent!r} is not a number") from None
    if not 0 <= p <= 100:
        raise ValueError(f"suppression level {percent}% is outside [0, 100]")
    return p


def count_for(total: int, percent) -> int:
    """floor(total * percent / 100), exactly. percent must lie in [0, 100]."""
    p = _check_percent(percent)
    return int(total * p // 100)


def _check_pred(pred) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise ValueError(f"predictivity must be [layers, neurons]; got shape {pred.shape}")
    if np.isnan(pred).any():
        raise ValueError("predictivity contains NaN: cannot rank neurons")
    return pred


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"selection scope {scope!r}; allowed: {SCOPES}")


def ranking(pred, scope: str = "layer") -> np.ndarray:
    """Neuron order, best first. scope "layer": int [L, N] neuron indices per layer;
    scope "global": int [L * N] flat indices (layer * N + neuron). Ties: lower index first."""
    pred = _check_pred(pred)
    _check_scope(scope)
    if scope == "layer":
        return np.stack([np.lexsort((np.arange(pred.shape[1]), -row)) for row in pred])
    flat = pred.ravel()
    return np.lexsort((np.arange(flat.size), -flat))


def skill_masks(pred, percents: Sequence = DEFAULT_PERCENTS, scope: str = "layer") -> np.ndarray:
    """bool [K, L, N]: the top-percents[k]% neurons by predictivity pred [L, N]."""
    pred = _check_pred(pred)
    order = ranking(pred, scope)
    num_layers, num_neurons = pred.shape
    masks = np.zeros((len(percents), num_layers, num_neurons), bool)
    for k, percent in enumerate(percents):
        if scope == "layer":
            c = count_for(num_neurons, percent)
            np.put_along_axis(masks[k], order[:, :c], True, axis=1)
        else:
            c = count_for(num_layers * num_neurons, percent)
            masks[k].reshape(-1)[order[:c]] = True
    return masks


def skill_mask(pred, percent, scope: str = "layer") -> np.ndarray:
    """bool [L, N] for one level."""
    return skill_masks(pred, (percent,), scope)[0]


def counts_per_layer(masks) -> np.ndarray:
    """int [..., L]: selected neurons per layer."""
    return np.asarray(masks).sum(axis=-1)


RANDOM_FROM = ("all", "rest")   # random controls drawn from every neuron of the layer, or from the non-skill ones


def random_masks(counts, num_neurons: int, seed: int, draws: int, exclude=None) -> np.ndarray:
    """bool [D, K, L, N]: counts[k, l] uniformly random neurons in layer l, for D fixed draws.

    counts: int [K, L] (e.g. counts_per_layer(skill_masks(...))). Draw d, layer l uses the first counts[k, l]
    entries of one permutation from numpy Generator([seed, d]), so masks are nested across k. exclude: bool
    [K, L, N] or None: level k draws only among the neurons exclude[k] leaves (the same permutation, its excluded
    entries skipped; nested across k where the excluded sets are)."""
    counts = np.asarray(counts, int)
    if counts.ndim != 2:
        raise ValueError(f"counts must be [levels, layers]; got shape {counts.shape}")
    if draws < 1:
        raise ValueError(f"random controls need draws >= 1, got {draws}")
    if (counts < 0).any() or (counts > num_neurons).any():
        raise ValueError(f"counts per layer must lie in [0, {num_neurons}]; got {counts.min()}..{counts.max()}")
    num_levels, num_layers = counts.shape
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        if exclude.shape != (num_levels, num_layers, num_neurons):
            raise ValueError(f"exclude must be [levels, layers, neurons] = {(num_levels, num_layers, num_neurons)}, "
                             f"got {exclude.shape}")
        short = counts > num_neurons - exclude.sum(-1)
        if short.any():
            k, layer = map(int, np.argwhere(short)[0])
            raise ValueError(f"level {k}, layer {layer}: {counts[k, layer]} random neurons asked for, but only "
                             f"{num_neurons - int(exclude[k, layer].sum())} are left outside the excluded ones")
    out = np.zeros((draws, num_levels, num_layers, num_neurons), bool)
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        for layer in range(num_layers):
            perm = rng.permutation(num_neurons)
            for k in range(num_levels):
                pool = perm if exclude is None else perm[~exclude[k, layer, perm]]
                out[d, k, layer, pool[:counts[k, layer]]] = True
    return out


def random_control_masks(masks, seed: int, draws: int, random_from: str = "all") -> np.ndarray:
    """bool [D, K, L, N]: random neurons with the same count per layer as masks [K, L, N]; random_from "all": any
    neuron of the layer (a control may hold some of the level's skill neurons), "rest": only the neurons the level's
    mask leaves out."""
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [levels, layers, neurons]; got shape {masks.shape}")
    if random_from not in RANDOM_FROM:
        raise ValueError(f"random controls are drawn from one of {RANDOM_FROM}, not {random_from!r}")
    return random_masks(counts_per_layer(masks), masks.shape[-1], seed, draws,
                        exclude=masks if random_from == "rest" else None)


def layer_means(baseline) -> np.ndarray:
    """float32 [L, N]: the TRAIN baseline [S, L, T, N] averaged over seeds and tokens (one value for every position;
    see the module docstring for why `position_means` is the right input of the "mean" intervention)."""
    baseline = np.asarray(baseline, np.float64)
    if baseline.ndim != 4:
        raise ValueError(f"baseline must be [seeds, layers, tokens, neurons]; got shape {baseline.shape}")
    return np.nanmean(baseline, axis=(0, 2)).astype(np.float32)


def position_means(baseline) -> np.ndarray:
    """float32 [L, T, N]: the TRAIN baseline [S, L, T, N] averaged over seeds, position by position (position j =
    position j of the full sequence: the predictivity stage captures from position 0). A position no seed saw
    (NaN) takes the neuron's mean over the other positions."""
    baseline = np.asarray(baseline, np.float64)
    if baseline.ndim != 4:
        raise ValueError(f"baseline must be [seeds, layers, tokens, neurons]; got shape {baseline.shape}")
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)           # all-NaN slices are handled below
        means = np.nanmean(baseline, axis=0)                      # [L, T, N]
        fallback = np.nanmean(means, axis=1, keepdims=True)      # [L, 1, N]
    means = np.where(np.isnan(means), fallback, means)
    return np.nan_to_num(means, nan=0.0).astype(np.float32)


def neuron_train_std(baseline, baseline_sq) -> np.ndarray:
    """float32 [L, N]: each neuron's TRAIN standard deviation over examples, positions and seeds, from the TRAIN
    means of a and of a^2 per position (baseline, baseline_sq [S, L, T, N]; positions weighted equally):
    sqrt(mean(a^2) - mean(a)^2), clipped at 0 against rounding."""
    baseline, baseline_sq = np.asarray(baseline, np.float64), np.asarray(baseline_sq, np.float64)
    if baseline.ndim != 4 or baseline.shape != baseline_sq.shape:
        raise ValueError(f"baseline and baseline_sq must both be [seeds, layers, tokens, neurons]; got "
                         f"{baseline.shape} and {baseline_sq.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, mean_sq = np.nanmean(baseline, axis=(0, 2)), np.nanmean(baseline_sq, axis=(0, 2))
    return np.sqrt(np.maximum(np.nan_to_num(mean_sq - mean ** 2), 0.0)).astype(np.float32)


def gaussian_scale(noise_scale: float, relative_to: str = "absolute", std=None):
    """The sigma of the "gaussian" intervention: `noise_scale` itself ("absolute", a float) or `noise_scale` times
    each neuron's TRAIN std ("train_std", float32 [L, N]; std from `neuron_train_std`)."""
    if relative_to not in NOISE_SCALES:
        raise ValueError(f"noise scale relative to {relative_to!r}; allowed: {NOISE_SCALES}")
    if not np.isfinite(noise_scale) or noise_scale < 0:
        raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale}")
    if relative_to == "absolute":
        return float(noise_scale)
    if std is None:
        raise ValueError("a noise scale relative to the train std needs each neuron's std (neuron_train_std of the "
                         "predictivity npz's 'baseline' and 'baseline_sq')")
    std = np.asarray(std, np.float32)
    if std.ndim != 2:
        raise ValueError(f"std must be [layers, neurons]; got shape {std.shape}")
    return (np.float32(noise_scale) * std).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Per-example correctness for the paired skill-vs-random test (analysis.robustness.compare_levels)
# ----------------------------------------------------------------------------------------------------------------
def example_correctness(batches, n_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every batch -> (correct int8 [..., E], labels int32 [E]) in the dev file's row order.

    batches: iterable of (scores [..., B, C], labels [B], index [B], example_mask [B]) as the evaluation sees them
    (`index` = the row of the encoded split, -1 on filler rows; batches may be in any order, e.g. sorted by
    length). Prediction = argmax of the scores, ties to the lowest label (as prompt.metrics.confusion), so the
    mean of `correct` over E equals the accuracy from the confusion matrices. Every example must appear exactly
    once (ValueError otherwise)."""
    correct, labels, seen = None, np.full(n_examples, -1, np.int64), np.zeros(n_examples, np.int64)
    for scores, batch_labels, index, example_mask in batches:
        scores = np.asarray(scores)
        batch_labels, index = np.asarray(batch_labels, np.int64), np.asarray(index, np.int64)
        keep = np.asarray(example_mask, bool) & (index >= 0)
        if scores.shape[-2] != index.size or batch_labels.size != index.size:
            raise ValueError(f"scores {scores.shape} [..., batch, labels] do not match {index.size} batch rows")
        if keep.any() and index[keep].max() >= n_examples:
            raise ValueError(f"example index {index[keep].max()} is outside the {n_examples} dev examples")
        if correct is None:
            correct = np.zeros(scores.shape[:-2] + (n_examples,), np.int8)
        rows = index[keep]
        hit = np.argmax(scores, axis=-1) == batch_labels                        # [..., B]
        correct[..., rows] = hit[..., keep]
        labels[rows] = batch_labels[keep]
        np.add.at(seen, rows, 1)
    if correct is None:
        raise ValueError("no batches: nothing was evaluated")
    if (seen != 1).any():
        bad = np.flatnonzero(seen != 1)
        raise ValueError(f"{bad.size} dev example(s) were evaluated {sorted(set(seen[bad].tolist()))} times instead "
                         f"of once (first: row {bad[0]})")
    return correct, labels.astype(np.int32)


def suppression_example_fields(correct, mask_index, labels, level_keys: Sequence[str], draws: int) -> dict:
    """The suppression JSON's optional per-example fields.

    correct int [U, S, E] (one row per distinct mask evaluated); mask_index int [(1 + D) K]: for the K skill masks
    then the D x K random masks (draw-major, as random_control_masks gives them flattened), the row of `correct`
    that holds its result; labels [E]; level_keys [K] (the JSON's level keys). Returns
    {"skill_correct": {key: [S][E] 0/1}, "random_correct": {key: [D][S][E] 0/1}, "labels": [E]}."""
    correct, mask_index = np.asarray(correct), np.asarray(mask_index, np.int64)
    num_levels = len(level_keys)
    if correct.ndim != 3:
        raise ValueError(f"correct must be [masks, seeds, examples]; got shape {correct.shape}")
    if mask_index.shape != ((1 + draws) * num_levels,):
        raise ValueError(f"mask_index must list (1 + {draws}) x {num_levels} masks; got shape {mask_index.shape}")
    per_mask = correct[mask_index].astype(int)                                 # [(1 + D) K, S, E]
    skill, random = per_mask[:num_levels], per_mask[num_levels:].reshape((draws, num_levels) + per_mask.shape[1:])
    return {"skill_correct": {key: skill[i].tolist() for i, key in enumerate(level_keys)},
            "random_correct": {key: random[:, i].tolist() for i, key in enumerate(level_keys)},
            "labels": np.asarray(labels, int).tolist()}
