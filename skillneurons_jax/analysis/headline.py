"""The study's answers in a few lines, read from the report's summary.json: what the report opens with and what
launch.reproduce prints at the end.

    findings(summary)               -> [Finding(sentence, anchor)]  every verdict sentence, with its section's anchor
    table1_lines(summary)           -> ["<model> <task>: accuracy 83.2 ± 5.0 %, balanced 83.1 %, majority 50.7 %,
                                        n = 400, 2 seed(s)", ...]
    console_lines(summary, report)  -> the console's closing block (Table 1, the findings, the report's path)

Nothing is computed here: the sentences are the report sections' own (sections/suppression.py, specificity.py),
so the console and the report cannot disagree.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Finding:
    sentence: str
    anchor: str | None          # the report section's anchor (index.html#anchor), None when it has none


def anchor(*parts: str) -> str:
    """A stable HTML id from parts (letters, digits and - only)."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def _pct(cell) -> str:
    if not isinstance(cell, Mapping) or cell.get("mean") is None:
        return "–"
    std = cell.get("std")
    return f"{100 * cell['mean']:.1f}" + (f" ± {100 * std:.1f}" if std else "")


def _row_line(row: Mapping) -> str:
    seeds = row.get("seeds")
    seeds = len(seeds) if isinstance(seeds, (list, tuple)) else seeds
    prompt = row.get("prompt")
    task = row.get("task")
    name = f"{task}" + (f" (prompt of {prompt})" if prompt and prompt != task else "")
    majority = row.get("majority_rate")
    return (f"{row.get('model')} {name}: accuracy {_pct(row.get('accuracy'))} %, balanced "
            f"{_pct({'mean': (row.get('balanced_accuracy') or {}).get('mean')})} %, majority "
            + ("–" if majority is None else f"{100 * majority:.1f} %")
            + f", n = {row.get('n_examples') if row.get('n_examples') is not None else '–'}, "
            + f"{seeds if seeds is not None else '–'} seed(s)")


def table1_lines(summary: Mapping, key: str = "accuracy") -> list[str]:
    """One line per Table 1 row of summary[key] ("accuracy": dev, "accuracy_test": the held-out test split)."""
    return [_row_line(row) for row in summary.get(key) or [] if isinstance(row, Mapping)]


def findings(summary: Mapping) -> list[Finding]:
    """Every verdict sentence of the report in its order: per model the task-type test, then the suppression
    comparisons on dev and on the held-out test split."""
    out: list[Finding] = []
    models = sorted(set(summary.get("specificity") or {}) | set(summary.get("suppression") or {}))
    for model in models:
        spec = (summary.get("specificity") or {}).get(model) or {}
        sentence = (spec.get("type_test") or {}).get("verdict")
        if sentence:
            out.append(Finding(f"{model}: {sentence}", spec.get("anchor")))
        for key in ("suppression", "suppression_test"):
            for pair, entry in sorted(((summary.get(key) or {}).get(model) or {}).items()):
                if isinstance(entry, Mapping) and entry.get("verdict"):
                    out.append(Finding(f"{model}: {entry['verdict']}", entry.get("anchor")))
    return out


def console_lines(summary: Mapping, report_path) -> list[str]:
    """The closing block launch.reproduce prints: Table 1 (dev, then the held-out test split), every finding, and
    where the report is."""
    lines = ["", "Results (Table 1, dev; mean ± std over seeds):"]
    lines += ["  " + line for line in table1_lines(summary)] or ["  (no accuracy results)"]
    test = table1_lines(summary, "accuracy_test")
    if test:
        lines += ["Held-out test split:"] + ["  " + line for line in test]
    found = findings(summary)
    lines += ["Findings:"] + ([f"  - {f.sentence}" for f in found] or ["  (no verdicts: see the report)"])
    lines += [f"Report: {report_path}"]
    return lines
