"""Verdicts on the paper's findings (issue #15), computed from stage results: each finding gets its statistic, an
interval over prompt seeds, the test that applies, and a verdict by one written rule (RULE, `decide`).

The findings, as tested here (Ackermann & Ohmer 2023, building on Wang et al. 2022 and Su et al. 2022):
  F1  prompts transfer better within a task type than between types. Statistic: mean relative transfer
      (analysis.transfer.transfer_matrices, per seed) over ordered pairs of clean tasks of the same type minus the
      mean over pairs of different types. Interval: over seeds. Test: specificity.type_permutation_test on the
      symmetrised relative matrix (null: task-type labels exchangeable across the tasks).
  F2  an adversarial set evaluated with its clean task's prompt scores at or below chance. Statistic: accuracy
      minus chance, chance = the larger of the dev majority rate and 0.5 (what a trivial answer gets). Interval:
      over seeds. Claimed direction: at or below.
  F3a the most predictive neuron reaches the model's accuracy. Statistic: max over neurons of the seed's Pred
      (eq. 4, max over prompt tokens) minus the seed's model accuracy on the same dev split. Interval: over seeds.
      Claimed: >= 0. (The max over thousands of neurons, both measured on dev, is biased upwards.)
  F3b the most predictive neurons sit in the upper layers. Statistic: the mean relative depth l / (L - 1) of the
      top `top_fraction` neurons by the seed's Pred, minus 0.5 (the mean depth if they were spread evenly over
      layers of equal width). Interval: over seeds. Claimed: > 0.
  F4  predictivities correlate more within a task type than between types. Statistic: within-type minus between-
      type mean layer-averaged Spearman correlation (specificity.spearman_matrix, per seed for the interval);
      test: specificity.type_permutation_test on the seed-averaged Pred.
  F5  suppressing a task's top-k % skill neurons (per layer) hurts its accuracy more than suppressing as many
      random neurons. Statistic: random minus skill accuracy averaged over the levels k > 0; interval over seeds
      (robustness.difference_interval); per level, robustness.compare_levels (t interval and paired sign-flip
      test) counted: the claim also needs "yes" at at least half of the levels.
  F6a the clean task's and its adversarial set's predictivities correlate (Figure 6). Statistic: layer-averaged
      Spearman correlation of Pred (specificity.layer_spearman, per seed for the interval); test: the
      neuron-permutation test (specificity.permutation_test; null: neurons interchangeable, correlation 0).
  F6b suppressing the clean task's skill neurons on the adversarial set hurts more than random neurons (Figure 6's
      cross suppression): as F5, on the clean -> adversarial suppression result.
  F5 and F6b measure harm as lost accuracy, which assumes the unsuppressed prompts score above chance on the
      set. Where their accuracy at k = 0 is below chance in every seed (chance_rate: the larger of 1 / classes and
      the set's majority rate, what a trivial answer scores), removing what the prompts rely on moves their answers
      toward a trivial one, i.e. accuracy goes UP (an adversarial set whose perturbations flip the prompts' answers
      does this): the verdict is then inconclusive and the note gives the k = 0 accuracy and the rule's verdict.
      A result without per-example labels (no majority rate) is not checked.

Intervals: a two-sided t interval of the mean over prompt seeds (robustness.difference_interval) at `confidence`;
for the accuracy differences of F2's drop and F5 / F6b, when the result records per-example outcomes and has at least
inference.MIN_BOOTSTRAP_SEEDS seeds, a two-level bootstrap over seeds and examples (inference.two_level_bootstrap: every seed is scored on the same rows, so the seed interval
alone leaves out the rows' sampling error). With one seed there is no interval and the verdict is inconclusive.

Every verdict has a p-value: the finding's own test where it has one (F1, F4: task-type permutation; F3a: the
label-permutation null of the max Pred; F6a: the control pair), else the one-sided test of its interval's data in
the claimed direction (a t test over seeds, or the bootstrap p). Correction: Holm within each finding's family
(its subjects: e.g. F5 over the clean tasks), p_adjusted, which is the p the rule uses; the Holm-adjusted p over
the whole table is printed beside it (p_table) for a reader who counts every row as one family. Each verdict
prints its minimum detectable effect at 80 % power from the measured standard error (inference.mde).

Nulls and units of replication, per finding (docs/interfaces.md lists them too):
  F1, F4  task-type labels exchangeable across tasks; unit: the task (its prompts' seed mean)
  F2      accuracy at chance (t over prompt seeds); with AdvGLUE originals (robust patching outputs per example),
          also the drop clean -> adversarial by exact McNemar per seed (unit: the example), summarised by the
          largest p over seeds (every seed must show the drop)
  F3a     labels carry nothing: the stage's label permutations (options.label_permutations) give the max Pred of
          noise at this n; unit: the permutation. Without them F3a is inconclusive (the max of noise is unknown).
  F3b     top neurons spread evenly over depth (reference 0.5; t over seeds); reported also with prompt slot 0 (the
          readout slot) left out of the selection
  F5, F6b no difference between skill and random suppression; unit: seeds x examples (two-level bootstrap) or seeds
  F6a     the adversarial set correlates with the clean task no more than an unrelated set of the same size scored
          with the same prompts and baseline (the control pair; t over seeds); without a control result, the
          neuron-permutation p is shown but cannot support the claim (the shared prompt and baseline alone
          correlate the two)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from skillneurons_jax import layout
from skillneurons_jax.analysis import inference, results, robustness, specificity, transfer

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

RULE = ("supported: the interval lies wholly on the claimed side of the reference (touching it counts for claims "
        "'at or below' / 'reaches') and the finding's test, where it has one, gives p < alpha; not supported: the "
        "interval lies wholly on the other side (or, for strict claims, touches the reference from there); "
        "inconclusive: anything else (the interval straddles the reference, the test disagrees with the interval, "
        "fewer than 2 seeds, or the design cannot reach p < alpha).")


@dataclasses.dataclass
class Verdict:
    """One finding on one subject. estimate / interval in the statistic's units (fractions for accuracies)."""

    finding: str                 # "F1" ... "F6b"
    subject: str                 # the task, pair or "clean tasks"
    claim: str
    statistic: str               # what `estimate` is
    estimate: float
    reference: float             # the value the claim is measured against
    interval: tuple[float, float] | None
    interval_units: str
    confidence: float
    test: str                    # the test and its null, or "none"
    p_value: float | None
    verdict: str
    note: str = ""
    mde: float | None = None          # minimum detectable effect at 80 % power (statistic's units)
    p_adjusted: float | None = None   # Holm within `family`; the p the rule used
    p_table: float | None = None      # Holm over the whole table (for reference)
    family: str = ""                  # the correction family (default: the finding)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def decide(estimate: float, interval, reference: float, *, direction: int = 1, inclusive: bool = False,
           p_value: float | None = None, alpha: float = 0.05, min_p: float | None = None) -> str:
    """The rule (RULE) in code. direction +1: the claim is "above the reference", -1: "below"; inclusive: the
    claim admits equality ("at or below", "reaches")."""
    if interval is None or not all(np.isfinite([estimate, reference, *interval])):
        return INCONCLUSIVE
    low, high = interval
    if direction > 0:
        near, far = low - reference, high - reference        # near: the end closest to failing the claim
    else:
        near, far = reference - high, reference - low
    if min_p is not None and min_p >= alpha:
        return INCONCLUSIVE
    claimed = near >= 0 if inclusive else near > 0
    if claimed and (p_value is None or p_value < alpha):
        return SUPPORTED
    contradicted = far < 0 if inclusive else far <= 0
    if contradicted:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def seed_interval(values: Sequence[float], reference: float = 0.0, confidence: float = 0.95):
    """values [S] per seed -> (t interval of mean(values), units), through robustness.difference_interval (the
    seeds are the units); the interval is of the values themselves, not of values - reference."""
    values = np.asarray(values, np.float64)
    interval, units = robustness.difference_interval(np.full(values.shape, float(reference)), values[None],
                                                     confidence)
    if interval is None:
        return None, units
    return (interval[0] + reference, interval[1] + reference), units


