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

Every interval is a two-sided t interval of the mean over prompt seeds (robustness.difference_interval) at
`confidence`; with one seed there is none and the verdict is inconclusive.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from skillneurons_jax.analysis import results, robustness, specificity, transfer

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
                   note="" if min_p is None or min_p < alpha else f"smallest attainable p {min_p:.3f} >= {alpha:g}")


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
                   confidence: float = 0.95) -> Verdict:
    """accuracy [S]: the adversarial set's accuracy with `prompt_task`'s prompts, per seed."""
    chance = chance_rate(majority_rate)
    values = np.asarray(accuracy, np.float64)
    interval, units = seed_interval(values, 0.0, confidence)
    note = (f"majority rate {majority_rate:.3f}" if majority_rate is not None else "majority rate unknown: 0.5 used")
    if prompt_task != (results.clean_task(task) or task):
        note += f"; prompts of {prompt_task} (a transfer, not the paper's {results.clean_task(task)})"
    return Verdict("F2", f"{task} ({prompt_task} prompts)", "adversarial accuracy with clean prompts is at or below "
                   "chance", "accuracy", float(values.mean()), chance, interval, units, confidence, "none", None,
                   decide(float(values.mean()), interval, chance, direction=-1, inclusive=True), note=note)


# ------------------------------------------------------------------------------------------------------------------
# F3 the most predictive neurons
# ------------------------------------------------------------------------------------------------------------------
def f3_top_neuron(task: str, pred_per_seed: np.ndarray, model_accuracy: Sequence[float], *,
                  confidence: float = 0.95) -> Verdict:
    """pred_per_seed [S, L, N]; model_accuracy [S] (same dev split, same seeds in order)."""
    pred_per_seed = np.asarray(pred_per_seed, np.float64)
    accuracy = np.asarray(model_accuracy, np.float64)
    if pred_per_seed.shape[0] != accuracy.shape[0]:
        raise ValueError(f"{task}: {pred_per_seed.shape[0]} seeds of predictivity but {accuracy.shape[0]} model "
                         f"accuracies")
    gap = pred_per_seed.reshape(pred_per_seed.shape[0], -1).max(1) - accuracy
    interval, units = seed_interval(gap, 0.0, confidence)
    return Verdict("F3a", task, "the most predictive neuron reaches the model's accuracy",
                   "max neuron predictivity − model accuracy", float(gap.mean()), 0.0, interval, units, confidence,
                   "none", None, decide(float(gap.mean()), interval, 0.0, inclusive=True),
                   note="both on the dev split; a max over all neurons is biased upwards")


def top_neuron_depth(pred: np.ndarray, top_fraction: float) -> float:
    """pred [L, N] -> mean relative depth l / (L - 1) of the top ceil(top_fraction * L * N) neurons (global)."""
    pred = np.asarray(pred, np.float64)
    layers, neurons = pred.shape
    if layers < 2:
        raise ValueError(f"layer depth needs at least 2 layers, got {layers}")
    k = max(1, math.ceil(top_fraction * layers * neurons))
    top = np.argsort(pred.reshape(-1), kind="stable")[::-1][:k]
    return float(np.mean((top // neurons) / (layers - 1)))


def f3_depth(task: str, pred_per_seed: np.ndarray, *, top_fraction: float = 0.01,
             confidence: float = 0.95) -> Verdict:
    depths = np.array([top_neuron_depth(p, top_fraction) for p in np.asarray(pred_per_seed)])
    interval, units = seed_interval(depths, 0.0, confidence)
    return Verdict("F3b", task, "the most predictive neurons sit in the upper layers",
                   f"mean relative depth of the top {100 * top_fraction:g}% neurons (0 first, 1 last layer)",
                   float(depths.mean()), 0.5, interval, units, confidence, "none", None,
                   decide(float(depths.mean()), interval, 0.5),
                   note="reference 0.5: the mean depth of neurons spread evenly over the layers")


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
                   note="" if min_p is None or min_p < alpha else f"smallest attainable p {min_p:.3f} >= {alpha:g}")


# ------------------------------------------------------------------------------------------------------------------
# F5 / F6b suppression
# ------------------------------------------------------------------------------------------------------------------
def suppression_verdict(finding: str, res: results.Suppression, *, alpha: float = 0.05, confidence: float = 0.95,
                        n_flips: int = 10000, seed: int = 0) -> Verdict:
    """Skill vs random suppression averaged over the levels k > 0 (module docstring, F5)."""
    ks = np.asarray(res.ks, np.float64)
    levels = ks > 0
    if not levels.any():
        raise ValueError(f"{res.path}: no suppression level above 0 %")
    skill = np.asarray(res.skill, np.float64)[levels].mean(0)            # [S]
    random = np.asarray(res.random, np.float64)[levels].mean(0)          # [D, S]
    estimate = float(random.mean(0).mean() - skill.mean())
    interval, units = robustness.difference_interval(skill, random, confidence)
    comparisons = [c for c in robustness.compare_levels(res, confidence=confidence, alpha=alpha, n_flips=n_flips,
                                                        seed=seed) if c.k > 0]
    yes = sum(c.verdict == robustness.YES for c in comparisons)
    verdict = decide(estimate, interval, 0.0)
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
                   interval, units, confidence, f"per level: t interval and paired sign-flip test "
                   f"(robustness.compare_levels); {yes} of {len(comparisons)} levels say yes", None, verdict,
                   note=note)


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
                   alpha: float = 0.05, confidence: float = 0.95, n_perm: int = 1000, seed: int = 0) -> Verdict:
    """pred_adv, pred_clean [S, L, N] (same seeds in order)."""
    pred_adv, pred_clean = np.asarray(pred_adv, np.float64), np.asarray(pred_clean, np.float64)
    seeds = min(pred_adv.shape[0], pred_clean.shape[0])
    per_seed = [float(np.nanmean(specificity.layer_spearman(pred_adv[s], pred_clean[s]))) for s in range(seeds)]
    tested = specificity.permutation_test(pred_adv.mean(0), pred_clean.mean(0), n_perm=n_perm, seed=seed)
    interval, units = seed_interval(per_seed, 0.0, confidence)
    # The estimate is the mean of the per-seed correlations, the centre of their interval. The test runs on the
    # seed-averaged Pred, whose correlation is larger (averaging removes seed noise) and can lie outside that
    # interval: the note gives it.
    estimate = float(np.mean(per_seed))
    return Verdict("F6a", f"{adversarial} vs {clean}", "the adversarial set's predictivities correlate with the "
                   "clean task's", "layer-averaged Spearman correlation of Pred, mean over seeds", estimate, 0.0,
                   interval, units, confidence, f"neuron-permutation test on the seed-averaged Pred ({n_perm} "
                   "within-layer permutations; null: neurons interchangeable, correlation 0)", tested.p_value,
                   decide(estimate, interval, 0.0, p_value=tested.p_value, alpha=alpha),
                   note=f"correlation of the seed-averaged Pred {float(tested.statistic):.3f}; both use the same "
                        "prompts and the clean TRAIN baseline, which alone makes them alike")


