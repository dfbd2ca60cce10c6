"""What every report section shares: the inputs (workdir, options, the inventory of results), the document being
written, and what the sections collect (figures, missing / unreadable results, failures, the summary numbers).

A section is a function `(context, model) -> None` (or `(context) -> None` for the model-independent ones) in
analysis/sections/; it appends to `context.document` and `context.summary` and records problems instead of raising.
A stage kind's per-model section travels as a `Section` (the kind declares it at registration; the report stage
hands them to analysis.report.build_report in the registry's order).
"""
from __future__ import annotations

import dataclasses
import pathlib
import traceback
from typing import Any, Callable

import numpy as np

from skillneurons_jax.analysis import results, transfer
from skillneurons_jax.analysis.document import Document

DEFAULT_OPTIONS = {"n_permutations": 1000, "permutation_seed": 0, "alpha": 0.05, "dpi": 100, "top_fraction": 0.01,
                   "neuron_accuracy_boxes": True, "type_permutations": 10000, "type_exact_max": 100000,
                   "sign_flips": 10000, "confidence": 0.95}
LOAD_ERRORS = (FileNotFoundError, results.CorruptResultError)


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of each model's block of the report: `build(context, model)` appends its tables and figures (nothing
    when its results are absent); `title` names it where it fails ("<title> (<model>): <error>")."""
    title: str
    build: Callable[["ReportContext", str], None]


@dataclasses.dataclass
class ReportContext:
    workdir: pathlib.Path
    out_dir: pathlib.Path
    config: dict
    options: dict
    inventory: results.Inventory
    expected_tasks: list[str] | None
    document: Document = dataclasses.field(default_factory=Document)
    figures: list[pathlib.Path] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Shared between sections: Table 1's entries (model accuracy and majority rates in the figures) and the
    # loaded predictivities (task specificity).
    accuracy_entries: list = dataclasses.field(default_factory=list)
    predictivities: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    # The datasets' label dependence on shared texts, measured from the data by the caller (build_report's
    # label_overlap): {"pairs": [...], "splits": [...]} or {"error": ...}; None when not measured.
    label_overlap: dict | None = None

    @classmethod
    def create(cls, workdir: pathlib.Path, out_dir: pathlib.Path, config: dict) -> "ReportContext":
        options = dict(DEFAULT_OPTIONS)
        options.update({k: v for k, v in (config.get("analysis") or {}).items() if k in DEFAULT_OPTIONS})
        return cls(workdir=workdir, out_dir=out_dir, config=config, options=options,
                   inventory=results.discover(workdir), expected_tasks=config_tasks(config))

    def problem(self, error: Exception) -> None:
        """An absent result goes to `missing`, an unreadable one to `problems` (message starts with the path)."""
        message = str(error)
        if isinstance(error, FileNotFoundError):
            self.missing.append(message)
        elif message not in self.problems:
            self.problems.append(message)

    def section(self, name: str, build: Callable[[], None]) -> None:
        """Runs one section; an unexpected failure is recorded and the report goes on."""
        try:
            build()
        except Exception as error:  # noqa: BLE001 - the report must be written whatever one section does
            frame = traceback.extract_tb(error.__traceback__)[-1]
            message = (f"{name}: {type(error).__name__}: {error} "
                       f"(at {pathlib.Path(frame.filename).name}:{frame.lineno})")
            self.errors.append(message)
            self.document.p(f"This section could not be built: {message}")

    def figure(self, draw, rel: str, caption: str, *args, **kwargs) -> None:
        """Draws one figure; a failure is recorded (the rest of the section still runs)."""
        try:
            path = draw(*args, out_path=self.out_dir / rel, dpi=self.options["dpi"], **kwargs)
        except Exception as error:  # noqa: BLE001
            message = f"figure {rel}: {type(error).__name__}: {error}"
            self.errors.append(message)
            self.document.p(f"This figure could not be drawn: {message}")
            return
        self.figures.append(path)
        self.document.img(rel, caption)

    def tasks(self, model: str) -> list[str]:
        return results.order_tasks(set(self.inventory.tasks(model)) | set(self.expected_tasks or ()))

    def model_accuracy(self, model: str) -> dict[str, float]:
        return {e.task: float(np.mean(e.accuracy)) for e in self.accuracy_entries if e.model == model}

    def prompt_task(self, task: str) -> str:
        """The task whose prompts `task` is scored with: the config's `adversarial_prompts` pairing (AdvQQP with
        MRPC's), else the task's own (its clean task for an adversarial set)."""
        return adversarial_prompts(self.config).get(task) or transfer.own_prompt_task(task)

    def majority_rates(self, model: str) -> dict[str, float]:
        """task -> majority-class rate of its dev split, where Table 1 found label counts."""
        return {e.task: e.majority_rate for e in self.accuracy_entries
                if e.model == model and e.majority_rate is not None}


def adversarial_prompts(config: dict) -> dict[str, str]:
    """config["adversarial_prompts"] ("advqqp:mrpc") as a dict; the plan validated it (pipeline.settings)."""
    value = config.get("adversarial_prompts") or ""
    pairs = [p.split(":", 1) for p in str(value).split(",") if ":" in p]
    return {a.strip(): c.strip() for a, c in pairs}


def config_tasks(config: dict) -> list[str] | None:
    return task_names(config.get("tasks"))


def task_names(listed) -> list[str] | None:
    """A config's task list (a list or a comma-separated string), lower-case in the table's order; None if unset."""
    if listed is None:
        return None
    if isinstance(listed, str):
        listed = listed.split(",")
    return results.order_tasks(str(t).strip().lower() for t in listed if str(t).strip())


def relative_path(path, base) -> str:
    try:
        return str(pathlib.Path(path).relative_to(base))
    except ValueError:
        return str(path)


def format_percent(value: float) -> str:
    return f"{100 * value:.1f}" if np.isfinite(value) else "–"


def jsonable(x):
    """An array -> nested lists with NaN as None (NaN is not JSON); None stays None."""
    if x is None:
        return None
    array = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(array), array.astype(object), None).tolist()


def no_nan(obj):
    """NaN is not JSON: undefined numbers become null, recursively."""
    if isinstance(obj, dict):
        return {k: no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [no_nan(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return no_nan(obj.item())
    return obj


def dedupe(items):
    return list(dict.fromkeys(items))