def seed_mde(values: Sequence[float], confidence: float = 0.95) -> float | None:
    """The MDE of a t interval over seeds (inference.mde with the seeds' standard error and df)."""
    se, df = inference.t_se(values)
    return None if se is None else inference.mde(se, confidence, df)


def correct(found: Sequence[Verdict], alpha: float = 0.05) -> list[Verdict]:
    """Holm within each family (p_adjusted) and over the whole table (p_table); every verdict is re-decided with its
    p_adjusted (a verdict the rule called supported on its raw p may become inconclusive). A verdict without a p
    is left as it is."""
    found = list(found)
    table = inference.holm([v.p_value for v in found])
    out = [dataclasses.replace(v, p_table=t, family=v.family or v.finding) for v, t in zip(found, table)]
    for family in dict.fromkeys(v.family for v in out):
        members = [i for i, v in enumerate(out) if v.family == family]
        adjusted = inference.holm([out[i].p_value for i in members])
        for i, p in zip(members, adjusted):
            v = out[i]
            changed = dict(p_adjusted=p)
            if p is not None and v.verdict == SUPPORTED and p >= alpha:
                reason = (f"p {v.p_value:.4f} is {p:.4f} after Holm over the {len(members)} verdicts of {family} "
                          f"(rule alone: supported)")
                changed.update(verdict=INCONCLUSIVE, note=f"{v.note}; {reason}" if v.note else reason)
            out[i] = dataclasses.replace(v, **changed)
    return out


def _types(tasks: Sequence[str], types: Mapping[str, str] | None) -> dict[str, str]:
    types = types or results.TASK_TYPE
    return {t: types.get(t, f"other:{t}") for t in tasks}


def _within_minus_between(matrix: np.ndarray, tasks: Sequence[str], types: Mapping[str, str],
                          ordered: bool = False) -> float:
    """Mean of `matrix` over same-type pairs minus over different-type pairs (off the diagonal). ordered: both
    [i, j] and [j, i] (an asymmetric matrix, F1); otherwise the upper triangle (specificity.within_between)."""
    if not ordered:
        means = specificity.within_between(matrix, tasks, types)
        return means["within"] - means["between"]
    symmetric = (np.asarray(matrix, np.float64) + np.asarray(matrix, np.float64).T) / 2
    means = specificity.within_between(symmetric, tasks, types)    # mean of [i, j] and [j, i] per pair
    return means["within"] - means["between"]


