"""Reading saved stage outputs for the analysis, with errors that name the file and the problem.

Everything here reads files written by other stages (formats in ../shared/ARCHITECTURE.md "Contracts" and
docs/interfaces.md "analysis"); nothing here computes statistics. A missing file raises FileNotFoundError naming
the path; a file that exists but cannot be read or has the wrong content raises `CorruptResultError`, a ValueError
whose message starts with the path.

Layout under WORKDIR (model = the output name of a model, e.g. ``all-minilm-l6-v2``):
  prompts/<model>/<task>/seed_<s>/{prompt.npy, metrics.jsonl}
  predictivity/<model>/<task>.npz        (+ sidecar <task>.npz.json)
  suppression/<model>/<source>__<target>.json
  transfer/<model>/<source>__<target>.json
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import zipfile
from typing import Any, Iterable, Mapping

import numpy as np

from skillneurons_jax import io, layout
from skillneurons_jax.data.tasks import DISPLAY_ORDER as _DISPLAY_ORDER
from skillneurons_jax.data.tasks import TASKS as _TASKS
from skillneurons_jax.prompt import metrics

# ----------------------------------------------------------------------------------------------------------------
# The display order of the tasks: the paper's (sentiment, paraphrase, NLI, ethics, then the adversarial sets),
# then any other task of the table (e.g. the offline default's) alphabetically. Task types and clean
# counterparts come from the one task table, skillneurons_jax.data.tasks.
# ----------------------------------------------------------------------------------------------------------------
TASK_ORDER: tuple[str, ...] = _DISPLAY_ORDER        # the task table's display order (data.tasks)

TASK_TYPE: dict[str, str] = {name: spec.task_type for name, spec in _TASKS.items()}
CLEAN_TASK: dict[str, str] = {name: spec.clean_task for name, spec in _TASKS.items() if spec.clean_task}

STAGE_DIRS = (layout.PROMPTS_DIR, layout.PREDICTIVITY_DIR, layout.SUPPRESSION_DIR, layout.TRANSFER_DIR)
_PAIR_SEP = layout.PAIR_SEPARATOR
# Keys a predictivity sidecar may use for the model's accuracy / F1 per seed (first found wins).
SIDECAR_ACCURACY_KEYS = ("model_accuracy", "accuracy")
SIDECAR_F1_KEYS = ("model_f1", "f1")


class CorruptResultError(ValueError):
    """A result file exists but cannot be read or holds the wrong content; `path` names it."""

    def __init__(self, path, problem: str):
        self.path = pathlib.Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def task_type(task: str) -> str:
    return TASK_TYPE.get(task, "other")


def clean_task(task: str) -> str | None:
    """The clean task whose prompt and baseline an adversarial set uses; None for clean tasks."""
    return CLEAN_TASK.get(task)


def order_tasks(tasks: Iterable[str]) -> list[str]:
    """Known tasks in the paper's order, then unknown ones alphabetically; duplicates dropped."""
    rank = {t: i for i, t in enumerate(TASK_ORDER)}
    return sorted(set(tasks), key=lambda t: (rank.get(t, len(rank)), t))


# ----------------------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------------------
def predictivity_path(workdir, model: str, task: str) -> pathlib.Path:
    return layout.predictivity_path(workdir, model, task)


def suppression_path(workdir, model: str, source: str, target: str) -> pathlib.Path:
    return layout.suppression_path(workdir, model, source, target)


def transfer_path(workdir, model: str, source: str, target: str) -> pathlib.Path:
    return layout.transfer_path(workdir, model, source, target)


def prompt_dir(workdir, model: str, task: str, seed: int) -> pathlib.Path:
    return layout.run_dir(workdir, model, task, seed)


def split_pair(name: str) -> tuple[str, str] | None:
    """'qqp__advqqp' -> ('qqp', 'advqqp'); None when the stem is not a pair."""
    parts = name.split(_PAIR_SEP)
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


# ----------------------------------------------------------------------------------------------------------------
# Discovery: what is present under a workdir (no file is opened).
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Inventory:
    """Which results exist for each model: tasks with prompts / predictivity, and (source, target) pairs."""

    prompts: dict[str, dict[str, list[int]]]          # model -> task -> seeds with a prompt.npy
    predictivity: dict[str, list[str]]                 # model -> tasks
    suppression: dict[str, list[tuple[str, str]]]      # model -> (source, target) pairs
    transfer: dict[str, list[tuple[str, str]]]         # model -> (source, target) pairs

    @property
    def models(self) -> list[str]:
        return sorted(set(self.prompts) | set(self.predictivity) | set(self.suppression) | set(self.transfer))

    def tasks(self, model: str) -> list[str]:
        """Every task that appears in any result of `model`, in display order."""
        found = set(self.prompts.get(model, {})) | set(self.predictivity.get(model, []))
        for pairs in (self.suppression.get(model, []), self.transfer.get(model, [])):
            for s, t in pairs:
                found.update((s, t))
        return order_tasks(found)


