"""Where and when a study's results were computed, for the documents generated from them (docs/VALIDATION.md,
docs/ROBUSTNESS_RESULTS.md): the commits and machines their sidecars record, the span of their timestamps and the
stages' own summed run times. Each function returns the phrase a document prints."""
from __future__ import annotations

import datetime
import json
import pathlib

from skillneurons_jax import io, layout


def stage_sidecars(workdir: pathlib.Path) -> list[dict]:
    """The JSON objects of the stage outputs' sidecars under `workdir` (the report's own files excluded)."""
    found = []
    for sidecar in pathlib.Path(workdir).glob("*/**/*.json"):
        if "report" in sidecar.relative_to(workdir).parts[:1]:
            continue
        try:
            doc = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            found.append(doc)
    return found


def run_time(sidecars: list[dict]) -> str:
    """The span between the first and the last stage output's sidecar timestamp (a resumed run includes its
    pause), with how many sidecars were read."""
    stamps = []
    for doc in sidecars:
        try:
            stamps.append(datetime.datetime.fromisoformat(doc.get("created")))
        except (ValueError, TypeError):
            continue
    if len(stamps) < 2:
        return "unknown (fewer than 2 timestamped outputs)"
    span = (max(stamps) - min(stamps)).total_seconds()
    return (f"{span / 60:.1f} min between the first and the last stage output ({len(stamps)} timestamped files; "
            f"a resumed run includes its pause)")


def stage_seconds(workdir: pathlib.Path, keys=None) -> str:
    """The sum of the stages' own run times (their completion records, WORKDIR/.stages/*.json: the wall seconds
    of the run that computed each stage's outputs; a later rerun that left them unchanged is not counted, see
    plan.mark_done): the study's cost without the pauses of a resumed run (this report excluded).
    `keys`: the plan's stages (the report config's plan.stages); records of stages no longer in it are left out."""
    seconds, count = 0.0, 0
    for record in sorted((pathlib.Path(workdir) / layout.STAGE_RECORDS_DIR).glob("*.json")):
        try:
            doc = json.loads(record.read_text(encoding="utf-8"))
            if doc.get("kind") == "report" or (keys is not None and doc.get("key") not in keys):
                continue
            seconds += float(doc["seconds"])
            count += 1
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not count:
        return "the stages' own times: unknown (no stage record)"
    return f"the stages' own times sum to {seconds / 60:.1f} min ({count} stages, this document's stage excluded)"


def machine_text(machine) -> str:
    if not isinstance(machine, dict):
        return "unknown"
    return (f"{machine.get('cpu', '?')} ({machine.get('vector_isa', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('platform', '?')})")


def _computed(doc: dict, field: str):
    """A sidecar's `field` (git_commit, machine) of the computation: a copied result's (io.copied_from) is its
    source's, `source_<field>`; the copy's own stamp is only where it was copied."""
    return doc.get(f"source_{field}") if "copied_from" in doc else doc.get(field)


def _counted(counts: dict[str, int], copies: dict[str, int]) -> str:
    return ", ".join(f"{text} ({n} files" + (f", {copies[text]} of them copied" if copies.get(text) else "") + ")"
                     for text, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def stage_machines(sidecars: list[dict]) -> str:
    """The machines the stage outputs were computed on (their sidecars' machine, io.machine; a copy's source
    machine), with how many files each; sidecars written before the field existed are counted as not recorded."""
    counts: dict[str, int] = {}
    copies: dict[str, int] = {}
    for doc in sidecars:
        if "versions" not in doc:           # a result file, not a sidecar (write_sidecar stamps both fields)
            continue
        machine = _computed(doc, "machine")
        text = machine_text(machine) if machine is not None else "not recorded"
        counts[text] = counts.get(text, 0) + 1
        copies[text] = copies.get(text, 0) + ("copied_from" in doc)
    if not counts:
        return "unknown (no sidecar)"
    return _counted(counts, copies)


def stage_commits(sidecars: list[dict]) -> str:
    """The commits the stage outputs were computed at (their sidecars' git_commit; a copy's source commit), with
    how many files each and how many of them were copied from another study."""
    counts: dict[str, int] = {}
    copies: dict[str, int] = {}
    for doc in sidecars:
        if "git_commit" not in doc:
            continue
        commit = _computed(doc, "git_commit")
        if isinstance(commit, str) and commit:
            counts[commit] = counts.get(commit, 0) + 1
            copies[commit] = copies.get(commit, 0) + ("copied_from" in doc)
    if not counts:
        return "unknown (no sidecar records a commit)"
    return _counted(counts, copies)


def header_items(workdir, config: dict, models, command) -> list[str]:
    """A generated document's opening list: the command that regenerates it, the commits and machines the stage
    outputs were computed at / on, the run time (span and the stages' own sum), the time it was generated, the
    seeds and models."""
    sidecars = stage_sidecars(workdir)
    return [f"Command: `{command or '(not recorded in config.report)'}`",
            f"Commits recorded by the stages' sidecars: {stage_commits(sidecars)}; of this document: "
            f"{io.git_commit() or 'unknown (not a git checkout)'}",
            f"Machines recorded by the stages' sidecars: {stage_machines(sidecars)}; of this document: "
            f"{machine_text(io.machine())} (a CPU with another vector instruction set rounds float sums "
            f"otherwise, so its prompts, and every number after them, can differ)",
            f"Run time: {run_time(sidecars)}; {stage_seconds(workdir, (config.get('plan') or {}).get('stages'))}",
            f"Generated: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
            f"Seeds: {config.get('seeds')}; models: {', '.join(models) or 'none'}"]
