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

Interventions (models.ffn.Intervention): "zero" (the paper), "mean" (the TRAIN mean per [layer, neuron],
averaged over prompt tokens and seeds), "gaussian" (keep the activation, add N(0, scale^2)). Masks for many
levels are stacked [K, L, N]; `stacked_interventions` gives one Intervention whose every leaf has the leading
K axis, so one compiled evaluation serves every level (jax.vmap, jax.lax.map, or a Python loop over
`take(stacked, i)` — the shapes never change, so nothing recompiles).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax.models.ffn import Intervention

SCOPES = ("layer", "global")
DEFAULT_PERCENTS = (0, 1, 3, 5, 7, 9, 11, 13, 15)
INTERVENTION_KINDS = ("zero", "mean", "gaussian")


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


def random_masks(counts, num_neurons: int, seed: int, draws: int) -> np.ndarray:
    """bool [D, K, L, N]: counts[k, l] uniformly random neurons in layer l, for D fixed draws.

    counts: int [K, L] (e.g. counts_per_layer(skill_masks(...))). Draw d, layer l uses the first counts[k, l]
    entries of one permutation from numpy Generator([seed, d]), so masks are nested across k."""
    counts = np.asarray(counts, int)
    if counts.ndim != 2:
        raise ValueError(f"counts must be [levels, layers]; got shape {counts.shape}")
    if draws < 1:
        raise ValueError(f"random controls need draws >= 1, got {draws}")
    if (counts < 0).any() or (counts > num_neurons).any():
        raise ValueError(f"counts per layer must lie in [0, {num_neurons}]; got {counts.min()}..{counts.max()}")
    num_levels, num_layers = counts.shape
    out = np.zeros((draws, num_levels, num_layers, num_neurons), bool)
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        for layer in range(num_layers):
            perm = rng.permutation(num_neurons)
            for k in range(num_levels):
                out[d, k, layer, perm[:counts[k, layer]]] = True
    return out


def random_control_masks(masks, seed: int, draws: int) -> np.ndarray:
    """bool [D, K, L, N]: random neurons with the same count per layer as masks [K, L, N]."""
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [levels, layers, neurons]; got shape {masks.shape}")
    return random_masks(counts_per_layer(masks), masks.shape[-1], seed, draws)


def layer_means(baseline) -> np.ndarray:
    """float32 [L, N]: the TRAIN baseline [S, L, T, N] averaged over seeds and tokens (the "mean" intervention)."""
    baseline = np.asarray(baseline, np.float64)
    if baseline.ndim != 4:
        raise ValueError(f"baseline must be [seeds, layers, tokens, neurons]; got shape {baseline.shape}")
    return np.nanmean(baseline, axis=(0, 2)).astype(np.float32)


def stacked_interventions(masks, kind: str = "zero", *, means=None, scale: Optional[float] = None,
                          rng: Optional[jax.Array] = None, positions=None) -> Intervention:
    """One Intervention for masks bool [..., L, N]; every leaf gets the leading [...] axes.

    kind "zero": a -> 0;  "mean": a -> means [L, N];  "gaussian": a -> a + scale * N(0, 1) with keys split
    from `rng` (one per mask). positions: bool [T_full] (which positions of the full sequence) or None = all.
    """
    masks = jnp.asarray(masks, bool)
    if masks.ndim < 2:
        raise ValueError(f"masks must be [..., layers, neurons]; got shape {masks.shape}")
    lead = masks.shape[:-2]
    builders = {
        "zero": lambda: Intervention.zero(masks),
        "mean": lambda: Intervention.mean(masks, _required(means, "means", kind)),
        "gaussian": lambda: Intervention.gaussian(
            masks, _required(scale, "scale", kind),
            jax.random.split(_required(rng, "rng", kind), int(np.prod(lead, dtype=int))).reshape(
                lead + jax.random.split(rng, 1).shape[1:])),
    }
    if kind not in builders:
        raise ValueError(f"intervention kind {kind!r}; allowed: {INTERVENTION_KINDS}")
    if kind == "mean" and means is not None and tuple(jnp.shape(means)) != tuple(masks.shape[-2:]):
        raise ValueError(f"mean intervention: means have shape {tuple(jnp.shape(means))}; expected "
                         f"{tuple(masks.shape[-2:])} [layers, neurons]")
    iv = builders[kind]()
    if positions is not None:
        positions = jnp.asarray(positions, bool)
        iv = iv.replace(positions=jnp.broadcast_to(positions, lead + positions.shape))
    return iv


def _required(value, name: str, kind: str):
    if value is None:
        raise ValueError(f"the {kind!r} intervention needs {name}")
    return value


def take(stacked: Intervention, index) -> Intervention:
    """The Intervention for one level (index into the leading axes)."""
    return jax.tree.map(lambda x: x[index], stacked)