def _model_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def _visible(paths: Iterable[pathlib.Path]) -> list[pathlib.Path]:
    # Temporary files of atomic writes start with a dot; never count them as results.
    return sorted(p for p in paths if not p.name.startswith("."))


def discover(workdir) -> Inventory:
    workdir = pathlib.Path(workdir)
    prompts: dict[str, dict[str, list[int]]] = {}
    for mdir in _model_dirs(layout.stage_root(workdir, layout.PROMPTS_DIR)):
        for tdir in _model_dirs(mdir):
            seeds = []
            for sdir in _model_dirs(tdir):
                seed = layout.parse_seed_dir(sdir.name)
                if seed is not None and layout.prompt_path(workdir, mdir.name, tdir.name, seed).exists():
                    seeds.append(seed)
            if seeds:
                prompts.setdefault(mdir.name, {})[tdir.name] = sorted(seeds)
    predictivity = {m.name: order_tasks(p.stem for p in _visible(m.glob("*.npz")))
                    for m in _model_dirs(layout.stage_root(workdir, layout.PREDICTIVITY_DIR))}
    pairs: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for stage in (layout.SUPPRESSION_DIR, layout.TRANSFER_DIR):
        pairs[stage] = {}
        for mdir in _model_dirs(layout.stage_root(workdir, stage)):
            found = [split_pair(p.stem) for p in _visible(mdir.glob("*.json")) if not io.is_sidecar(p)]
            pairs[stage][mdir.name] = sorted(pr for pr in found if pr is not None)
    return Inventory(prompts=prompts, predictivity={k: v for k, v in predictivity.items() if v},
                     suppression={k: v for k, v in pairs[layout.SUPPRESSION_DIR].items() if v},
                     transfer={k: v for k, v in pairs[layout.TRANSFER_DIR].items() if v})


