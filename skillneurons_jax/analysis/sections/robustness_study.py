"""The robustness study (issue 17): robust prompt arms (plain / perturbed / anchored) scored on the clean dev,
the adversarial sets and other tasks of their type, the clean skill neurons' predictivity on adversarial data per
arm, and activation patching of skill neurons on adversarial inputs. The numbers are
analysis.robust_tables's tables (its module docstring defines every field); this section only renders them: a table per
kind, the patching recovery curves, the null hypotheses of the intervals, and summary.json "robustness_study".
Writes nothing when the study did not run (no robust/ or patching/ outputs)."""
from __future__ import annotations

import json
import pathlib
from typing import Callable, Optional

import numpy as np

from skillneurons_jax import io, layout
from skillneurons_jax.analysis import figures, inference, provenance, results, robustness, verdicts
from skillneurons_jax.analysis.document import Document
from skillneurons_jax.analysis.report_context import LOAD_ERRORS, ReportContext, no_nan
from skillneurons_jax.analysis import robust_tables as robust_summary

HEADING = "Robust prompts and activation patching (issue 17)"
FIGURE = "figures/robustness/patching_recovery.png"
ARM_HEADER = ("model", "task", "arm", "scored set", "seeds", "n", "majority class %", "accuracy % [CI]",
              "vs plain (pp) [CI]", "p vs plain (Holm)", "anchored − perturbed (pp) [CI]", "p (Holm)",
              "clean cost (pp) [CI]")
MANIPULATION_HEADER = ("model", "task", "step", "arm", "seeds", "task CE (clean)", "CE (perturbed)",
                       "anchor term", "strength × term", "selection-rows balanced acc. %")
PREDICTIVITY_HEADER = ("model", "task", "arm", "adversarial set", "seeds", "skill neurons", "clean Pred % [CI]",
                       "adversarial Pred % [CI]", "drop (pp) [CI], at matched n", "all neurons, adversarial %",
                       "permutation floor, adversarial %", "vs plain (pp) [CI]", "Spearman ρ",
                       "anchored − perturbed (pp) [CI]")
PATCHING_HEADER = ("model", "clean → adversarial", "patch source", "k %", "seeds", "n examples",
                   "unpatched adversarial %", "original %", "skill-patched % [CI]", "random-patched %",
                   "skill − random (pp) [CI]", "p skill > random (Holm)", "fraction recovered %")


def build(context: ReportContext) -> None:
    tables = _tables(context)
    if tables is None:
        return      # the default study has no robust stages: no heading for an empty section
    context.document.h(2, HEADING)
    _render(context, context.document, tables, lambda panels: context.figure(
        figures.patching_recovery_curves, FIGURE, FIGURE_CAPTION, panels, title=FIGURE_TITLE))
    context.summary["robustness_study"] = no_nan({key: tables[key] for key in ("arms", "manipulation", "predictivity",
                                                                                "patching")})


FIGURE_CAPTION = ("Patching recovery: accuracy on adversarial inputs with the top-k% skill neurons (band: interval "
                  "over seeds) or as many random neurons patched")
FIGURE_TITLE = "Activation patching: skill vs random neurons"


def _tables(context: ReportContext) -> Optional[dict]:
    """analysis.robust_tables's three tables (unreadable files listed as the report's problems), with each arm row's
    majority rate filled from the main study's label counts where its evaluation did not record one; None when
    the study did not run."""
    confidence = float(context.options["confidence"])
    arms, arms_read = _load(context, robust_summary.arm_rows, confidence)
    manipulation, _ = _load(context, lambda workdir, _: robust_summary.manipulation_rows(workdir), confidence)
    predictivity, predictivity_read = _load(context, robust_summary.predictivity_rows, confidence)
    patching, patching_read = _load(context, robust_summary.patching_rows, confidence)
    if arms_read and patching_read and predictivity_read and not arms and not patching and not predictivity:
        return None
    # Where an evaluation did not record its labels: this workdir's label counts of the set, else those of the
    # study it reused (config reuse_from: the same tasks, caps and rows), when they count the same examples.
    roots = [context.workdir]
    if context.config.get("reuse_from"):
        reused = pathlib.Path(context.config["reuse_from"])
        try:     # another folder the user gave: read only when nothing in it links out of it (io's integrity rule)
            io.check_tree_inside(reused, skip=(layout.JAX_CACHE_DIR,))
            roots.append(reused)
        except io.OutsideFolder as error:
            context.problem(error)
    for row in arms:
        for root in roots:
            if row.get("majority_rate") is not None:
                break
            counts, _ = results.load_label_counts(root, row["model"], row["target"])
            if counts is not None and sum(counts) == row["n_dev"]:
                row["majority_rate"] = robustness.majority_rate(counts)
                row["majority_borrowed"] = root != context.workdir
    return {"arms": arms, "manipulation": manipulation, "predictivity": predictivity, "patching": patching,
            "readable": {"arms": arms_read, "predictivity": predictivity_read, "patching": patching_read}}


