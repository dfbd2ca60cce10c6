"""Stage tune: prompt tuning of one (model, task), every seed in one compiled step. The body of `launch.tune` and
of the pipeline's tune stages.

    summary = tune(setup, seeds, workdir, data_dir, tune_config, model_path=path, max_examples=256)

`setup` is a `stages.setup.TaskSetup` (a loaded model, the task, its readout), so the caller decides how the model
is loaded (launch.tune loads it, a pipeline Session keeps it cached). This function resolves the hyperparameters
(the config, then prompt/hparams.py for the fields left None), encodes the splits, builds the training and dev
batches, initialises one prompt per seed, writes the run's sidecar fields and calls `prompt.train.train`, which
writes WORKDIR/prompts/<model>/<task>/seed_<s>/{prompt.npy (+ .json), metrics.jsonl, state/, run_config.json}.

Batches. Every seed gets its own order of the training examples (`train.epoch_seed(seed, epoch)`). With
`group_by_length`, each epoch's rows are sorted by length in chunks so a batch holds rows of similar length, and
the order of those batches is shuffled with a permutation of the EPOCH alone (`length_schedule_seed`), the same for
every seed. The seeds of one step are stacked into one `[S, B, T]` batch padded to the longest seed's bucket, so a
per-seed batch order would pair a short batch of one seed with a long batch of the other (measured on tweets:
18% more token positions per step); with one schedule, batch i of every seed comes from the same length rank.
A seed's batches stay a pure function of (seed, epoch): training two seeds together or one alone gives it the
same data.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import sys
import time
import types
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from skillneurons_jax import fields, io, layout, parallel
from skillneurons_jax.data import batches as batching
from skillneurons_jax.data import readers
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.prompt import checkpoint, hparams, soft_prompt, train
from skillneurons_jax.stages import registry
from skillneurons_jax.stages.setup import MODEL_KEYS, TaskSetup, buckets_for, encode_split, model_batches, round_up

log = logging.getLogger(__name__)

# The tuning config fields that must be set after the hyperparameter table has filled the None ones.
REQUIRED = ("learning_rate", "batch_size")


def resolve_tune_config(tune_config, model_name: str, family: str, task: str, *, max_steps=None,
                        eval_every=None) -> dict:
    """configs/tune.py values + the per-model/per-task table (prompt/hparams.py) for the fields left None; then
    `max_steps_by_task` for this task; explicit `max_steps` / `eval_every` (launch.tune's flags) win. Returns one
    plain dict of every setting."""
    cfg = tune_config.to_dict() if hasattr(tune_config, "to_dict") else dict(tune_config)
    for key, value in hparams.lookup(model_name, family, task).items():
        if cfg.get(key) is None:
            cfg[key] = value
    if cfg.get("init") is None:
        cfg["init"] = "normal"
    # Resolved per task: the table of every task's steps is no setting of this task's run (its own entry is
    # max_steps), so that another task's entry changes nothing this run records or is fingerprinted by.
    by_task = parse_steps_by_task(cfg.pop("max_steps_by_task", None))
    if task in by_task:
        cfg["max_steps"] = by_task[task]
    if max_steps is not None:
        cfg["max_steps"] = int(max_steps)
    if eval_every is not None:
        cfg["eval_every"] = int(eval_every)
    for key in REQUIRED:
        if cfg.get(key) is None:
            raise ValueError(f"{key} is set neither in the config nor in prompt/hparams.py for {model_name!r}")
    return cfg


def parse_steps_by_task(text, field: str = "--config.tune.max_steps_by_task") -> dict[str, int]:
    """`--config.tune.max_steps_by_task` ("sst2:450,mrpc:150"; "" or None: none) -> {task: steps}. A study can give
    one task more steps than the rest (configs/validation.py: the task whose learning the probes showed still
    rising) without a second config; ValueError naming `field` (as the user spelled the flag) for a malformed
    entry."""
    out: dict[str, int] = {}
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        task, sep, steps = entry.partition(":")
        task, steps = task.strip(), steps.strip()
        if not sep or not task or not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"{field}: {entry!r} is not TASK:STEPS with STEPS a positive "
                             f"integer (in {text!r})")
        try:
            task = task_table.get_task(task).name        # the table's name ("SST2" is sst2): a typo is an error
        except ValueError as err:
            raise ValueError(f"{field}: {err}") from None
        if task in out:
            raise ValueError(f"{field} names {task!r} twice (in {text!r})")
        out[task] = int(steps)
    return out


# Every field of a tuning config (configs/tune.py); another key is a typo and refused.
FIELDS = ("batch_size", "clip_norm", "dev_max_examples", "epochs", "eval_at_start", "eval_batch_size", "eval_every",
          "group_by_length", "init", "init_std", "init_vocab_range", "keep_checkpoints", "learning_rate", "mask_slot",
          "max_steps", "max_steps_by_task", "max_text_tokens", "patience", "prefix_positions", "progress",
          "prompt_len", "readout", "tied_scale", "time_limit_s", "train_max_examples", "warmup_steps",
          "weight_decay", "lr_schedule", "min_lr_fraction", "select_metric", "select_percent",
          "select_without_originals", "reparam_hidden")
# The tuning fields that the stages after tuning read (encoding and scoring); their prompts are their inputs.
EVALUATION_TUNE_FIELDS = ("max_text_tokens", "eval_batch_size", "readout", "mask_slot", "prefix_positions",
                          "tied_scale")
# Tuning config fields that must be positive integers when set (None: the hyperparameter table gives them).
POSITIVE_INT_FIELDS = ("max_text_tokens", "eval_batch_size", "epochs", "keep_checkpoints", "batch_size",
                       "train_max_examples", "dev_max_examples", "max_steps")


def check_tune_config(tune_config, prefix: str = "--config.") -> None:
    """The config's values that are given, checked before anything is loaded or read (ValueError
    `<prefix><field>=<value>: allowed: <range>`, fields.check: launch.tune's config is the tuning config itself,
    launch.reproduce's holds it under "tune."); the hyperparameter table fills the None ones later and
    TrainConfig.validate checks again."""
    get = tune_config.get
    soft_prompt.check_prompt_len(get("prompt_len", soft_prompt.DEFAULT_PROMPT_LEN))
    for field in POSITIVE_INT_FIELDS:
        fields.check(f"{prefix}{field}", get(field), fields.Range(1, none="unset: the table's or no cap"))
    for field in ("eval_every", "warmup_steps", "patience"):
        fields.check(f"{prefix}{field}", get(field), fields.Range(0, none="unset"))
    parse_steps_by_task(get("max_steps_by_task"), f"{prefix}max_steps_by_task")
    fields.check(f"{prefix}learning_rate", get("learning_rate"),
                 fields.Range(0, 1e6, integer=False, open_low=True, none="unset: the table's"))
    for field in ("clip_norm", "weight_decay", "time_limit_s"):
        fields.check(f"{prefix}{field}", get(field), fields.Range(0, integer=False, none="unset"))
    for field, choices in (("lr_schedule", train.LR_SCHEDULES), ("select_metric", train.SELECT_METRICS)):
        if get(field) is not None and get(field) not in choices:
            raise ValueError(f"{prefix}{field} must be one of {choices}, got {get(field)!r}")
    fields.check(f"{prefix}min_lr_fraction", get("min_lr_fraction"), fields.Range(0, 1, integer=False, none="unset"))
    for field in ("reparam_hidden", "select_percent"):
        fields.check(f"{prefix}{field}", get(field), fields.Range(0, none="unset"))
    if (get("select_percent") or 0) >= 100:
        raise ValueError(f"{prefix}select_percent={get('select_percent')!r}: allowed: an integer >= 0 and below 100 "
                         "(0: select on the whole dev split)")


def init_vocab_range(cfg: Mapping, vocab_size: int) -> tuple[int, int]:
    """Vocabulary ids that 'vocab' init samples: the config's, else the frequent part of the vocabulary
    (ids 1000..6000 for real vocabularies: past BERT's [unused] slots, within the frequent words of BPE and
    SentencePiece vocabularies), clipped to small test vocabularies."""
    if cfg.get("init_vocab_range"):
        low, high = cfg["init_vocab_range"]
        return int(low), int(high)
    return min(1000, vocab_size // 10), min(6000, vocab_size)


def length_schedule_seed(epoch: int) -> int:
    """Seed of the batch order shared by all seeds in one epoch under group_by_length (see the module docstring)."""
    return int(np.random.SeedSequence([int(epoch), 0x1E57]).generate_state(1)[0])


def make_train_batches(train_enc, batch_size: int, buckets, group_by_length: bool,
                       extend: Optional[Callable[[int, dict], dict]] = None):
    """(seed, epoch) -> that epoch's training batches for `seed` (dicts of numpy arrays, see stages.setup).
    `extend(seed, batch)`: adds fields to each batch (it sees the rows' "index"; the result keeps what it returns)."""

    keys = MODEL_KEYS if extend is None else MODEL_KEYS + ("index",)

    def train_batches(seed, epoch):
        out = list(model_batches(train_enc, batch_size, seed=train.epoch_seed(seed, epoch), drop_last=True,
                                 buckets=buckets, sort_by_length=bool(group_by_length), keys=keys))
        if group_by_length:  # rows of similar length share a batch; batch order: one permutation for all seeds
            out = [out[i] for i in np.random.default_rng(length_schedule_seed(epoch)).permutation(len(out))]
        if extend is not None:
            out = [extend(int(seed), batch) for batch in out]
        return out

    return train_batches


def train_config(cfg: Mapping) -> train.TrainConfig:
    """The prompt.train.TrainConfig of a resolved tuning config."""
    patience = cfg.get("patience")
    return train.TrainConfig(
        learning_rate=float(cfg["learning_rate"]), batch_size=int(cfg["batch_size"]), epochs=int(cfg["epochs"]),
        max_steps=cfg.get("max_steps"), eval_every=int(cfg["eval_every"]), eval_at_start=bool(cfg["eval_at_start"]),
        warmup_steps=int(cfg["warmup_steps"]), clip_norm=float(cfg["clip_norm"]),
        weight_decay=float(cfg["weight_decay"]), keep_checkpoints=int(cfg["keep_checkpoints"]),
        progress=bool(cfg["progress"]), time_limit_s=float(cfg.get("time_limit_s") or 0.0),
        patience=None if patience is None else int(patience),
        **{k: type(default)(cfg[k]) for k, default in train.TrainConfig.RECIPE_DEFAULTS.items()
           if cfg.get(k) is not None})


def planned_steps(config: train.TrainConfig, train_examples: int) -> int:
    """The updates a run of `config` makes on `train_examples` rows: its epochs, capped by max_steps."""
    planned = int(config.epochs) * (int(train_examples) // int(config.batch_size))
    return planned if config.max_steps is None else min(planned, int(config.max_steps))


# Resolved tuning config fields that change nothing a run computes: the progress bar; the per-task budget table
# (runs of commit f47a64f recorded it whole; the task's entry is max_steps); a time limit (a run it stopped is
# unfinished and resumes); how many checkpoints are kept; where the hyperparameter table's values came from
# (the values themselves are in the config). Resuming, copying and the plan's stage settings all leave them out.
CONFIG_NOT_COMPUTED = ("progress", "max_steps_by_task", "time_limit_s", "keep_checkpoints", "hparams_row",
                       "hparams_source")
# Sidecar fields of a finished run that another run must share for its prompts to be the same computation (with
# the fingerprint of run_config.json): the resolved config (less CONFIG_NOT_COMPUTED), the data and its reading,
# the seeds trained together and the devices they were sharded over.
REUSE_SIDECAR_KEYS = ("config", "data_dir", "seeds", "devices", "processes", "truncation",
                      "excluded_adversarial_originals")


def _computed_config(config) -> dict:
    return {k: v for k, v in dict(config or {}).items() if k not in CONFIG_NOT_COMPUTED}


def _sidecar_view(sidecar: Mapping, keys: Sequence[str]) -> dict:
    """The `keys` of a metrics sidecar as two runs compare them: the config less CONFIG_NOT_COMPUTED, the data
    folder by its resolved path."""
    view = {key: sidecar.get(key) for key in keys}
    view["config"] = _computed_config(view["config"])
    view["data_dir"] = io.folder_key(view["data_dir"])
    return io.as_written(view)


def _differing_fields(found: Mapping, expected: Mapping) -> list[str]:
    """The fields of two sidecar views that differ, the config's own fields named one by one ("config.lr")."""
    keys = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
    if "config" not in keys:
        return keys
    old, new = found.get("config") or {}, expected.get("config") or {}
    return [k for k in keys if k != "config"] + [f"config.{k}" for k in sorted(set(old) | set(new))
                                                 if old.get(k) != new.get(k)]


def _finished_run_mismatch(source: pathlib.Path, fingerprint: Mapping, sidecar: Mapping, own_keys: Sequence[str],
                           planned: int) -> Optional[str]:
    """Why the run in `source` (one seed's folder) is not this one, finished; None when it is."""
    for name in (layout.RUN_CONFIG_FILE, layout.METRICS_FILE, layout.PROMPT_FILE):
        if not (source / name).exists():
            return f"{source / name} is missing"
    for path in (io.sidecar_path(source / layout.METRICS_FILE), io.sidecar_path(source / layout.PROMPT_FILE)):
        if not path.exists():
            return f"{path} is missing"
    expected = io.as_written({k: v for k, v in fingerprint.items() if k not in own_keys})
    found = json.loads((source / layout.RUN_CONFIG_FILE).read_text())
    if found != expected:
        return f"{source / layout.RUN_CONFIG_FILE} differs in {_differing_fields(found, expected)}"
    found = _sidecar_view(json.loads(io.sidecar_path(source / layout.METRICS_FILE).read_text()), REUSE_SIDECAR_KEYS)
    expected = _sidecar_view(sidecar, REUSE_SIDECAR_KEYS)
    if found != expected:
        return f"{io.sidecar_path(source / layout.METRICS_FILE)} differs in {_differing_fields(found, expected)}"
    rows = train.read_metrics(source / layout.METRICS_FILE)
    last = max((int(r["step"]) for r in rows), default=0)
    if last != planned and not any("stopped_early" in r for r in rows):
        # fewer steps: unfinished; more: resumed with a smaller budget (its best prompt may come from later steps)
        return f"{source / layout.METRICS_FILE} ends at step {last}, this run plans {planned}"
    return None


# What a resumed run must share with the run it continues (besides run_config.json): the resolved config, the
# data and its reading, the seeds trained together.
RESUME_SIDECAR_KEYS = ("config", "data_dir", "seeds", "truncation", "excluded_adversarial_originals")


# Config fields whose change a finished or interrupted run can absorb by training on (budget_extension says when).
BUDGET_FIELDS = ("max_steps", "epochs")


def _logged_steps(run_dir: pathlib.Path) -> tuple[int, bool]:
    """(last logged step, whether the run stopped early) of a run folder's metrics.jsonl (a truncated last line,
    an interrupted append, is skipped); (0, False) without one."""
    rows = train.read_metrics(run_dir / layout.METRICS_FILE)
    return max((int(r["step"]) for r in rows), default=0), any("stopped_early" in r for r in rows)


def budget_extension(run_dir: pathlib.Path, planned: int, every: int) -> Optional[str]:
    """Whether a run that differs from this one only in its step budget (BUDGET_FIELDS) continues into it: None
    when training on from its last logged step computes what this run computes from scratch (it has not passed
    `planned` steps, did not stop early, and its evaluations so far are this run's: its last one is on this run's
    schedule of every `every` steps; the learning-rate schedule does not depend on the budget); else why not."""
    last, stopped = _logged_steps(run_dir)
    if stopped:
        return f"it stopped early at step {last}"
    if last > 0 and not checkpoint.has_checkpoint(run_dir):
        # a copied run (copy_finished_run writes none) or one whose state/ was removed: training "on" would start
        # from step 0 and overwrite its metrics and prompt
        return f"it has no checkpoint to train on from (no {run_dir / checkpoint.STATE_DIR})"
    if last > planned:
        return f"it ran {last} steps, past this run's {planned}"
    if last % max(int(every), 1) and last != planned:
        return f"its last evaluation (step {last}) is not on this run's schedule (every {every} steps)"
    return None


def changed_run_reason(run_dir: pathlib.Path, fingerprint: Mapping, sidecar: Mapping, *, planned: int,
                       every: int) -> Optional[str]:
    """Why the run in `run_dir` (one seed's folder) is not this run (interrupted, finished, or to be trained on
    to a larger budget: budget_extension), i.e. was made with other settings: its run_config.json, or its metrics
    sidecar's resolved config, data or seeds differ (another learning rate, fewer steps, ...). None when the
    folder holds no run or this run. `planned`: this run's steps; `every`: its evaluation interval in steps."""
    run_dir = pathlib.Path(run_dir)
    config_path, sidecar_path = run_dir / layout.RUN_CONFIG_FILE, io.sidecar_path(run_dir / layout.METRICS_FILE)
    try:
        if config_path.exists():
            found, expected = json.loads(config_path.read_text()), io.as_written(dict(fingerprint))
            if found != expected:
                return f"{config_path} differs in {_differing_fields(found, expected)}"
        if sidecar_path.exists():
            found = _sidecar_view(json.loads(sidecar_path.read_text()), RESUME_SIDECAR_KEYS)
            expected = _sidecar_view(sidecar, RESUME_SIDECAR_KEYS)
            if found != expected:
                keys = _differing_fields(found, expected)
                if not set(keys) <= {f"config.{k}" for k in BUDGET_FIELDS}:
                    return f"{sidecar_path} differs in {keys}"
                refused = budget_extension(run_dir, planned, every)
                if refused is not None:
                    return f"{sidecar_path} differs in {keys} and {refused}"
        elif config_path.exists():
            # an interrupted or finished run always has its sidecar: without it the budget it ran is unknown
            refused = budget_extension(run_dir, planned, every)
            if refused is not None:
                return f"{sidecar_path} is missing and {refused}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{run_dir} is unreadable ({type(err).__name__}: {err})"
    return None


def set_aside(run_dir: pathlib.Path) -> pathlib.Path:
    """Renames a run folder made with other settings to `<name>.superseded-<UTC time>` beside it (kept, never
    deleted: a user's prompts are not lost); returns the new path."""
    run_dir = pathlib.Path(run_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = run_dir.with_name(f"{run_dir.name}.superseded-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.superseded-{stamp}-{n}")
    run_dir.rename(target)
    return target


def copy_finished_run(source_root, workdir, model: str, task: str, seeds: Sequence[int], fingerprint: Mapping,
                      run_info: Mapping, sidecar: Mapping, *, own_keys: Sequence[str], planned: int
                      ) -> Optional[dict]:
    """Copies the finished run of (model, task, seeds) under `source_root` to `workdir` when every seed's run
    there is this computation (_finished_run_mismatch: its run_config.json is `fingerprint` less `own_keys`, its
    sidecar shares REUSE_SIDECAR_KEYS, it reached `planned` steps or stopped early); returns tune's summary, or
    None (logged, nothing written) when any seed's run does not match. The copy has no checkpoint (the run is
    finished); its sidecars are this run's with `copied_from` naming the source folder.

    What is copied is checked first (the integrity rule of docs/interfaces.md): every seed folder and each link
    in it stays inside `source_root` (io.check_tree_inside), and the bytes of metrics.jsonl and prompt.npy are
    those the source's own records (their sidecars' sha256, its .stages records) say it wrote (io.read_verified);
    otherwise nothing is copied, the reason is logged, and the caller trains."""
    sources = [layout.run_dir(source_root, model, task, s) for s in seeds]
    verified = []
    for source in sources:
        try:
            io.check_tree_inside(source_root, source)
            reason = _finished_run_mismatch(source, fingerprint, sidecar, own_keys, planned)
            if reason is None:
                verified.append({name: io.read_verified(source_root, source / name)
                                 for name in (layout.METRICS_FILE, layout.PROMPT_FILE)})
        except (io.OutsideFolder, io.Unverified) as err:          # refused: computed here, from nothing outside
            reason = f"refused: {err}"
        except (OSError, ValueError, KeyError, TypeError) as err:   # a corrupt source is no reason to stop: train
            reason = f"{source} is unreadable ({type(err).__name__}: {err})"
        if reason is not None:
            print(f"tuning {model}/{task} under {workdir}: not copied from {source_root} ({reason}); training",
                  file=sys.stderr, flush=True)
            return None
    summary = {"model": model, "task": task, "seeds": [int(s) for s in seeds], "steps": 0, "resumed_from": None,
               "stopped_early": None, "best_dev_accuracy": [], "best_dev_f1": [], "best_step": [], "prompts": [],
               "copied_from": str(source_root)}
    for seed, source, data in zip(seeds, sources, verified):
        target = layout.run_dir(workdir, model, task, seed)
        rows = data[layout.METRICS_FILE].decode("utf-8")
        source_meta = json.loads(io.sidecar_path(source / layout.PROMPT_FILE).read_text())
        # this run's fields, the source's selection (best step and its dev scores) and where and when it came from
        prompt_meta = {**dict(run_info), **dict(sidecar), "seed": int(seed),
                       **{k: source_meta[k] for k in ("best_step", "dev_accuracy", "dev_f1")},
                       **io.copied_from(source, source_meta)}
        if jax.process_index() == 0:
            target.mkdir(parents=True, exist_ok=True)
            io.atomic_write_json(target / layout.RUN_CONFIG_FILE, dict(fingerprint))
            io.atomic_write_text(target / layout.METRICS_FILE, rows)
            io.write_sidecar(target / layout.METRICS_FILE, **dict(run_info), **dict(sidecar),
                             **io.copied_from(source, source_meta))
            io.atomic_write_bytes(target / layout.PROMPT_FILE, data[layout.PROMPT_FILE])
            io.write_sidecar(target / layout.PROMPT_FILE, **prompt_meta)
        parsed = train.parse_metrics(rows, source / layout.METRICS_FILE)
        summary["steps"] = max(summary["steps"], max(int(r["step"]) for r in parsed))
        stopped = [int(r["stopped_early"]) for r in parsed if "stopped_early" in r]
        summary["stopped_early"] = stopped[-1] if stopped else summary["stopped_early"]
        summary["best_dev_accuracy"].append(float(prompt_meta["dev_accuracy"]))
        summary["best_dev_f1"].append(float(prompt_meta["dev_f1"]))
        summary["best_step"].append(int(prompt_meta["best_step"]))
        summary["prompts"].append(str(target / layout.PROMPT_FILE))
    print(f"tuning {model}/{task} under {workdir}: copied from {source_root} (the same computation, finished)",
          file=sys.stderr, flush=True)
    return summary


def tune(setup: TaskSetup, seeds: Sequence[int], workdir, data_dir, tune_config, *, model_path,
         max_examples: Optional[int] = None, max_steps: Optional[int] = None, eval_every: Optional[int] = None,
         sidecar_extra: Optional[Mapping[str, Any]] = None, require_complete: bool = False,
         step_factory: Optional[Callable] = None, extend_batches: Optional[Callable] = None,
         run_info_extra: Optional[Mapping[str, Any]] = None, reuse_from=None, replace_changed: bool = False) -> dict:
    """Tunes one prompt per seed of `setup.task` (all seeds in one compiled step); see the module docstring.

    Another loss (robust.tuning, issue 17) comes in through three arguments, so the tuning body stays one:
    `step_factory` is prompt.train.train's (None: the plain step); `extend_batches(train_examples, train_enc, cfg)`
    is called once with the training split as read ([E] data.tasks.Example) and encoded, and the resolved config,
    and returns `extend(seed, batch) -> batch` applied to every training batch (it sees the rows' "index");
    `run_info_extra` joins the run's fingerprint and sidecars (a resumed run must share it). `workdir` may be any
    workdir-shaped root (layout.robust_arm_dir).

    `reuse_from`: another workdir-shaped root whose finished run of this task is THIS computation (the plain arm
    of robust.tuning and the tune stage: same body, resolved config, data, seeds, devices and loss; without
    `step_factory` and `extend_batches` the prompts agree bit for bit, tests/test_robust_plan.py). When every
    seed's run there matches (copy_finished_run says what must), its prompts and metrics are copied instead of
    trained again, and the sidecars name the source; otherwise the run is trained and the reason is logged. Only
    in a single-process run: on a pod every process trains (no process decides for the others).

    `model_path` is recorded in the sidecars (the model is `setup.loaded`). Split sizes: `max_examples` caps every
    split; the config's `train_max_examples` / `dev_max_examples`, when set, replace it for that split.
    `require_complete`: raise RuntimeError when the config's time_limit_s stopped training before the planned
    steps (a plan stage must not count as done; a rerun resumes from the checkpoint); early stopping by
    `patience` is a complete run. While it runs it holds prompts/<model>/<task>/ (io.stage_lock: a second run
    on the same folder is refused with io.LockHeld). Raises prompt.train.TrainingDiverged on a NaN loss.
    A seed folder that holds a run made with other settings (changed_run_reason) is refused (ValueError: use
    another workdir or delete it), or with `replace_changed` (the plan's stages: the plan reruns a stage whose
    settings changed) set aside (set_aside: renamed, kept) and trained from scratch; only in a single-process run
    (on a pod it is refused). An interrupted run of the same settings resumes either way.
    Returns the summary that launch.tune prints.
    """
    folder = layout.task_prompts_dir(workdir, setup.loaded.name, setup.task.name)
    for seed in seeds:   # a run resumed here reads only files inside the workdir (io.OutsideFolder otherwise)
        io.check_tree_inside(workdir, layout.run_dir(workdir, setup.loaded.name, setup.task.name, seed))
    with io.stage_lock(layout.lock_path(folder), folder, f"tune {setup.loaded.name}/{setup.task.name}",
                       enabled=jax.process_index() == 0):
        return _tune(setup, seeds, workdir, data_dir, tune_config, model_path=model_path,
                     max_examples=max_examples, max_steps=max_steps, eval_every=eval_every,
                     sidecar_extra=sidecar_extra, require_complete=require_complete, step_factory=step_factory,
                     extend_batches=extend_batches, run_info_extra=run_info_extra, reuse_from=reuse_from,
                     replace_changed=replace_changed)


def _tune(setup: TaskSetup, seeds: Sequence[int], workdir, data_dir, tune_config, *, model_path, max_examples,
          max_steps, eval_every, sidecar_extra, require_complete, step_factory=None, extend_batches=None,
          run_info_extra=None, reuse_from=None, replace_changed=False) -> dict:
    """The body of `tune`, run while the task folder is held."""
    t_start = time.time()
    seeds = [int(s) for s in seeds]
    loaded, readout, task = setup.loaded, setup.readout, setup.task.name
    cfg = resolve_tune_config(tune_config, loaded.name, loaded.family, task, max_steps=max_steps,
                              eval_every=eval_every)
    soft_prompt.check_prompt_len(cfg["prompt_len"])
    mesh = parallel.make_mesh()
    parallel.check_divisible(cfg["batch_size"], mesh, what="global batch (config batch_size)")

    train_cap = cfg.get("train_max_examples") or max_examples
    train_enc = encode_split(setup, "train", data_dir, train_cap, cfg["max_text_tokens"])
    dev_enc = encode_split(setup, "dev", data_dir, cfg.get("dev_max_examples") or max_examples,
                           cfg["max_text_tokens"], role="select")
    batch_size = int(cfg["batch_size"])
    if len(train_enc) < batch_size:
        raise ValueError(f"task {task!r}: {len(train_enc)} training examples, fewer than one batch of {batch_size}")
    buckets = buckets_for([train_enc, dev_enc])
    eval_batch_size = round_up(cfg["eval_batch_size"], parallel.num_data_shards(mesh))
    dev_batches = list(model_batches(dev_enc, eval_batch_size, buckets=buckets, sort_by_length=True))
    extend = None
    if extend_batches is not None:
        train_examples = readers.load_split(setup.task, "train", data_dir, max_examples=train_cap)
        extend = extend_batches(train_examples, train_enc, cfg)
    train_batches = make_train_batches(train_enc, batch_size, buckets, bool(cfg["group_by_length"]), extend)

    config = train_config(cfg)
    # What a resumed run must share with the interrupted one (besides the optimiser settings), and what
    # the transfer, predictivity and suppression stages check before using the prompts (prompt.files).
    run_info = {"model": loaded.name, "family": loaded.family, "task": task,
                "readout": readout.kind.name, "mask_slot": readout.mask_slot,
                "prefix_positions": readout.prefix_positions, "tied_scale": cfg["tied_scale"],
                "label_words": list(setup.label_words.words), "prompt_init": cfg["init"],
                "init_std": cfg["init_std"], "max_text_tokens": cfg["max_text_tokens"],
                "group_by_length": bool(cfg["group_by_length"]),
                "train_examples": len(train_enc), "dev_examples": len(dev_enc), **dict(run_info_extra or {})}
    sidecar = {"config": cfg, "model_path": str(model_path), "data_dir": str(data_dir), "seeds": seeds,
               "devices": jax.device_count(), "processes": jax.process_count(),
               **batching.data_record({"train": train_enc, "dev": dev_enc}), **dict(sidecar_extra or {})}
    run_dirs = [layout.run_dir(workdir, loaded.name, task, s) for s in seeds]
    # A rerun refused for another configuration must leave every file as it was: check before any write.
    fingerprint = train.run_fingerprint(config, run_info, (cfg["prompt_len"], loaded.config.hidden))
    planned = planned_steps(config, len(train_enc))
    every = config.eval_every or max(len(train_enc) // batch_size, 1)      # 0: once per epoch (prompt.train)
    for d in run_dirs:
        reason = changed_run_reason(d, fingerprint, sidecar, planned=planned, every=every)
        if reason is None:
            continue
        if not (replace_changed and jax.process_count() == 1):
            raise ValueError(f"{d} holds a run with a different configuration ({reason}); use another --workdir "
                             "or delete that folder to start over")
        moved = set_aside(d)
        print(f"tuning {loaded.name}/{task}: {d} held a run made with other settings ({reason}); set aside as "
              f"{moved}, training from scratch", file=sys.stderr, flush=True)
    for d in run_dirs:
        train.check_run_config(d, fingerprint)
    # One process decides alone only on one host: on a pod every process would have to agree (and wait for
    # process 0's writes), so a multi-process run trains (the same computation) instead of copying.
    if reuse_from is not None and step_factory is None and extend_batches is None and jax.process_count() == 1:
        copied = copy_finished_run(reuse_from, workdir, loaded.name, task, seeds, fingerprint, run_info, sidecar,
                                   own_keys=tuple(run_info_extra or {}),
                                   planned=planned_steps(config, len(train_enc)))
        if copied is not None:
            return {**copied, "wall_s": round(time.time() - t_start, 1)}
    embed = jax.jit(lambda ids: loaded.module.apply({"params": loaded.params}, ids, method="embed_tokens"))
    init = soft_prompt.init_prompts(
        seeds, cfg["prompt_len"], loaded.config.hidden, cfg["init"], embed_fn=embed,
        vocab_size=loaded.config.vocab_size, label_ids=setup.label_words.ids,
        label_lengths=setup.label_words.lengths, std=cfg["init_std"],
        vocab_range=init_vocab_range(cfg, loaded.config.vocab_size))
    if jax.process_index() == 0:
        for d in run_dirs:
            d.mkdir(parents=True, exist_ok=True)
            # metrics.jsonl is appended to from here on: its sha256 is recorded when the run returns
            io.write_sidecar(d / layout.METRICS_FILE, output_complete=False, **run_info, **sidecar)
    log.info("prompt tuning %s on %s: %d train / %d dev examples, seeds %s, %d device(s), %s", loaded.name, task,
             len(train_enc), len(dev_enc), seeds, jax.device_count(), config)
    result = train.train(readout.score_fn(), loaded.params, init, seeds, train_batches, dev_batches, config,
                         run_dirs=run_dirs, pad_id=train_enc.pad_id, mesh=mesh, run_info=run_info,
                         sidecar=sidecar, description=f"{loaded.name}/{task}", step_factory=step_factory)
    if jax.process_index() == 0:
        for d in run_dirs:      # the log as this run leaves it, with its sha256 (what a copy of the run checks)
            io.write_sidecar(d / layout.METRICS_FILE, **run_info, **sidecar)
    if require_complete and result.stopped_early is None:
        planned = planned_steps(config, len(train_enc))
        if result.steps < planned:
            raise RuntimeError(f"tuning {loaded.name}/{task} stopped at step {result.steps} of {planned} "
                               f"(time_limit_s={config.time_limit_s}); rerun to continue from the checkpoint")
    return {"model": loaded.name, "task": task, "seeds": seeds, "steps": result.steps,
            "resumed_from": result.resumed_from, "stopped_early": result.stopped_early,
            "best_dev_accuracy": [float(a) for a in result.best_accuracy],
            "best_dev_f1": [float(f) for f in result.best_f1],
            "best_step": [int(s) for s in result.best_step],
            "prompts": [str(pathlib.Path(d) / layout.PROMPT_FILE) for d in run_dirs],
            "wall_s": round(time.time() - t_start, 1)}


# ---------------------------------------------------------------------------------------------------------------
# The stage kind (stages/registry.py): tune/<m>/<task> for every clean task of the plan, every seed in one
# compiled loop -> prompts/<m>/<task>/seed_<s>/prompt.npy and metrics.jsonl
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TuneSettings(Mapping):
    """The tuning block (configs/tune.py's fields), checked (check_tune_config) and read-only. A mapping, as the
    tuning body reads it; the None fields are the hyperparameter table's (resolve_tune_config, per task)."""
    values: Mapping = dataclasses.field(default_factory=dict)

    def __getitem__(self, key):
        return self.values[key]

    def __getattr__(self, name):        # settings.tune.max_steps, as the config spells it
        if name.startswith("__") or name == "values":
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self):
        return iter(self.values)

    def __len__(self):
        return len(self.values)

    def to_dict(self) -> dict:
        return dict(self.values)

    @classmethod
    def from_config(cls, block, where: str = "--config.tune.") -> "TuneSettings":
        values = dict(block.to_dict() if hasattr(block, "to_dict") else (block or {}))
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ValueError(f"{where}{unknown[0]}: unknown key (known: {', '.join(FIELDS)})")
        check_tune_config(values, where)
        return cls(types.MappingProxyType(values))


def plan(ctx) -> None:
    m = ctx.model.name
    for task in ctx.tasks.clean:
        outs = ([layout.prompt_path(ctx.workdir, m, task, seed) for seed in ctx.study.seeds]
                + [layout.metrics_path(ctx.workdir, m, task, seed) for seed in ctx.study.seeds])
        ctx.add(f"tune/{m}/{task}", outs, args={"task": task}, group_task=task,
                settings=ctx.settings(task, tune=ctx.tune_settings(task)))


# A training step ~ forward + backward ~ 3 forwards.
TRAIN_STEP_FACTOR = 3.0


def cost(ctx, task: str) -> float:
    """Training steps (x TRAIN_STEP_FACTOR forwards) plus the dev evaluations; three compiled programs."""
    cm = ctx.cost
    cfg = cm.tune_settings(task)
    train_rows, dev, seq = cm.sizes(task, cfg.get("train_max_examples"), cfg.get("dev_max_examples"))
    bs = int(cfg.get("batch_size") or 16)
    per_epoch = max(train_rows // bs, 1)
    steps = int(cfg.get("epochs") or 1) * per_epoch
    if cfg.get("max_steps"):
        steps = min(steps, int(cfg["max_steps"]))
    every = int(cfg.get("eval_every") or 0) or per_epoch
    evals = math.ceil(steps / every) + int(bool(cfg.get("eval_at_start")))
    flops = TRAIN_STEP_FACTOR * cm.forward(steps * bs, seq) + evals * cm.forward(dev, seq)
    return cm.seconds(flops, compiles=3)


def run(ctx, task: str) -> dict:
    """The plan's tune stage: a run that the config's time_limit_s stopped before its planned steps raises
    RuntimeError (the stage is not done; a rerun resumes from the checkpoint); reuse_from's finished run of the
    same computation is copied."""
    s, path = ctx.study, ctx.model.path
    return tune(ctx.session.setup(path, task, s.tune), list(s.seeds), s.workdir, s.data_dir, s.tune,
                model_path=path, max_examples=s.max_examples, sidecar_extra={"stage": "tune"},
                require_complete=True, reuse_from=s.reuse_from, replace_changed=True)


KIND = registry.register("tune", TuneSettings, config_key="tune", plan=plan, cost=cost, run=run, order=10)
