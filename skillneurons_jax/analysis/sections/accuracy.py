"""Table 1: accuracy, balanced accuracy and F1 per model and task, with seeds, dev examples, the majority-class
rate, truncation and excluded adversarial originals beside each row."""
from __future__ import annotations

import numpy as np

from skillneurons_jax import layout
from skillneurons_jax.analysis import learnability, results, robustness
from skillneurons_jax.analysis.report_context import ReportContext, relative_path
from skillneurons_jax.prompt import metrics


def build(context: ReportContext) -> None:
    document = context.document
    document.h(2, "Accuracy (Table 1)", anchor="accuracy")
    document.p("Mean ± std over seeds (ddof = 1, the one convention of every ± and interval here). Adversarial "
               "sets are evaluated with the prompt of their clean task. "
               "Balanced accuracy = mean of the per-class recalls (from the confusion matrix when the result "
               "records it). Majority class = the accuracy of always answering the dev split's most frequent label "
               "(label counts read from the transfer JSON, else the predictivity sidecar, else a suppression "
               "JSON's labels). The paper's Table 1 reports accuracy for every task (F1 for AdvQQP only in its "
               "footnote 2); all three metrics are shown for every task here. Truncated: examples cut to the text "
               "budget per split; excluded adv. originals: clean training examples removed because their text is "
               "the original of an adversarial record.")
    entries = []
    for model in context.inventory.models:
        for task in context.tasks(model):
            entry = accuracy_entry(context, model, task)
            if entry is None:
                own = results.transfer_path(context.workdir, model, context.prompt_task(task), task)
                context.missing.append(f"accuracy: no result for model {model}, task {task} (looked for {own}, "
                                       f"the predictivity sidecar's 'model_accuracy' and the tuning metrics)")
            else:
                entries.append(entry)
    context.accuracy_entries = entries
    rows = robustness.accuracy_rows(entries)
    if rows:
        document.table(robustness.ACCURACY_HEADER, rows)
    else:
        document.p("No accuracy results found.")
    context.summary["accuracy"] = robustness.accuracy_records(entries)
    held_out(context)
    learnability_rule(context, entries)


def learnability_rule(context: ReportContext, entries) -> None:
    """Each clean task's prompt balanced accuracy beside its frozen-feature probe (WORKDIR/probe/, stage probe) and
    the rule's verdict (analysis.learnability.beyond_model); nothing when no probe ran."""
    probes = {}
    for model in context.inventory.models:
        try:
            probes.update({(model, task): r for task, r in learnability.load_probes(context.workdir, model).items()})
        except (OSError, ValueError) as error:
            context.problem(error)
    rows, records = learnability.rule_rows(entries, probes,
                                           test_entries=held_out_entries(context, report_problems=False))
    if not rows:
        return
    context.document.h(3, "Learnability: prompts beside the frozen-feature probe")
    context.document.p(LEARNABILITY_TEXT)
    context.document.table(learnability.RULE_HEADER, rows)
    context.summary["learnability"] = records


LEARNABILITY_TEXT = (
    f"Probe: a linear classifier on the frozen model's features (stage probe, docs/LEARNABILITY.md), fitted on the "
    f"train split and scored on the whole dev and test splits (the prompts' dev rows are the measurement part of "
    f"dev where the study carves one); its reference encoding is the task's template without a prompt; interval: "
    f"95 % bootstrap over examples. A task is beyond this model when the probe's and the prompts' dev balanced "
    f"accuracies are both below {0.5 + learnability.NEAR_CHANCE_MARGIN:.2f}; the validation verdicts leave it out "
    f"of the findings that need a learned prompt (all of F1-F6).")


def held_out(context: ReportContext) -> None:
    """Table 1 again on each clean task's HELD-OUT test split (WORKDIR/test/transfer/): prompts were selected by
    dev accuracy, so dev is optimistic; test is scored once, by the own prompt, and selected nothing."""
    entries = held_out_entries(context)
    if not entries:
        return
    context.document.h(3, "Held-out test split")
    context.document.p("The own prompt of each clean task on its test split (no prompt, checkpoint or neuron was "
                       "chosen on it); n and the majority class are the test split's (the 'n (dev)' column holds the "
                       "test split's count here).")
    context.document.table(robustness.ACCURACY_HEADER, robustness.accuracy_rows(entries))
    context.summary["accuracy_test"] = robustness.accuracy_records(entries)