# ----------------------------------------------------------------------------------------------------------------
# Generic readers
# ----------------------------------------------------------------------------------------------------------------
def _require(path: pathlib.Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no {what} (file absent)")


def load_json(path, what: str = "JSON result") -> Any:
    path = pathlib.Path(path)
    _require(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptResultError(path, f"corrupt {what}: not valid JSON ({e})") from e


def load_jsonl(path, what: str = "JSON-lines log") -> list[dict]:
    """io.read_jsonl (the one reader of these logs): every line must be a JSON object, except a truncated LAST line
    (an interrupted append), which is skipped."""
    path = pathlib.Path(path)
    _require(path, what)
    try:
        return io.read_jsonl(path)
    except io.JsonlLineError as e:
        raise CorruptResultError(path, f"corrupt {what}: line {e.line} {e.problem}") from e


def load_npz(path, names: Iterable[str], optional: Iterable[str] = (), what: str = "npz result"
             ) -> dict[str, np.ndarray]:
    """Reads the named arrays eagerly (a truncated member only fails when read, so read them here)."""
    path = pathlib.Path(path)
    _require(path, what)
    names, optional = tuple(names), tuple(optional)
    try:
        with np.load(path, allow_pickle=False) as z:
            present = set(z.files)
            absent = [n for n in names if n not in present]
            if absent:
                raise CorruptResultError(path, f"{what} lacks array(s) {absent}; it has {sorted(present)}")
            return {n: np.asarray(z[n]) for n in names + tuple(o for o in optional if o in present)}
    except CorruptResultError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CorruptResultError(path, f"corrupt {what}: cannot be read ({type(e).__name__}: {e})") from e


def _float_list(path, obj, field: str) -> np.ndarray:
    """A list of finite numbers (one per seed) -> float64 [S]."""
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        obj = [obj]
    if not isinstance(obj, list) or not obj:
        raise CorruptResultError(path, f"field {field!r} must be a non-empty list of numbers, got {obj!r:.80}")
    try:
        arr = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise CorruptResultError(path, f"field {field!r} is not a list of numbers ({e})") from e
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise CorruptResultError(path, f"field {field!r} must be a flat list of finite numbers")
    return arr


def _check_unit_interval(path, arr: np.ndarray, field: str) -> None:
    if np.any(arr < -1e-6) or np.any(arr > 1 + 1e-6):
        raise CorruptResultError(path, f"field {field!r} has values outside [0, 1]: {arr.min():.4g}..{arr.max():.4g}")


# ----------------------------------------------------------------------------------------------------------------
# Typed results
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Predictivity:
    """pred [L, N]; pred_per_seed [S, L, N]; acc, baseline [S, L, T, N] (None unless asked for);
    meta: the sidecar JSON (empty when absent); model_accuracy / model_f1 [S] from it (None when absent)."""

    path: pathlib.Path
    pred: np.ndarray
    pred_per_seed: np.ndarray | None = None
    acc: np.ndarray | None = None
    baseline: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)
    model_accuracy: np.ndarray | None = None
    model_f1: np.ndarray | None = None
    model_confusion: np.ndarray | None = None     # [S, C, C] from the sidecar's `model_confusion`
    dev_label_counts: list[int] | None = None     # from the sidecar's `dev_label_counts`


_PRED_NDIM = {"pred": 2, "pred_per_seed": 3, "acc": 4, "baseline": 4}


def load_predictivity(workdir, model: str, task: str, arrays: Iterable[str] = ("pred", "pred_per_seed"),
                      with_sidecar: bool = True) -> Predictivity:
    """Reads `predictivity/<model>/<task>.npz` (only the arrays asked for: acc and baseline are large) and, when
    `with_sidecar`, its sidecar `<task>.npz.json` (a corrupt sidecar then raises CorruptResultError naming it)."""
    path = predictivity_path(workdir, model, task)
    arrays = tuple(dict.fromkeys(("pred",) + tuple(arrays)))
    unknown = [a for a in arrays if a not in _PRED_NDIM]
    if unknown:
        raise ValueError(f"unknown predictivity array(s) {unknown}; known: {sorted(_PRED_NDIM)}")
    data = load_npz(path, arrays, what=f"predictivity of {model} on {task}")
    for name, arr in data.items():
        if arr.ndim != _PRED_NDIM[name]:
            raise CorruptResultError(path, f"array {name!r} has shape {arr.shape}; expected {_PRED_NDIM[name]} dims")
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise CorruptResultError(path, f"array {name!r} is not all finite numbers")
    pred = data["pred"].astype(np.float64)
    # Predictivity is max(acc, 1 - acc) (eq. 4), so it always lies in [0.5, 1].
    if pred.size == 0 or pred.min() < 0.5 - 1e-6 or pred.max() > 1 + 1e-6:
        raise CorruptResultError(path, f"'pred' must lie in [0.5, 1] (eq. 4); found "
                                       f"{pred.min() if pred.size else 'no values'}..{pred.max() if pred.size else ''}")
    L, N = pred.shape
    for name in ("pred_per_seed", "acc", "baseline"):
        arr = data.get(name)
        if arr is not None and (arr.shape[1] != L or arr.shape[-1] != N):
            raise CorruptResultError(path, f"array {name!r} has shape {arr.shape}, which does not match "
                                           f"'pred' [layers={L}, neurons={N}]")
    meta = _load_sidecar(path) if with_sidecar else {}
    return Predictivity(path=path, pred=pred, pred_per_seed=data.get("pred_per_seed"), acc=data.get("acc"),
                        baseline=data.get("baseline"), meta=meta,
                        model_accuracy=_sidecar_metric(path, meta, SIDECAR_ACCURACY_KEYS),
                        model_f1=_sidecar_metric(path, meta, SIDECAR_F1_KEYS),
                        model_confusion=_optional_confusion(io.sidecar_path(path),
                                                            meta.get("model_confusion"), "model_confusion"),
                        dev_label_counts=_optional_counts(io.sidecar_path(path),
                                                          meta.get("dev_label_counts"), "dev_label_counts"))


# The optional arrays of a predictivity npz (stage options), name -> dims: the label-permutation null and the
# matched-n Pred (stages/predictivity.py column_arrays), and eq. 3's acc (for Pred without prompt slot 0).
OPTIONAL_PRED_NDIM = {"acc": 4, "null_pred": 3, "null_pred_layer_mean": 2, "null_pred_layer_max": 2,
                      "null_pred_max": 1, "null_pred_per_seed_max": 2, "matched_n": 1, "matched_pred": 3, "matched_pred_per_seed": 4}
# T5's first decoder step has the same optional arrays under the stage's "decoder_" prefix
OPTIONAL_PRED_NDIM.update({"decoder_" + name: ndim for name, ndim in list(OPTIONAL_PRED_NDIM.items())})


def load_extra_arrays(workdir, model: str, task: str, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The optional arrays `names` of `predictivity/<model>/<task>.npz` that it holds (absent ones left out), each
    checked for its dims and finite values (CorruptResultError naming the file otherwise)."""
    path = predictivity_path(workdir, model, task)
    names = tuple(names)
    unknown = [n for n in names if n not in OPTIONAL_PRED_NDIM]
    if unknown:
        raise ValueError(f"unknown optional predictivity array(s) {unknown}; known: {sorted(OPTIONAL_PRED_NDIM)}")
    data = load_npz(path, (), optional=names, what=f"predictivity of {model} on {task}")
    for name, arr in data.items():
        if arr.ndim != OPTIONAL_PRED_NDIM[name] or not np.issubdtype(arr.dtype, np.number) \
                or not np.all(np.isfinite(arr)):
            raise CorruptResultError(path, f"array {name!r} has shape {arr.shape} ({arr.dtype}); expected "
                                           f"{OPTIONAL_PRED_NDIM[name]} dims of finite numbers")
    return {k: v for k, v in data.items() if v is not None}


def load_control(workdir, model: str, adversarial: str) -> tuple[np.ndarray, str] | None:
    """F6a's control pair of `adversarial` (layout.control_predictivity_path): (pred_per_seed [S, L, N], the control
    task's name from its sidecar), or None when the stage did not compute one."""
    path = layout.control_predictivity_path(workdir, model, adversarial)
    if not path.exists():
        return None
    data = load_npz(path, ("pred_per_seed",), what=f"control predictivity of {model} for {adversarial}")
    arr = data["pred_per_seed"].astype(np.float64)
    if arr.ndim != 3 or not np.all(np.isfinite(arr)):
        raise CorruptResultError(path, f"'pred_per_seed' has shape {arr.shape}; expected finite [S, L, N]")
    meta = _load_sidecar(path)
    return arr, str(meta.get("task", "control"))


def load_paired_outcomes(workdir, model: str, clean: str, adversarial: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(original_correct, adversarial_correct) int [S, E] of the patching result with source "original"
    (layout.patching_path): the clean prompts' unpatched outcomes on AdvGLUE's originals and their adversarial
    versions, row i of one the original of row i of the other; None when absent or recorded without them."""
    path = layout.patching_path(workdir, model, clean, adversarial, "original")
    if not path.exists():
        return None
    obj = load_json(path, what=f"patching result {clean} -> {adversarial}")
    if not isinstance(obj, dict) or obj.get("original_correct") is None or obj.get("adversarial_correct") is None:
        return None
    try:
        first, second = (np.asarray(obj[k], np.int64) for k in ("original_correct", "adversarial_correct"))
    except (TypeError, ValueError) as e:
        raise CorruptResultError(path, f"'original_correct' / 'adversarial_correct' are not 0/1 arrays ({e})")
    if first.ndim != 2 or first.shape != second.shape or not np.isin(first, (0, 1)).all() \
            or not np.isin(second, (0, 1)).all():
        raise CorruptResultError(path, f"'original_correct' {first.shape} and 'adversarial_correct' {second.shape} "
                                       "must be 0/1 arrays of one shape [seeds, examples]")
    return first, second


def load_decoder_pred(workdir, model: str, task: str) -> np.ndarray | None:
    """T5 only: `decoder_pred` [L_dec, N] (neurons of the first decoder step) when the npz has it, else None."""
    path = predictivity_path(workdir, model, task)
    arr = load_npz(path, (), optional=("decoder_pred",), what=f"predictivity of {model} on {task}").get("decoder_pred")
    if arr is None:
        return None
    arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.size == 0 or not np.all(np.isfinite(arr)) or arr.min() < 0.5 - 1e-6 or arr.max() > 1 + 1e-6:
        raise CorruptResultError(path, f"'decoder_pred' must be finite [layers, neurons] in [0.5, 1], got shape "
                                       f"{arr.shape}")
    return arr


def _load_sidecar(path: pathlib.Path) -> dict:
    side = io.sidecar_path(path)
    if not side.exists():
        return {}
    meta = load_json(side, what="sidecar")
    if not isinstance(meta, dict):
        raise CorruptResultError(side, "sidecar must be a JSON object")
    return meta


def _sidecar_metric(path, meta: Mapping, keys: tuple[str, ...]) -> np.ndarray | None:
    for key in keys:
        if key in meta and meta[key] is not None:
            side = io.sidecar_path(path)
            arr = _float_list(side, meta[key], key)
            _check_unit_interval(side, arr, key)
            return arr
    return None


@dataclasses.dataclass
class Transfer:
    """Accuracy (and F1) of the source task's prompt on the target task, per seed: [S]."""

    path: pathlib.Path
    source: str
    target: str
    accuracy: np.ndarray
    f1: np.ndarray | None = None
    seeds: list[int] | None = None
    confusion: np.ndarray | None = None           # [S, C, C] (optional field `confusion`)
    label_counts: list[int] | None = None         # optional field `label_counts`, else the confusion's row sums
    n_dev: int | None = None


def load_transfer(workdir, model: str, source: str, target: str) -> Transfer:
    """Reads `transfer/<model>/<source>__<target>.json`: {"accuracy": [per seed], "f1": [per seed] (optional),
    "seeds": [..] (optional)}."""
    path = transfer_path(workdir, model, source, target)
    obj = load_json(path, what=f"transfer result {source} -> {target}")
    if not isinstance(obj, dict) or "accuracy" not in obj:
        raise CorruptResultError(path, "transfer result must be a JSON object with an 'accuracy' list")
    acc = _float_list(path, obj["accuracy"], "accuracy")
    _check_unit_interval(path, acc, "accuracy")
    f1 = None
    if obj.get("f1") is not None:
        f1 = _float_list(path, obj["f1"], "f1")
        _check_unit_interval(path, f1, "f1")
        if f1.shape != acc.shape:
            raise CorruptResultError(path, f"'f1' has {f1.size} seeds but 'accuracy' has {acc.size}")
    seeds = _seeds(path, obj, acc.size)
    confusion = _optional_confusion(path, obj.get("confusion"), "confusion", seeds=acc.size)
    counts = _optional_counts(path, obj.get("label_counts"), "label_counts")
    if counts is None and confusion is not None:
        counts = [int(c) for c in confusion[0].sum(-1)]
    n_dev = obj.get("n_dev")
    return Transfer(path=path, source=source, target=target, accuracy=acc, f1=f1, seeds=seeds, confusion=confusion,
                    label_counts=counts, n_dev=int(n_dev) if isinstance(n_dev, int) else None)


def _seeds(path, obj: Mapping, n: int) -> list[int] | None:
    seeds = obj.get("seeds")
    if seeds is None:
        return None
    if not isinstance(seeds, list) or len(seeds) != n or not all(isinstance(s, int) for s in seeds):
        raise CorruptResultError(path, f"'seeds' must be a list of {n} integers (one per accuracy), got {seeds!r:.80}")
    return seeds


@dataclasses.dataclass
class Suppression:
    """Accuracy after suppressing the top-k% skill neurons of `source`, evaluated on `target`.

    ks [K] (percent); skill [K, S]; random [K, D, S] (D random draws per k, same neurons-per-layer count)."""

    path: pathlib.Path
    model: str
    source: str
    target: str
    ks: np.ndarray
    skill: np.ndarray
    random: np.ndarray
    seeds: list[int] | None = None
    skill_correct: np.ndarray | None = None       # [K, S, E] 0/1 per dev example (optional fields)
    random_correct: np.ndarray | None = None      # [K, D, S, E]
    labels: np.ndarray | None = None              # [E]

    @property
    def label_counts(self) -> list[int] | None:
        return None if self.labels is None else [int(c) for c in np.bincount(self.labels, minlength=2)]


def load_suppression(workdir, model: str, source: str, target: str, *, slot0_excluded: bool = False
                     ) -> Suppression:
    """Reads `suppression/<model>/<source>__<target>.json` (schema in docs/interfaces.md, analysis); with
    slot0_excluded, the result whose skill neurons were selected without prompt slot 0
    (layout.suppression_slots_excluded_path)."""
    path = (layout.suppression_slots_excluded_path(workdir, model, source, target) if slot0_excluded
            else suppression_path(workdir, model, source, target))
    return read_suppression(path, model, source, target)


def read_suppression(path, model: str, source: str, target: str) -> Suppression:
    """One file of the suppression JSON format (load_suppression's; robust.patching writes it too), its fields
    `model`, `source` and `target`, where present, checked against the arguments."""
    path = pathlib.Path(path)
    obj = load_json(path, what=f"suppression result {source} -> {target}")
    if not isinstance(obj, dict):
        raise CorruptResultError(path, "suppression result must be a JSON object")
    missing = [k for k in ("ks", "skill", "random") if k not in obj]
    if missing:
        raise CorruptResultError(path, f"suppression result lacks field(s) {missing}")
    for field, expected in (("source", source), ("target", target), ("model", model)):
        if field in obj and obj[field] != expected:
            raise CorruptResultError(path, f"field {field!r} is {obj[field]!r} but the file name says {expected!r}")
    ks = _float_list(path, obj["ks"], "ks")
    if np.any(ks < 0) or np.any(ks > 100):
        raise CorruptResultError(path, f"'ks' are percentages and must lie in [0, 100], got {ks.tolist()}")
    if len(set(ks.tolist())) != ks.size:
        raise CorruptResultError(path, f"'ks' has repeated levels: {ks.tolist()}")
    skill_d, random_d = obj["skill"], obj["random"]
    if not isinstance(skill_d, dict) or not isinstance(random_d, dict):
        raise CorruptResultError(path, "'skill' and 'random' must be objects keyed by k")
    skill_rows, random_rows = [], []
    for k_raw in obj["ks"]:
        skey, rkey = _k_key(k_raw, skill_d), _k_key(k_raw, random_d)
        if skey is None or rkey is None:
            raise CorruptResultError(path, f"level k={k_raw} is listed in 'ks' but absent from 'skill' or 'random'")
        skill_rows.append(_float_list(path, skill_d[skey], f"skill[{skey}]"))
        draws = random_d[rkey]
        if not isinstance(draws, list) or not draws or not all(isinstance(d, list) for d in draws):
            raise CorruptResultError(path, f"'random[{rkey}]' must be a non-empty list of draws, each a list of "
                                           "accuracies per seed")
        rows = [_float_list(path, d, f"random[{rkey}][{i}]") for i, d in enumerate(draws)]
        if len({r.size for r in rows}) != 1:
            raise CorruptResultError(path, f"the draws of 'random[{rkey}]' have different numbers of seeds")
        random_rows.append(np.stack(rows))
    s = {r.size for r in skill_rows}
    shapes = {r.shape for r in random_rows}
    if len(s) != 1 or len(shapes) != 1 or next(iter(shapes))[1] != next(iter(s)):
        raise CorruptResultError(path, "every k must have the same number of seeds in 'skill' and in each random "
                                       f"draw, and the same number of draws (skill seeds {sorted(s)}, random shapes "
                                       f"{sorted(shapes)})")
    skill, random = np.stack(skill_rows), np.stack(random_rows)
    _check_unit_interval(path, skill, "skill")
    _check_unit_interval(path, random, "random")
    order = np.argsort(ks, kind="stable")
    skill_correct, random_correct, labels = _per_example(path, obj, skill, random)
    if skill_correct is not None:
        skill_correct, random_correct = skill_correct[order], random_correct[order]
    return Suppression(path=path, model=model, source=source, target=target, ks=ks[order], skill=skill[order],
                       random=random[order], seeds=_seeds(path, obj, skill.shape[1]), skill_correct=skill_correct,
                       random_correct=random_correct, labels=labels)


PER_EXAMPLE_FIELDS = ("skill_correct", "random_correct", "labels")


def _per_example(path, obj: Mapping, skill: np.ndarray, random: np.ndarray):
    """The optional per-example fields of a suppression JSON -> (skill_correct [K, S, E], random_correct
    [K, D, S, E], labels [E]) in the order of `ks` as written, or (None, None, None) when absent. Each must agree
    with the accuracies of the same file (mean of the 0/1 entries = accuracy), else the file is corrupt."""
    present = [f for f in PER_EXAMPLE_FIELDS if obj.get(f) is not None]
    if not present:
        return None, None, None
    if len(present) != len(PER_EXAMPLE_FIELDS):
        raise CorruptResultError(path, f"per-example fields must come together {list(PER_EXAMPLE_FIELDS)}; only "
                                       f"{present} present")
    labels = _int_array(path, obj["labels"], "labels", ndim=1)
    skill_rows, random_rows = [], []
    for k_raw in obj["ks"]:
        skey, rkey = _k_key(k_raw, obj["skill_correct"]), _k_key(k_raw, obj["random_correct"])
        if skey is None or rkey is None:
            raise CorruptResultError(path, f"level k={k_raw} is absent from 'skill_correct' or 'random_correct'")
        skill_rows.append(_int_array(path, obj["skill_correct"][skey], f"skill_correct[{skey}]", ndim=2))
        random_rows.append(_int_array(path, obj["random_correct"][rkey], f"random_correct[{rkey}]", ndim=3))
    try:
        skill_correct, random_correct = np.stack(skill_rows), np.stack(random_rows)
    except ValueError as e:
        raise CorruptResultError(path, f"per-example fields have different shapes across levels ({e})") from e
    n = labels.size
    if skill_correct.shape != skill.shape + (n,) or random_correct.shape != random.shape + (n,):
        raise CorruptResultError(path, f"'skill_correct' {skill_correct.shape} / 'random_correct' "
                                       f"{random_correct.shape} must be [levels, seeds, {n}] / [levels, draws, "
                                       f"seeds, {n}] like 'skill' {skill.shape} and 'random' {random.shape}")
    if not (np.isin(skill_correct, (0, 1)).all() and np.isin(random_correct, (0, 1)).all()):
        raise CorruptResultError(path, "'skill_correct' and 'random_correct' must hold 0/1 per example")
    tol = 1e-6
    if np.abs(skill_correct.mean(-1) - skill).max() > tol or np.abs(random_correct.mean(-1) - random).max() > tol:
        raise CorruptResultError(path, "per-example correctness does not reproduce the accuracies of 'skill' / "
                                       "'random' (mean of the 0/1 entries must equal each accuracy)")
    return skill_correct, random_correct, labels


def _int_array(path, obj, field: str, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(obj)
    except (TypeError, ValueError) as e:
        raise CorruptResultError(path, f"field {field!r} is not a rectangular array ({e})") from e
    if arr.ndim != ndim or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise CorruptResultError(path, f"field {field!r} must be a non-empty {ndim}-d array of integers, got "
                                       f"shape {arr.shape} of {arr.dtype}")
    return arr.astype(np.int64)


def _optional_confusion(path, obj, field: str, seeds: int | None = None) -> np.ndarray | None:
    """An optional per-seed confusion matrix [S, C, C] of non-negative integers (rows = true label)."""
    if obj is None:
        return None
    conf = _int_array(path, obj, field, ndim=3)
    if conf.shape[1] != conf.shape[2] or conf.min() < 0 or (seeds is not None and conf.shape[0] != seeds):
        raise CorruptResultError(path, f"field {field!r} must be [seeds{'=' + str(seeds) if seeds else ''}, C, C] "
                                       f"non-negative counts, got shape {conf.shape}")
    return conf


def _optional_counts(path, obj, field: str) -> list[int] | None:
    """Optional label counts: a list [n0, n1, ...] or an object {"0": n0, "1": n1}."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        try:
            obj = [obj[str(i)] for i in range(len(obj))]
        except KeyError as e:
            raise CorruptResultError(path, f"field {field!r} must be keyed by label ids 0..C-1, got "
                                           f"{sorted(obj)}") from e
    arr = _int_array(path, obj, field, ndim=1)
    if arr.min() < 0:
        raise CorruptResultError(path, f"field {field!r} has negative counts")
    return [int(c) for c in arr]


# ----------------------------------------------------------------------------------------------------------------
# Data facts recorded by the data stages: truncation and excluded adversarial originals
# ----------------------------------------------------------------------------------------------------------------
TRUNCATION_KEYS = ("truncation",)
EXCLUDED_KEYS = ("excluded_adversarial_originals", "leak_exclusion")


@dataclasses.dataclass
class DataFacts:
    """What the stages recorded about a task's data (None: not recorded).

    truncation: {split: {"examples": n, "truncated": m, "max_text_tokens": T}} (the sidecars' `truncation`);
    excluded_adversarial_originals: {"count": n, ...} (the sidecars' `excluded_adversarial_originals` or
    `leak_exclusion`; an integer is read as {"count": n}); source: the file they came from."""

    truncation: dict | None = None
    excluded_adversarial_originals: dict | None = None
    source: str | None = None

    def truncation_text(self) -> str:
        if not self.truncation:
            return "–"
        parts = []
        for split, row in self.truncation.items():
            if isinstance(row, dict) and "truncated" in row:
                total = f"/{row['examples']}" if row.get("examples") is not None else ""
                at = f" at {row['max_text_tokens']}" if row.get("max_text_tokens") is not None else ""
                parts.append(f"{split} {row['truncated']}{total}{at}")
        return "; ".join(parts) or "–"

    def excluded_text(self) -> str:
        if not self.excluded_adversarial_originals:
            return "–"
        return str(self.excluded_adversarial_originals.get("count", "?"))


def data_facts(meta: Mapping, source: str | None = None) -> DataFacts:
    """Reads the data facts out of one sidecar dict, tolerating their absence (unrecognised shapes are ignored,
    not errors: these are informative fields written by other stages)."""
    truncation = next((meta[k] for k in TRUNCATION_KEYS if isinstance(meta.get(k), dict)), None)
    if truncation is not None:
        truncation = {str(split): row for split, row in truncation.items() if isinstance(row, dict)} or None
    excluded = next((meta[k] for k in EXCLUDED_KEYS if meta.get(k) is not None), None)
    if isinstance(excluded, bool) or not isinstance(excluded, (int, dict)):
        excluded = None
    elif isinstance(excluded, int):
        excluded = {"count": excluded}
    return DataFacts(truncation=truncation, excluded_adversarial_originals=excluded,
                     source=source if (truncation or excluded) else None)


def load_data_facts(workdir, model: str, task: str, seeds: Iterable[int] = ()) -> DataFacts:
    """The first sidecar that records truncation or exclusions for `task`: the predictivity sidecar
    (`<task>.npz.json`), the own-prompt transfer sidecar (`<prompt>__<task>.meta.json`), then each seed's prompt
    sidecar (`prompt.npy.json`). Absent or unreadable files give an empty DataFacts (never raises)."""
    prompt = CLEAN_TASK.get(task, task)
    candidates = [io.sidecar_path(predictivity_path(workdir, model, task)),
                  io.sidecar_path(transfer_path(workdir, model, prompt, task))]
    candidates += [io.sidecar_path(layout.prompt_path(workdir, model, task, s)) for s in seeds]
    truncation, excluded, sources = None, None, []
    for path in candidates:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict):
            continue
        facts = data_facts(meta, str(path))
        if truncation is None and facts.truncation:
            truncation = facts.truncation
            sources.append(str(path))
        if excluded is None and facts.excluded_adversarial_originals:
            excluded = facts.excluded_adversarial_originals
            sources.append(str(path))
    return DataFacts(truncation=truncation, excluded_adversarial_originals=excluded,
                     source="; ".join(dict.fromkeys(sources)) or None)


def _k_key(k, table: Mapping) -> str | None:
    """Finds the key of level k in a dict keyed by strings ('5', '5.0' and 5 all name the same level)."""
    for key in table:
        try:
            if math.isclose(float(key), float(k)):
                return key
        except (TypeError, ValueError):
            continue
    return None


@dataclasses.dataclass
class TuningRun:
    """One seed's tuning log: the best dev accuracy (and dev F1 when logged) over its evaluations."""

    path: pathlib.Path
    seed: int
    best_dev_accuracy: float
    best_dev_f1: float | None
    best_dev_balanced_accuracy: float | None = None


def _evaluations(workdir, model: str, task: str, seed: int) -> tuple[pathlib.Path, list[dict]]:
    """(metrics.jsonl path, its evaluation rows in order) of one seed's tuning run; none is an error."""
    path = layout.metrics_path(workdir, model, task, seed)
    rows = [r for r in load_jsonl(path, what="tuning metrics") if "dev_accuracy" in r]
    if not rows:
        raise CorruptResultError(path, "no evaluation with 'dev_accuracy' in the tuning metrics")
    return path, rows


def load_tuning_runs(workdir, model: str, task: str, seeds: Iterable[int]) -> list[TuningRun]:
    """Best-by-dev accuracy per seed from `metrics.jsonl` (the prompt kept is the best by dev accuracy)."""
    runs = []
    for seed in seeds:
        path, rows = _evaluations(workdir, model, task, seed)
        best = metrics.best_evaluation(rows)       # the training's own rule (first best wins ties)
        acc = float(best["dev_accuracy"])
        if not 0.0 <= acc <= 1.0:
            raise CorruptResultError(path, f"'dev_accuracy' {acc} is outside [0, 1]")
        f1, balanced = best.get("dev_f1"), best.get("dev_balanced_accuracy")
        runs.append(TuningRun(path=path, seed=seed, best_dev_accuracy=acc,
                              best_dev_f1=None if f1 is None else float(f1),
                              best_dev_balanced_accuracy=None if balanced is None else float(balanced)))
    return runs


@dataclasses.dataclass(frozen=True)
class TuningCurve:
    """Every evaluation of one task's tuning runs, step by step over seeds (the selection rows' scores: the rows
    the checkpoint is chosen on, not the measurement rows the statistics use).

    steps [E]; balanced, accuracy, train_loss [E, S] (NaN where a seed has no evaluation at that step, e.g. it
    stopped early); best_steps [S]; rows: the selection rows scored per evaluation."""

    task: str
    seeds: tuple[int, ...]
    steps: np.ndarray
    balanced: np.ndarray
    accuracy: np.ndarray
    train_loss: np.ndarray
    best_steps: np.ndarray
    rows: int | None

    def balanced_summary(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean [E], sd [E] with ddof = 1 (NaN under 2 seeds), seeds evaluated [E]) of the balanced accuracy per
        step over the seeds evaluated there."""
        seen = np.isfinite(self.balanced).sum(axis=1)
        mean = np.array([np.nanmean(v) if k else np.nan for v, k in zip(self.balanced, seen)])
        sd = np.array([np.nanstd(v, ddof=1) if k > 1 else np.nan for v, k in zip(self.balanced, seen)])
        return mean, sd, seen


def load_tuning_curve(workdir, model: str, task: str, seeds: Iterable[int]) -> TuningCurve:
    """The evaluations of `task`'s tuning runs (metrics.jsonl per seed) on one step grid."""
    seeds = tuple(int(s) for s in seeds)
    per_seed = [_evaluations(workdir, model, task, seed)[1] for seed in seeds]
    steps = np.array(sorted({int(r["step"]) for rows in per_seed for r in rows}), dtype=np.int64)
    grids = {key: np.full((steps.size, len(seeds)), np.nan) for key in
             ("dev_balanced_accuracy", "dev_accuracy", "train_loss")}
    for j, rows in enumerate(per_seed):
        for r in rows:
            i = int(np.searchsorted(steps, int(r["step"])))
            for key, grid in grids.items():
                if r.get(key) is not None:
                    grid[i, j] = float(r[key])
    # the training records the step of the prompt it keeps so far (by its selection metric) in every row
    best = np.array([int(rows[-1].get("best_step", -1)) for rows in per_seed])
    examples = {int(r["dev_examples"]) for rows in per_seed for r in rows if r.get("dev_examples") is not None}
    return TuningCurve(task=task, seeds=seeds, steps=steps, balanced=grids["dev_balanced_accuracy"],
                       accuracy=grids["dev_accuracy"], train_loss=grids["train_loss"], best_steps=best,
                       rows=examples.pop() if len(examples) == 1 else None)


def load_label_counts(workdir, model: str, task: str) -> tuple[list[int] | None, str | None]:
    """Dev examples per label of `task` (for the majority-class rate) and where they were read, from the first
    readable of: the own-prompt transfer JSON (`label_counts`, else its `confusion` row sums), the predictivity
    sidecar (`dev_label_counts`), a suppression JSON evaluated on `task` (`labels`). (None, None) when none has
    them; unreadable files are skipped here (the report lists them through the loaders that need them)."""
    prompt = CLEAN_TASK.get(task, task)
    try:
        counts = load_transfer(workdir, model, prompt, task).label_counts
        if counts is not None:
            return counts, str(transfer_path(workdir, model, prompt, task))
    except (FileNotFoundError, CorruptResultError):
        pass
    try:
        counts = load_predictivity(workdir, model, task, arrays=("pred",)).dev_label_counts
        if counts is not None:
            return counts, str(io.sidecar_path(predictivity_path(workdir, model, task)))
    except (FileNotFoundError, CorruptResultError):
        pass
    folder = layout.model_dir(workdir, layout.SUPPRESSION_DIR, model)
    for path in _visible(folder.glob(f"*{_PAIR_SEP}{task}.json")) if folder.is_dir() else []:
        pair = split_pair(path.stem)
        if pair is None or pair[1] != task:
            continue
        try:
            counts = load_suppression(workdir, model, pair[0], task).label_counts
        except (FileNotFoundError, CorruptResultError):
            continue
        if counts is not None:
            return counts, str(path)
    return None, None
