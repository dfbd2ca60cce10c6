"""Skill-neuron statistics (ARCHITECTURE.md "The method, exactly", eqs. 2-5), streamed.

Activations arrive in blocks `acts` float [S, L, B, T, N] (seeds, layers, batch, tokens, neurons) with
`example_mask` bool [B] (False for filler rows that pad the last batch), `labels` int [B] (0/1, dev only)
and optionally `token_mask` bool [B, T] (False where a position holds no real token, e.g. padding when
all positions are captured). Only running sums and integer counts are kept, so memory is
O(S * L * T * N) whatever the number of examples, and all S seeds share one pass.

  eq. 2  baseline   b_s(l, n, j) = mean over TRAIN of a(l, n, j | x)     running float32 sums (Kahan-compensated)
  eq. 3  accuracy   acc_s(l, n, j) = mean over DEV of 1[1[a > b] == y]    int32 counts of correct predictions
  eq. 4  pred_s = max(acc_s, 1 - acc_s)
  eq. 5  Pred(l, n) = mean over seeds of max over tokens of pred_s        (or token mean / seed min: options)

The threshold b may instead be the median of TRAIN (options.threshold = "median"): found EXACTLY by bracketing
passes over TRAIN in the order-preserving uint32 image of float32 (see MedianState) — no activation is stored.

Every update is a jit-compiled jnp reduction over the batch axis. When `acts` is a jax.Array sharded along
the batch axis (NamedSharding over a mesh axis "data", one or many hosts), XLA inserts the cross-device
reduction and the state comes back replicated; nothing here knows about devices. (On a single CPU device the
reductions over the batch are written as unrolled elementwise chains instead: see _fold_batch.) Integer counts are exactly
the same for any sharding; the float32 baseline sums can differ in the last bits with the reduction order.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Callable, Iterable, Mapping, NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax.neurons.stats_options import StatsOptions

Shape4 = tuple[int, int, int, int]  # (S, L, T, N)


class SingleLabelWarning(UserWarning):
    """The dev split has examples of one label only: every neuron's accuracy is then meaningless."""


class ActivationBlock(NamedTuple):
    """One batch of captured activations.

    acts:          float [S, L, B, T, N]
    example_mask:  bool  [B]   False for filler rows
    labels:        int   [B]   0/1 (needed for DEV blocks only)
    token_mask:    bool  [B, T] or None (= every position is real)
    columns:       int   [B, C] or None: extra label columns counted in the same DEV pass (ColumnState), each
                   row's label in that column (a permutation's label, or the true label in a subsample) or -1
                   where the row is left out of the column
    """

    acts: jax.Array
    example_mask: jax.Array
    labels: Optional[jax.Array] = None
    token_mask: Optional[jax.Array] = None
    columns: Optional[jax.Array] = None


# ----------------------------------------------------------------------------------------------- validation

def _check_block(state_shape: Shape4, acts, example_mask, labels=None, token_mask=None, *, what: str) -> None:
    """Shapes are static: check them before tracing so errors name the arrays, not XLA internals."""
    if acts.ndim != 5:
        raise ValueError(f"{what}: activations must be [seeds, layers, batch, tokens, neurons]; got shape "
                         f"{tuple(acts.shape)}")
    s, l, b, t, n = acts.shape
    if (s, l, t, n) != tuple(state_shape):
        raise ValueError(f"{what}: activations of shape {tuple(acts.shape)} [S, L, B, T, N] do not match the "
                         f"state's shape {tuple(state_shape)} [S, L, T, N]")
    if tuple(example_mask.shape) != (b,):
        raise ValueError(f"{what}: example_mask has shape {tuple(example_mask.shape)}; expected ({b},) "
                         f"for activations of shape {tuple(acts.shape)}")
    if labels is not None and tuple(labels.shape) != (b,):
        raise ValueError(f"{what}: labels have shape {tuple(labels.shape)}; expected ({b},) "
                         f"for activations of shape {tuple(acts.shape)}")
    if token_mask is not None and tuple(token_mask.shape) != (b, t):
        raise ValueError(f"{what}: token_mask has shape {tuple(token_mask.shape)}; expected ({b}, {t}) "
                         f"for activations of shape {tuple(acts.shape)}")


def _valid(example_mask, token_mask, t: int) -> jax.Array:
    """bool [B, T]: which (example, position) pairs count."""
    valid = jnp.broadcast_to(jnp.asarray(example_mask, bool)[:, None], (example_mask.shape[0], t))
    if token_mask is not None:
        valid = valid & jnp.asarray(token_mask, bool)
    return valid