def held_out_entries(context: ReportContext, report_problems: bool = True) -> list[robustness.AccuracyEntry]:
    """The own prompt's accuracy entry of every task with a held-out test result (corrupt files skipped and, with
    `report_problems`, listed as problems: a second reader passes False)."""
    test_root = layout.split_root(context.workdir, "test")
    entries = []
    for model in context.inventory.models:
        for task in context.tasks(model):
            path = results.transfer_path(test_root, model, task, task)
            if not path.exists():
                continue
            try:
                result = results.load_transfer(test_root, model, task, task)
            except results.CorruptResultError as error:
                if report_problems:
                    context.problem(error)
                continue
            entries.append(robustness.AccuracyEntry(
                model, task, task, result.accuracy, result.f1, source=relative_path(result.path, context.workdir),
                balanced_accuracy=None if result.confusion is None else metrics.balanced_accuracy(result.confusion),
                n_examples=result.n_dev, label_counts=result.label_counts))
    return entries


def accuracy_entry(context: ReportContext, model: str, task: str) -> robustness.AccuracyEntry | None:
    """The first readable source of a task's accuracy (transfer JSON, predictivity sidecar, tuning logs), with
    balanced accuracy, label counts and data facts filled in from wherever they were recorded."""
    prompt = context.prompt_task(task)
    workdir = context.workdir

    def from_transfer():
        result = results.load_transfer(workdir, model, prompt, task)
        balanced = None if result.confusion is None else metrics.balanced_accuracy(result.confusion)
        return robustness.AccuracyEntry(model, task, prompt, result.accuracy, result.f1,
                                        source=relative_path(result.path, workdir), balanced_accuracy=balanced,
                                        n_examples=result.n_dev)

    def from_sidecar():
        result = results.load_predictivity(workdir, model, task, arrays=("pred",))
        if result.model_accuracy is None:
            raise FileNotFoundError(f"{result.path}.json: no 'model_accuracy' in the sidecar")
        balanced = (None if result.model_confusion is None
                    else metrics.balanced_accuracy(result.model_confusion))
        n_dev = result.meta.get("n_dev")
        return robustness.AccuracyEntry(model, task, prompt, result.model_accuracy, result.model_f1,
                                        source=relative_path(result.path, workdir) + ".json",
                                        balanced_accuracy=balanced,
                                        n_examples=int(n_dev) if isinstance(n_dev, int) else None)

    def from_tuning():
        seeds = context.inventory.prompts.get(model, {}).get(task)
        if task != prompt or not seeds:
            raise FileNotFoundError(f"no tuned prompts for {model}/{task}")
        runs = results.load_tuning_runs(workdir, model, task, seeds)
        f1 = [r.best_dev_f1 for r in runs]
        balanced = [r.best_dev_balanced_accuracy for r in runs]
        return robustness.AccuracyEntry(model, task, prompt, np.array([r.best_dev_accuracy for r in runs]),
                                        None if None in f1 else np.array(f1),
                                        source="best dev accuracy in prompts/.../metrics.jsonl",
                                        balanced_accuracy=None if None in balanced else np.array(balanced))

    for source in (from_transfer, from_sidecar, from_tuning):     # first readable source wins
        try:
            entry = source()
        except FileNotFoundError:
            continue
        except results.CorruptResultError as error:
            context.problem(error)
            continue
        counts, _ = results.load_label_counts(workdir, model, task)
        entry.label_counts = counts
        if entry.n_examples is None and counts is not None:
            entry.n_examples = int(sum(counts))
        entry.facts = results.load_data_facts(workdir, model, task,
                                              context.inventory.prompts.get(model, {}).get(prompt, ()))
        return entry
    return None
