"""The report's header, configuration and the lists of missing and unreadable results."""
from __future__ import annotations

import datetime
import json

from skillneurons_jax.analysis.report_context import ReportContext, dedupe


def header(context: ReportContext) -> None:
    document = context.document
    document.h(1, "Skill neurons: results report")
    document.p(f"Built {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} from the "
               f"results under {context.workdir}. Models found: {', '.join(context.inventory.models) or 'none'}.")
    if context.summary.get("explorer"):
        document.links([("Neuron explorer: click a neuron to see its predictivity per task, its activations by "
                         "label and the texts that drive it", context.summary["explorer"])])
    if not context.inventory.models:
        context.missing.append(f"{context.workdir}: no results at all (no prompts/, predictivity/, suppression/ or "
                               f"transfer/ results inside)")


def configuration(context: ReportContext) -> None:
    context.document.h(2, "Configuration")
    context.document.pre(json.dumps(context.config, indent=2, sort_keys=True, default=str))
    context.document.p("Analysis options: " + ", ".join(f"{k}={v}" for k, v in sorted(context.options.items())))


def gaps(context: ReportContext) -> None:
    inventory = context.inventory
    if context.expected_tasks:
        found = set().union(*[set(inventory.tasks(m)) for m in inventory.models]) if inventory.models else set()
        for task in context.expected_tasks:
            if task not in found:
                context.missing.append(f"task {task}: named in the config but no result of any stage exists")
    document = context.document
    document.h(2, "Missing results")
    document.ul(dedupe(context.missing))
    document.h(2, "Unreadable (corrupt) result files")
    document.ul(dedupe(context.problems))
    if context.errors:
        document.h(2, "Sections that failed")
        document.ul(context.errors)
