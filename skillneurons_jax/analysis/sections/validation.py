"""The validation document (issue #15): docs/VALIDATION.md generated from the results, never typed by hand.

    write(context, doc_path) -> pathlib.Path

Called by analysis.report.build_report after the other sections when config["report"]["validation_doc"] names
a path (configs/validation.py), so rerunning the study regenerates it. It records the command
(config["report"]["validation_command"]), the commit, the machine, the run time (the span of the stage outputs'
timestamps), Table 1 (dev; held-out test where a result records one) with the majority rate and whether the
prompts reach 10 points above it, the study's own probe reference beside each clean task on dev and test
(stage probe) with the learnability rule applied (a task beyond this model is left out of the verdicts), each
clean task's learning curve on its selection rows beside the probe's reference, the verdict table (analysis.verdicts:
statistic, interval, test, verdict, and
the rule), the key figures copied beside it (docs/validation/*.png, under 2 MB in all), and, per finding, what
differs from the paper's setting and what that means for the verdict.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import shutil

import numpy as np

from skillneurons_jax import io
from skillneurons_jax.analysis import figures, learnability, provenance, results, robustness, verdicts
from skillneurons_jax.analysis.sections import accuracy
from skillneurons_jax.analysis.document import Document
from skillneurons_jax.analysis import report_context
from skillneurons_jax.analysis.report_context import ReportContext, no_nan, relative_path
from skillneurons_jax.prompt import metrics

MAX_FIGURE_BYTES = 2 * 1024 * 1024        # the limit for the document's figures, all together
TARGET_POINTS = 0.10                       # the learning target: 10 points above the dev majority rate
# The report's figures worth carrying into the document, in order (file names under report/figures/<model>/).
KEY_FIGURES = (("transfer_relative.png", "F1: relative transfer (source prompt on target / target's own prompt)"),
               ("predictivity_per_layer.png", "F3: predictivity per layer"),
               ("spearman.png", "F4: Spearman correlation of predictivities between datasets"),
               ("suppression_same_task.png", "F5: suppressing each task's own skill neurons vs random neurons"),
               ("suppression_cross_task.png", "F6: clean skill neurons suppressed on the adversarial sets"))

# What differs from the paper's setting, per finding, and what it means for the verdict: explanations of the
# setting, not results (the numbers they refer to are in the tables above them); the plan's own facts (tasks,
# types, caps, draws) come from the config and the results found, never typed in.
def differences(config: dict, clean_tasks: list[str], model: str) -> dict[str, str]:
    """{finding: text} for the document's last section. clean_tasks: the clean tasks with results."""
    by_type: dict[str, list[str]] = {}
    for task in clean_tasks:
        by_type.setdefault(results.task_type(task), []).append(task)
    pairs = [f"{' / '.join(tasks)} ({kind})" for kind, tasks in sorted(by_type.items()) if len(tasks) > 1]
    types = (f"{len(clean_tasks)} clean task{'s' if len(clean_tasks) != 1 else ''} in {len(by_type)} type"
             f"{'s' if len(by_type) != 1 else ''}, with same-type groups: {', '.join(pairs) if pairs else 'none'}")
    cap = config.get("max_examples")
    rows = f"splits capped at {cap} rows" if cap else "full splits"
    suppression = config.get("suppression") or {}
    supp_cap = suppression.get("max_examples") or cap
    supp_rows = f"at most {supp_cap} dev rows" if supp_cap else "every dev row"
    draws = suppression.get("random_draws")
    return {
        "F1": f"The paper: RoBERTa-base / T5-base, 100 prompt tokens, full training. Here {model}, its recipe "
              "(configs) and budget: prompts that learn little transfer little, which compresses relative transfer "
              "towards 1 for every pair and makes a within/between difference harder to see. The results hold "
              f"{types}; the paper's comparison needs learned prompts on several types with several datasets each "
              "(no QQP, IMDB or MNLI here).",
        "F2": "The paper evaluates AdvQQP with QQP prompts; there is no QQP train here, so AdvQQP uses the MRPC prompts "
              "(a paraphrase transfer): its accuracy mixes the transfer loss with the adversarial loss. AdvGLUE dev "
              "sets are small (tens to about 150 examples), so chance-level verdicts rest on wide intervals.",
        "F3": f"Predictivity here is measured on {rows}, with this model's prompt length: fewer prompt positions to "
              "take the max over (eq. 5) lowers Pred, a small split raises the max over neurons by chance; F3a is "
              "tested against the label-permutation null of the max Pred at the split's n (inconclusive where the "
              "stage computed none), and F3b is also given with prompt slot 0 (the readout) left out of the max over "
              "prompt tokens. With few layers, 'upper layers' is a coarser statement than in 12/24 layers.",
        "F4": "Same type structure as F1 (above): the exact task-type permutation test has as many assignments as "
              "the types allow, so even a clean separation has a limited smallest p; the verdict says so.",
        "F5": f"Suppression here is evaluated on {supp_rows}"
              + (f" with {draws} random draws per level" if draws else "")
              + "; the model's FFN width sets how many neurons k % removes. Prompts near majority accuracy leave "
              "little to lose, which can hide a skill-neuron effect.",
        "F6": "As F2 for AdvQQP (MRPC prompts and MRPC TRAIN baseline). Adversarial and clean predictivities share the "
              "prompt and the baseline, which alone correlates them: F6a is tested against a control pair (an "
              "unrelated set of the same size seen through the same prompt and baseline) and is inconclusive without "
              "one; the neuron-permutation p it prints is not its test.",
    }