def _fold_batch(op, term, arrays, unrolled: bool):
    """op-reduction (jnp.add / minimum / maximum) over the batch axis 2 of term(*arrays), an elementwise function
    of arrays shaped [S, L, B | 1, ...] (size 1: the same for every example).

    unrolled: a chain of B elementwise ops, term(slice 0) op term(slice 1) op ..., each slice's term computed
    inside the chain. XLA's CPU reduce over a middle axis runs a strided inner loop per output element and
    materialises the term; the chain is one fused pass over contiguous rows (measured on [1, 12, 32, 100, 3072]
    float32, 2 cores: baseline sum, min and max 2.1 s -> 0.22 s). Used on a single CPU device only (see
    _unrolled); elsewhere the reduce, which XLA shards over the mesh."""
    if not unrolled:
        reducer = {jnp.add: jnp.sum, jnp.minimum: jnp.min, jnp.maximum: jnp.max}[op]
        return reducer(term(*arrays), axis=2)
    batch = max(a.shape[2] for a in arrays)
    take = lambda b: term(*(a[:, :, b if a.shape[2] > 1 else 0] for a in arrays))
    out = take(0)
    for b in range(1, batch):
        out = op(out, take(b))
    return out


def _unrolled(acts) -> bool:
    """Whether the batch reductions unroll (_fold_batch): one CPU device and no multi-device sharding."""
    sharding = getattr(acts, "sharding", None)
    one_device = sharding is None or len(sharding.device_set) == 1
    return bool(one_device and jax.default_backend() == "cpu")


def block_state_shape(acts) -> Shape4:
    """acts [S, L, B, T, N] -> the state shape (S, L, T, N)."""
    if acts.ndim != 5:
        raise ValueError(f"activations must be [seeds, layers, batch, tokens, neurons]; got shape "
                         f"{tuple(acts.shape)}")
    s, l, _, t, n = acts.shape
    return (s, l, t, n)


def to_host(x) -> np.ndarray:
    """A (possibly multi-host, replicated) jax.Array or numpy array -> numpy."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.sharding.is_fully_replicated:
            raise ValueError("statistics state is sharded across hosts; expected it replicated after the "
                             "batch reduction")
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


# --------------------------------------------------------------------------------------- eq. 2: baseline

@flax.struct.dataclass
class BaselineState:
    """Running TRAIN statistics per [seed, layer, token, neuron].

    total, compensation: float32 [S, L, T, N]  Kahan sum (true sum ~= total - compensation), so that the
                         float32 mean stays accurate over hundreds of thousands of examples
    count:               int32 [T]             examples seen at each position
    minimum, maximum:    float32 [S, L, T, N]  (they start the exact median search)
    square_total:        float32 [S, L, T, N]  sum of a^2 (each neuron's TRAIN spread: the Gaussian intervention's
                         scale relative to the train std); plain float32, as it feeds only a noise scale
    """

    total: jax.Array
    compensation: jax.Array
    count: jax.Array
    minimum: jax.Array
    maximum: jax.Array
    square_total: jax.Array

    @property
    def shape(self) -> Shape4:
        return tuple(self.total.shape)


def init_baseline(shape: Shape4) -> BaselineState:
    """shape: (S, L, T, N)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 4:
        raise ValueError(f"baseline state shape must be (seeds, layers, tokens, neurons); got {shape}")
    z = jnp.zeros(shape, jnp.float32)
    return BaselineState(total=z, compensation=z, count=jnp.zeros((shape[2],), jnp.int32),
                         minimum=jnp.full(shape, jnp.inf, jnp.float32),
                         maximum=jnp.full(shape, -jnp.inf, jnp.float32), square_total=z)


@functools.partial(jax.jit, static_argnames="unrolled")
def _update_baseline(state: BaselineState, acts, example_mask, token_mask, unrolled: bool = False) -> BaselineState:
    a = acts.astype(jnp.float32)
    valid = _valid(example_mask, token_mask, a.shape[3])
    w = valid[None, None, :, :, None]                                # [1, 1, B, T, 1]
    masked = lambda fill: (lambda x, ok: jnp.where(ok, x, fill))
    batch_sum = _fold_batch(jnp.add, masked(0.0), (a, w), unrolled)     # [S, L, T, N]
    # Kahan: `compensation` carries the low-order bits the float32 running total dropped.
    y = batch_sum - state.compensation
    total = state.total + y
    compensation = (total - state.total) - y
    return BaselineState(
        total=total, compensation=compensation,
        count=state.count + jnp.sum(valid, axis=0, dtype=jnp.int32),
        minimum=jnp.minimum(state.minimum, _fold_batch(jnp.minimum, masked(jnp.inf), (a, w), unrolled)),
        maximum=jnp.maximum(state.maximum, _fold_batch(jnp.maximum, masked(-jnp.inf), (a, w), unrolled)),
        square_total=state.square_total + _fold_batch(jnp.add, masked(0.0), (a * a, w), unrolled))


