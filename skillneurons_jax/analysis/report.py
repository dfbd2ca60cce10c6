"""The report: every table and figure that the saved results allow, with the config that produced them and a list
of what is missing or unreadable. It never crashes on absent or corrupt inputs (trap 5): each is listed by path.

    build_report(workdir, out_dir, config_dict) -> Report
writes out_dir/index.md, out_dir/index.html (same content, relative links), out_dir/figures/<model>/*.png,
out_dir/summary.json (the numbers behind the tables and figures) and the sidecar out_dir/index.md.json.

    build_report(workdir, out_dir, config_dict, sections=[Section(title, build), ...]) -> Report
Sections (analysis/sections/, one module each, sharing a report_context.ReportContext): header, Table 1
(accuracy), then per model the `sections` given, in their order (the stage kinds' sections: the report stage
passes every registered kind's, e.g. transfer, predictivity, task specificity, suppression, pruning; none given:
the models' blocks hold their headings only); then the robustness study (issue 17; robustness_study.py, absent
when the study did not run); then configuration and gaps.

config_dict["report"]["results_doc"], when set, names a markdown file that sections/results.py writes: the
study's measured figures (provenance, findings, Table 1, transfer, specificity; config_dict["report"]
["results_command"] printed as what regenerates it).
config_dict["report"]["validation_doc"], when set, names a markdown file that sections/validation.py writes
after the other sections (the validation study's verdicts; configs/validation.py); config_dict["report"]
["robustness_doc"] likewise one that sections/robustness_study.py writes (the robustness study's results;
configs/robust.py). Each prints config_dict["report"]["<validation|robustness>_command"] as what regenerates it.

Options are read from config_dict["analysis"] (all optional; report_context.DEFAULT_OPTIONS): n_permutations
(1000, the neuron-permutation test), permutation_seed (0, every Monte Carlo test's seed), alpha (0.05), dpi (100),
top_fraction (0.01), neuron_accuracy_boxes (True), type_permutations (10000) and type_exact_max (100000) for the
task-type test, sign_flips (10000) for the paired suppression test, confidence (0.95) for its interval.
config_dict["tasks"] (a list or a comma-separated string), when given, names the tasks expected: those without
results are listed as missing.

`label_overlap` (the pipeline measures it from the data; the report reads no dataset): {"pairs": [data.readers.
label_overlap records], "splits": [...]} or {"error": why it could not be measured}. The task-specificity section
prints, per pair of datasets, the texts they share and the correlation of their labels on them (eq. 4 ignores
label flips: two datasets whose labels are functions of each other on shared texts are no control for each other).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Mapping, Sequence

from skillneurons_jax import io, layout
from skillneurons_jax.analysis import explorer, headline
from skillneurons_jax.analysis.document import Document
from skillneurons_jax.analysis.report_context import (DEFAULT_OPTIONS, ReportContext, Section, dedupe, no_nan,
                                                      relative_path)
from skillneurons_jax.analysis.sections import accuracy, appendix, results, robustness_study, validation

__all__ = ["DEFAULT_OPTIONS", "Report", "Section", "build_report"]

TITLE = "Skill neurons: results report"


@dataclasses.dataclass
class Report:
    index_md: pathlib.Path
    index_html: pathlib.Path
    summary: pathlib.Path
    figures: list[pathlib.Path]
    missing: list[str]          # results the config or the other results lead us to expect, but absent
    problems: list[str]         # files present but unreadable (corrupt), each starting with its path
    errors: list[str]           # sections that failed for another reason (a bug): listed, the rest still built


def _explorer(context: ReportContext) -> None:
    """explorer.html beside index.html (analysis.explorer); its unreadable inputs join the report's problems."""
    page = explorer.build_explorer(context.workdir, context.out_dir / layout.EXPLORER_PAGE)
    context.problems.extend(p for p in page.problems if p not in context.problems)
    context.summary["explorer"] = layout.EXPLORER_PAGE


