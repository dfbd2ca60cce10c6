"""Task specificity of neurons: Spearman rank correlation of predictivities between datasets (Figures 3 and 8).

For datasets a, b with predictivities Pred_a, Pred_b [L, N]:
  rho_l(a, b) = Spearman correlation over the N neurons of layer l (average ranks for ties, as scipy.stats.spearmanr)
  rho(a, b)   = mean over layers l of rho_l(a, b)                                               (Figure 3)
A layer in which either dataset's predictivities are all equal has no defined rank correlation; it is left out of
the mean (and of the permutation test, consistently).

Z-scored matrix (Figure 8): the original code (robust-neurons `correlation_matrix_across_layer(normalize=True)`)
z-scores the layer-averaged matrix entries with the mean and standard deviation (ddof=0) of its off-diagonal
upper-triangle entries, so the figure shows how far each pair is above or below the typical pair. (Z-scoring the
predictivities themselves before a rank correlation would change nothing: ranks are invariant to it.)

Significance (replacing the original's average of per-layer p-values, which is not a p-value): ONE statistic, the
layer-averaged correlation rho(a, b); its null distribution comes from permuting the neuron labels of b within each
layer (an independent permutation per layer: neurons are exchangeable only within a layer), recomputing rho the same
way; one-sided p = (1 + #{null >= observed}) / (1 + n_perm). All pairs share the same permutations (each pair's test
is still an exact permutation test; it makes the whole matrix cost one matrix product per permutation).
What this test asks: "are the two datasets' neuron rankings more alike than if the neurons were interchangeable?"
With thousands of neurons its null sd is about 1/sqrt(N) (~0.005 for 36,864 neurons), so nearly every pair is
"significant" whatever the task types (ARCHITECTURE.md trap 8). A small p-value says only that the correlation is
not zero; it says nothing about task types.

The test the paper's claim needs (`type_permutation_test`): statistic = mean correlation over pairs of datasets
of the SAME task type minus the mean over pairs of DIFFERENT types; null = the task-type labels permuted across
the datasets (each dataset keeps its predictivities; the number of datasets per type is kept). Every distinct
assignment is enumerated when there are at most `max_exact` of them (p = share of assignments whose statistic is
>= the observed one, the observed assignment included), else `n_perm` Monte Carlo assignments with a seed
(p = (1 + #{null >= obs}) / (1 + n_perm)). A small p-value means: the datasets' actual task types separate high
from low correlations better than almost any relabelling of the same datasets does. With few datasets the
smallest attainable p is 1 / #assignments (e.g. 1/3 for two datasets of one type and one of another): such a
study cannot reach significance whatever the data, and the report says so.

The ceiling (`seed_split_reliability`): how well Pred agrees with itself when the prompt seeds are split into two
halves (Pred of each half = mean over its seeds of the per-seed predictivity; correlation = the layer-averaged
Spearman above, averaged over every split into halves). Two datasets cannot correlate better than about
sqrt(rel_a * rel_b) (attenuation by unreliability); the Spearman-Brown value 2r / (1 + r) estimates the
reliability of the full-seed average. It measures prompt-seed noise only, not the dev sample's.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

# Bytes of permuted standardized ranks held at once ([chunk, datasets, layers, neurons] float64).
_CHUNK_BYTES = 64 * 2 ** 20
# Floating-point slack for "null >= observed": a permutation that reproduces the data must count as >=.
_TIE_TOL = 1e-12


def standardized_ranks(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pred [L, N] -> (z [L, N], valid [L]): per layer, average ranks centred and scaled to unit variance
    (ddof=0), so the mean of z_a * z_b over neurons is the Spearman correlation. Constant layers: z = 0, invalid."""
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 2 or pred.shape[1] < 2:
        raise ValueError(f"predictivities must be [layers, neurons] with at least 2 neurons, got shape {pred.shape}")
    if not np.all(np.isfinite(pred)):
        raise ValueError("predictivities contain NaN or infinite values")
    r = rankdata(pred, axis=1)
    r -= r.mean(axis=1, keepdims=True)
    sd = r.std(axis=1, keepdims=True)
    valid = sd[:, 0] > 0
    z = np.where(valid[:, None], r / np.where(sd > 0, sd, 1.0), 0.0)
    return z, valid


