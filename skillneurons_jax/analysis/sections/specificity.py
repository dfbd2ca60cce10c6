"""Task specificity (Figures 3 and 8): Spearman correlations of predictivity between datasets, the neuron-
permutation p-value of each pair (labelled for what it tests), the texts each pair shares and how their labels
correlate on them (measured from the data by the pipeline: ReportContext.label_overlap), the task-type permutation
test of within- vs between-type correlation, and each dataset's seed-split reliability (the ceiling of any
correlation)."""
from __future__ import annotations

import numpy as np

from skillneurons_jax.analysis import figures, headline, results, specificity
from skillneurons_jax.analysis.report_context import LOAD_ERRORS, ReportContext, jsonable

# Two datasets of different task types control for each other only if their labels are nearly independent: no
# shared text, or a label correlation on the shared texts below this in absolute value (issue 14).
INDEPENDENT_LABELS_MAX_R = 0.1


def build(context: ReportContext, model: str) -> None:
    document, options = context.document, context.options
    document.h(3, "Task specificity (Figures 3 and 8)", anchor=headline.anchor("specificity", model))
    predictivities = context.predictivities.get(model, {})
    if not predictivities:
        document.p("No predictivity results.")
        return
    by_shape: dict[tuple, dict] = {}
    for task, pred in predictivities.items():
        by_shape.setdefault(pred.shape, {})[task] = pred
    group = max(by_shape.values(), key=len)
    if len(by_shape) > 1:
        context.problems.append(f"task specificity for {model}: predictivities of different shapes "
                                f"{ {t: p.shape for t, p in predictivities.items()} }; only {sorted(group)} are "
                                f"compared")
    if len(group) < 2:
        context.missing.append(f"task specificity for {model}: needs predictivities of at least 2 datasets, "
                               f"found {sorted(predictivities)}")
        document.p("Needs predictivities of at least 2 datasets.")
        return
    n_perm, seed, alpha = int(options["n_permutations"]), int(options["permutation_seed"]), options["alpha"]
    result = specificity.analyse(group, n_perm=n_perm, seed=seed)
    document.p(f"Spearman rank correlation of Pred between datasets, per layer, averaged over layers. "
               f"'Neuron-permutation p' ('*' in the figure: p < {alpha}): {n_perm} within-layer permutations of "
               f"neuron labels, seed {seed}. Its null is 'the neurons are interchangeable' (correlation 0); with "
               f"thousands of neurons almost any pair rejects it, so a small value says only that the correlation "
               f"is not zero, never that two tasks are of one type. The task-type test below answers that.")
    figure_dir = f"figures/{model}"
    context.figure(figures.spearman_heatmap, f"{figure_dir}/spearman.png",
                   f"{model}: layer-averaged Spearman correlation of neuron predictivities (Figure 3)", result.mean,
                   result.tasks, pvalues=result.pvalues, alpha=alpha,
                   title=f"{model}: task specificity (Spearman, mean over layers)")
    if result.zscored is not None:
        context.figure(figures.spearman_heatmap, f"{figure_dir}/spearman_zscored.png",
                       f"{model}: correlations z-scored among all dataset pairs (Figure 8)", result.zscored,
                       result.tasks, zscored=True, pvalues=result.pvalues, alpha=alpha,
                       title=f"{model}: task specificity, z-scored correlations")
    else:
        context.missing.append(f"z-scored task specificity for {model}: needs at least 3 datasets with distinct "
                               f"correlations, found {result.tasks}")
    reliability = _reliabilities(context, model, result.tasks)
    overlaps = _overlaps_by_pair(context)
    rows = []
    for i in range(len(result.tasks)):
        for j in range(i + 1, len(result.tasks)):
            a, b = result.tasks[i], result.tasks[j]
            same = results.task_type(a) == results.task_type(b)
            ceiling = _ceiling(reliability.get(a), reliability.get(b))
            rows.append((a, b, "same" if same else "different", _shared_prompt_note(a, b),
                         _overlap_cell(overlaps.get(frozenset((a, b)))), f"{result.mean[i, j]:.3f}",
                         "–" if ceiling is None else f"{ceiling:.3f}",
                         "–" if result.zscored is None else f"{result.zscored[i, j]:+.2f}",
                         "–" if result.pvalues is None else f"{result.pvalues[i, j]:.4f}"))
    document.table(("dataset", "dataset", "task type", "shared prompt", "shared texts (label r)", "Spearman",
                    "ceiling", "z-score", "neuron-permutation p"), rows)
    document.p(_label_dependence(context, result.tasks, overlaps))
    document.p("Ceiling = sqrt(reliability_a × reliability_b), each reliability the Spearman-Brown-corrected "
               "split-half agreement of a dataset's Pred across its prompt seeds: no pair can correlate much "
               "above it, whatever the task types.")
    if reliability:
        document.table(("dataset", "seeds", "split-half Spearman", "Spearman-Brown", "splits"),
                       [(t, str(r.n_seeds), f"{r.split_half:.3f}", f"{r.spearman_brown:.3f}", str(r.n_splits))
                        for t, r in reliability.items()])
    within_between = specificity.within_between(result.mean, result.tasks, results.TASK_TYPE)
    type_test = _type_test(context, model, result)
    summary = {"tasks": result.tasks, "spearman": jsonable(result.mean), "zscored": jsonable(result.zscored),
               "pvalues": jsonable(result.pvalues), "pvalue_null": "within-layer permutations of neuron labels",
               "n_permutations": n_perm, "permutation_seed": seed, "within_between": within_between,
               "reliability": {t: {"split_half": r.split_half, "spearman_brown": r.spearman_brown,
                                   "n_seeds": r.n_seeds, "n_splits": r.n_splits} for t, r in reliability.items()},
               "type_test": None, "label_overlap": context.label_overlap}
    if type_test is not None:
        summary["type_test"] = {
            "within": type_test.within, "between": type_test.between, "n_within": type_test.n_within,
            "n_between": type_test.n_between, "difference": type_test.statistic, "p_value": type_test.p_value,
            "exact": type_test.exact, "n_assignments": type_test.n_assignments, "n_permutations": type_test.n_perm,
            "seed": type_test.seed, "min_p": type_test.min_p, "excluded_pairs": type_test.excluded_pairs,
            "null": "task-type labels permuted across datasets", "verdict": _type_verdict(type_test, alpha)}
    summary["anchor"] = headline.anchor("specificity", model)
    context.summary.setdefault("specificity", {})[model] = summary


