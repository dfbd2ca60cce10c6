"""Examples -> token ids -> fixed-shape numpy batches.

`encode` applies the task's template for a model family (special tokens included, prompt NOT included: the caller
prepends the soft prompt in embedding space) and truncates longest-first so that at most `max_text_tokens`
non-special tokens remain (texts plus template words such as T5's "hypothesis:").

`iterate` pads every batch to the shortest bucket length that fits its longest row, so jit sees a handful of
shapes; shuffling is a numpy Generator permutation from the seed; the last partial batch is completed with filler
rows (copies of the batch's first row, so no row is fully masked) flagged by `example_mask == False`.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Sequence

import numpy as np

from skillneurons_jax.data.tasks import Example, LabelWords, TaskSpec, get_task

# 48: short single sentences (tweets, SST-2) end between 32 and 64 tokens; that bucket cuts the padding of the
# benchmark's real tweets from 16 % to 14 % (one more compiled shape).
DEFAULT_BUCKETS = (16, 32, 48, 64, 96, 128, 160)
_SPECIAL = {"<cls>": "cls_token_id", "<sep>": "sep_token_id", "<eos>": "eos_token_id"}


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids of a split. `input_ids[i]` is example i with special tokens; `labels` int32 [E];
    `lengths` int32 [E]; `truncated` = how many examples lost tokens."""
    input_ids: list[list[int]]
    labels: np.ndarray
    lengths: np.ndarray
    pad_id: int
    task: str
    family: str
    max_text_tokens: int
    truncated: int
    # What reading the split left out before tokenizing (readers.SplitData): examples of a clean TRAIN split that
    # are originals of adversarial records (trap 6), and how they were matched; empty when not checked.
    reading: Mapping = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)


def _compile(parts: Sequence[str], tokenizer) -> list:
    """Template parts -> "a" / "b" markers and token-id lists."""
    out = []
    for part in parts:
        if part in ("{a}", "{b}"):
            out.append(part[1])
        elif part in _SPECIAL:
            tok = getattr(tokenizer, _SPECIAL[part], None)
            if tok is None:
                raise ValueError(f"template part {part} needs a {_SPECIAL[part]} but tokenizer "
                                 f"{type(tokenizer).__name__} has none")
            out.append([int(tok)])
        else:
            out.append([int(t) for t in tokenizer.encode(part, add_special_tokens=False)])
    return out