def update_baseline(state: BaselineState, acts, example_mask, token_mask=None) -> BaselineState:
    """Adds one TRAIN block. acts [S, L, B, T, N], example_mask [B], token_mask [B, T] or None."""
    _check_block(state.shape, acts, example_mask, None, token_mask, what="update_baseline")
    return _update_baseline(state, acts, example_mask, token_mask, unrolled=_unrolled(acts))


def baseline_square_mean(state: BaselineState) -> np.ndarray:
    """TRAIN mean of a^2: float32 [S, L, T, N]; NaN at positions no example reached."""
    count = to_host(state.count)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = to_host(state.square_total).astype(np.float64) / np.where(count > 0, count, np.nan)[None, None, :, None]
    return mean.astype(np.float32)


def baseline_mean(state: BaselineState) -> np.ndarray:
    """eq. 2: float32 [S, L, T, N]; NaN at positions no example reached (token_mask)."""
    count = to_host(state.count)
    if count.max(initial=0) == 0:
        raise ValueError("baseline: no TRAIN examples were seen (every example_mask row was False)")
    total = to_host(state.total).astype(np.float64) - to_host(state.compensation)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / np.where(count > 0, count, np.nan)[None, None, :, None]
    return mean.astype(np.float32)


# ------------------------------------------------------------------------- the exact median (bounded memory)

_SIGN = np.uint32(0x80000000)