def layer_spearman(pred_a: np.ndarray, pred_b: np.ndarray) -> np.ndarray:
    """Spearman correlation per layer, [L]; NaN where either layer is constant."""
    za, va = standardized_ranks(pred_a)
    zb, vb = standardized_ranks(pred_b)
    _check_same_shape({"a": za, "b": zb})
    rho = np.mean(za * zb, axis=1)
    return np.where(va & vb, rho, np.nan)


@dataclasses.dataclass
class SpecificityResult:
    """tasks [D]; per_layer [L, D, D] (NaN for undefined layers); mean [D, D] (layer average, NaN if no layer);
    zscored [D, D] or None (needs >= 3 tasks); pvalues [D, D] or None (NaN diagonal); n_perm, seed."""

    tasks: list[str]
    per_layer: np.ndarray
    mean: np.ndarray
    zscored: np.ndarray | None = None
    pvalues: np.ndarray | None = None
    n_perm: int = 0
    seed: int | None = None


def _stack(preds: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray]:
    tasks = list(preds)
    if len(tasks) < 2:
        raise ValueError(f"task specificity needs predictivities of at least 2 datasets, got {tasks}")
    zs = {t: standardized_ranks(preds[t]) for t in tasks}
    _check_same_shape({t: z for t, (z, _) in zs.items()})
    return tasks, np.stack([zs[t][0] for t in tasks]), np.stack([zs[t][1] for t in tasks])


def _check_same_shape(arrays: Mapping[str, np.ndarray]) -> None:
    shapes = {k: v.shape for k, v in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"predictivities must share one [layers, neurons] shape (one model); got {shapes}")