def write(context: ReportContext, doc_path) -> pathlib.Path:
    """Builds the document from `context` (after the report's other sections ran) and writes it atomically."""
    doc_path = pathlib.Path(doc_path)
    figure_dir = doc_path.parent / doc_path.stem.lower()        # docs/VALIDATION.md -> docs/validation/
    report_cfg = context.config.get("report") or {}
    adversarial_prompts = report_context.adversarial_prompts(context.config)
    document = Document()
    document.h(1, "Validation: the paper's findings measured with this code")
    document.p(f"Generated by skillneurons_jax/analysis/sections/validation.py from the results under "
               f"{context.workdir}; do not edit by hand: rerun the command to regenerate it.")
    document.ul(provenance.header_items(context.workdir, context.config, context.inventory.models,
                                        report_cfg.get("validation_command")))
    summary = {"verdicts": {}, "table1": {}, "problems": {}, "learning_curves": {}, "learnability": {}}
    for model in context.inventory.models:
        entries = _entries(context, model, adversarial_prompts)
        below_target = _table1(context, document, model, entries, summary)
        beyond = _learnability(context, document, model, entries, summary)
        clean = [t for t in context.tasks(model) if results.clean_task(t) is None and t in _present(context, model)]
        _learning_curves(context, document, model, clean, figure_dir, doc_path.parent, summary)
        clean = [t for t in clean if t not in beyond]      # the learnability rule: left out of the verdicts
        adversarial = {t: adversarial_prompts.get(t) or results.clean_task(t) for t in context.tasks(model)
                       if results.clean_task(t) is not None}
        adversarial = {t: c for t, c in adversarial.items() if c not in beyond}
        found = verdicts.study_verdicts(context.workdir, model, clean, adversarial,
                                        majority_rates={e.task: e.majority_rate for e in entries
                                                        if e.majority_rate is not None},
                                        options=context.options)
        found.verdicts[:] = [premise_checked(v, below_target) for v in found.verdicts]
        document.h(2, f"Verdicts ({model})")
        document.p(f"Rule (analysis/verdicts.py `decide`): {verdicts.RULE} alpha = {context.options['alpha']:g}. "
                   f"Premise: every finding is a claim about prompts that learned their task; a verdict on a task "
                   f"whose prompts stayed below the learning target ({100 * TARGET_POINTS:g} points over the dev "
                   f"majority rate), or on a comparison that includes one, is inconclusive, and its note gives the "
                   f"rule's verdict and why (a skill-neuron effect of an unlearned prompt is no evidence either way). "
                   f"Every verdict has a p (its finding's test, or the one-sided test of its interval's data); the "
                   f"rule uses it Holm-corrected within the finding ('p (Holm, per finding)'), and the Holm p over "
                   f"the whole table stands beside it for a reader who counts every row as one family. 'MDE (80% "
                   f"power)' is the smallest true effect the rule would call supported 4 times in 5 at the measured "
                   f"standard error: an inconclusive verdict with an MDE above the effect of interest is a design "
                   f"that could not answer. Nulls and units of replication per test: docs/interfaces.md (analysis, "
                   f"verdicts). Every ± and standard error uses ddof = 1.")
        if found.verdicts:
            document.table(verdicts.VERDICT_HEADER, verdicts.verdict_rows(found.verdicts))
        else:
            document.p("No finding could be computed from these results.")
        if found.problems:
            document.p("Not computed (each with its reason):")
            document.ul(found.problems)
        summary["verdicts"][model] = [v.as_dict() for v in found.verdicts]
        summary["problems"][model] = found.problems
        _figures(context, document, model, figure_dir, doc_path.parent)
    document.h(2, "What differs from the paper, per finding")
    for model in context.inventory.models:
        clean = [t for t in context.tasks(model) if results.clean_task(t) is None]
        for finding, text in differences(context.config, clean, model).items():
            document.p(f"**{finding}.**{f' ({model})' if len(context.inventory.models) > 1 else ''} {text}")
    document.h(2, "Configuration")
    document.pre(json.dumps(context.config, indent=1, sort_keys=True, default=str))
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    written = io.atomic_write_text(doc_path, document.markdown())
    io.atomic_write_json(figure_dir / "verdicts.json", no_nan(summary))
    context.summary["validation"] = {"document": str(written), **no_nan(summary)}
    return written