def _to_key(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (negatives: all bits flipped; others: sign bit set)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where(bits >= _SIGN, ~bits, bits | _SIGN)


def _from_key(key: jax.Array) -> jax.Array:
    bits = jnp.where(key >= _SIGN, key & ~_SIGN, ~key)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


@flax.struct.dataclass
class MedianState:
    """Exact search for the lower median (the ceil(n/2)-th smallest TRAIN value) of every element.

    The median's order key lies in the inclusive bracket [lo, hi] (uint32 [S, L, T, N]). Each pass over the
    SAME train data counts, for bins - 1 candidate keys t_j splitting the bracket into `bins` near-equal
    parts, how many values have key <= t_j; the part holding rank k becomes the new bracket. Memory:
    (bins - 1) int32 counts per element; exact after at most ceil(32 / log2(bins)) passes (lo == hi).
    """

    lo: jax.Array
    hi: jax.Array
    rank: jax.Array      # int32 [T]  k = ceil(n_t / 2)
    expected: jax.Array  # int32 [T]  n_t, from the baseline pass
    seen: jax.Array      # int32 [T]  examples seen in the current pass
    counts: jax.Array    # int32 [bins - 1, S, L, T, N]
    bins: int = flax.struct.field(pytree_node=False, default=16)

    @property
    def shape(self) -> Shape4:
        return tuple(self.lo.shape)


def init_median(baseline: BaselineState, bins: int = 16) -> MedianState:
    """Starts the bracket at [min, max] of TRAIN as seen by the baseline pass."""
    if bins < 2:
        raise ValueError(f"median search needs bins >= 2, got {bins}")
    mn, mx = to_host(baseline.minimum), to_host(baseline.maximum)
    if np.isnan(mn).any() or np.isnan(mx).any():
        raise ValueError("TRAIN activations contain NaN: no median threshold exists")
    count = jnp.asarray(baseline.count, jnp.int32)
    seen_any = (count > 0)[None, None, :, None]
    # Positions no example reached: an empty bracket [0, 0], already "done"; the threshold becomes NaN there.
    lo = jnp.where(seen_any, _to_key(jnp.asarray(mn)), jnp.uint32(0))
    hi = jnp.where(seen_any, _to_key(jnp.asarray(mx)), jnp.uint32(0))
    return MedianState(lo=lo, hi=hi, rank=(count + 1) // 2, expected=count,
                       seen=jnp.zeros_like(count),
                       counts=jnp.zeros((bins - 1,) + tuple(lo.shape), jnp.int32), bins=bins)


def _cut_points(lo, hi, bins: int) -> jax.Array:
    """uint32 [bins + 1, ...]: t_0 = lo - 1 (mod 2^32), ..., t_bins = hi; part j is (t_{j-1}, t_j]."""
    size = hi - lo + jnp.uint32(1)  # no overflow: float32 keys without NaN span less than 2^32 - 1
    q, r = size // jnp.uint32(bins), size % jnp.uint32(bins)
    j = jnp.arange(bins + 1, dtype=jnp.uint32).reshape((bins + 1,) + (1,) * lo.ndim)
    return lo[None] - jnp.uint32(1) + j * q[None] + jnp.minimum(j, r[None])


@functools.partial(jax.jit, static_argnames="unrolled")
def _update_median(state: MedianState, acts, example_mask, token_mask, unrolled: bool = False) -> MedianState:
    key = _to_key(acts)                                              # [S, L, B, T, N]
    valid = _valid(example_mask, token_mask, acts.shape[3])[None, None, :, :, None]
    cuts = _cut_points(state.lo, state.hi, state.bins)
    # One fused compare-and-count per candidate (never a [bins, S, L, B, T, N] intermediate).
    below = lambda k, ok, cut: (ok & (k <= cut)).astype(jnp.int32)
    counts = jnp.stack([_fold_batch(jnp.add, below, (key, valid, cuts[j][:, :, None]), unrolled)
                        for j in range(1, state.bins)])
    return state.replace(counts=state.counts + counts,
                         seen=state.seen + jnp.sum(valid[0, 0, :, :, 0], axis=0, dtype=jnp.int32))


def update_median(state: MedianState, acts, example_mask, token_mask=None) -> MedianState:
    """Adds one TRAIN block to the current median pass."""
    _check_block(state.shape, acts, example_mask, None, token_mask, what="update_median")
    return _update_median(state, acts, example_mask, token_mask, unrolled=_unrolled(acts))


@jax.jit
def _refine_median(state: MedianState) -> MedianState:
    cuts = _cut_points(state.lo, state.hi, state.bins)
    k = state.rank[None, None, None, :, None]
    # counts are nondecreasing in j; the smallest j with count(key <= t_j) >= k holds the median
    # (count(key <= t_bins = hi) >= k by the invariant).
    j = 1 + jnp.sum(state.counts < k, axis=0)
    lo = jnp.take_along_axis(cuts, (j - 1)[None], axis=0)[0] + jnp.uint32(1)
    hi = jnp.take_along_axis(cuts, j[None], axis=0)[0]
    return state.replace(lo=lo, hi=hi, seen=jnp.zeros_like(state.seen), counts=jnp.zeros_like(state.counts))


def refine_median(state: MedianState) -> MedianState:
    """Ends a pass: narrows every bracket. The pass must have seen exactly the baseline's TRAIN examples."""
    seen, expected = to_host(state.seen), to_host(state.expected)
    if not np.array_equal(seen, expected):
        raise ValueError(f"median pass saw {seen.max(initial=0)} TRAIN examples per position, the baseline pass "
                         f"{expected.max(initial=0)}: every pass must iterate the same TRAIN data")
    return _refine_median(state)


def median_done(state: MedianState) -> bool:
    return bool(np.all(to_host(state.lo) == to_host(state.hi)))


def median_threshold(state: MedianState) -> tuple[np.ndarray, float]:
    """(threshold float32 [S, L, T, N], largest remaining bracket width; 0.0 when exact).

    Exact elements give the median itself; unfinished ones give the bracket's midpoint."""
    lo = to_host(_from_key(state.lo)).astype(np.float64)
    hi = to_host(_from_key(state.hi)).astype(np.float64)
    value = np.where(lo == hi, hi, lo + (hi - lo) / 2).astype(np.float32)
    expected = to_host(state.expected)
    value = np.where((expected > 0)[None, None, :, None], value, np.nan).astype(np.float32)
    width = hi - lo
    return value, float(np.nanmax(width, initial=0.0))


# --------------------------------------------------------------------------------------- eq. 3: accuracy

@flax.struct.dataclass
class AccuracyState:
    """Running DEV counts per [seed, layer, token, neuron] against a fixed threshold.

    threshold:       float32 [S, L, T, N]  b_s(l, n, j)
    correct:         int32 [S, L, T, N]    sum over DEV of 1[1[a > b] == y]
    count:           int32 [T]             examples seen at each position
    label_counts:    int32 [2]             DEV examples with label 0 / 1
    invalid_labels:  int32 []              DEV examples whose label is neither 0 nor 1
    """

    threshold: jax.Array
    correct: jax.Array
    count: jax.Array
    label_counts: jax.Array
    invalid_labels: jax.Array

    @property
    def shape(self) -> Shape4:
        return tuple(self.threshold.shape)


def init_accuracy(threshold) -> AccuracyState:
    """threshold: float [S, L, T, N] (a baseline mean or median)."""
    threshold = jnp.asarray(threshold, jnp.float32)
    if threshold.ndim != 4:
        raise ValueError(f"threshold must be [seeds, layers, tokens, neurons]; got shape {threshold.shape}")
    return AccuracyState(threshold=threshold, correct=jnp.zeros(threshold.shape, jnp.int32),
                         count=jnp.zeros((threshold.shape[2],), jnp.int32),
                         label_counts=jnp.zeros((2,), jnp.int32), invalid_labels=jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnames="unrolled")
def _update_accuracy(state: AccuracyState, acts, labels, example_mask, token_mask,
                     unrolled: bool = False) -> AccuracyState:
    valid = _valid(example_mask, token_mask, acts.shape[3])          # [B, T]
    positive = (labels == 1)[None, None, :, None, None]
    # 1[1[a > b] == y] on valid entries, [S, L, B, T, N]
    hit = lambda a, b, y, ok: (((a.astype(jnp.float32) > b) == y) & ok).astype(jnp.int32)
    ex = jnp.asarray(example_mask, bool)
    return AccuracyState(
        threshold=state.threshold,
        correct=state.correct + _fold_batch(
            jnp.add, hit, (acts, state.threshold[:, :, None], positive, valid[None, None, :, :, None]), unrolled),
        count=state.count + jnp.sum(valid, axis=0, dtype=jnp.int32),
        label_counts=state.label_counts + jnp.stack([jnp.sum(ex & (labels == 0), dtype=jnp.int32),
                                                     jnp.sum(ex & (labels == 1), dtype=jnp.int32)]),
        invalid_labels=state.invalid_labels + jnp.sum(ex & (labels != 0) & (labels != 1), dtype=jnp.int32))


def update_accuracy(state: AccuracyState, acts, labels, example_mask, token_mask=None) -> AccuracyState:
    """Adds one DEV block. acts [S, L, B, T, N], labels int [B], example_mask [B], token_mask [B, T] or None."""
    if labels is None:
        raise ValueError("update_accuracy: DEV blocks need labels")
    _check_block(state.shape, acts, example_mask, labels, token_mask, what="update_accuracy")
    return _update_accuracy(state, acts, labels, example_mask, token_mask, unrolled=_unrolled(acts))


def check_dev_labels(state: AccuracyState, split: str = "dev") -> np.ndarray:
    """Raises on non-binary labels or no examples; warns (SingleLabelWarning) on one label only.
    Returns the label counts int [2]."""
    invalid = int(to_host(state.invalid_labels))
    if invalid:
        raise ValueError(f"{invalid} {split} examples have labels outside {{0, 1}}: neuron accuracy (eq. 3) "
                         f"needs binary labels")
    counts = to_host(state.label_counts)
    if counts.sum() == 0:
        raise ValueError(f"neuron accuracy: no {split} examples were seen (every example_mask row was False)")
    if (counts == 0).any():
        only = int(np.argmax(counts))
        warnings.warn(
            f"the {split} split has examples of label {only} only ({int(counts[only])} examples): neuron "
            f"accuracy compares 1[a > b] with a constant label, so accuracy and predictivity are meaningless "
            f"(every neuron's predictivity is just how one-sided its activations are)",
            SingleLabelWarning, stacklevel=2)
    return counts


def neuron_accuracy(state: AccuracyState, split: str = "dev") -> np.ndarray:
    """eq. 3: float32 [S, L, T, N]; NaN at positions no example reached."""
    check_dev_labels(state, split)
    count = to_host(state.count)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = to_host(state.correct) / np.where(count > 0, count, np.nan)[None, None, :, None]
    threshold_missing = np.isnan(to_host(state.threshold))
    return np.where(threshold_missing, np.nan, acc).astype(np.float32)


# ------------------------------------------------------------ label columns: the null and matched-n subsamples

@flax.struct.dataclass
class ColumnState:
    """eq. 3's counts for C extra label columns, in the same DEV pass as AccuracyState (no second forward).

    A column gives every DEV row a label (0/1) or -1 (left out): a permutation of the dev labels (the label-
    permutation null: Pred when the labels carry nothing, at this split's n and number of prompt tokens), or the
    true labels on a subsample of m rows (Pred at a matched n). For column c:
        correct_c(s, l, j, n) = sum_b v_b in_cb [(1 - y_cb) + 1[a > b_s] (2 y_cb - 1)]
    which is one matmul of the fired bits [S, L, B, T, N] with the [B, C] matrix in (2y - 1), plus a [T, C] term.
    Memory: C * S * L * T * N int32 (e.g. 100 columns x 3 seeds x 6 layers x 20 tokens x 1536 neurons = 221 MB).

    threshold float32 [S, L, T, N]; correct int32 [C, S, L, T, N]; count int32 [C, T] (rows counted per column)
    """

    threshold: jax.Array
    correct: jax.Array
    count: jax.Array

    @property
    def shape(self) -> Shape4:
        return tuple(self.threshold.shape)


def init_columns(threshold, n_columns: int) -> ColumnState:
    threshold = jnp.asarray(threshold, jnp.float32)
    if threshold.ndim != 4:
        raise ValueError(f"threshold must be [seeds, layers, tokens, neurons]; got shape {threshold.shape}")
    c = int(n_columns)
    return ColumnState(threshold=threshold, correct=jnp.zeros((c,) + tuple(threshold.shape), jnp.int32),
                       count=jnp.zeros((c, threshold.shape[2]), jnp.int32))


@jax.jit
def _update_columns(state: ColumnState, acts, columns, example_mask, token_mask) -> ColumnState:
    valid = _valid(example_mask, token_mask, acts.shape[3])                        # [B, T]
    inside = (columns >= 0).astype(jnp.float32)                                     # [B, C]
    sign = inside * (2.0 * (columns == 1).astype(jnp.float32) - 1.0)                # [B, C]: in (2y - 1)
    base = inside * (columns == 0).astype(jnp.float32)                              # [B, C]: in (1 - y)
    fired = ((acts.astype(jnp.float32) > state.threshold[:, :, None])
             & valid[None, None, :, :, None]).astype(jnp.float32)                   # [S, L, B, T, N]
    # float32 sums of at most B terms of +-1 are exact integers
    hits = jnp.einsum("slbtn,bc->csltn", fired, sign) + jnp.einsum(
        "bt,bc->ct", valid.astype(jnp.float32), base)[:, None, None, :, None]
    return ColumnState(threshold=state.threshold, correct=state.correct + jnp.round(hits).astype(jnp.int32),
                       count=state.count + jnp.round(jnp.einsum("bt,bc->ct", valid.astype(jnp.float32),
                                                                inside)).astype(jnp.int32))


def update_columns(state: ColumnState, acts, columns, example_mask, token_mask=None) -> ColumnState:
    """Adds one DEV block's label columns int [B, C] (ActivationBlock.columns)."""
    _check_block(state.shape, acts, example_mask, None, token_mask, what="update_columns")
    if columns is None or tuple(columns.shape) != (acts.shape[2], state.correct.shape[0]):
        raise ValueError(f"update_columns: label columns of shape {None if columns is None else tuple(columns.shape)}"
                         f"; expected ({acts.shape[2]}, {state.correct.shape[0]})")
    return _update_columns(state, acts, columns, example_mask, token_mask)


def column_predictivity(state: ColumnState, options: StatsOptions = StatsOptions()) -> tuple[np.ndarray, np.ndarray]:
    """-> (Pred [C, L, N], per seed [C, S, L, N]) of every column (eqs. 3-5 on its rows), one column at a time."""
    correct, count = to_host(state.correct), to_host(state.count)
    threshold_missing = np.isnan(to_host(state.threshold))
    preds, per_seeds = [], []
    for c in range(correct.shape[0]):
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = correct[c] / np.where(count[c] > 0, count[c], np.nan)[None, None, :, None]
        acc = np.where(threshold_missing, np.nan, acc).astype(np.float32)
        pred, per_seed = aggregate(token_predictivity(acc), options)
        preds.append(pred)
        per_seeds.append(per_seed)
    return np.stack(preds), np.stack(per_seeds)


def null_summary(pred: np.ndarray, per_seed: np.ndarray) -> dict[str, np.ndarray]:
    """Pred [R, L, N] and per seed [R, S, L, N] of R label permutations -> what the analysis needs of the null:
    null_pred_layer_mean / null_pred_layer_max [R, L] (the floor and the best neuron per layer),
    null_pred_max [R] (the best neuron of the model), null_pred_per_seed_max [R, S], and null_pred [R, L, N] itself
    (R x L x N float32: e.g. 100 x 12 x 3072 = 15 MB) for statistics of the ranking, such as the depth of the top
    neurons under the null."""
    return {"null_pred": pred.astype(np.float32), "null_pred_layer_mean": pred.mean(2).astype(np.float32),
            "null_pred_layer_max": pred.max(2).astype(np.float32),
            "null_pred_max": pred.reshape(pred.shape[0], -1).max(1).astype(np.float32),
            "null_pred_per_seed_max": per_seed.reshape(per_seed.shape[:2] + (-1,)).max(2).astype(np.float32)}


def label_columns(labels: np.ndarray, permutations: int, subsample_sizes=(), subsample_draws: int = 1,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The label columns of a DEV split with labels int [E] (file order) -> (columns int [E, C], sizes int [C]):
    first `permutations` columns of the labels permuted over all E rows (sizes E), then for each m in
    subsample_sizes with m < E, `subsample_draws` columns of the true labels on m rows drawn without replacement
    (-1 elsewhere; sizes m). Deterministic in `seed`."""
    labels = np.asarray(labels, np.int32)
    rng = np.random.default_rng(seed)
    cols, sizes = [], []
    for _ in range(int(permutations)):
        cols.append(labels[rng.permutation(labels.size)])
        sizes.append(labels.size)
    for m in subsample_sizes:
        if int(m) >= labels.size:
            continue
        for _ in range(int(subsample_draws)):
            col = np.full(labels.size, -1, np.int32)
            rows = rng.choice(labels.size, int(m), replace=False)
            col[rows] = labels[rows]
            cols.append(col)
            sizes.append(int(m))
    if not cols:
        return np.zeros((labels.size, 0), np.int32), np.zeros((0,), np.int32)
    return np.stack(cols, 1).astype(np.int32), np.asarray(sizes, np.int32)


# ------------------------------------------------------------------------------ eqs. 4-5: predictivity

def token_predictivity(acc: np.ndarray) -> np.ndarray:
    """eq. 4: pred_s = max(acc_s, 1 - acc_s), same shape."""
    acc = np.asarray(acc)
    return np.maximum(acc, 1.0 - acc)


# Tables of the aggregations (positions that no example reached are NaN and skipped).
TOKEN_AGGREGATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "max": lambda p: np.nanmax(p, axis=2),
    "mean": lambda p: np.nanmean(p, axis=2),
}
SEED_AGGREGATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda p: np.mean(p, axis=0),
    "min": lambda p: np.min(p, axis=0),
}


def aggregate(pred_tokens: np.ndarray, options: StatsOptions = StatsOptions()) -> tuple[np.ndarray, np.ndarray]:
    """eq. 5: pred_tokens [S, L, T, N] -> (Pred [L, N], per seed [S, L, N])."""
    pred_tokens = np.asarray(pred_tokens)
    if pred_tokens.ndim != 4:
        raise ValueError(f"pred_tokens must be [seeds, layers, tokens, neurons]; got shape {pred_tokens.shape}")
    if np.isnan(pred_tokens).all(axis=2).any():
        raise ValueError("some neurons have no token position with DEV data: cannot aggregate over tokens")
    per_seed = TOKEN_AGGREGATIONS[options.token_aggregation](pred_tokens).astype(np.float32)
    return SEED_AGGREGATIONS[options.seed_aggregation](per_seed).astype(np.float32), per_seed


# ------------------------------------------------------------------------------------- the whole stage

@dataclasses.dataclass
class NeuronStatistics:
    """Everything one stream (e.g. the encoder's prompt tokens, or T5's first decoder step) gives.

    baseline [S, L, T, N]   eq. 2 TRAIN mean          threshold [S, L, T, N]  b used in eq. 3 (mean or median)
    acc [S, L, T, N]        eq. 3                       correct int32 [S, L, T, N]: its DEV counts
    pred_per_seed [S, L, N] token-aggregated eq. 4      pred [L, N]: eq. 5
    n_train, n_dev: examples (at the best-covered position); dev_label_counts [2]
    median_passes / median_width: passes over TRAIN of the median search and its remaining bracket (0 = exact)
    """

    baseline: np.ndarray
    threshold: np.ndarray
    acc: np.ndarray
    correct: np.ndarray
    pred_per_seed: np.ndarray
    pred: np.ndarray
    n_train: int
    n_dev: int
    dev_label_counts: np.ndarray
    median_passes: int = 0
    median_width: float = 0.0
    baseline_sq: Optional[np.ndarray] = None   # TRAIN mean of a^2 [S, L, T, N]
    # the DEV blocks' label columns (ActivationBlock.columns): Pred [C, L, N] and per seed [C, S, L, N]; None
    # when the blocks carried none
    column_pred: Optional[np.ndarray] = None
    column_pred_per_seed: Optional[np.ndarray] = None


Blocks = Mapping[str, ActivationBlock]


@dataclasses.dataclass
class TrainSummary:
    """What the TRAIN passes give one stream: baseline (eq. 2) and threshold float32 [S, L, T, N] (equal for
    threshold "mean"), the number of TRAIN examples, and the median search's passes / remaining bracket width.
    Saved with the results, it lets another DEV split reuse a baseline (adversarial sets use the clean TRAIN)."""

    baseline: np.ndarray
    threshold: np.ndarray
    n_train: int
    median_passes: int = 0
    median_width: float = 0.0
    baseline_sq: Optional[np.ndarray] = None   # TRAIN mean of a^2 [S, L, T, N] (None: an older result reused)


def _as_streams(item) -> Blocks:
    if isinstance(item, ActivationBlock):
        return {"": item}
    if isinstance(item, Mapping):
        return item
    raise TypeError(f"expected an ActivationBlock or a mapping name -> ActivationBlock, got {type(item).__name__}")


def _unwrap(out: dict, single: bool):
    return out[""] if single and set(out) == {""} else out


def summarize_train(train_blocks: Callable[[], Iterable], options: StatsOptions = StatsOptions()):
    """Passes over TRAIN -> TrainSummary (or a dict stream -> TrainSummary for mapping items).

    train_blocks() must return a fresh iterable over the same TRAIN blocks each call (the median needs several
    passes). Each item is an ActivationBlock, or a mapping stream name -> ActivationBlock so that one model
    forward feeds several streams (T5: "encoder" and "decoder")."""
    states: dict[str, BaselineState] = {}
    single = None
    for item in train_blocks():
        single = isinstance(item, ActivationBlock) if single is None else single
        for name, blk in _as_streams(item).items():
            if name not in states:
                states[name] = init_baseline(block_state_shape(blk.acts))
            states[name] = update_baseline(states[name], blk.acts, blk.example_mask, blk.token_mask)
    if not states:
        raise ValueError("the TRAIN iterator yielded no blocks")
    out = {name: TrainSummary(baseline=baseline_mean(st), threshold=baseline_mean(st),
                              n_train=int(to_host(st.count).max()), baseline_sq=baseline_square_mean(st))
           for name, st in states.items()}
    if options.threshold == "median":
        medians = {name: init_median(st, options.median_bins) for name, st in states.items()}
        passes = 0
        while passes < options.median_max_passes and not all(map(median_done, medians.values())):
            for item in train_blocks():
                for name, blk in _as_streams(item).items():
                    medians[name] = update_median(medians[name], blk.acts, blk.example_mask, blk.token_mask)
            medians = {name: refine_median(m) for name, m in medians.items()}
            passes += 1
        for name, summary in out.items():
            summary.threshold, summary.median_width = median_threshold(medians[name])
            summary.median_passes = passes
    return _unwrap(out, single)


def evaluate_dev(train, dev_blocks: Iterable, options: StatsOptions = StatsOptions(), split: str = "dev"):
    """One DEV pass against TRAIN summaries -> NeuronStatistics (or a dict stream -> NeuronStatistics).

    train: a TrainSummary, or a dict stream -> TrainSummary matching the DEV items' streams."""
    summaries = {"": train} if isinstance(train, TrainSummary) else dict(train)
    acc_states = {name: init_accuracy(s.threshold) for name, s in summaries.items()}
    column_states: dict[str, ColumnState] = {}
    single = None
    for item in dev_blocks:
        single = isinstance(item, ActivationBlock) if single is None else single
        for name, blk in _as_streams(item).items():
            if name not in acc_states:
                raise ValueError(f"{split} stream {name!r} has no TRAIN baseline; TRAIN streams: {sorted(acc_states)}")
            acc_states[name] = update_accuracy(acc_states[name], blk.acts, blk.labels, blk.example_mask,
                                               blk.token_mask)
            if blk.columns is not None:
                if name not in column_states:
                    column_states[name] = init_columns(summaries[name].threshold, blk.columns.shape[1])
                column_states[name] = update_columns(column_states[name], blk.acts, blk.columns,
                                                     blk.example_mask, blk.token_mask)
    if single is None:
        raise ValueError(f"the {split} iterator yielded no blocks")
    out = {}
    for name, summary in summaries.items():
        state = acc_states[name]
        acc = neuron_accuracy(state, split)
        pred, per_seed = aggregate(token_predictivity(acc), options)
        out[name] = NeuronStatistics(
            baseline=summary.baseline, threshold=summary.threshold, acc=acc, correct=to_host(state.correct),
            pred_per_seed=per_seed, pred=pred, n_train=summary.n_train, n_dev=int(to_host(state.count).max()),
            dev_label_counts=to_host(state.label_counts), median_passes=summary.median_passes,
            median_width=summary.median_width, baseline_sq=summary.baseline_sq)
        if name in column_states:
            out[name].column_pred, out[name].column_pred_per_seed = column_predictivity(column_states[name],
                                                                                        options)
    return _unwrap(out, single)


def compute_statistics(train_blocks: Callable[[], Iterable], dev_blocks: Iterable,
                       options: StatsOptions = StatsOptions(), split: str = "dev"):
    """TRAIN passes (baseline / median) then one DEV pass -> NeuronStatistics.

    Items are ActivationBlocks (returns one NeuronStatistics) or mappings stream -> ActivationBlock (returns a
    dict stream -> NeuronStatistics). For adversarial tasks pass the CLEAN task's TRAIN and the adversarial DEV.
    """
    return evaluate_dev(summarize_train(train_blocks, options), dev_blocks, options, split)