def write(context: ReportContext, doc_path) -> pathlib.Path:
    """The robustness document (config report.robustness_doc, configs/robust.py: docs/ROBUSTNESS_RESULTS.md)
    generated from the results, never typed by hand: where and when they were computed (analysis.provenance),
    the plain prompts' Table 1 rows with their majority rates, this section's tables and its figure (beside the
    document, under docs/<name>/), and the robust and patching settings."""
    doc_path = pathlib.Path(doc_path)
    figure_dir = doc_path.parent / doc_path.stem.lower()
    report_cfg = context.config.get("report") or {}
    document = Document()
    document.h(1, "Robust prompts and activation patching: measured results (issue 17)")
    document.p(f"Generated by skillneurons_jax/analysis/sections/robustness_study.py from the results under "
               f"{context.workdir}; do not edit by hand: rerun the command to regenerate it. The design, the arms "
               f"and the questions are in docs/ROBUSTNESS.md.")
    document.ul(provenance.header_items(context.workdir, context.config, context.inventory.models,
                                        report_cfg.get("robustness_command")))
    document.h(2, "The plain prompts (Table 1 rows of the study's tasks, dev)")
    document.p("Every comparison below rests on prompts that learned their task: a clean accuracy near the "
               "majority rate means the arms' differences are about prompts that did not learn.")
    entries = [e for e in context.accuracy_entries if e.task in set(context.tasks(e.model))]
    if entries:
        document.table(robustness.ACCURACY_HEADER, robustness.accuracy_rows(entries))
    else:
        document.p("No Table 1 result was found.")
    tables = _tables(context)
    if tables is None:
        document.p("The study's robust and patching stages have not written any result.")
    else:
        def figure(panels):
            target = figure_dir / pathlib.Path(FIGURE).name
            try:
                figures.patching_recovery_curves(panels, out_path=target, dpi=context.options["dpi"],
                                                 title=FIGURE_TITLE)
            except Exception as error:  # noqa: BLE001 - the document says so and goes on
                document.p(f"The figure could not be drawn: {type(error).__name__}: {error}")
                return
            document.img(str(target.relative_to(doc_path.parent)), FIGURE_CAPTION)
        _render(context, document, tables, figure)
    document.h(2, "Configuration (robust, patching, tune)")
    document.pre(json.dumps({key: context.config.get(key) for key in ("robust", "patching", "tune", "seeds",
                                                                      "tasks", "max_examples")},
                            indent=1, sort_keys=True, default=str))
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    return io.atomic_write_text(doc_path, document.markdown())