# ------------------------------------------------------------------------------------------------------------------
# F1 transfer
# ------------------------------------------------------------------------------------------------------------------
def f1_transfer(table: Mapping[tuple[str, str], results.Transfer], tasks: Sequence[str], *,
                types: Mapping[str, str] | None = None, alpha: float = 0.05, confidence: float = 0.95,
                n_perm: int = 10000, seed: int = 0, max_exact: int = 100000) -> Verdict:
    """table: (source, target) -> per-seed accuracies of the source's prompt on the target, for the clean `tasks`
    (every ordered pair and each task on itself)."""
    tasks = list(tasks)
    type_of = _types(tasks, types)
    claim = "prompts transfer better within a task type than between types (relative transfer)"
    seeds = min(len(np.atleast_1d(_accuracy(v))) for v in table.values()) if table else 0
    per_seed = []
    for s in range(seeds):
        one = {k: np.atleast_1d(_accuracy(v))[s:s + 1] for k, v in table.items()}
        rel = transfer.transfer_matrices(one, tasks, tasks, own=lambda t: t).relative
        per_seed.append(_within_minus_between(rel, tasks, type_of, ordered=True))
    mean_rel = transfer.transfer_matrices(table, tasks, tasks, own=lambda t: t).relative
    estimate = _within_minus_between(mean_rel, tasks, type_of, ordered=True)
    interval, units = seed_interval(per_seed, 0.0, confidence) if per_seed else (None, "none")
    p, min_p, test = None, None, "task-type permutation test"
    try:
        tested = specificity.type_permutation_test((mean_rel + mean_rel.T) / 2, tasks, type_of, n_perm=n_perm,
                                                   seed=seed, max_exact=max_exact)
        p, min_p = tested.p_value, attainable_min_p(tested)
        test += (f" (null: task-type labels exchangeable across the {len(tasks)} tasks; "
                 f"{'exact, ' + str(tested.n_assignments) + ' assignments' if tested.exact else f'{n_perm} draws'})")
    except ValueError as error:
        test += f": not testable ({error})"
    return Verdict("F1", "clean tasks", claim, "within − between mean relative transfer", estimate, 0.0, interval,
                   units, confidence, test, p,
                   decide(estimate, interval, 0.0, p_value=p, alpha=alpha, min_p=min_p),
                   note="" if min_p is None or min_p < alpha else f"smallest attainable p {min_p:.3f} >= {alpha:g}",
                   mde=seed_mde(per_seed, confidence))


def attainable_min_p(tested: specificity.TypeTestResult) -> float:
    """The smallest p the design allows. An exact test enumerates label assignments, and renaming the types among
    types of equal size gives the same partition, hence the same statistic: prod over sizes of (number of types
    of that size)! assignments tie with the observed one at best. (TypeTestResult.min_p = 1 / assignments
    ignores these ties.) Monte Carlo: the reported min_p."""
    if not tested.exact:
        return tested.min_p
    sizes = np.unique(np.unique(tested.types, return_counts=True)[1], return_counts=True)[1]
    ties = math.prod(math.factorial(int(n)) for n in sizes)
    return max(tested.min_p, ties / tested.n_assignments)


def _accuracy(value) -> np.ndarray:
    if isinstance(value, results.Transfer):
        return np.asarray(value.accuracy, np.float64)
    return np.asarray(value, np.float64).reshape(-1)


# ------------------------------------------------------------------------------------------------------------------
# F2 adversarial accuracy
# ------------------------------------------------------------------------------------------------------------------
def chance_rate(majority_rate: float | None, n_classes: int = 2) -> float:
    """What a trivial answer scores: the larger of 1 / n_classes (guessing) and the majority rate (always the most
    frequent label); 1 / n_classes when the majority rate is unknown."""
    guess = 1.0 / max(int(n_classes), 1)
    return guess if majority_rate is None else max(guess, float(majority_rate))


def f2_adversarial(task: str, prompt_task: str, accuracy: Sequence[float], majority_rate: float | None, *,
                   confidence: float = 0.95, alpha: float = 0.05) -> Verdict:
    """accuracy [S]: the adversarial set's accuracy with `prompt_task`'s prompts, per seed. Test: one-sided t over
    seeds, H0 accuracy > chance."""
    chance = chance_rate(majority_rate)
    values = np.asarray(accuracy, np.float64)
    interval, units = seed_interval(values, 0.0, confidence)
    p = inference.t_claim_p(values, chance, direction=-1)
    note = (f"majority rate {majority_rate:.3f}" if majority_rate is not None else "majority rate unknown: 0.5 used")
    if prompt_task != (results.clean_task(task) or task):
        note += f"; prompts of {prompt_task} (a transfer, not the paper's {results.clean_task(task)})"
    return Verdict("F2", f"{task} ({prompt_task} prompts)", "adversarial accuracy with clean prompts is at or below "
                   "chance", "accuracy", float(values.mean()), chance, interval, units, confidence,
                   "one-sided t test over seeds (null: accuracy above chance)", p,
                   decide(float(values.mean()), interval, chance, direction=-1, inclusive=True, p_value=p,
                          alpha=alpha), note=note, mde=seed_mde(values, confidence))