def _learnability(context: ReportContext, document: Document, model: str, entries, summary: dict) -> dict:
    """The study's own probes (stage probe) beside Table 1 on dev and test, and the learnability rule applied:
    returns {task: why} of the clean tasks beyond this model, which the verdicts leave out."""
    try:
        probes = {(model, task): r for task, r in learnability.load_probes(context.workdir, model).items()}
    except (OSError, ValueError) as error:
        context.problem(error)
        probes = {}
    test_entries = [e for e in accuracy.held_out_entries(context, report_problems=False) if e.model == model]
    rows, records = learnability.rule_rows(entries, probes, test_entries=test_entries)
    document.h(3, f"Learnability ({model}): the prompts beside the frozen-feature probe, dev and test")
    if not rows:
        document.p("No probe result was found (WORKDIR/probe/; config.probe plans the stage): the learnability "
                   "rule was not applied.")
        summary["learnability"][model] = {"records": [], "beyond_model": {}}
        return {}
    document.p(accuracy.LEARNABILITY_TEXT)
    document.table(learnability.RULE_HEADER, rows)
    beyond = {task: why for (_, task), why in learnability.beyond_tasks(records).items()}
    document.p("Left out of the verdicts by the rule: " + ("; ".join(f"{t} ({why})" for t, why in beyond.items())
                                                          if beyond else "none") + ".")
    summary["learnability"][model] = {"records": records, "beyond_model": beyond}
    return beyond


def premise_checked(verdict: verdicts.Verdict, below_target) -> verdicts.Verdict:
    """`verdict` with its premise checked: when its subject names a clean task whose prompts stayed below the
    learning target (or is a comparison over all clean tasks while any did), the verdict is inconclusive and the
    note records the rule's verdict and why."""
    below = sorted(set(below_target))
    if not below:
        return verdict
    named = set(re.findall(r"[a-z0-9]+", verdict.subject.lower()))
    failed = below if verdict.subject == "clean tasks" else [t for t in below if t in named]
    if not failed:
        return verdict
    reason = (f"premise not met: the prompts of {', '.join(failed)} stayed below the learning target "
              f"(rule alone: {verdict.verdict})")
    note = f"{verdict.note}; {reason}" if verdict.note else reason
    return dataclasses.replace(verdict, verdict=verdicts.INCONCLUSIVE, note=note)