def _longest_first(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths after longest-first truncation to `budget`, as the Rust `tokenizers` do it: the longer text is cut
    first; when both must be cut, the shorter keeps budget // 2 and the longer the rest (ties: b keeps more)."""
    if la + lb <= budget:
        return la, lb
    n1, n2, swap = (lb, la, True) if la > lb else (la, lb, False)
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    if swap:
        n1, n2 = n2, n1
    return min(la, n1), min(lb, n2)


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode(examples: Sequence[Example], tokenizer, task, family: str, max_text_tokens: int = 128) -> Encoded:
    """Token ids for `examples` under the task's template for `family` (see the module docstring)."""
    spec: TaskSpec = get_task(task)
    template = _compile(spec.template_parts(family), tokenizer)
    literal = sum(len(p) for p, name in zip(template, spec.template_parts(family))
                  if isinstance(p, list) and name not in _SPECIAL)
    budget = max_text_tokens - literal
    if budget < 1:
        raise ValueError(f"max_text_tokens={max_text_tokens} leaves no room for text after the {family} template "
                         f"of task {spec.name!r} ({literal} template tokens)")
    pair = "b" in template
    for i, ex in enumerate(examples):
        if (ex.text_b is not None) != pair:
            raise ValueError(f"example {i} of task {spec.name!r} has text_b={ex.text_b!r}, but the {family} "
                             f"template {'needs' if pair else 'has no place for'} a second text")
        if not 0 <= ex.label < spec.num_labels:
            raise ValueError(f"example {i} of task {spec.name!r}: label {ex.label} outside range({spec.num_labels})")
    ids_a = _tokenize(tokenizer, [ex.text_a for ex in examples])
    ids_b = _tokenize(tokenizer, [ex.text_b for ex in examples]) if pair else [[] for _ in examples]
    rows, truncated = [], 0
    for a, b in zip(ids_a, ids_b):
        la, lb = _longest_first(len(a), len(b), budget)
        truncated += (la, lb) != (len(a), len(b))
        parts = {"a": a[:la], "b": b[:lb]}
        rows.append([t for p in template for t in (parts[p] if isinstance(p, str) else p)])
    pad = getattr(tokenizer, "pad_token_id", None)
    return Encoded(input_ids=rows, labels=np.array([ex.label for ex in examples], dtype=np.int32),
                   lengths=np.array([len(r) for r in rows], dtype=np.int32), pad_id=0 if pad is None else int(pad),
                   task=spec.name, family=family, max_text_tokens=max_text_tokens, truncated=truncated)


def truncation_summary(encoded: Encoded) -> dict:
    """{"examples": E, "truncated": k, "max_text_tokens": m} for one encoded split: k of its E examples lost
    tokens when their text was cut to m non-special tokens (template words included)."""
    return {"examples": len(encoded), "truncated": int(encoded.truncated),
            "max_text_tokens": int(encoded.max_text_tokens)}


def truncation_record(encoded_splits) -> dict[str, dict]:
    """{split: truncation_summary(encoded)} for a mapping split name -> Encoded, e.g.
    {"train": {"examples": 2000, "truncated": 310, "max_text_tokens": 48}, "dev": {...}}: the per-task, per-split
    record of what truncation cut, for stage sidecars and the report (plain JSON types)."""
    return {str(split): truncation_summary(enc) for split, enc in encoded_splits.items()}


def data_record(encoded_splits) -> dict:
    """The data facts a stage sidecar records for a mapping split name -> Encoded (None values are skipped):
    {"truncation": truncation_record(...)} plus, when a split was checked for adversarial originals,
    {"excluded_adversarial_originals": {"count": n, "split": s, "match": how}} (read by analysis.results)."""
    present = {split: enc for split, enc in encoded_splits.items() if enc is not None}
    record = {"truncation": truncation_record(present)}
    for split, enc in present.items():
        if enc.reading.get("adversarial_match") is not None:
            record["excluded_adversarial_originals"] = {
                "count": int(enc.reading["excluded_adversarial_originals"]), "split": str(split),
                "match": enc.reading["adversarial_match"]}
    return record


def bucket_length(length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """The shortest bucket >= length."""
    for b in buckets:
        if length <= b:
            return int(b)
    raise ValueError(f"a row of {length} tokens is longer than the largest bucket {max(buckets)}; "
                     f"pass buckets that reach it")


def num_batches(encoded: Encoded, batch_size: int, drop_last: bool = False) -> int:
    n = len(encoded)
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate(encoded: Encoded, batch_size: int, *, seed: int | None = None,
            buckets: Sequence[int] = DEFAULT_BUCKETS, drop_last: bool = False, num_devices: int = 1,
            sort_by_length: bool = False, sort_chunk: int | None = None,
            label_words: LabelWords | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `encoded` in batches of `batch_size` (the global batch; divisible by `num_devices`).

    Yields numpy dicts: `input_ids` int32 [B, T], `attention_mask` int32 [B, T], `labels` int32 [B],
    `example_mask` bool [B] (False on filler rows), `index` int32 [B] (row in `encoded`, -1 on filler rows);
    with `label_words`, also `target_ids` int32 [B, W] = label_words.ids[labels] and `target_lengths` int32 [B],
    so multi-token targets travel with their examples. T is a bucket length.

    seed=None keeps file order; an int shuffles with np.random.default_rng(seed) (use seed + epoch per epoch).
    sort_by_length (evaluation): within chunks of `sort_chunk` rows (default 32 batches) of that order, rows are
    sorted longest first so batches pad less; use `index` to map results back.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_devices < 1 or batch_size % num_devices:
        raise ValueError(f"global batch size {batch_size} is not divisible by the {num_devices} devices; "
                         f"use a multiple of {num_devices}")
    buckets = tuple(sorted(int(b) for b in buckets))
    n = len(encoded)
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    if sort_by_length:
        chunk = sort_chunk or 32 * batch_size
        order = np.concatenate([c[np.argsort(-encoded.lengths[c], kind="stable")]
                                for c in np.array_split(order, max(1, -(-n // chunk)))]) if n else order
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < batch_size and drop_last:
            return
        yield _batch(encoded, idx, batch_size, buckets, label_words)


def _batch(encoded: Encoded, idx: np.ndarray, batch_size: int, buckets, label_words) -> dict[str, np.ndarray]:
    real = len(idx)
    rows = np.concatenate([idx, np.full(batch_size - real, idx[0], dtype=idx.dtype)])
    t = bucket_length(int(encoded.lengths[idx].max()), buckets)
    input_ids = np.full((batch_size, t), encoded.pad_id, dtype=np.int32)
    mask = np.zeros((batch_size, t), dtype=np.int32)
    for r, i in enumerate(rows):
        ids = encoded.input_ids[i]
        input_ids[r, :len(ids)] = ids
        mask[r, :len(ids)] = 1
    labels = encoded.labels[rows]
    out = {"input_ids": input_ids, "attention_mask": mask, "labels": labels.astype(np.int32),
           "example_mask": np.arange(batch_size) < real,
           "index": np.where(np.arange(batch_size) < real, rows, -1).astype(np.int32)}
    if label_words is not None:
        out["target_ids"] = label_words.ids[labels].astype(np.int32)
        out["target_lengths"] = label_words.lengths[labels].astype(np.int32)
    return out