def _render(context: ReportContext, document, tables: dict, figure: Callable) -> None:
    """The section's body into `document`: the null hypotheses, the arms, the predictivity and the patching
    tables; figure(panels) draws and places the recovery curves."""
    confidence = float(context.options["confidence"])
    arms, predictivity, patching = tables["arms"], tables["predictivity"], tables["patching"]
    arms_read, predictivity_read, patching_read = (tables["readable"][k] for k in ("arms", "predictivity",
                                                                                    "patching"))
    document.p(_null_hypotheses(confidence))
    document.h(3, "Robust prompt arms: clean and adversarial accuracy")
    if not arms_read:
        document.p("The arms' evaluation files could not be read (the report lists them under unreadable result files).")
    elif arms:
        document.table(ARM_HEADER, [_arm_cells(row) for row in arms])
        if any(row.get("majority_borrowed") for row in arms):
            document.p("† The set's majority rate from the study this one reused (config reuse_from): its label "
                       "counts of the set, over as many rows; this study's evaluation did not record its labels.")
    else:
        document.p("No robust arm was evaluated.")
    manipulation = tables.get("manipulation") or []
    if manipulation:
        document.h(3, "Manipulation check: the anchor term during training")
        document.p("Each term of the training loss, averaged over the steps since the previous evaluation and over "
                   "seeds (metrics.jsonl): the cross-entropy on the clean and on the perturbed copy of each batch, "
                   "and the anchor term on the perturbed copy (the skill neurons' hinge penalty, unweighted). The "
                   "perturbed control is not trained on the term but measures it with the same targets, so the "
                   "two arms' terms compare: an anchored term well below the control's shows that the anchor moved "
                   "the neurons it targets; one that is not shows that it did not, whatever the accuracies. "
                   "'selection-rows balanced acc.' is the checkpoint-selection dev part's, not the measurement "
                   "rows'. No interval: a description of training, not a test. Its held-out half is the 'perturbed "
                   "dev' rows of the predictivity table below.")
        document.table(MANIPULATION_HEADER, [_manipulation_cells(row) for row in manipulation])
    document.h(3, "The clean task's skill neurons on adversarial data, per arm")
    if not predictivity_read:
        document.p("The arms' predictivity files could not be read (the report lists them under unreadable result files).")
    elif predictivity:
        document.p(_predictivity_text(predictivity[0]))
        perturbed = next((row for row in predictivity if row["kind"] == robust_summary.PERTURBED_DEV_KIND), None)
        if perturbed is not None:
            document.p(_perturbed_dev_text(perturbed))
        document.table(PREDICTIVITY_HEADER, [_predictivity_cells(row) for row in predictivity])
    else:
        document.p("No arm's predictivity was computed (robust.predictivity off, or its stages have not run).")
    document.h(3, "Activation patching on adversarial inputs")
    if not patching_read:
        document.p("The patching files could not be read (the report lists them under unreadable result files).")
    elif patching:
        document.table(PATCHING_HEADER, [_patching_cells(row) for row in patching])
        try:
            panels = _panels(patching)
        except (KeyError, TypeError, ValueError) as error:
            document.p(f"The recovery curves could not be drawn: {type(error).__name__}: {error}")
        else:
            figure(panels)
    else:
        document.p("No patching results.")
    _paired_drop(context, document, confidence)


PAIRED_DROP_HEADER = ("model", "clean → adversarial", "seeds", "pairs", "original − adversarial (pp) [CI]",
                      "MDE (pp, 80% power)", "discordant pairs per seed (orig. right / adv. right)",
                      "exact McNemar p (largest over seeds)", "p (Holm over rows)", "drop shown")


def paired_drop_rows(workdir, confidence: float = 0.95, alpha: float = 0.05) -> list[tuple[str, ...]]:
    """One row per patching result (source "original") that records per-example outcomes: the clean prompts'
    paired drop from AdvGLUE's originals to their adversarial versions (verdicts.f2_drop: two-level bootstrap
    interval over seeds and examples, exact McNemar per seed, the largest p; Holm over the rows)."""
    found = []
    for path in sorted((pathlib.Path(workdir) / layout.PATCHING_DIR).glob("*/*.original.json")):
        pair = results.split_pair(path.name[:-len(".original.json")])
        if pair is None:
            continue
        paired = results.load_paired_outcomes(workdir, path.parent.name, *pair)
        if paired is not None:
            found.append((path.parent.name, pair, verdicts.f2_drop(pair[1], pair[0], *paired,
                                                                   confidence=confidence, alpha=alpha)))
    adjusted = inference.holm([v.p_value for _, _, v in found])
    rows = []
    for (model, (clean, adversarial), v), p in zip(found, adjusted):
        interval = "–" if v.interval is None else f"[{100 * v.interval[0]:+.1f}, {100 * v.interval[1]:+.1f}]"
        rows.append((model, f"{clean} → {adversarial}", v.interval_units.split(" (")[0], v.note.split(";")[0],
                     f"{100 * v.estimate:+.1f} {interval}", "–" if v.mde is None else f"{100 * v.mde:.1f}",
                     v.note.split(": ")[-1], f"{v.p_value:.4g}", f"{p:.4g}",
                     "yes" if v.interval is not None and v.interval[0] > 0 and p < alpha else "no"))
    return rows