def _present(context: ReportContext, model: str) -> set[str]:
    return set(context.inventory.tasks(model))


def _entries(context: ReportContext, model: str, adversarial_prompts: dict) -> list[robustness.AccuracyEntry]:
    """Table 1's entries for `model`; an adversarial set whose prompts came from another clean task (config
    `adversarial_prompts`) is read from that task's transfer result and labelled with it."""
    entries = []
    for entry in context.accuracy_entries:
        if entry.model != model:
            continue
        prompt = adversarial_prompts.get(entry.task)
        if prompt is not None:
            try:
                res = results.load_transfer(context.workdir, model, prompt, entry.task)
            except (FileNotFoundError, results.CorruptResultError) as error:
                context.problem(error)
            else:
                balanced = None if res.confusion is None else metrics.balanced_accuracy(res.confusion)
                replaced = robustness.AccuracyEntry(model, entry.task, prompt, res.accuracy, res.f1,
                                                    source=relative_path(res.path, context.workdir),
                                                    balanced_accuracy=balanced,
                                                    n_examples=res.n_dev)
                replaced.label_counts = res.label_counts or entry.label_counts
                replaced.facts = entry.facts
                entry = replaced
        entries.append(entry)
    return entries


def _table1(context: ReportContext, document: Document, model: str, entries, summary: dict) -> list[str]:
    """Table 1 on dev and on the held-out test split, and the learning target; returns the clean tasks below it."""
    document.h(2, f"Table 1 ({model}): accuracy on dev")
    if not entries:
        document.p("No accuracy results found.")
        return []
    document.table(robustness.ACCURACY_HEADER, robustness.accuracy_rows(entries))
    rows, missed = [], []
    for e in entries:
        mean = float(np.mean(e.accuracy))
        if e.majority_rate is None:
            rows.append((e.task, e.prompt_task, f"{100 * mean:.1f}", "–", "–", "unknown (no label counts)"))
            continue
        margin = mean - e.majority_rate
        reached = margin >= TARGET_POINTS
        if not reached and results.clean_task(e.task) is None:
            missed.append(e.task)
        rows.append((e.task, e.prompt_task, f"{100 * mean:.1f}", f"{100 * e.majority_rate:.1f}", f"{100 * margin:+.1f}",
                     "yes" if reached else "no"))
    document.p(f"The learning target: each clean task's prompts at least {100 * TARGET_POINTS:g} points above its "
               f"dev majority rate (mean over seeds).")
    document.table(("task", "prompt", "accuracy (%)", "majority (%)", "points over majority",
                    f">= {100 * TARGET_POINTS:g} points"), rows)
    document.p("Clean tasks below the target: " + (", ".join(missed) if missed else "none") + ".")
    test_entries = [e for e in accuracy.held_out_entries(context, report_problems=False) if e.model == model]
    document.h(3, f"Table 1 ({model}): accuracy on the held-out test split")
    if test_entries:
        document.p("The own prompt of each clean task on its test split, scored once (nothing was selected on "
                   "it); n and the majority class are the test split's.")
        document.table(robustness.ACCURACY_HEADER, robustness.accuracy_rows(test_entries))
    else:
        document.p("No held-out test result was found (WORKDIR/test/transfer/).")
    summary["table1"][model] = {"records": robustness.accuracy_records(entries), "below_target": missed,
                                "test_records": robustness.accuracy_records(test_entries)}
    return missed