def _overlaps_by_pair(context: ReportContext) -> dict[frozenset, dict]:
    """{frozenset((task_a, task_b)): label_overlap record} of the measured pairs (empty when not measured)."""
    pairs = (context.label_overlap or {}).get("pairs") or []
    return {frozenset((p["task_a"], p["task_b"])): p for p in pairs}


def _overlap_cell(record: dict | None) -> str:
    if record is None:
        return "–"
    if not record["shared_texts"]:
        return "0 (disjoint)"
    r = record["pearson_r"]
    return f"{record['shared_texts']} (" + ("r undefined: one side constant" if r is None else f"r = {r:+.2f}") + ")"


def _label_dependence(context: ReportContext, tasks, overlaps: dict) -> str:
    """What the 'shared texts' column means, and whether the pairs of different task types rest on nearly
    independent labels."""
    measured = context.label_overlap
    if not measured:
        return ("Shared texts (label r): not measured (the report was built without the datasets; the pipeline's "
                "report stage measures them).")
    if measured.get("error"):
        return f"Shared texts (label r): not measured ({measured['error']})."
    meaning = (f"Shared texts (label r): the texts both datasets contain over their {', '.join(measured['splits'])} "
               f"splits, and the Pearson correlation of their labels on those texts (adversarial sets are not "
               f"measured: they pair with their clean task, which the type test leaves out). Eq. 4 ignores label "
               f"flips, so two datasets whose labels are functions of each other on shared texts (|r| near 1) "
               f"correlate whatever their neurons do; a comparison of task types needs every pair of different "
               f"types disjoint or at |r| < {INDEPENDENT_LABELS_MAX_R}.")
    between = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1:]
               if results.task_type(a) != results.task_type(b) and frozenset((a, b)) in overlaps]
    if not between:
        return meaning + " No pair of different task types was measured here."
    dependent = [f"{a}/{b} ({_overlap_cell(overlaps[frozenset((a, b))])})" for a, b in between
                 if _dependent(overlaps[frozenset((a, b))])]
    if dependent:
        return meaning + (" Pairs of different task types not shown to have nearly independent labels: "
                          + ", ".join(dependent) + ": their correlation may come partly from their labels, not "
                          "from shared skills.")
    return meaning + (f" Every measured pair of different task types ({len(between)}) is disjoint or below "
                      f"|r| = {INDEPENDENT_LABELS_MAX_R}: the type comparison rests on nearly independent labels.")


