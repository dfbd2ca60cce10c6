"""Stage kind report: analysis.report.build_report over the whole workdir -> report/index.html, index.md,
summary.json, figures/, with every registered stage kind's report sections (registry.sections()) in each model's
block. Planned once for the study, after every other stage (soft dependencies: it runs even when
some failed or were skipped, and lists them as missing); group "report" (host 0 of a pod).

Settings: config.report (enabled, and the documents the validation and robustness studies write beside the
report); the report reads config.analysis (pipeline.settings checks it) and the plan from the config it is given.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from skillneurons_jax import fields, layout
from skillneurons_jax.analysis import report as report_builder
from skillneurons_jax.data import readers
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.stages import registry


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    enabled: bool = True
    validation_doc: str = ""          # a markdown file sections/validation.py writes (configs/validation.py)
    validation_command: str = ""      # printed in it: what regenerates it
    robustness_doc: str = ""          # likewise for sections/robustness_study.py (configs/robust.py)
    robustness_command: str = ""
    results_doc: str = ""             # the study's measured figures as one document (sections/results.py)
    results_command: str = ""

    @classmethod
    def from_config(cls, block, where: str = "--config.report.") -> "ReportSettings":
        block = fields.block_dict(block)
        fields.refuse_unknown(block, [f.name for f in dataclasses.fields(cls)], where)
        return cls(enabled=bool(block.get("enabled", True)),
                   **{k: str(block.get(k) or "") for k in ("validation_doc", "validation_command", "robustness_doc",
                                                           "robustness_command", "results_doc", "results_command")})


def report_config(ctx) -> dict:
    """What the report records: the config, the tasks expected (skipped ones listed as missing), why stages were
    skipped, and the analysis options."""
    s, tp = ctx.study, ctx.tasks
    cfg = dict(s.config)
    cfg["tasks"] = [t for t in s.tasks] + [t for t in s.optional_tasks if t in tp.present]
    cfg["data_dir"] = s.data_dir
    cfg["analysis"] = dict(s.analysis)
    cfg["plan"] = {"tasks_run": list(tp.present), "tasks_skipped": dict(tp.skipped),
                   "optional_tasks_absent": dict(tp.dropped),
                   "models": {i.name: {"path": i.path, "family": i.family, "skipped": i.skip_reason}
                              for i in ctx.models}}
    return cfg


def measure_label_overlap(clean_tasks: Sequence[str], data_dir) -> dict:
    """The report's label dependence of every pair of the plan's clean tasks (data.readers.label_overlaps over
    every split), or the reason it could not be read: a dataset the stages read but this cannot is reported, not
    raised, so that the report is still written."""
    try:
        return {"pairs": readers.label_overlaps(clean_tasks, data_dir), "splits": list(task_table.SPLITS)}
    except (OSError, ValueError) as error:
        return {"error": f"{type(error).__name__}: {error}"}


def plan(ctx) -> None:
    s = ctx.study
    if not s.report.enabled:
        return
    runnable = [st.key for st in ctx.stages if not st.skip_reason]
    cfg = report_config(ctx)
    cfg["plan"]["stages"] = runnable            # what this plan ran (the validation document's time)
    ctx.add("report", layout.report_outputs(s.workdir), args={"cfg": cfg}, deps=runnable, group="report",
            soft_deps=True,
            # the config and the plan's stages; no folder path (hosts may mount the data elsewhere; skip reasons
            # quote paths)
            settings={"config": {k: v for k, v in s.config.items() if k != "data_dir"}, "stages": runnable})


def cost(ctx, cfg: dict) -> float:
    """The neuron-permutation tests of every pair of tasks dominate."""
    n_tasks = max(len(ctx.tasks.present), 1)
    perms = int(ctx.study.analysis.get("n_permutations", 1000))
    return round(10 + 2e-3 * perms * n_tasks * (n_tasks - 1) / 2 * len(ctx.models), 1)


def run(ctx, cfg: dict):
    s = ctx.study
    return report_builder.build_report(s.workdir, layout.report_dir(s.workdir), cfg, sections=registry.sections(),
                                       label_overlap=measure_label_overlap(ctx.tasks.clean, s.data_dir))


KIND = registry.register("report", ReportSettings, config_key="report", plan=plan, cost=cost, run=run, order=1000,
                         scope="study")