def _learning_curves(context: ReportContext, document: Document, model: str, clean: list[str],
                     figure_dir: pathlib.Path, doc_dir: pathlib.Path, summary: dict) -> None:
    """Each clean task's tuning runs evaluation by evaluation (the selection rows: the checkpoint choice), with
    the frozen-feature probe's reference beside them when the study has its results: whether the recipe still
    gained when the budget ended, and how far from the probe it stopped."""
    curves, problems = [], []
    for task in clean:
        seeds = context.inventory.prompts.get(model, {}).get(task)
        if not seeds:
            continue
        try:
            curves.append(results.load_tuning_curve(context.workdir, model, task, seeds))
        except (FileNotFoundError, results.CorruptResultError) as error:
            problems.append(f"{task}: {error}")
    if not curves:
        return
    probes = learnability.load_probes(context.workdir, model)
    references = {t: learnability.reference_balanced(probes[t]) for t in probes}
    document.h(2, f"Learning curves ({model})")
    document.p("Balanced accuracy on each clean task's selection rows (the dev part checkpoints are chosen on, "
               "disjoint from the measurement rows of Table 1 and every statistic), mean +- sd (ddof = 1) over the "
               "seeds evaluated at that step (a seed that stopped early drops out); 'best step' is the evaluation "
               "each seed kept; 'last gain' is each seed's change over its own last two evaluations, mean over seeds (a "
               "positive value: the prompts were still learning when the budget or early stopping ended them). The probe column is the frozen-feature linear "
               "probe's reference balanced accuracy on the task's dev split (stage `probe`; '-' where the study "
               "ran none).")
    rows, record = [], {}
    for c in curves:
        mean, sd, seen = c.balanced_summary()
        cells = [f"{int(step)}: {m:.3f} +- {d:.3f} ({int(k)})" if np.isfinite(d) else f"{int(step)}: {m:.3f} ({int(k)})"
                 for step, m, d, k in zip(c.steps, mean, sd, seen)]
        gains = [v[np.isfinite(v)][-1] - v[np.isfinite(v)][-2] for v in c.balanced.T if np.isfinite(v).sum() > 1]
        gain = float(np.mean(gains)) if gains else float("nan")
        ref = references.get(c.task)
        rows.append([c.task, "-" if c.rows is None else str(c.rows), str(len(c.seeds)), "; ".join(cells),
                     ", ".join(str(int(b)) for b in c.best_steps), "-" if not np.isfinite(gain) else f"{gain:+.3f}",
                     "-" if ref is None else f"{ref:.3f}"])
        record[c.task] = {"steps": c.steps.tolist(), "balanced_mean": mean.tolist(), "balanced_sd": sd.tolist(),
                          "seeds_evaluated": seen.tolist(), "best_steps": c.best_steps.tolist(), "rows": c.rows,
                          "probe_reference": ref}
    document.table(["task", "selection rows", "seeds", "step: balanced acc mean +- sd (seeds)", "best step per seed",
                    "last gain", "probe (dev, balanced)"], rows)
    if problems:
        document.p("No curve: " + "; ".join(problems))
    figure_dir.mkdir(parents=True, exist_ok=True)
    out = figures.learning_curves(curves, references, figure_dir / f"{model}_learning_curves.png",
                                  title=f"{model}: balanced accuracy on the selection rows during tuning "
                                        f"(dashed: probe reference)", dpi=int(context.options.get("dpi", 70)))
    document.img(str(out.relative_to(doc_dir)), f"{model}: learning curves")
    summary["learning_curves"][model] = record


def _figures(context: ReportContext, document: Document, model: str, figure_dir: pathlib.Path,
             doc_dir: pathlib.Path) -> None:
    """Copies the report's key figures beside the document while they stay under MAX_FIGURE_BYTES in all."""
    source_dir = context.out_dir / "figures" / model
    total = sum(f.stat().st_size for f in figure_dir.glob("*.png")) if figure_dir.exists() else 0
    document.h(2, f"Key figures ({model})")
    for name, caption in KEY_FIGURES:
        source = source_dir / name
        if not source.exists():
            continue
        target = figure_dir / f"{model}_{name}"
        size = source.stat().st_size - (target.stat().st_size if target.exists() else 0)
        if total + size > MAX_FIGURE_BYTES:
            document.p(f"{name} left out: the document's figures would exceed {MAX_FIGURE_BYTES} bytes.")
            continue
        figure_dir.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        total += size
        document.img(str(target.relative_to(doc_dir)), f"{model}: {caption}")