def _paired_drop(context: ReportContext, document, confidence: float) -> None:
    """The paired clean-vs-adversarial drop on AdvGLUE's originals, where patching recorded per-example outcomes."""
    try:
        rows = paired_drop_rows(context.workdir, confidence, float(context.options["alpha"]))
    except LOAD_ERRORS as error:
        context.problem(error)
        return
    if not rows:
        return
    document.h(3, "The drop from AdvGLUE's originals to their adversarial versions, paired by example")
    document.p("The clean prompts' unpatched answers on each original and on its adversarial version (the same "
               "rows the patching table uses). Null: for a discordant pair either version is equally likely to be "
               "the one answered right (exact McNemar, binomial on the discordant pairs, per seed; the largest p "
               "over seeds: the drop must show in every seed), Holm over the rows; interval: two-level bootstrap "
               "over seeds and examples; MDE: the smallest drop found 4 times in 5 at this standard error.")
    document.table(PAIRED_DROP_HEADER, rows)


def _load(context: ReportContext, read: Callable, confidence: float) -> tuple[list[dict], bool]:
    """(rows, readable): analysis.robust_tables raises ValueError naming the malformed file; it is listed, not raised."""
    try:
        return read(context.workdir, confidence), True
    except (*LOAD_ERRORS, ValueError) as error:
        context.problem(error)
        return [], False


def _null_hypotheses(confidence: float) -> str:
    level, significance = f"{100 * confidence:g}%", f"{100 * (1 - confidence):g}%"
    return (f"Intervals are {level}. Where an evaluation recorded each example's outcome and there are at least "
            f"{inference.MIN_BOOTSTRAP_SEEDS} seeds, an interval is the percentile interval of a two-level bootstrap "
            "over seeds and examples (every seed is scored on the same rows, so an interval over seeds alone would "
            "leave out the rows' sampling error); otherwise it is a Student-t interval of the mean over seeds "
            "(none below 2 seeds). 'vs plain' is the arm's accuracy minus the plain arm's on the same scored set "
            "and 'clean cost' is plain − arm on the clean dev (> 0: robustness cost clean accuracy); 'anchored − "
            "perturbed' is the decisive contrast: the anchor term alone, both arms trained on the same perturbed "
            "batches. All are paired by seed and example. Their null hypothesis: for every example the two arms are "
            "exchangeable (the sign of its seed-mean difference is a fair coin); the test is the two-sided "
            "per-example paired sign-flip test (unit of replication: the example, seeds averaged first), and its "
            "p is Holm-adjusted (in brackets) within one family: every 'vs plain' p of the table, and the "
            "'anchored − perturbed' ps. 'skill − random' is the adversarial accuracy with the top-k% skill neurons "
            "patched minus that with as many random neurons patched (random averaged over its draws first), "
            "paired by seed and example; its null hypothesis: patching the skill neurons and patching random ones are "
            "exchangeable per example, tested one-sided (skill > random) by the same sign-flip test, Holm over the "
            "levels of one pair. An interval that excludes 0 rejects its null at level "
            f"{significance} (two-sided, uncorrected: read the Holm-adjusted p for the family); one that contains "
            "0 shows no difference, and is no evidence that there is none. 'fraction recovered' = (skill-patched − "
            "unpatched) / (original − unpatched), for patch source 'original' when that gap is > 0; it has no "
            "interval. 'MDE': the smallest difference the row could detect 4 times in 5 (80 % power, two-sided "
            f"{significance}) at its interval's standard error. Accuracies in %, differences in percentage points "
            "(pp); – where undefined.")