# ------------------------------------------------------------------------------------------------------------------
# From a workdir
# ------------------------------------------------------------------------------------------------------------------
LOAD_ERRORS = (FileNotFoundError, results.CorruptResultError)


@dataclasses.dataclass
class StudyVerdicts:
    verdicts: list[Verdict]
    problems: list[str]          # what could not be computed, each with its reason (absent or unreadable files)


def study_verdicts(workdir, model: str, clean_tasks: Sequence[str], adversarial: Mapping[str, str], *,
                   majority_rates: Mapping[str, float] | None = None, options: Mapping | None = None
                   ) -> StudyVerdicts:
    """Every finding for `model` from the stage outputs under `workdir`. adversarial: adversarial task -> the clean
    task whose prompts it used. options (report_context.DEFAULT_OPTIONS keys): alpha, confidence,
    type_permutations, type_exact_max, permutation_seed, n_permutations, sign_flips, top_fraction."""
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
            return f2_adversarial(adv, clean, res.accuracy, rate, confidence=confidence)
        attempt(f"F2 {adv}", f2)

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
            found = [f3_depth(task, pps, top_fraction=top_fraction, confidence=confidence)]
            if accuracy is None:
                problems.append(f"F3a {task}: no model accuracy in the predictivity sidecar")
            else:
                found.insert(0, f3_top_neuron(task, pps, accuracy, confidence=confidence))
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
    for adv, clean in adversarial.items():
        attempt(f"F6a {adv}", lambda adv=adv, clean=clean: f6_correlation(
            adv, clean, per_seed(adv), per_seed(clean), alpha=alpha, confidence=confidence,
            n_perm=int(options.get("n_permutations", 1000)), seed=seed))
        attempt(f"F6b {adv}", lambda adv=adv, clean=clean: suppression_verdict(
            "F6b", results.load_suppression(workdir, model, clean, adv), alpha=alpha, confidence=confidence,
            n_flips=flips, seed=seed))
    return StudyVerdicts(out, problems)


VERDICT_HEADER = ("finding", "subject", "claim", "statistic", "estimate", "reference", "interval", "test",
                  "p", "verdict", "note")


def verdict_rows(verdicts: Sequence[Verdict]) -> list[tuple[str, ...]]:
    """One row per verdict under VERDICT_HEADER (numbers to 3 decimals, as computed)."""
    rows = []
    for v in verdicts:
        interval = ("–" if v.interval is None else
                    f"[{v.interval[0]:.3f}, {v.interval[1]:.3f}] ({100 * v.confidence:g}%, {v.interval_units})")
        rows.append((v.finding, v.subject, v.claim, v.statistic, f"{v.estimate:.3f}", f"{v.reference:.3f}",
                     interval, v.test, "–" if v.p_value is None else f"{v.p_value:.4f}", v.verdict, v.note))
    return rows