def _dependent(record: dict) -> bool:
    """Shared texts whose labels correlate at |r| >= INDEPENDENT_LABELS_MAX_R (or cannot be correlated)."""
    if not record["shared_texts"]:
        return False
    r = record["pearson_r"]
    return r is None or abs(r) >= INDEPENDENT_LABELS_MAX_R


def _shared_prompt_note(a: str, b: str) -> str:
    if results.clean_task(a) == b or results.clean_task(b) == a:
        return "yes (clean/adversarial)"
    return "no"


def _ceiling(a, b) -> float | None:
    if a is None or b is None or not (np.isfinite(a.spearman_brown) and np.isfinite(b.spearman_brown)):
        return None
    return float(np.sqrt(max(a.spearman_brown, 0.0) * max(b.spearman_brown, 0.0)))


def _reliabilities(context: ReportContext, model: str, tasks) -> dict:
    """task -> ReliabilityResult from `pred_per_seed` (else from `acc`); tasks with one seed are skipped."""
    out = {}
    for task in tasks:
        try:
            loaded = results.load_predictivity(context.workdir, model, task, arrays=("pred_per_seed",),
                                               with_sidecar=False)
            per_seed = loaded.pred_per_seed
        except results.CorruptResultError:
            try:            # an npz without pred_per_seed: compute it from acc (eqs. 4-5 before the seed mean)
                acc = results.load_predictivity(context.workdir, model, task, arrays=("acc",),
                                                with_sidecar=False).acc
                per_seed = specificity.per_seed_predictivity(acc)
            except LOAD_ERRORS as error:
                context.problem(error)
                continue
        except FileNotFoundError as error:
            context.problem(error)
            continue
        if per_seed is None or per_seed.shape[0] < 2:
            context.missing.append(f"seed-split reliability for {model}/{task}: needs at least 2 seeds")
            continue
        out[task] = specificity.seed_split_reliability(per_seed)
    return out


def _type_test(context: ReportContext, model: str, result) -> specificity.TypeTestResult | None:
    document, options, alpha = context.document, context.options, context.options["alpha"]
    shared = [(t, results.clean_task(t)) for t in result.tasks if results.clean_task(t) in result.tasks]
    document.p("Within vs between task types. Statistic: mean correlation over pairs of datasets of the same task "
               "type minus the mean over pairs of different types (adversarial sets count as their clean task's "
               "type; clean/adversarial pairs are left out because they share one prompt and one baseline, which "
               "makes them alike whatever the task type). Null: the task-type labels permuted across the "
               "datasets (every distinct assignment when there are at most "
               f"{options['type_exact_max']}, else {options['type_permutations']} random ones, seed "
               f"{options['permutation_seed']}). A small p-value means the real task types separate high from low "
               "correlations better than almost any relabelling of the same datasets.")
    try:
        test = specificity.type_permutation_test(
            result.mean, result.tasks, results.TASK_TYPE, n_perm=int(options["type_permutations"]),
            seed=int(options["permutation_seed"]), max_exact=int(options["type_exact_max"]), exclude_pairs=shared)
    except ValueError as error:
        document.p(f"Within-type correlation higher than between-type: not testable ({error}).")
        context.missing.append(f"task-type test for {model}: {error}")
        return None
    document.p(_type_verdict(test, alpha))
    return test


def _type_verdict(test: specificity.TypeTestResult, alpha: float) -> str:
    """The plain sentence, computed: yes iff the difference is positive and p < alpha; "cannot be shown here"
    when the design's smallest attainable p is >= alpha (a "no" would read as evidence against); else not shown."""
    if test.statistic > 0 and test.p_value < alpha:
        answer = "yes"
    elif test.min_p >= alpha:
        answer = "cannot be shown with these datasets (inconclusive)"
    else:
        answer = "not shown"
    how = (f"exact over {test.n_assignments} assignments" if test.exact
           else f"Monte Carlo, {test.n_perm} assignments, seed {test.seed}")
    sentence = (f"Within-type correlation higher than between-type: {answer} (within "
                f"{test.within:.3f} over {test.n_within} pair(s), between {test.between:.3f} over {test.n_between} "
                f"pair(s), difference {test.statistic:+.3f}, p = {test.p_value:.4f}, {how}; yes needs a positive "
                f"difference and p < {alpha:g}).")
    if test.min_p >= alpha:
        sentence += (f" With these datasets the smallest attainable p is {test.min_p:.3f} >= {alpha:g}: the design "
                     f"cannot show a difference, whatever the correlations.")
    return sentence
