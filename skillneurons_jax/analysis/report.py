"""The report: every table and figure that the saved results allow, with the config that produced them and a list
of what is missing or unreadable. It never crashes on absent or corrupt inputs (trap 5): each is listed by path.

    build_report(workdir, out_dir, config_dict) -> Report
writes out_dir/index.md, out_dir/index.html (same content, relative links), out_dir/figures/<model>/*.png,
out_dir/summary.json (the numbers behind the tables and figures) and the sidecar out_dir/index.md.json.

Options are read from config_dict["analysis"] (all optional): n_permutations (1000), permutation_seed (0),
alpha (0.05), dpi (100), top_fraction (0.01), neuron_accuracy_boxes (True). config_dict["tasks"] (a list or a
comma-separated string), when given, names the tasks expected: those without results are listed as missing.
"""
from __future__ import annotations

import dataclasses
import datetime
import html
import json
import pathlib
import traceback
from typing import Any, Callable, Mapping

import numpy as np

from skillneurons_jax import io as sio
from skillneurons_jax.analysis import figures, results, robustness, specificity, transfer

DEFAULT_OPTIONS = {"n_permutations": 1000, "permutation_seed": 0, "alpha": 0.05, "dpi": 100, "top_fraction": 0.01,
                   "neuron_accuracy_boxes": True}
_LOAD_ERRORS = (FileNotFoundError, results.CorruptResultError)


@dataclasses.dataclass
class Report:
    index_md: pathlib.Path
    index_html: pathlib.Path
    summary: pathlib.Path
    figures: list[pathlib.Path]
    missing: list[str]          # results the config or the other results lead us to expect, but absent
    problems: list[str]         # files present but unreadable (corrupt), each starting with its path
    errors: list[str]           # sections that failed for another reason (a bug): listed, the rest still built