def _percent(value: Optional[float], signed: bool = False) -> str:
    """A fraction as a percentage with one decimal; "–" for None / NaN."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _with_interval(row: dict, prefix: str, signed: bool = False) -> str:
    """row[prefix_mean] with its [prefix_low, prefix_high] interval when there is one: "85.0 [80.1, 89.9]"."""
    mean, low, high = row[f"{prefix}_mean"], row[f"{prefix}_low"], row[f"{prefix}_high"]
    if mean is None or low is None or high is None:
        return _percent(mean, signed)
    return f"{_percent(mean, signed)} [{_percent(low, signed)}, {_percent(high, signed)}]"


def _with_mde(row: dict, prefix: str) -> str:
    """A paired difference with its interval and, where its standard error is known, its minimum detectable
    effect at 80 % power: "+3.3 [-2.2, +9.4]; MDE 7.9"."""
    mde = row.get(f"{prefix}_mde")
    text = _with_interval(row, prefix, signed=True)
    return text if mde is None or row.get(f"{prefix}_mean") is None else f"{text}; MDE {100 * mde:.1f}"


def _seeds(row: dict) -> str:
    return ",".join(str(seed) for seed in row["seeds"])


def _predictivity_text(row: dict) -> str:
    scope = "per layer" if row["scope"] == "layer" else "over all layers"
    return (f"The neurons are the clean task's skill neurons the anchor chose: the top {row['top_percent']:g}% "
            f"({scope}) by the main study's predictivity of the plain prompts on the clean dev. Each arm's own "
            "prompts and the clean task's TRAIN baseline give their Pred (eq. 5, in %) on the clean dev and on "
            "the adversarial set. Pred's floor is not 50: labels that carry nothing score higher, the more so the "
            "smaller the set ('permutation floor': the stage's label-permutation null at the adversarial set's n; "
            "– when not computed). 'drop' is clean − adversarial at matched n (the clean Pred subsampled by the "
            "stage to the adversarial set's n, stats option subsample_sizes; not compared when the n differ and no "
            "such Pred exists), > 0: the neurons predict worse on adversarial data; 'vs plain' the arm's "
            "adversarial Pred minus the plain arm's, both paired by seed; "
            "null hypothesis of both: no difference on average over seeds. Selection: the plain arm's clean Pred "
            "is the very statistic the neurons were chosen by (same prompts, same dev rows), so it is optimistic "
            "and its drop overstates what adversarial data cost (regression to the mean); a drop > 0 alone is no "
            "evidence. No arm's adversarial Pred was selected on, so compare the arms there ('vs plain'). 'all "
            "neurons' is the mean adversarial Pred of every neuron (what a neuron picked at random scores); "
            "Spearman ρ correlates the arm's seed-mean clean and adversarial Pred per layer, averaged over the "
            "layers (the paper's AdvX–X correlation), with no test.")


def _perturbed_dev_text(row: dict) -> str:
    """What the rows of the perturbed clean dev are (robust_perturbed_predictivity), from one row's settings."""
    setting = row.get("perturbation") or {}
    rates = ", ".join(f"{name} {float(rate):g}" for name, rate in (setting.get("perturbations") or {}).items())
    return ("The rows 'perturbed dev (held-out, training kind)' are the manipulation check: the same neurons, the "
            "neurons the anchor targets, measured on a perturbed copy of the clean task's dev rows, perturbed with "
            f"the operations and rates the arms were trained with ({rates or 'as recorded'}; mode "
            f"{setting.get('mode', '?')}, perturbation seed {setting.get('seed', '?')}). The dev rows are never "
            "trained on, so these perturbations are held out but of the training kind. 'drop' there is clean − "
            "perturbed on the same rows. If the anchored arm does not raise their Pred there over the perturbed "
            "control ('anchored − perturbed', paired by seed), the anchor did not do what it was meant to do.")