def f2_drop(task: str, prompt_task: str, original_correct: np.ndarray, adversarial_correct: np.ndarray, *,
            confidence: float = 0.95, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> Verdict:
    """The paired clean-vs-adversarial drop on AdvGLUE's originals: original_correct, adversarial_correct [S, E]
    (0/1, example i of one is the original of example i of the other, same prompts per seed). Statistic: accuracy
    on the originals minus on the adversarial versions; interval: two-level bootstrap over seeds and examples;
    test: exact McNemar per seed (null: the two versions of an example are equally likely to be the one answered
    right), summarised by the largest p over seeds (the drop must show in every seed: an intersection-union test,
    valid at alpha without a further correction)."""
    first = np.asarray(original_correct, np.float64)
    second = np.asarray(adversarial_correct, np.float64)
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(f"{task}: original and adversarial outcomes must both be [seeds, examples], got "
                         f"{first.shape} and {second.shape}")
    tests = [inference.exact_mcnemar(a, b) for a, b in zip(first, second)]
    p = max(t["p_value"] for t in tests)
    if first.shape[0] >= inference.MIN_BOOTSTRAP_SEEDS:
        boot = inference.two_level_bootstrap(first - second, confidence=confidence, n_boot=n_boot, seed=seed)
        estimate, interval, mde = boot.estimate, boot.interval, inference.mde(boot.se, confidence)
        units = f"seeds × examples (two-level bootstrap, {boot.n_boot})"
    else:
        per_seed = (first - second).mean(1)
        estimate = float(per_seed.mean())
        interval, units = seed_interval(per_seed, 0.0, confidence)
        mde = seed_mde(per_seed, confidence)
    counts = ", ".join(f"{t['b']}/{t['c']}" for t in tests)
    return Verdict("F2", f"{task} drop ({prompt_task} prompts)", "clean prompts score lower on the adversarial "
                   "examples than on their originals", "accuracy on originals − on adversarial versions",
                   estimate, 0.0, interval, units,
                   confidence, f"exact McNemar per seed, largest p over the {len(tests)} seeds (null: no paired "
                   f"difference)", p, decide(estimate, interval, 0.0, p_value=p, alpha=alpha),
                   note=f"n = {first.shape[1]} pairs; discordant pairs (original right / adversarial right) per "
                        f"seed: {counts}", mde=mde, family="F2 drop")


# ------------------------------------------------------------------------------------------------------------------
# F3 the most predictive neurons
# ------------------------------------------------------------------------------------------------------------------
def f3_top_neuron(task: str, pred_per_seed: np.ndarray, model_accuracy: Sequence[float], *,
                  null_max: np.ndarray | None = None, confidence: float = 0.95, alpha: float = 0.05) -> Verdict:
    """pred_per_seed [S, L, N]; model_accuracy [S] (same dev split, same seeds in order); null_max [R]: the max Pred
    over neurons under R label permutations of the same dev split (the predictivity npz's null_pred_max).

    Test: the observed max of the seed-mean Pred against null_max, p = (1 + #{null >= observed}) / (1 + R). Without
    a null the verdict is inconclusive: the max over thousands of neurons of pure noise is far above 0.5 (about
    0.70 at n = 112 over 9,216 neurons and 20 prompt tokens) and may well 'reach' a weak model's accuracy."""
    pred_per_seed = np.asarray(pred_per_seed, np.float64)
    accuracy = np.asarray(model_accuracy, np.float64)
    if pred_per_seed.shape[0] != accuracy.shape[0]:
        raise ValueError(f"{task}: {pred_per_seed.shape[0]} seeds of predictivity but {accuracy.shape[0]} model "
                         f"accuracies")
    gap = pred_per_seed.reshape(pred_per_seed.shape[0], -1).max(1) - accuracy
    interval, units = seed_interval(gap, 0.0, confidence)
    note = "both on the dev split; a max over all neurons is biased upwards"
    if null_max is None or np.asarray(null_max).size == 0:
        return Verdict("F3a", task, "the most predictive neuron reaches the model's accuracy",
                       "max neuron predictivity − model accuracy", float(gap.mean()), 0.0, interval, units,
                       confidence, "none: no label-permutation null in the result (stats option label_permutations "
                       "= 0)", None, INCONCLUSIVE, mde=seed_mde(gap, confidence),
                       note=f"{note}; without the null's max the rule cannot tell signal from the max of noise (rule "
                            f"alone: {decide(float(gap.mean()), interval, 0.0, inclusive=True)})")
    null_max = np.asarray(null_max, np.float64).reshape(-1)
    observed = float(pred_per_seed.mean(0).max())
    p = inference.permutation_p(observed, null_max)
    note += (f"; max Pred {observed:.3f} against the label-permutation null's max {null_max.mean():.3f} (95th "
             f"percentile {float(inference.null_quantile(null_max)):.3f}, R = {null_max.size})")
    return Verdict("F3a", task, "the most predictive neuron reaches the model's accuracy",
                   "max neuron predictivity − model accuracy", float(gap.mean()), 0.0, interval, units, confidence,
                   f"label permutation of the max Pred ({null_max.size} permutations; null: the labels carry "
                   f"nothing)", p, decide(float(gap.mean()), interval, 0.0, inclusive=True, p_value=p, alpha=alpha),
                   note=note, mde=seed_mde(gap, confidence))


def top_neuron_depth(pred: np.ndarray, top_fraction: float) -> float:
    """pred [L, N] -> mean relative depth l / (L - 1) of the top ceil(top_fraction * L * N) neurons (global)."""
    pred = np.asarray(pred, np.float64)
    layers, neurons = pred.shape
    if layers < 2:
        raise ValueError(f"layer depth needs at least 2 layers, got {layers}")
    k = max(1, math.ceil(top_fraction * layers * neurons))
    top = np.argsort(pred.reshape(-1), kind="stable")[::-1][:k]
    return float(np.mean((top // neurons) / (layers - 1)))


def f3_depth(task: str, pred_per_seed: np.ndarray, *, top_fraction: float = 0.01, confidence: float = 0.95,
             alpha: float = 0.05, slot0_excluded: bool = False, null_pred: np.ndarray | None = None) -> Verdict:
    """pred_per_seed [S, L, N]. slot0_excluded: the caller computed it without prompt slot 0 (pred_without_slots),
    reported as its own family beside the default. null_pred [R, L, N]: Pred under R label permutations (the npz's
    null_pred); the test is then the depth of the seed-mean Pred's top neurons against the depths of the null's
    (seeds share the dev rows, so a t over seeds leaves out the rows' sampling: noise neurons that rank high in
    one seed rank high in all); without it, a one-sided t over seeds."""
    depths = np.array([top_neuron_depth(p, top_fraction) for p in np.asarray(pred_per_seed)])
    interval, units = seed_interval(depths, 0.0, confidence)
    note = "reference 0.5: the mean depth of neurons spread evenly over the layers"
    if null_pred is not None and not slot0_excluded:
        null_depths = np.array([top_neuron_depth(p, top_fraction) for p in np.asarray(null_pred)])
        p = inference.permutation_p(top_neuron_depth(np.asarray(pred_per_seed).mean(0), top_fraction), null_depths)
        test = f"label permutation of the top neurons' depth ({null_depths.size} permutations)"
        note += f"; the null's mean depth {null_depths.mean():.3f}"
    else:
        p = inference.t_claim_p(depths, 0.5, direction=1)
        test = "one-sided t test over seeds (null: mean depth 0.5)"
    if slot0_excluded:
        note += "; prompt slot 0 (the readout slot) left out of the max over prompt tokens"
    return Verdict("F3b", f"{task} (slot 0 excluded)" if slot0_excluded else task,
                   "the most predictive neurons sit in the upper layers",
                   f"mean relative depth of the top {100 * top_fraction:g}% neurons (0 first, 1 last layer)",
                   float(depths.mean()), 0.5, interval, units, confidence, test, p,
                   decide(float(depths.mean()), interval, 0.5, p_value=p, alpha=alpha), note=note,
                   mde=seed_mde(depths, confidence), family="F3b slot 0 excluded" if slot0_excluded else "F3b")


def pred_without_slots(acc: np.ndarray, slots: Sequence[int] = (0,), token_aggregation: str = "max") -> np.ndarray:
    """acc [S, L, T, N] (eq. 3, the predictivity npz) -> per-seed Pred [S, L, N] (eqs. 4-5's token step) over the
    prompt tokens other than `slots` (slot 0 holds the readout: its top neurons are partly the readout itself)."""
    acc = np.asarray(acc, np.float64)
    keep = np.setdiff1d(np.arange(acc.shape[2]), np.asarray(slots, int))
    if keep.size == 0:
        raise ValueError(f"no prompt token left after excluding slots {list(slots)} of {acc.shape[2]}")
    pred = np.maximum(acc[:, :, keep], 1 - acc[:, :, keep])
    return np.nanmax(pred, axis=2) if token_aggregation == "max" else np.nanmean(pred, axis=2)


# ------------------------------------------------------------------------------------------------------------------
# F4 task specificity
# ------------------------------------------------------------------------------------------------------------------
def f4_specificity(pred_per_seed: Mapping[str, np.ndarray], *, types: Mapping[str, str] | None = None,
                   alpha: float = 0.05, confidence: float = 0.95, n_perm: int = 10000, seed: int = 0,
                   max_exact: int = 100000) -> Verdict:
    """pred_per_seed: clean task -> [S, L, N] (same seeds in order)."""
    tasks = list(pred_per_seed)
    type_of = _types(tasks, types)
    seeds = min(np.asarray(p).shape[0] for p in pred_per_seed.values())
    per_seed = [_within_minus_between(specificity.spearman_matrix(
        {t: np.asarray(pred_per_seed[t])[s] for t in tasks}).mean, tasks, type_of) for s in range(seeds)]
    mean = specificity.spearman_matrix({t: np.asarray(p).mean(0) for t, p in pred_per_seed.items()}).mean
    interval, units = seed_interval(per_seed, 0.0, confidence)
    p, min_p, test = None, None, "task-type permutation test"
    try:
        tested = specificity.type_permutation_test(mean, tasks, type_of, n_perm=n_perm, seed=seed,
                                                   max_exact=max_exact)
        estimate, p, min_p = tested.statistic, tested.p_value, attainable_min_p(tested)
        test += (f" (null: task-type labels exchangeable across the {len(tasks)} tasks; "
                 f"{'exact, ' + str(tested.n_assignments) + ' assignments' if tested.exact else f'{n_perm} draws'})")
    except ValueError as error:
        estimate = _within_minus_between(mean, tasks, type_of)
        test += f": not testable ({error})"
    return Verdict("F4", "clean tasks", "predictivities correlate more within a task type than between types",
                   "within − between mean Spearman correlation", float(estimate), 0.0, interval, units, confidence,
                   test, p, decide(float(estimate), interval, 0.0, p_value=p, alpha=alpha, min_p=min_p),
                   note="" if min_p is None or min_p < alpha else f"smallest attainable p {min_p:.3f} >= {alpha:g}",
                   mde=seed_mde(per_seed, confidence))


# ------------------------------------------------------------------------------------------------------------------
# F5 / F6b suppression
# ------------------------------------------------------------------------------------------------------------------
def suppression_verdict(finding: str, res: results.Suppression, *, alpha: float = 0.05, confidence: float = 0.95,
                        n_flips: int = 10000, seed: int = 0, n_boot: int = 2000) -> Verdict:
    """Skill vs random suppression averaged over the levels k > 0 (module docstring, F5). With per-example
    outcomes the interval, p and MDE are the two-level bootstrap's over seeds and examples; else a t over seeds."""
    ks = np.asarray(res.ks, np.float64)
    levels = ks > 0
    if not levels.any():
        raise ValueError(f"{res.path}: no suppression level above 0 %")
    skill = np.asarray(res.skill, np.float64)[levels].mean(0)            # [S]
    random = np.asarray(res.random, np.float64)[levels].mean(0)          # [D, S]
    estimate = float(random.mean(0).mean() - skill.mean())
    if (res.skill_correct is not None and res.random_correct is not None
            and np.asarray(res.skill_correct).shape[-2] >= inference.MIN_BOOTSTRAP_SEEDS):
        per_example = (np.asarray(res.random_correct, np.float64)[levels].mean((0, 1))
                       - np.asarray(res.skill_correct, np.float64)[levels].mean(0))          # [S, E]
        boot = inference.two_level_bootstrap(per_example, confidence=confidence, n_boot=n_boot, seed=seed)
        interval, units, p = boot.interval, f"seeds × examples (two-level bootstrap, {boot.n_boot})", boot.p_value
        mde = inference.mde(boot.se, confidence)
    else:
        interval, units = robustness.difference_interval(skill, random, confidence)
        p = inference.t_claim_p(random.mean(0) - skill, 0.0)
        mde = seed_mde(random.mean(0) - skill, confidence)
    comparisons = [c for c in robustness.compare_levels(res, confidence=confidence, alpha=alpha, n_flips=n_flips,
                                                        seed=seed) if c.k > 0]
    yes = sum(c.verdict == robustness.YES for c in comparisons)
    verdict = decide(estimate, interval, 0.0, p_value=p, alpha=alpha)
    if verdict == SUPPORTED and 2 * yes < len(comparisons):
        verdict = INCONCLUSIVE
    note = "supported also needs yes at half of the levels or more"
    unsuppressed = unsuppressed_accuracy(res)
    counts = res.label_counts
    chance = None if not counts else chance_rate(robustness.majority_rate(counts), len(counts))
    if unsuppressed is not None and chance is not None and bool((unsuppressed < chance).all()):
        note += (f"; without suppression the prompts score {float(unsuppressed.mean()):.3f} here (every seed below "
                 f"chance, {chance:.3f}, what a trivial answer scores): suppression moves their answers toward a "
                 f"trivial one, which raises accuracy, so lost accuracy cannot measure harm on this set (rule "
                 f"alone: {verdict})")
        verdict = INCONCLUSIVE
    subject = res.target if res.source == res.target else f"{res.source} → {res.target}"
    claim = ("suppressing the top-k% skill neurons hurts more than as many random neurons" if finding == "F5" else
             "the clean task's skill neurons, suppressed on the adversarial set, hurt more than random neurons")
    levels_text = ", ".join(f"{c.k:g}" for c in comparisons)
    return Verdict(finding, subject, claim, f"random − skill accuracy, mean over k = {levels_text} %", estimate, 0.0,
                   interval, units, confidence, f"one-sided test of the interval's data (null: no difference); per "
                   f"level: interval and paired sign-flip test (robustness.compare_levels); {yes} of "
                   f"{len(comparisons)} levels say yes", p, verdict, note=note, mde=mde)


def unsuppressed_accuracy(res: results.Suppression) -> np.ndarray | None:
    """The accuracy at k = 0 (nothing suppressed) per seed [S]; None when the result has no k = 0 level."""
    ks = np.asarray(res.ks, np.float64)
    if not (ks == 0).any():
        return None
    return np.asarray(res.skill, np.float64)[ks == 0].mean(0)


# ------------------------------------------------------------------------------------------------------------------
# F6a adversarial vs clean predictivity
# ------------------------------------------------------------------------------------------------------------------
def f6_correlation(adversarial: str, clean: str, pred_adv: np.ndarray, pred_clean: np.ndarray, *,
                   pred_control: np.ndarray | None = None, control: str = "", alpha: float = 0.05,
                   confidence: float = 0.95, n_perm: int = 1000, seed: int = 0) -> Verdict:
    """pred_adv, pred_clean [S, L, N] (same seeds in order). pred_control [S, L, N]: the control pair, an unrelated
    set (`control`) of the adversarial set's size scored with the same prompts and the clean TRAIN baseline; the
    statistic is then rho(adversarial, clean) − rho(control, clean) per seed, tested by a one-sided t over seeds
    (null: the adversarial set shares no more with the clean task than any set seen through the same prompt and
    baseline). Without a control the neuron-permutation p is shown, but the verdict is inconclusive: the shared
    prompt and baseline correlate the two by themselves, so that null is no control."""
    pred_adv, pred_clean = np.asarray(pred_adv, np.float64), np.asarray(pred_clean, np.float64)
    seeds = min(pred_adv.shape[0], pred_clean.shape[0])
    per_seed = [float(np.nanmean(specificity.layer_spearman(pred_adv[s], pred_clean[s]))) for s in range(seeds)]
    tested = specificity.permutation_test(pred_adv.mean(0), pred_clean.mean(0), n_perm=n_perm, seed=seed)
    if pred_control is not None:
        pred_control = np.asarray(pred_control, np.float64)
        seeds = min(seeds, pred_control.shape[0])
        rho_control = [float(np.nanmean(specificity.layer_spearman(pred_control[s], pred_clean[s])))
                       for s in range(seeds)]
        excess = np.asarray(per_seed[:seeds]) - np.asarray(rho_control)
        interval, units = seed_interval(excess, 0.0, confidence)
        p = inference.t_claim_p(excess, 0.0)
        estimate = float(excess.mean())
        return Verdict("F6a", f"{adversarial} vs {clean}", "the adversarial set's predictivities correlate with the "
                       "clean task's beyond what the shared prompt and baseline give",
                       f"layer-averaged Spearman ρ(adversarial, clean) − ρ(control {control}, clean), mean over "
                       f"seeds", estimate, 0.0, interval, units, confidence, "control pair: one-sided t over seeds "
                       "(null: ρ no larger than the control's)", p,
                       decide(estimate, interval, 0.0, p_value=p, alpha=alpha), mde=seed_mde(excess, confidence),
                       note=f"ρ(adversarial, clean) {np.mean(per_seed):.3f}, ρ(control, clean) "
                            f"{np.mean(rho_control):.3f}; neuron-permutation p {tested.p_value:.4f} (not the "
                            f"verdict's test)")
    interval, units = seed_interval(per_seed, 0.0, confidence)
    # The estimate is the mean of the per-seed correlations, the centre of their interval. The test runs on the
    # seed-averaged Pred, whose correlation is larger (averaging removes seed noise) and can lie outside that
    # interval: the note gives it.
    estimate = float(np.mean(per_seed))
    return Verdict("F6a", f"{adversarial} vs {clean}", "the adversarial set's predictivities correlate with the "
                   "clean task's", "layer-averaged Spearman correlation of Pred, mean over seeds", estimate, 0.0,
                   interval, units, confidence, f"neuron-permutation test on the seed-averaged Pred ({n_perm} "
                   "within-layer permutations; null: neurons interchangeable, correlation 0)", tested.p_value,
                   INCONCLUSIVE, mde=seed_mde(per_seed, confidence),
                   note=f"correlation of the seed-averaged Pred {float(tested.statistic):.3f}; both use the same "
                        "prompts and the clean TRAIN baseline, which alone makes them alike: without a control pair "
                        f"(an unrelated set of the same size, same prompts and baseline) no verdict (rule alone: "
                        f"{decide(estimate, interval, 0.0, p_value=tested.p_value, alpha=alpha)})")


# ------------------------------------------------------------------------------------------------------------------
# From a workdir
# ------------------------------------------------------------------------------------------------------------------
LOAD_ERRORS = (FileNotFoundError, results.CorruptResultError)


@dataclasses.dataclass
class StudyVerdicts:
    verdicts: list[Verdict]
    problems: list[str]          # what could not be computed, each with its reason (absent or unreadable files)


def study_verdicts(workdir, model: str, clean_tasks: Sequence[str], adversarial: Mapping[str, str], *,
                   majority_rates: Mapping[str, float] | None = None, options: Mapping | None = None,
                   controls: Mapping[str, str] | None = None) -> StudyVerdicts:
    """Every finding for `model` from the stage outputs under `workdir`, corrected (`correct`: Holm per finding).
    adversarial: adversarial task -> the clean task whose prompts it used. controls: adversarial task -> the name
    of a predictivity result to use as its control pair (F6a); by default the stage's control result
    (layout.control_predictivity_path), else none. options (report_context.DEFAULT_OPTIONS
    keys): alpha, confidence, type_permutations, type_exact_max, permutation_seed, n_permutations, sign_flips,
    top_fraction."""
    options = dict(options or {})
    alpha, confidence = float(options.get("alpha", 0.05)), float(options.get("confidence", 0.95))
    seed = int(options.get("permutation_seed", 0))
    type_kw = dict(alpha=alpha, confidence=confidence, n_perm=int(options.get("type_permutations", 10000)),
                   seed=seed, max_exact=int(options.get("type_exact_max", 100000)))
    majority_rates = dict(majority_rates or {})
    out, problems = [], []

    def attempt(what, fn):
        try:
            value = fn()
        except LOAD_ERRORS as error:
            problems.append(f"{what}: {error}")
            return None
        except ValueError as error:
            problems.append(f"{what}: not computable ({error})")
            return None
        if isinstance(value, list):
            out.extend(value)
        elif value is not None:
            out.append(value)
        return value

    def transfer_table():
        pairs = [(s, t) for s in clean_tasks for t in clean_tasks]
        table, errors = transfer.load_transfer_table(workdir, model, pairs)
        if errors:
            raise errors[0]
        return f1_transfer(table, clean_tasks, **type_kw)
    attempt("F1", transfer_table)

    for adv, clean in adversarial.items():
        def f2(adv=adv, clean=clean):
            res = results.load_transfer(workdir, model, clean, adv)
            rate = majority_rates.get(adv)
            if rate is None and res.label_counts:
                rate = robustness.majority_rate(res.label_counts)
            return f2_adversarial(adv, clean, res.accuracy, rate, confidence=confidence, alpha=alpha)
        attempt(f"F2 {adv}", f2)

        def drop(adv=adv, clean=clean):
            paired = results.load_paired_outcomes(workdir, model, clean, adv)
            return None if paired is None else f2_drop(adv, clean, *paired, confidence=confidence, alpha=alpha,
                                                       seed=seed)
        attempt(f"F2 drop {adv}", drop)

    preds: dict[str, np.ndarray] = {}

    def per_seed(task):
        if task not in preds:
            loaded = results.load_predictivity(workdir, model, task, arrays=("pred", "pred_per_seed"))
            if loaded.pred_per_seed is None:
                raise results.CorruptResultError(loaded.path, "no 'pred_per_seed' array (needed per seed)")
            preds[task] = loaded.pred_per_seed
            preds[task + "/accuracy"] = loaded.model_accuracy
        return preds[task]

    top_fraction = float(options.get("top_fraction", 0.01))
    for task in clean_tasks:
        def f3(task=task):
            pps = per_seed(task)
            accuracy = preds[task + "/accuracy"]
            extra = results.load_extra_arrays(workdir, model, task, ("acc", "null_pred_max", "null_pred"))
            found = [f3_depth(task, pps, top_fraction=top_fraction, confidence=confidence, alpha=alpha,
                              null_pred=extra.get("null_pred"))]
            if extra.get("acc") is not None and extra["acc"].shape[2] > 1:
                found.append(f3_depth(task, pred_without_slots(extra["acc"]), top_fraction=top_fraction,
                                      confidence=confidence, alpha=alpha, slot0_excluded=True))
            if accuracy is None:
                problems.append(f"F3a {task}: no model accuracy in the predictivity sidecar")
            else:
                found.insert(0, f3_top_neuron(task, pps, accuracy, null_max=extra.get("null_pred_max"),
                                              confidence=confidence, alpha=alpha))
            return found
        attempt(f"F3 {task}", f3)

    def f4():
        return f4_specificity({t: per_seed(t) for t in clean_tasks}, **type_kw)
    attempt("F4", f4)

    flips = int(options.get("sign_flips", 10000))
    for task in clean_tasks:
        attempt(f"F5 {task}", lambda task=task: suppression_verdict(
            "F5", results.load_suppression(workdir, model, task, task), alpha=alpha, confidence=confidence,
            n_flips=flips, seed=seed))

        def f5_slot0(task=task):       # beside the default, where the stage ran with exclude_slots=(0,)
            if not layout.suppression_slots_excluded_path(workdir, model, task, task).exists():
                return None
            result = results.load_suppression(workdir, model, task, task, slot0_excluded=True)
            slots = results.load_json(result.path, what="suppression result").get("excluded_prompt_slots", [0])
            label = "slot 0" if slots == [0] else "slots " + ",".join(str(j) for j in slots)
            found = suppression_verdict("F5", result, alpha=alpha, confidence=confidence, n_flips=flips, seed=seed)
            return dataclasses.replace(found, subject=f"{task} ({label} excluded)", family=f"F5 {label} excluded",
                                       note=found.note + f"; skill neurons selected with prompt {label} (slot 0: "
                                                         "the readout slot) left out of Pred")
        attempt(f"F5 {task} (slot 0 excluded)", f5_slot0)
    controls = dict(controls or {})

    def f6a(adv, clean):
        if adv in controls:
            control, name = per_seed(controls[adv]), controls[adv]
        else:
            found = results.load_control(workdir, model, adv)
            control, name = (None, "") if found is None else found
        return f6_correlation(adv, clean, per_seed(adv), per_seed(clean), alpha=alpha, confidence=confidence,
                              pred_control=control, control=name,
                              n_perm=int(options.get("n_permutations", 1000)), seed=seed)
    for adv, clean in adversarial.items():
        attempt(f"F6a {adv}", lambda adv=adv, clean=clean: f6a(adv, clean))
        attempt(f"F6b {adv}", lambda adv=adv, clean=clean: suppression_verdict(
            "F6b", results.load_suppression(workdir, model, clean, adv), alpha=alpha, confidence=confidence,
            n_flips=flips, seed=seed))
    return StudyVerdicts(correct(out, alpha), problems)


VERDICT_HEADER = ("finding", "subject", "claim", "statistic", "estimate", "reference", "interval",
                  "MDE (80% power)", "test", "p", "p (Holm, per finding)", "p (Holm, table)", "verdict", "note")


def verdict_rows(verdicts: Sequence[Verdict]) -> list[tuple[str, ...]]:
    """One row per verdict under VERDICT_HEADER (numbers to 3 decimals, as computed)."""
    rows = []

    def p_text(p):
        return "–" if p is None else f"{p:.4f}"
    for v in verdicts:
        interval = ("–" if v.interval is None else
                    f"[{v.interval[0]:.3f}, {v.interval[1]:.3f}] ({100 * v.confidence:g}%, {v.interval_units})")
        rows.append((v.finding, v.subject, v.claim, v.statistic, f"{v.estimate:.3f}", f"{v.reference:.3f}",
                     interval, "–" if v.mde is None else f"{v.mde:.3f}", v.test, p_text(v.p_value),
                     p_text(v.p_adjusted), p_text(v.p_table), v.verdict, v.note))
    return rows