# ----------------------------------------------------------------------------------------------------------------
# Document blocks, rendered to markdown and to HTML
# ----------------------------------------------------------------------------------------------------------------
class _Doc:
    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header, rows):
        self.blocks.append(("table", tuple(header), [tuple(r) for r in rows]))

    def img(self, rel: str, caption: str):
        self.blocks.append(("img", rel, caption))

    def pre(self, text: str):
        self.blocks.append(("pre", text))

    def ul(self, items):
        self.blocks.append(("ul", list(items)))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append("#" * b[1] + " " + b[2] + "\n")
            elif kind == "p":
                out.append(b[1] + "\n")
            elif kind == "table":
                out.append(robustness.markdown_table(b[1], b[2]))
            elif kind == "img":
                out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*\n")
            elif kind == "pre":
                out.append("```\n" + b[1].rstrip("\n") + "\n```\n")
            elif kind == "ul":
                out.append("".join(f"- {item}\n" for item in b[1]) if b[1] else "- (none)\n")
        return "\n".join(out)

    def html(self, title: str) -> str:
        out = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
               "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
               "text-align:left}th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}"
               "pre{background:#f7f7f7;padding:1em;overflow:auto}</style></head><body>\n"]
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>\n")
            elif kind == "p":
                out.append(f"<p>{html.escape(b[1])}</p>\n")
            elif kind == "table":
                out.append(robustness.html_table(b[1], b[2]))
            elif kind == "img":
                out.append(f"<figure><img src=\"{html.escape(b[1])}\" alt=\"{html.escape(b[2])}\">"
                           f"<figcaption>{html.escape(b[2])}</figcaption></figure>\n")
            elif kind == "pre":
                out.append(f"<pre>{html.escape(b[1])}</pre>\n")
            elif kind == "ul":
                items = b[1] or ["(none)"]
                out.append("<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in items) + "</ul>\n")
        out.append("</body></html>\n")
        return "".join(out)


# ----------------------------------------------------------------------------------------------------------------
# The builder
# ----------------------------------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, workdir: pathlib.Path, out_dir: pathlib.Path, config: dict):
        self.workdir, self.out_dir, self.config = workdir, out_dir, config
        opts = dict(DEFAULT_OPTIONS)
        opts.update({k: v for k, v in (config.get("analysis") or {}).items() if k in DEFAULT_OPTIONS})
        self.opts = opts
        self.doc = _Doc()
        self.figures: list[pathlib.Path] = []
        self.missing: list[str] = []
        self.problems: list[str] = []
        self.errors: list[str] = []
        self.summary: dict[str, Any] = {}
        self.preds: dict[str, dict[str, np.ndarray]] = {}
        self.inv = results.discover(workdir)
        self.expected_tasks = _config_tasks(config)

    # -- helpers -------------------------------------------------------------------------------------------------
    def problem(self, err: Exception) -> None:
        msg = str(err)
        if isinstance(err, FileNotFoundError):
            self.missing.append(msg)
        elif msg not in self.problems:
            self.problems.append(msg)

    def section(self, name: str, fn: Callable[[], None]) -> None:
        """Runs one section; an unexpected failure is recorded and the report goes on."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the report must be written whatever one section does
            tb = traceback.extract_tb(e.__traceback__)[-1]
            msg = f"{name}: {type(e).__name__}: {e} (at {pathlib.Path(tb.filename).name}:{tb.lineno})"
            self.errors.append(msg)
            self.doc.p(f"This section could not be built: {msg}")

    def figure(self, fn, rel: str, caption: str, *args, **kwargs) -> None:
        """Draws one figure; a failure is recorded (the rest of the section still runs)."""
        try:
            path = fn(*args, out_path=self.out_dir / rel, dpi=self.opts["dpi"], **kwargs)
        except Exception as e:  # noqa: BLE001
            msg = f"figure {rel}: {type(e).__name__}: {e}"
            self.errors.append(msg)
            self.doc.p(f"This figure could not be drawn: {msg}")
            return
        self.figures.append(path)
        self.doc.img(rel, caption)

    def tasks(self, model: str) -> list[str]:
        return results.order_tasks(set(self.inv.tasks(model)) | set(self.expected_tasks or ()))

    # -- sections --------------------------------------------------------------------------------------------------
    def header(self):
        d = self.doc
        d.h(1, "Skill neurons: results report")
        d.p(f"Built {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} from the results "
            f"under {self.workdir}. Models found: {', '.join(self.inv.models) or 'none'}.")
        if not self.inv.models:
            self.missing.append(f"{self.workdir}: no results at all (no prompts/, predictivity/, suppression/ or "
                                f"transfer/ results inside)")

    def accuracy(self):
        self.doc.h(2, "Accuracy (Table 1)")
        self.doc.p("Mean ± std (ddof=0) over seeds. Adversarial sets are evaluated with the prompt of their clean "
                   "task. F1 is the reported metric for the unbalanced AdvQQP.")
        entries = []
        for model in self.inv.models:
            for task in self.tasks(model):
                entry = self._accuracy_entry(model, task)
                if entry is None:
                    own = results.transfer_path(self.workdir, model, transfer.own_prompt_task(task), task)
                    self.missing.append(f"accuracy: no result for model {model}, task {task} (looked for {own}, "
                                        f"the predictivity sidecar's 'model_accuracy' and the tuning metrics)")
                else:
                    entries.append(entry)
        self.accuracy_entries = entries
        rows = robustness.accuracy_rows(entries)
        self.doc.table(robustness.ACCURACY_HEADER, rows) if rows else self.doc.p("No accuracy results found.")
        self.summary["accuracy"] = [dict(zip(robustness.ACCURACY_HEADER, r)) for r in rows]

    def _accuracy_entry(self, model: str, task: str) -> robustness.AccuracyEntry | None:
        prompt = transfer.own_prompt_task(task)

        def from_transfer():
            tr = results.load_transfer(self.workdir, model, prompt, task)
            return robustness.AccuracyEntry(model, task, prompt, tr.accuracy, tr.f1, source=_rel(tr.path, self.workdir))

        def from_sidecar():
            pr = results.load_predictivity(self.workdir, model, task, arrays=("pred",))
            if pr.model_accuracy is None:
                raise FileNotFoundError(f"{pr.path}.json: no 'model_accuracy' in the sidecar")
            return robustness.AccuracyEntry(model, task, prompt, pr.model_accuracy, pr.model_f1,
                                            source=_rel(pr.path, self.workdir) + ".json")

        def from_tuning():
            seeds = self.inv.prompts.get(model, {}).get(task)
            if task != prompt or not seeds:
                raise FileNotFoundError(f"no tuned prompts for {model}/{task}")
            runs = results.load_tuning_runs(self.workdir, model, task, seeds)
            f1 = [r.best_dev_f1 for r in runs]
            return robustness.AccuracyEntry(model, task, prompt, np.array([r.best_dev_accuracy for r in runs]),
                                            None if None in f1 else np.array(f1),
                                            source="best dev accuracy in prompts/.../metrics.jsonl")

        for source in (from_transfer, from_sidecar, from_tuning):     # first readable source wins
            try:
                return source()
            except FileNotFoundError:
                continue
            except results.CorruptResultError as e:
                self.problem(e)
        return None

    def model_accuracy(self, model: str) -> dict[str, float]:
        return {e.task: float(np.mean(e.accuracy)) for e in getattr(self, "accuracy_entries", []) if e.model == model}

    def transfer_section(self, model: str):
        pairs = self.inv.transfer.get(model, [])
        self.doc.h(3, "Prompt transfer (Figures 1 and 7)")
        if not pairs:
            self.missing.append(f"transfer: no results for model {model} (expected "
                                f"{self.workdir / 'transfer' / model}/<source>__<target>.json)")
            self.doc.p("No transfer results.")
            return
        table, errors = transfer.load_transfer_table(self.workdir, model, pairs)
        for e in errors:
            self.problem(e)
        # Every prompt present (or used as a source) on every task with any result: the matrix shows the gaps.
        present = self.inv.tasks(model)
        sources = results.order_tasks({s for s, _ in pairs} | set(self.inv.prompts.get(model, {})))
        sources = [s for s in sources if results.clean_task(s) is None]
        targets = results.order_tasks({t for _, t in pairs} | set(present))
        tm = transfer.transfer_matrices(table, sources, targets)
        absent = [f"{s}__{t}" for s, t in tm.missing if (s, t) not in set(pairs)]   # unreadable: see problems
        if absent:
            self.missing.append(f"transfer: {len(absent)} of {len(sources) * len(targets)} pairs absent for {model} "
                                f"under {self.workdir / 'transfer' / model}: {', '.join(absent)}")
        for t in tm.missing_reference:
            self.missing.append(f"transfer: no own-prompt result {transfer.own_prompt_task(t)} -> {t} for {model}; "
                                f"its relative column is empty")
        self.doc.p("Rows: the task whose prompt is used; columns: the task it is evaluated on (with that task's "
                   "verbalizer). Relative = per-seed ratio to the target's own prompt (the clean task's prompt for "
                   "an adversarial set), then averaged over seeds.")
        fig_dir = f"figures/{model}"
        self.figure(figures.transfer_heatmap, f"{fig_dir}/transfer_absolute.png",
                    f"{model}: accuracy of each source prompt on each target task (%)", tm.absolute, sources, targets,
                    title=f"{model}: prompt transfer, absolute accuracy (mean over seeds)")
        self.figure(figures.transfer_heatmap, f"{fig_dir}/transfer_relative.png",
                    f"{model}: transfer accuracy relative to the target's own prompt (%)", tm.relative, sources,
                    targets, relative=True, title=f"{model}: prompt transfer, relative to the target's own prompt")
        header = ("source \\ target",) + tuple(targets)
        self.doc.table(header, [(s,) + tuple(_fmt_pct(v) for v in row) for s, row in zip(sources, tm.absolute)])
        self.summary.setdefault("transfer", {})[model] = {
            "sources": sources, "targets": targets, "absolute": _jsonable(tm.absolute),
            "relative": _jsonable(tm.relative)}

    def predictivity_sections(self, model: str):
        preds: dict[str, np.ndarray] = {}
        self.preds[model] = preds          # shared with the task-specificity section
        for task in self.tasks(model):
            try:
                preds[task] = self._load_pred(model, task)
            except _LOAD_ERRORS as e:
                self.problem(e)
        fig_dir = f"figures/{model}"
        self.doc.h(3, "Neuron predictivity (Figures 2 and 9)")
        if not preds:
            self.doc.p("No predictivity results.")
            return
        shapes = {t: p.shape for t, p in preds.items()}
        self.doc.p(f"Predictivity Pred(l, n) = mean over seeds of the max over prompt tokens of max(acc, 1 - acc); "
                   f"shape [layers, neurons] = {sorted(set(shapes.values()))}.")
        self.figure(figures.predictivity_per_layer, f"{fig_dir}/predictivity_per_layer.png",
                    f"{model}: predictivity per layer (mean, top {100 * self.opts['top_fraction']:g}%, max)", preds,
                    top_fraction=self.opts["top_fraction"], title=f"{model}: neuron predictivity per layer")
        acc = self.model_accuracy(model)
        self.figure(figures.neuron_boxes_with_model_accuracy, f"{fig_dir}/predictivity_boxes_model_accuracy.png",
                    f"{model}: neuron predictivities per dataset over the model's accuracy (Figure 2)", preds, acc,
                    title=f"{model}: neuron predictivities and model accuracy", ylabel="neuron predictivity")
        for task, p in preds.items():
            self.figure(figures.layer_boxplot, f"{fig_dir}/predictivity_layers_{task}.png",
                        f"{model} on {task}: predictivity of every neuron, per layer", p,
                        title=f"{model} on {task}: neuron predictivity per layer")
            try:      # T5: the first decoder step's neurons (the extension of the paper)
                dec = results.load_decoder_pred(self.workdir, model, task)
            except _LOAD_ERRORS as e:
                self.problem(e)
                dec = None
            if dec is not None:
                self.figure(figures.layer_boxplot, f"{fig_dir}/decoder_predictivity_layers_{task}.png",
                            f"{model} on {task}: predictivity of decoder neurons at the first decoder step", dec,
                            title=f"{model} on {task}: decoder neuron predictivity per layer (first decoder step)")
        if self.opts["neuron_accuracy_boxes"]:
            stats = {}
            for task in preds:     # one large acc array [S, L, T, N] at a time
                try:
                    a = results.load_predictivity(self.workdir, model, task, arrays=("acc",), with_sidecar=False).acc
                    stats[task] = figures.box_stats(a, task)
                except _LOAD_ERRORS as e:
                    self.problem(e)
            if stats:
                self.figure(figures.neuron_boxes_with_model_accuracy, f"{fig_dir}/neuron_accuracy_boxes.png",
                            f"{model}: neuron accuracies (all seeds, layers, prompt tokens) over the model's "
                            f"accuracy (Figure 9)", stats, acc, title=f"{model}: neuron accuracies and model accuracy",
                            ylabel="neuron accuracy")
        self.summary.setdefault("predictivity", {})[model] = {
            t: {"layer_mean": _jsonable(p.mean(1)), "layer_max": _jsonable(p.max(1))} for t, p in preds.items()}

    def _load_pred(self, model: str, task: str) -> np.ndarray:
        """Pred [L, N]; a corrupt sidecar is listed as a problem but does not lose the arrays."""
        try:
            return results.load_predictivity(self.workdir, model, task, arrays=("pred",)).pred
        except results.CorruptResultError as e:
            if e.path.suffix != ".json":
                raise
            self.problem(e)
            return results.load_predictivity(self.workdir, model, task, arrays=("pred",), with_sidecar=False).pred

    def specificity_section(self, model: str):
        self.doc.h(3, "Task specificity (Figures 3 and 8)")
        preds = self.preds.get(model, {})
        if not preds:
            self.doc.p("No predictivity results.")
            return
        by_shape: dict[tuple, dict] = {}
        for t, p in preds.items():
            by_shape.setdefault(p.shape, {})[t] = p
        group = max(by_shape.values(), key=len)
        if len(by_shape) > 1:
            self.problems.append(f"task specificity for {model}: predictivities of different shapes "
                                 f"{ {t: p.shape for t, p in preds.items()} }; only {sorted(group)} are compared")
        if len(group) < 2:
            self.missing.append(f"task specificity for {model}: needs predictivities of at least 2 datasets, "
                                f"found {sorted(preds)}")
            self.doc.p("Needs predictivities of at least 2 datasets.")
            return
        n_perm, seed = int(self.opts["n_permutations"]), int(self.opts["permutation_seed"])
        res = specificity.analyse(group, n_perm=n_perm, seed=seed)
        self.doc.p(f"Spearman rank correlation of Pred between datasets, per layer, averaged over layers. '*': "
                   f"one-sided permutation p < {self.opts['alpha']} ({n_perm} within-layer permutations of neuron "
                   f"labels, seed {seed}; statistic = the layer-averaged correlation).")
        fig_dir = f"figures/{model}"
        self.figure(figures.spearman_heatmap, f"{fig_dir}/spearman.png",
                    f"{model}: layer-averaged Spearman correlation of neuron predictivities (Figure 3)", res.mean,
                    res.tasks, pvalues=res.pvalues, alpha=self.opts["alpha"],
                    title=f"{model}: task specificity (Spearman, mean over layers)")
        if res.zscored is not None:
            self.figure(figures.spearman_heatmap, f"{fig_dir}/spearman_zscored.png",
                        f"{model}: correlations z-scored among all dataset pairs (Figure 8)", res.zscored, res.tasks,
                        zscored=True, pvalues=res.pvalues, alpha=self.opts["alpha"],
                        title=f"{model}: task specificity, z-scored correlations")
        else:
            self.missing.append(f"z-scored task specificity for {model}: needs at least 3 datasets with distinct "
                                f"correlations, found {res.tasks}")
        rows = []
        for i in range(len(res.tasks)):
            for j in range(i + 1, len(res.tasks)):
                same = results.task_type(res.tasks[i]) == results.task_type(res.tasks[j])
                rows.append((res.tasks[i], res.tasks[j], "same" if same else "different", f"{res.mean[i, j]:.3f}",
                             "–" if res.zscored is None else f"{res.zscored[i, j]:+.2f}",
                             "–" if res.pvalues is None else f"{res.pvalues[i, j]:.4f}"))
        self.doc.table(("dataset", "dataset", "task type", "Spearman", "z-score", "p (permutation)"), rows)
        wb = specificity.within_between(res.mean, res.tasks, results.TASK_TYPE)
        self.doc.p(f"Mean correlation within a task type: {wb['within']:.3f} ({wb['n_within']} pairs); between "
                   f"task types: {wb['between']:.3f} ({wb['n_between']} pairs).")
        self.summary.setdefault("specificity", {})[model] = {
            "tasks": res.tasks, "spearman": _jsonable(res.mean), "zscored": _jsonable(res.zscored),
            "pvalues": _jsonable(res.pvalues), "n_permutations": n_perm, "permutation_seed": seed,
            "within_between": wb}

    def suppression_section(self, model: str):
        self.doc.h(3, "Suppressing skill neurons (Figures 4, 5, 6 and 10)")
        loaded = []
        for s, t in self.inv.suppression.get(model, []):
            try:
                loaded.append(results.load_suppression(self.workdir, model, s, t))
            except _LOAD_ERRORS as e:
                self.problem(e)
        present = set(self.inv.suppression.get(model, []))      # corrupt ones are listed as problems instead
        for task in self.tasks(model):
            src = transfer.own_prompt_task(task)
            if (src, task) not in present:
                self.missing.append(f"suppression: {results.suppression_path(self.workdir, model, src, task)} absent")
        if not loaded:
            self.doc.p("No suppression results.")
            return
        names = results.order_tasks({r.target for r in loaded} | {r.source for r in loaded})
        order = {t: i for i, t in enumerate(names)}
        loaded.sort(key=lambda r: (order[r.target], order[r.source]))
        same = [r for r in loaded if r.source == r.target]
        cross = [r for r in loaded if r.source != r.target]
        self.doc.p("Accuracy when the top-k% neurons by predictivity (per layer) are set to 0, against the same "
                   "number of random neurons per layer; mean ± SEM over seeds (random draws averaged per seed).")
        fig_dir = f"figures/{model}"
        for group, name, what in ((same, "same_task", "skill neurons of the evaluated task"),
                                  (cross, "cross_task", "skill neurons of another task (source → target)")):
            if group:
                panels = [figures.SuppressionPanel(f"{r.source} → {r.target}", robustness.suppression_stats(r))
                          for r in group]
                self.figure(figures.suppression_curves, f"{fig_dir}/suppression_{name}.png",
                            f"{model}: suppressing {what} vs random neurons", panels,
                            title=f"{model}: suppressing {what}")
        self.doc.table(robustness.SUPPRESSION_HEADER, robustness.suppression_rows((model, r) for r in loaded))
        self.summary.setdefault("suppression", {})[model] = {
            f"{r.source}__{r.target}": {k: _jsonable(v) for k, v in
                                         dataclasses.asdict(robustness.suppression_stats(r)).items()} for r in loaded}

    def config_section(self):
        self.doc.h(2, "Configuration")
        self.doc.pre(json.dumps(self.config, indent=2, sort_keys=True, default=str))
        self.doc.p("Analysis options: " + ", ".join(f"{k}={v}" for k, v in sorted(self.opts.items())))

    def gaps_section(self):
        if self.expected_tasks:
            found = set().union(*[set(self.inv.tasks(m)) for m in self.inv.models]) if self.inv.models else set()
            for t in self.expected_tasks:
                if t not in found:
                    self.missing.append(f"task {t}: named in the config but no result of any stage exists")
        self.doc.h(2, "Missing results")
        self.doc.ul(_dedupe(self.missing))
        self.doc.h(2, "Unreadable (corrupt) result files")
        self.doc.ul(_dedupe(self.problems))
        if self.errors:
            self.doc.h(2, "Sections that failed")
            self.doc.ul(self.errors)

    def build(self) -> Report:
        self.section("header", self.header)
        self.section("accuracy table", self.accuracy)
        for model in self.inv.models:
            self.doc.h(2, f"Model {model}")
            self.section(f"transfer ({model})", lambda: self.transfer_section(model))
            self.section(f"predictivity ({model})", lambda: self.predictivity_sections(model))
            self.section(f"task specificity ({model})", lambda: self.specificity_section(model))
            self.section(f"suppression ({model})", lambda: self.suppression_section(model))
        self.section("configuration", self.config_section)
        self.gaps_section()
        self.missing, self.problems = _dedupe(self.missing), _dedupe(self.problems)
        self.summary.update(missing=self.missing, problems=self.problems, errors=self.errors, config=self.config,
                            options=self.opts, figures=[_rel(f, self.out_dir) for f in self.figures])
        md = sio.atomic_write_text(self.out_dir / "index.md", self.doc.markdown())
        html_path = sio.atomic_write_text(self.out_dir / "index.html", self.doc.html("Skill neurons: results report"))
        summary = sio.atomic_write_json(self.out_dir / "summary.json", _no_nan(self.summary))
        sio.write_sidecar(md, stage="report", workdir=str(self.workdir), config=self.config, options=self.opts)
        return Report(index_md=md, index_html=html_path, summary=summary, figures=self.figures,
                      missing=self.missing, problems=self.problems, errors=self.errors)


def build_report(workdir, out_dir, config_dict: Mapping | None = None) -> Report:
    """Gathers every table and figure the results under `workdir` allow into `out_dir` (see the module docstring).
    Raises only when `out_dir` cannot be written."""
    config = _plain_config(config_dict)
    out_dir = pathlib.Path(out_dir)
    try:      # fail before any work when the report cannot be written at all
        out_dir.mkdir(parents=True, exist_ok=True)
        sio.atomic_write_text(out_dir / ".write_probe", "")
        (out_dir / ".write_probe").unlink()
    except OSError as e:
        raise PermissionError(f"{out_dir}: cannot write the report there ({type(e).__name__}: {e})") from e
    return _Builder(pathlib.Path(workdir), out_dir, config).build()


# ----------------------------------------------------------------------------------------------------------------
def _plain_config(config_dict) -> dict:
    if config_dict is None:
        return {}
    if hasattr(config_dict, "to_dict"):       # ml_collections.ConfigDict
        config_dict = config_dict.to_dict()
    return json.loads(json.dumps(dict(config_dict), default=str))


def _config_tasks(config: Mapping) -> list[str] | None:
    tasks = config.get("tasks")
    if tasks is None:
        return None
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",")]
    return results.order_tasks(str(t).strip().lower() for t in tasks if str(t).strip())


def _rel(path, base) -> str:
    try:
        return str(pathlib.Path(path).relative_to(base))
    except ValueError:
        return str(path)


def _fmt_pct(v: float) -> str:
    return f"{100 * v:.1f}" if np.isfinite(v) else "–"


def _jsonable(x):
    if x is None:
        return None
    arr = np.asarray(x, dtype=np.float64)
    # NaN is not JSON: absent values become null.
    return np.where(np.isfinite(arr), arr.astype(object), None).tolist()


def _no_nan(obj):
    """NaN is not JSON: undefined numbers become null, recursively."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _dedupe(items):
    return list(dict.fromkeys(items))