def _predictivity_cells(row: dict) -> tuple:
    """One "predictivity" row of analysis.robust_tables -> PREDICTIVITY_HEADER's cells."""
    target = row["adversarial"] if row["kind"] == "adversarial" else f"{row['adversarial']} ({row['kind']})"
    if row["kind"] == robust_summary.PERTURBED_DEV_KIND:
        target = f"{row['adversarial']}, perturbed dev (held-out, training kind)"
    return (row["model"], row["task"], row["arm"], target, _seeds(row), row["n_neurons"],
            _with_interval(row, "clean_pred"), _with_interval(row, "adversarial_pred"),
            _with_interval(row, "drop", signed=True) + ("" if row.get("drop_mean") is not None
                                                        else f" ({row.get('drop_basis')})"),
            _percent(row["adversarial_all_mean"]), _percent(row.get("adversarial_floor")),
            _with_interval(row, "vs_plain", signed=True),
            "–" if row["spearman"] is None or not np.isfinite(row["spearman"]) else f"{row['spearman']:.3f}",
            _with_interval(row, "vs_perturbed", signed=True))


def _p(row: dict, field: str) -> str:
    """"p (Holm-adjusted p)" of a row's test; "–" where it was not computed."""
    p, holm = row.get(field), row.get(f"{field}_holm")
    if p is None:
        return "–"
    return f"{p:.3g}" + ("" if holm is None else f" ({holm:.3g})")


def _arm_cells(row: dict) -> tuple:
    """One "arms" row of analysis.robust_tables -> ARM_HEADER's cells (clean cost only on clean rows)."""
    scored = "clean dev" if row["split"] == "clean" else (
        row["target"] if row["split"] == "adversarial" else f"{row['target']} ({row['split']})")
    cost = _with_interval(row, "clean_cost", signed=True) if row["split"] == "clean" else "–"
    return (row["model"], row["task"], row["arm"], scored, _seeds(row), row["n_dev"],
            _percent(row.get("majority_rate")) + ("†" if row.get("majority_borrowed") else ""),
            _with_interval(row, "accuracy"),
            _with_mde(row, "vs_plain"), _p(row, "vs_plain_p"),
            _with_mde(row, "vs_perturbed"), _p(row, "vs_perturbed_p"), cost)


def _manipulation_cells(row: dict) -> tuple:
    """One "manipulation" row of analysis.robust_tables -> MANIPULATION_HEADER's cells."""
    return (row["model"], row["task"], row["step"], row["arm"], _seeds(row), f"{row['ce_mean']:.4f}",
            f"{row['perturbed_ce_mean']:.4f}", f"{row['anchor_mean']:.4f}", f"{row['weighted_anchor_mean']:.4f}",
            _percent(row["dev_balanced_accuracy_mean"]))


def _patching_cells(row: dict) -> tuple:
    """One "patching" row of analysis.robust_tables -> PATCHING_HEADER's cells."""
    n_examples = "–" if row["n_examples"] is None else row["n_examples"]
    return (row["model"], f"{row['clean']} → {row['adversarial']}", row["source"], f"{float(row['k']):g}",
            _seeds(row), n_examples, _percent(row["adversarial_mean"]), _percent(row["original_mean"]),
            _with_interval(row, "skill"), _percent(row["random_mean"]),
            _with_mde(row, "skill_minus_random"), _p(row, "skill_minus_random_p"),
            _percent(row["fraction_recovered"]))


def _panels(rows: list[dict]) -> list[figures.PatchingPanel]:
    """One recovery-curve panel per (model, clean, adversarial, patch source), levels in increasing k."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["clean"], row["adversarial"], row["source"]), []).append(row)
    panels = []
    for (model, clean, adversarial, source), group in groups.items():
        group = sorted(group, key=lambda row: float(row["k"]))
        panels.append(figures.PatchingPanel(
            label=f"{model}: {clean} → {adversarial} ({source})", ks=_column(group, "k"),
            skill_mean=_column(group, "skill_mean"), skill_low=_column(group, "skill_low"),
            skill_high=_column(group, "skill_high"), random_mean=_column(group, "random_mean"),
            adversarial=group[0]["adversarial_mean"], original=group[0]["original_mean"],
            n_seeds=group[0]["n_seeds"]))
    return panels


def _column(group: list[dict], field: str) -> np.ndarray:
    """[K] values of `field` over one panel's rows; a missing bound (one seed) is NaN, which the band skips."""
    return np.array([np.nan if row[field] is None else row[field] for row in group], np.float64)