def _pair_stat(z: np.ndarray, zp: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """z [D, L, N] and zp [..., D, L, N] -> [..., D, D] layer-averaged correlations (rows: z, columns: zp)."""
    D, L, N = z.shape
    prod = np.matmul(zp.reshape(zp.shape[:-3] + (D, L * N)), z.reshape(D, L * N).T)   # [..., D(zp), D(z)]
    prod = np.swapaxes(prod, -1, -2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_valid > 0, prod / (N * np.maximum(n_valid, 1)), np.nan)


def spearman_matrix(preds: Mapping[str, np.ndarray]) -> SpecificityResult:
    """Layer-wise and layer-averaged Spearman matrices for {task: Pred [L, N]} (insertion order kept)."""
    tasks, z, valid = _stack(preds)
    per_layer = np.einsum("aln,bln->lab", z, z) / z.shape[-1]
    both = valid[:, None, :] & valid[None, :, :]                                  # [D, D, L]
    per_layer = np.where(np.moveaxis(both, -1, 0), per_layer, np.nan)
    n_valid = both.sum(-1)
    mean = _pair_stat(z, z, n_valid)
    return SpecificityResult(tasks=tasks, per_layer=per_layer, mean=mean)


def zscore_matrix(matrix: np.ndarray) -> np.ndarray:
    """Figure 8: (M - mean(v)) / std(v) with v the off-diagonal upper-triangle entries of M (ddof=0)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square correlation matrix, got shape {matrix.shape}")
    v = matrix[np.triu_indices(matrix.shape[0], k=1)]
    v = v[np.isfinite(v)]
    if v.size < 2 or np.std(v) == 0:
        raise ValueError(f"z-scoring needs at least 2 distinct off-diagonal correlations (at least 3 datasets); "
                         f"got {v.size} finite value(s)")
    return (matrix - v.mean()) / v.std()


@dataclasses.dataclass
class PermutationResult:
    statistic: float            # observed layer-averaged Spearman correlation
    p_value: float              # (1 + #{null >= statistic}) / (1 + n_perm), one-sided (greater)
    null: np.ndarray            # [n_perm] the statistic under within-layer permutations
    n_perm: int
    seed: int


def _permutation_null(z: np.ndarray, valid: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
    """[n_perm, D, D]: entry [p, a, b] is the statistic of a against b with b's neurons permuted (permutation p)."""
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    D, L, N = z.shape
    n_valid = (valid[:, None, :] & valid[None, :, :]).sum(-1)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_perm, _CHUNK_BYTES // (D * L * N * 8)))
    base = np.broadcast_to(np.arange(N), (chunk, L, N))
    out = np.empty((n_perm, D, D))
    for start in range(0, n_perm, chunk):
        c = min(chunk, n_perm - start)
        idx = rng.permuted(base[:c], axis=-1)                                      # [c, L, N]: one per layer
        zp = np.take_along_axis(z[None], idx[:, None], axis=-1)                     # [c, D, L, N]
        out[start:start + c] = _pair_stat(z, zp, n_valid)
    return out


def permutation_test(pred_a: np.ndarray, pred_b: np.ndarray, n_perm: int = 1000, seed: int = 0
                     ) -> PermutationResult:
    """Tests rho(a, b) > 0 against within-layer permutations of b's neuron labels (see the module docstring)."""
    tasks, z, valid = _stack({"a": pred_a, "b": pred_b})
    n_valid = (valid[:, None, :] & valid[None, :, :]).sum(-1)
    observed = float(_pair_stat(z, z, n_valid)[0, 1])
    if not np.isfinite(observed):
        raise ValueError("no layer where both datasets' predictivities vary: the correlation is undefined")
    null = _permutation_null(z, valid, n_perm, seed)[:, 0, 1]
    p = (1 + int(np.sum(null >= observed - _TIE_TOL))) / (1 + n_perm)
    return PermutationResult(statistic=observed, p_value=p, null=null, n_perm=n_perm, seed=seed)


def permutation_pvalues(preds: Mapping[str, np.ndarray], n_perm: int = 1000, seed: int = 0) -> np.ndarray:
    """[D, D] one-sided permutation p-values for every pair (symmetric, from the upper triangle; NaN diagonal and
    NaN where the correlation is undefined)."""
    tasks, z, valid = _stack(preds)
    D = len(tasks)
    n_valid = (valid[:, None, :] & valid[None, :, :]).sum(-1)
    observed = _pair_stat(z, z, n_valid)
    null = _permutation_null(z, valid, n_perm, seed)
    p = (1 + np.sum(null >= observed[None] - _TIE_TOL, axis=0)) / (1 + n_perm)
    p = np.where(np.isfinite(observed), p, np.nan)
    iu = np.triu_indices(D, k=1)
    out = np.full((D, D), np.nan)
    out[iu] = p[iu]
    out[(iu[1], iu[0])] = p[iu]
    return out


def analyse(preds: Mapping[str, np.ndarray], n_perm: int = 1000, seed: int = 0) -> SpecificityResult:
    """Everything for Figures 3 and 8: matrices, z-scored matrix (when >= 3 datasets) and permutation p-values."""
    res = spearman_matrix(preds)
    if len(res.tasks) >= 3:
        try:
            res.zscored = zscore_matrix(res.mean)
        except ValueError:
            res.zscored = None
    if n_perm > 0:
        res.pvalues = permutation_pvalues(preds, n_perm=n_perm, seed=seed)
        res.n_perm, res.seed = n_perm, seed
    return res


def within_between(matrix: np.ndarray, tasks: Sequence[str], types: Mapping[str, str],
                   exclude_pairs: Sequence[tuple[str, str]] = ()) -> dict[str, float]:
    """Mean off-diagonal correlation between datasets of the same task type vs of different types
    (adversarial sets count as their clean task's type). NaN when a group is empty. `exclude_pairs` (unordered
    dataset pairs) are left out of both means."""
    matrix = np.asarray(matrix, dtype=np.float64)
    excluded = {frozenset(pair) for pair in exclude_pairs}
    within, between = [], []
    for i in range(len(tasks)):
        for j in range(i + 1, len(tasks)):
            if np.isfinite(matrix[i, j]) and frozenset((tasks[i], tasks[j])) not in excluded:
                (within if types.get(tasks[i]) == types.get(tasks[j]) else between).append(matrix[i, j])
    return {"within": float(np.mean(within)) if within else float("nan"), "n_within": len(within),
            "between": float(np.mean(between)) if between else float("nan"), "n_between": len(between)}


@dataclasses.dataclass
class TypeTestResult:
    """Within-type minus between-type mean correlation, tested against permutations of task-type labels.

    within / between: the observed means (n_within / n_between pairs); statistic = within - between;
    p_value: one-sided (greater), see the module docstring; exact: every distinct assignment enumerated
    (n_assignments of them) or Monte Carlo (n_perm draws with `seed`); min_p: the smallest p the design allows;
    null [n]: the statistic under each assignment (NaN where a relabelling leaves a group empty);
    excluded_pairs: pairs left out of both means."""

    tasks: list[str]
    types: list[str]
    within: float
    between: float
    n_within: int
    n_between: int
    statistic: float
    p_value: float
    exact: bool
    n_assignments: int
    n_perm: int
    seed: int | None
    min_p: float
    null: np.ndarray
    excluded_pairs: list[tuple[str, str]]


def _distinct_assignments(labels: Sequence[int]) -> int:
    """Number of distinct orderings of a multiset of labels: D! / prod(n_t!)."""
    counts = np.bincount(np.asarray(labels, int))
    return math.factorial(len(labels)) // math.prod(math.factorial(int(c)) for c in counts)


def _renamings(labels: Sequence[int]) -> int:
    """How many assignments give the observed partition: the statistic depends only on which datasets share a
    type, so swapping the names of two equal-sized types ties with it (sizes 2, 2, 1, 1: 2! * 2! = 4). The exact
    test's smallest possible p is this over the number of assignments, not 1 / n_assignments."""
    sizes = np.bincount(np.asarray(labels, int))
    return math.prod(math.factorial(int(c)) for c in np.bincount(sizes[sizes > 0]))


def _multiset_permutations(labels: Sequence[int]):
    """Every distinct ordering of `labels` once, in lexicographic order (sorted start, next-permutation steps)."""
    current = sorted(labels)
    while True:
        yield tuple(current)
        i = len(current) - 2
        while i >= 0 and current[i] >= current[i + 1]:
            i -= 1
        if i < 0:
            return
        j = len(current) - 1
        while current[j] <= current[i]:
            j -= 1
        current[i], current[j] = current[j], current[i]
        current[i + 1:] = reversed(current[i + 1:])


def _type_statistic(values: np.ndarray, pair_i: np.ndarray, pair_j: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """labels [n, D] int -> [n]: mean of `values` over same-label pairs minus over different-label pairs."""
    same = labels[:, pair_i] == labels[:, pair_j]                                # [n, pairs]
    n_same, n_diff = same.sum(1), (~same).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        within = np.where(n_same > 0, (same * values).sum(1) / np.maximum(n_same, 1), np.nan)
        between = np.where(n_diff > 0, (~same * values).sum(1) / np.maximum(n_diff, 1), np.nan)
    return within - between


def type_permutation_test(matrix: np.ndarray, tasks: Sequence[str], types: Mapping[str, str], *,
                          n_perm: int = 10000, seed: int = 0, max_exact: int = 100000,
                          exclude_pairs: Sequence[tuple[str, str]] = ()) -> TypeTestResult:
    """Within-type vs between-type mean correlation of the [D, D] matrix, null = task-type labels permuted across
    datasets (module docstring). Datasets missing from `types` get their own type "other:<name>". Raises
    ValueError when there is no within-type pair or no between-type pair to compare."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tasks = list(tasks)
    if matrix.shape != (len(tasks), len(tasks)):
        raise ValueError(f"matrix has shape {matrix.shape} but {len(tasks)} datasets were named")
    type_names = [types.get(t, f"other:{t}") for t in tasks]
    codes = {name: i for i, name in enumerate(dict.fromkeys(type_names))}
    labels = np.array([codes[name] for name in type_names])
    excluded = {frozenset(pair) for pair in exclude_pairs}
    pairs = [(i, j) for i in range(len(tasks)) for j in range(i + 1, len(tasks))
             if np.isfinite(matrix[i, j]) and frozenset((tasks[i], tasks[j])) not in excluded]
    if not pairs:
        raise ValueError("no dataset pair with a defined correlation")
    pair_i, pair_j = (np.array(x) for x in zip(*pairs))
    values = matrix[pair_i, pair_j]
    observed = float(_type_statistic(values, pair_i, pair_j, labels[None])[0])
    means = within_between(matrix, tasks, dict(zip(tasks, type_names)), exclude_pairs)
    if not np.isfinite(observed):
        raise ValueError(f"the within/between comparison needs at least one pair of the same task type and one of "
                         f"different types; types here: {dict(zip(tasks, type_names))}")
    n_assignments = _distinct_assignments(labels)
    exact = n_assignments <= max_exact
    if exact:
        null = _type_statistic(values, pair_i, pair_j, np.array(list(_multiset_permutations(labels))))
        p = float(np.sum(null >= observed - _TIE_TOL)) / n_assignments
        min_p, used_perm, used_seed = _renamings(labels) / n_assignments, 0, None
    else:
        if n_perm < 1:
            raise ValueError(f"n_perm must be >= 1, got {n_perm}")
        rng = np.random.default_rng(seed)
        assignments = rng.permuted(np.broadcast_to(labels, (n_perm, labels.size)), axis=1)
        null = _type_statistic(values, pair_i, pair_j, assignments)
        p = (1 + float(np.sum(null >= observed - _TIE_TOL))) / (1 + n_perm)
        min_p, used_perm, used_seed = 1.0 / (1 + n_perm), n_perm, seed
    return TypeTestResult(tasks=tasks, types=type_names, within=means["within"], between=means["between"],
                          n_within=means["n_within"], n_between=means["n_between"], statistic=observed, p_value=p,
                          exact=exact, n_assignments=n_assignments, n_perm=used_perm, seed=used_seed, min_p=min_p,
                          null=null, excluded_pairs=[tuple(sorted(pair)) for pair in excluded])


def per_seed_predictivity(acc: np.ndarray) -> np.ndarray:
    """acc [S, L, T, N] (eq. 3) -> [S, L, N]: per seed, the max over prompt tokens of max(acc, 1 - acc) (eqs. 4-5
    before the seed mean). The predictivity npz's `pred_per_seed` holds the same (for the token aggregation its
    options chose); use this when only `acc` is at hand."""
    acc = np.asarray(acc, dtype=np.float64)
    if acc.ndim != 4:
        raise ValueError(f"acc must be [seeds, layers, tokens, neurons], got shape {acc.shape}")
    return np.maximum(acc, 1.0 - acc).max(axis=2)


@dataclasses.dataclass
class ReliabilityResult:
    """Split-half reliability of Pred over prompt seeds: split_half = mean over splits of the layer-averaged
    Spearman between the two halves' Pred; spearman_brown = 2r / (1 + r) (the full-seed estimate); per_split [n];
    n_seeds; n_splits (every split of the seeds into halves of floor(S/2) and ceil(S/2), each split once)."""

    split_half: float
    spearman_brown: float
    per_split: np.ndarray
    n_seeds: int
    n_splits: int


def seed_split_reliability(pred_per_seed: np.ndarray) -> ReliabilityResult:
    """pred_per_seed [S, L, N] (S >= 2) -> the agreement of Pred with itself across halves of the seeds."""
    pred_per_seed = np.asarray(pred_per_seed, dtype=np.float64)
    if pred_per_seed.ndim != 3:
        raise ValueError(f"per-seed predictivities must be [seeds, layers, neurons], got shape {pred_per_seed.shape}")
    n_seeds = pred_per_seed.shape[0]
    if n_seeds < 2:
        raise ValueError(f"split-half reliability needs at least 2 seeds, got {n_seeds}")
    half = n_seeds // 2
    splits = []
    for first in itertools.combinations(range(n_seeds), half):
        rest = tuple(s for s in range(n_seeds) if s not in first)
        if 2 * half == n_seeds and rest < first:      # equal halves: (A, B) and (B, A) are one split
            continue
        splits.append((list(first), list(rest)))
    per_split = []
    for first, rest in splits:
        rho = layer_spearman(pred_per_seed[first].mean(0), pred_per_seed[rest].mean(0))
        per_split.append(np.nanmean(rho) if np.any(np.isfinite(rho)) else np.nan)
    per_split = np.asarray(per_split)
    r = float(np.nanmean(per_split)) if np.any(np.isfinite(per_split)) else float("nan")
    brown = 2 * r / (1 + r) if np.isfinite(r) and r > -1 else float("nan")
    return ReliabilityResult(split_half=r, spearman_brown=brown, per_split=per_split, n_seeds=n_seeds,
                             n_splits=len(splits))
