"""Adversarial examples paired with their unperturbed originals (AdvGLUE dev_ann.json `original_*` fields).

`advglue/dev_ann.json` holds the AdvGLUE dev records with, for attacks on a known GLUE example, the attacked
field's original text as `original_<field>` (e.g. sst2 `original_sentence`, qqp `original_question1`). Human-written
adversarial examples have no original and are skipped, as are records the task's label convention drops (MNLI
neutral) and records whose adversarial text equals the original. The fields, label map and record keys are the
adversarial task's own (data.tasks, the task's advglue dev source), so a pair's adversarial example is exactly the
example `load_split(task, "dev")` reads for that record.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from typing import Optional

from skillneurons_jax.data import readers
from skillneurons_jax.data.tasks import Example, get_task

ANNOTATED_FILE = "advglue/dev_ann.json"
NO_ORIGINAL = "no original text (human-written adversarial example)"
LABEL_DROPPED = "label dropped by the task's convention"
# The real file has one (sst2 idx 80): no attack to undo, so patching it would only measure noise.
UNCHANGED = "adversarial text equals its original"


@dataclasses.dataclass(frozen=True)
class AdversarialPairs:
    """adversarial[i] is an attack on original[i] (same label); keys[i] = "<file key>/<idx>"."""

    task: str
    adversarial: tuple
    original: tuple
    keys: tuple
    attacked_field: tuple       # per pair: "a" or "b" (which text the attack changed)
    skipped: dict               # reason -> [keys]
    source: str                 # the file read

    def __len__(self) -> int:
        return len(self.adversarial)

    def summary(self) -> dict:
        return {"task": self.task, "pairs": len(self), "source": self.source,
                "skipped": {reason: len(keys) for reason, keys in self.skipped.items()},
                "attacked_field": dict(collections.Counter(self.attacked_field))}


def _advglue_source(task):
    spec = get_task(task)
    for alternatives in spec.splits.values():
        for source in alternatives:
            if source.reader == "advglue":
                return spec, source
    raise ValueError(f"task {spec.name!r} has no AdvGLUE source; adversarial tasks: "
                     "advsst2, advqqp, advqnli, advmnli")


def skip_reason(task, data_dir) -> Optional[str]:
    """Why pairs cannot be made (None when they can): no AdvGLUE task, or no annotated file."""
    try:
        _advglue_source(task)
    except ValueError as err:
        return str(err)
    path = pathlib.Path(data_dir) / ANNOTATED_FILE
    if not path.exists():
        return f"{path} is absent (the AdvGLUE dev set with original_* texts)"
    return None


def load_pairs(task, data_dir, *, path=None) -> AdversarialPairs:
    """The (adversarial, original) pairs of an adversarial task (advsst2, advqqp, advqnli, advmnli) from
    `<data_dir>/advglue/dev_ann.json` (or `path`). FileNotFoundError when the file is absent; DataFormatError
    (path: record: problem) for a malformed record or a label outside the task's label set."""
    spec, source = _advglue_source(task)
    path = pathlib.Path(path) if path is not None else pathlib.Path(data_dir) / ANNOTATED_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (the AdvGLUE dev set with original_* texts)")
    try:
        data = json.loads(readers.read_text(path))
    except json.JSONDecodeError as err:
        raise readers.DataFormatError(path, err.lineno, f"not valid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise readers.DataFormatError(path, 1, "expected a JSON object keyed by task (sst2, qqp, qnli, mnli, ...)")
    field_a, field_b, field_label = source.fields
    adversarial, original, keys, attacked = [], [], [], []
    skipped: dict[str, list] = collections.defaultdict(list)
    for file_key in source.options["keys"]:
        if file_key not in data:
            raise readers.DataFormatError(path, None, f"no {file_key!r} records (keys: {sorted(data)})")
        for i, record in enumerate(data[file_key]):
            where = f"record {i} of {file_key!r}"
            if not isinstance(record, dict):
                raise readers.DataFormatError(path, where, f"expected a JSON object, found {type(record).__name__}")
            wanted = [f for f in (field_a, field_b, field_label, source.key) if f is not None]
            missing = [f for f in wanted if f not in record]
            if missing:
                raise readers.DataFormatError(path, where, f"missing fields {missing} (found {sorted(record)})")
            key = f"{file_key}/{record[source.key]}"
            raw = str(record[field_label]).strip()
            if raw not in source.label_map:
                raise readers.DataFormatError(path, where, f"label {raw!r} is not in the task's label set "
                                                           f"{sorted(source.label_map)}")
            label = source.label_map[raw]
            if label is None:
                skipped[LABEL_DROPPED].append(key)
                continue
            fields = {"a": field_a, "b": field_b}
            changed = [name for name, f in fields.items() if f is not None and f"original_{f}" in record]
            if not changed:
                skipped[NO_ORIGINAL].append(key)
                continue
            text = {name: None if f is None else str(record[f]).strip() for name, f in fields.items()}
            orig = {name: str(record[f"original_{f}"]).strip() if name in changed else text[name]
                    for name, f in fields.items()}
            if orig == text:
                skipped[UNCHANGED].append(key)
                continue
            adversarial.append(Example(text["a"], text["b"], int(label)))
            original.append(Example(orig["a"], orig["b"], int(label)))
            keys.append(key)
            attacked.append("+".join(changed))
    return AdversarialPairs(task=spec.name, adversarial=tuple(adversarial), original=tuple(original),
                            keys=tuple(keys), attacked_field=tuple(attacked), skipped=dict(skipped),
                            source=str(path))