def _findings(context: ReportContext, at: int) -> None:
    """The report opens with the answers: every verdict sentence (analysis.headline.findings, from the summary the
    sections wrote) linked to its section, placed at block `at` (after the title)."""
    found = headline.findings(context.summary)
    findings = Document()
    findings.h(2, "Findings", anchor="findings")
    if found:
        findings.links([(f.sentence, f"#{f.anchor}" if f.anchor else "#accuracy") for f in found])
    else:
        findings.p("No verdict could be computed from these results (see the sections below and what is missing).")
    findings.p("Each sentence links to its section; Table 1 (accuracy, balanced accuracy, majority rate, seeds) "
               "follows, then the figures and tables per model.")
    context.document.blocks[at:at] = findings.blocks


def _build_sections(context: ReportContext, sections: Sequence[Section]) -> None:
    context.section("neuron explorer", lambda: _explorer(context))
    context.section("header", lambda: appendix.header(context))
    at = len(context.document.blocks)
    context.section("accuracy table", lambda: accuracy.build(context))
    for model in context.inventory.models:
        context.document.h(2, f"Model {model}")
        for section in sections:
            context.section(f"{section.title} ({model})", lambda: section.build(context, model))
    context.section("robustness study", lambda: robustness_study.build(context))
    context.section("configuration", lambda: appendix.configuration(context))
    appendix.gaps(context)
    context.section("findings", lambda: _findings(context, at))


def _write(context: ReportContext) -> Report:
    context.missing, context.problems = dedupe(context.missing), dedupe(context.problems)
    context.summary.update(missing=context.missing, problems=context.problems, errors=context.errors,
                           config=context.config, options=context.options,
                           figures=[relative_path(f, context.out_dir) for f in context.figures])
    out_dir = context.out_dir
    markdown = io.atomic_write_text(out_dir / "index.md", context.document.markdown())
    html_path = io.atomic_write_text(out_dir / "index.html", context.document.html(TITLE))
    summary = io.atomic_write_json(out_dir / "summary.json", no_nan(context.summary))
    io.write_sidecar(markdown, stage="report", workdir=str(context.workdir), config=context.config,
                     options=context.options)
    return Report(index_md=markdown, index_html=html_path, summary=summary, figures=context.figures,
                  missing=context.missing, problems=context.problems, errors=context.errors)


def build_report(workdir, out_dir, config_dict: Mapping | None = None, *, sections: Sequence[Section] = (),
                 label_overlap: Mapping | None = None) -> Report:
    """Gathers every table and figure the results under `workdir` allow into `out_dir` (see the module docstring).
    `sections`: the per-model sections, in order (stages.report.sections(): every registered stage kind's).
    `label_overlap`: the datasets' label dependence measured by the caller (None: not measured, and said so).
    Raises only when `out_dir` cannot be written, or (io.OutsideFolder, before anything is read) when a symbolic
    link in `workdir` leads out of it: the report reads nothing outside the workdir it is given."""
    config = _plain_config(config_dict)
    out_dir = pathlib.Path(out_dir)
    io.check_tree_inside(workdir, skip=(layout.JAX_CACHE_DIR,))
    io.make_writable_folder(out_dir, what="report")      # fail before any work when it cannot be written
    context = ReportContext.create(pathlib.Path(workdir), out_dir, config)
    context.label_overlap = None if label_overlap is None else json.loads(json.dumps(dict(label_overlap)))
    _build_sections(context, tuple(sections))
    validation_doc = (config.get("report") or {}).get("validation_doc")
    if validation_doc:      # configs/validation.py: the findings document, regenerated with every report
        context.section("validation document", lambda: validation.write(context, validation_doc))
    results_doc = (config.get("report") or {}).get("results_doc")
    if results_doc:         # configs/default.py: docs/RESULTS.md, the study's measured figures in one place
        context.section("results document", lambda: results.write(context, results_doc))
    robustness_doc = (config.get("report") or {}).get("robustness_doc")
    if robustness_doc:      # configs/robust.py: the robustness study's results document
        context.section("robustness document", lambda: robustness_study.write(context, robustness_doc))
    return _write(context)


def _plain_config(config_dict) -> dict:
    if config_dict is None:
        return {}
    if hasattr(config_dict, "to_dict"):       # ml_collections.ConfigDict
        config_dict = config_dict.to_dict()
    return json.loads(json.dumps(dict(config_dict), default=str))
