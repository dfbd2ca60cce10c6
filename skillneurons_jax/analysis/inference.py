"""The inference every verdict and table shares: intervals, tests, corrections and detectable effects, in one place.

Conventions (stated once, used everywhere in analysis/):
  * every standard deviation and standard error is the sample one, ddof = 1 (STD_DDOF): Table 1's ± and the
    intervals agree;
  * an interval is two-sided at `confidence`; a claim's test is one-sided in the claimed direction;
  * a minimum detectable effect (MDE) is the true difference from the reference that the rule would call
    "supported" with probability `power` (0.8) at the measured standard error:
        MDE = (q(1 - (1 - confidence) / 2) + q(power)) * SE,
    with q the t quantile on the interval's degrees of freedom (normal for bootstrap intervals). A verdict that is
    inconclusive with an MDE larger than the effect of interest says the design could not have answered.

Tests and their library equivalents:
  t_claim_p            one-sided one-sample t test (scipy.stats.ttest_1samp)                unit: prompt seeds
  two_level_bootstrap  crossed bootstrap: seeds and examples resampled independently        unit: seeds x examples
                       (every seed is scored on the same rows, so a t interval over seeds leaves out the rows'
                       binomial error; this interval has both; conservative by the interaction term);
                       used from MIN_BOOTSTRAP_SEEDS seeds on, below that the t interval over seeds
  exact_mcnemar        paired 0/1 outcomes, exact binomial on the discordant pairs (scipy.stats.binomtest)
                                                                                            unit: examples
  permutation_p        a stored Monte Carlo null (e.g. label permutations): (1 + #{null >= obs}) / (1 + R)
  holm                 Holm's step-down adjustment (statsmodels.stats.multitest.multipletests, method "holm")
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

STD_DDOF = 1
POWER = 0.8
# The crossed bootstrap resamples the seeds themselves: with 2 seeds it has 3 distinct seed draws and estimates the
# seed-to-seed variance at half its sample value, so where prompts differ by seed it undercovers
# (tests/test_statistics_control.py shows it below 85 % at 2 seeds). Below this many seeds the verdicts use the t
# interval over seeds (wide, honest); its coverage is tested at 5 seeds.
MIN_BOOTSTRAP_SEEDS = 5


def std(values, axis=None) -> np.ndarray:
    """The one standard deviation of the package (ddof = STD_DDOF); 0 for a single value (no spread to estimate)."""
    v = np.asarray(values, np.float64)
    n = v.size if axis is None else v.shape[axis]
    if n <= STD_DDOF:
        return np.zeros(()) if axis is None else np.zeros(np.delete(v.shape, axis))
    return v.std(axis=axis, ddof=STD_DDOF)


def mde(se: float | None, confidence: float = 0.95, df: float | None = None, power: float = POWER) -> float | None:
    """Minimum detectable effect (module docstring) for standard error `se`; df None: normal quantiles."""
    if se is None or not np.isfinite(se):
        return None
    dist = scipy_stats.norm if df is None else scipy_stats.t(df)
    return float((dist.ppf(0.5 + confidence / 2) + dist.ppf(power)) * se)


def t_claim_p(values: Sequence[float], reference: float, direction: int = 1) -> float | None:
    """One-sided p of the one-sample t test of mean(values) against `reference` in the claimed direction
    (+1: "above", -1: "below"); None with fewer than 2 values; 0 or 1 when the values do not vary."""
    v = np.asarray(values, np.float64)
    if v.size < 2 or not np.all(np.isfinite(v)):
        return None
    if np.ptp(v) == 0:
        gap = (v[0] - reference) * direction
        return 0.0 if gap > 0 else 1.0
    alternative = "greater" if direction > 0 else "less"
    return float(scipy_stats.ttest_1samp(v, reference, alternative=alternative).pvalue)


def t_se(values: Sequence[float]) -> tuple[float | None, int | None]:
    """(standard error of the mean, degrees of freedom) over `values` (the t interval's); (None, None) below 2."""
    v = np.asarray(values, np.float64)
    if v.size < 2:
        return None, None
    return float(std(v) / np.sqrt(v.size)), v.size - 1


def two_level_bootstrap(values: np.ndarray, *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0,
                        reference: float = 0.0, direction: int = 1):
    """values [S, E] (a per-seed, per-example quantity, e.g. correct(random) - correct(skill)) -> BootstrapResult
    for its grand mean. Each replicate draws S seeds and E examples with replacement, independently (the design is
    crossed: every seed scores the same examples), as multinomial weights, so all replicates are one einsum.
    The interval is the percentile interval; p is the one-sided bootstrap p of the claim (share of replicates on
    the other side of `reference`, shifted to the null by the estimate - reference: (1 + #) / (1 + n_boot))."""
    x = np.asarray(values, np.float64)
    if x.ndim != 2 or min(x.shape) < 1:
        raise ValueError(f"two_level_bootstrap needs values [seeds, examples], got shape {x.shape}")
    s, e = x.shape
    rng = np.random.default_rng(seed)
    w_seed = rng.multinomial(s, np.full(s, 1.0 / s), size=n_boot) / s          # [B, S]
    w_example = rng.multinomial(e, np.full(e, 1.0 / e), size=n_boot) / e       # [B, E]
    replicates = np.einsum("bs,se,be->b", w_seed, x, w_example)
    estimate = float(x.mean())
    tail = (1 - confidence) / 2
    interval = (float(np.quantile(replicates, tail)), float(np.quantile(replicates, 1 - tail)))
    se = float(std(replicates))
    centred = replicates - estimate + reference                    # the replicates moved to the null
    beyond = np.sum(centred >= estimate) if direction > 0 else np.sum(centred <= estimate)
    p = float((1 + beyond) / (1 + n_boot))
    return BootstrapResult(estimate, interval, se, p, n_boot, s, e)


class BootstrapResult(NamedTuple):
    estimate: float
    interval: tuple[float, float]
    se: float                    # the replicates' standard deviation (ddof = 1)
    p_value: float               # one-sided, in the claimed direction
    n_boot: int
    n_seeds: int
    n_examples: int


def exact_mcnemar(first_correct, second_correct, alternative: str = "greater") -> dict:
    """Paired 0/1 outcomes [E] (the same examples under two conditions, e.g. originals and their adversarial
    versions) -> {"b", "c", "n", "p_value"} with b = #(first right, second wrong), c = #(first wrong, second right).
    Null: given a discordant pair, either order is equally likely (b ~ Binomial(b + c, 1/2)); alternative
    "greater": the first condition is right more often (a drop from first to second). p = 1 without discordant
    pairs (no evidence)."""
    a = np.asarray(first_correct).astype(bool)
    b_ = np.asarray(second_correct).astype(bool)
    if a.shape != b_.shape or a.ndim != 1:
        raise ValueError(f"exact_mcnemar needs two [examples] vectors of one length, got {a.shape} and {b_.shape}")
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    p = 1.0 if b + c == 0 else float(scipy_stats.binomtest(b, b + c, 0.5, alternative=alternative).pvalue)
    return {"b": b, "c": c, "n": int(a.size), "p_value": p}


def permutation_p(observed: float, null: Sequence[float], direction: int = 1) -> float | None:
    """One-sided Monte Carlo p of `observed` against R null draws: (1 + #{null >= observed}) / (1 + R) (direction
    -1: <=); None without draws."""
    null = np.asarray(null, np.float64).reshape(-1)
    if null.size == 0:
        return None
    beyond = np.sum(null >= observed - 1e-12) if direction > 0 else np.sum(null <= observed + 1e-12)
    return float((1 + beyond) / (1 + null.size))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels multipletests, method "holm") over the entries that have one; None
    entries stay None and do not count in the family."""
    present = [i for i, p in enumerate(p_values) if p is not None and np.isfinite(p)]
    out: list[float | None] = [None] * len(p_values)
    if present:
        adjusted = multipletests([float(p_values[i]) for i in present], method="holm")[1]
        for i, p in zip(present, adjusted):
            out[i] = float(p)
    return out


# ------------------------------------------------------------------------------------------------------------------
# Predictivity under the label-permutation null
# ------------------------------------------------------------------------------------------------------------------
def pred_floor(null_layer_mean: np.ndarray) -> np.ndarray:
    """null_layer_mean [R, L] (each permutation's mean Pred per layer) -> the floor [L]: the mean Pred of a layer
    when the labels carry nothing, at the split's n and number of prompt tokens (not 0.5)."""
    return np.asarray(null_layer_mean, np.float64).mean(0)


def null_quantile(null: np.ndarray, q: float = 0.95, axis: int = 0) -> np.ndarray:
    """The q quantile over permutations (e.g. of the max Pred: what the best neuron of pure noise reaches)."""
    return np.quantile(np.asarray(null, np.float64), q, axis=axis)
