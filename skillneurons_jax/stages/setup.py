"""What every stage starts from: a loaded model with a task's readout (`TaskSetup`), the task's splits encoded
for that model, and the batches the model reads.

    setup = make_setup(loaded, "sst2", ReadoutSettings.from_config(config))   # loaded: models.LoadedModel
    dev = encode_split(setup, "dev", data_dir, max_examples, max_text_tokens)
    batches = list(model_batches(dev, 64, buckets=buckets_for([dev]), sort_by_length=True))

Nothing here loads a model or reads a flag: the caller (a launch script, a pipeline session, a test) loads.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional, Sequence

import jax

from skillneurons_jax import io, layout, parallel
from skillneurons_jax.data import batches as batching
from skillneurons_jax.data import readers, tasks
from skillneurons_jax.prompt.readout import Readout, ReadoutSettings

# What the readouts and the loss read from a batch.
MODEL_KEYS = ("input_ids", "attention_mask", "labels", "example_mask")


@dataclasses.dataclass
class TaskSetup:
    """A model with its task readout: what tune, evaluate, transfer and the neuron stages all need."""
    loaded: Any                      # models.LoadedModel
    task: tasks.TaskSpec
    label_words: tasks.LabelWords
    readout: Readout
    readout_settings: ReadoutSettings = ReadoutSettings()
    # The dev rows every stage reads unless it asks for others (`dev_rows`): None = the whole dev split; with a
    # selection carve, the "measure" part (the statistics), while stages.tune selects on the "select" part.
    dev_rows: Optional["DevRows"] = None


@dataclasses.dataclass(frozen=True)
class DevRows:
    """Which dev rows a study's stages read: `select_percent` > 0 carves dev into a selection part (checkpoints) and
    a disjoint measurement part (everything else: Table 1, predictivity, transfer, suppression); `without_originals`
    leaves the originals of the task's adversarial sets out of both (AdvGLUE perturbed GLUE dev)."""
    select_percent: int = 0
    without_originals: bool = False

    @classmethod
    def from_config(cls, tune_config) -> Optional["DevRows"]:
        get = tune_config.get
        rows = cls(int(get("select_percent") or 0), bool(get("select_without_originals") or False))
        return rows if rows != cls() else None

    def options(self, role: str) -> dict:
        """encode_split's options for the `role` ("select" | "measure") rows."""
        part = readers.Part(role, self.select_percent) if self.select_percent else None
        return {"part": part, "exclude_originals": self.without_originals}


def make_setup(loaded, task, readout_settings: ReadoutSettings = ReadoutSettings(),
               dev_rows: Optional[DevRows] = None) -> TaskSetup:
    """The task's label words for the model's tokenizer and family, and its readout."""
    spec = tasks.get_task(task)
    words = tasks.label_word_ids(spec, loaded.tokenizer, loaded.family)
    return TaskSetup(loaded=loaded, task=spec, label_words=words, readout=readout_settings.build(loaded, words),
                     readout_settings=readout_settings, dev_rows=dev_rows)


def read_split(setup: TaskSetup, split: str, data_dir, max_examples: Optional[int], *, task=None,
               role: str = "measure") -> readers.SplitData:
    """The examples of one split of `task` (default: the setup's task) as encode_split reads them: the setup's
    task's dev split restricted to its `role` part of dev_rows (every statistic and every view of it, e.g. the
    explorer's recorded activations, sees the same rows). An empty split is a ValueError."""
    spec = setup.task if task is None else tasks.get_task(task)
    rows = setup.dev_rows.options(role) if (setup.dev_rows is not None and split == "dev"
                                             and spec.name == setup.task.name) else {}
    data = readers.read_split(spec, split, data_dir, max_examples=max_examples, **rows)
    if not data.examples:
        raise ValueError(f"task {spec.name!r}: the {split} split is empty")
    return data


def encode_split(setup: TaskSetup, split: str, data_dir, max_examples: Optional[int], max_text_tokens: int, *,
                 task=None, role: str = "measure",
                 transform: Optional[Callable[[list], list]] = None) -> batching.Encoded:
    """One split of `task` (default: the setup's task; the clean TRAIN split of an adversarial task differs),
    tokenized with that task's template for the model's family. The setup's task's dev split is read as its
    `dev_rows` say: the `role` part ("measure", the default, or "select": checkpoint selection). An empty split is
    a ValueError. `transform`: [E] examples -> [E] examples (same order and labels) applied to the rows read before
    they are encoded (e.g. a perturbed copy of the dev rows: robust_perturbed_predictivity)."""
    spec = setup.task if task is None else tasks.get_task(task)
    data = read_split(setup, split, data_dir, max_examples, task=spec.name, role=role)
    examples = data.examples
    if transform is not None:
        examples = list(transform(list(data.examples)))
        if len(examples) != len(data.examples) or [e.label for e in examples] != [e.label for e in data.examples]:
            raise ValueError(f"task {spec.name!r}: the {split} split's transform changed its rows or labels")
    encoded = batching.encode(examples, setup.loaded.tokenizer, spec, setup.loaded.family,
                              max_text_tokens=max_text_tokens)
    reading = {"excluded_adversarial_originals": data.excluded_adversarial_originals,
               "adversarial_match": data.adversarial_match}
    return dataclasses.replace(encoded, reading=reading)


# A default bucket this close below the longest row (a fraction of its length) is dropped: its rows pad to the
# longest instead (at most 1/16 more token positions for them), which saves one compiled program per shape user
# (training step, evaluation, capturing forward), e.g. 48 beside 50 when texts are cut at 48 tokens plus 2 specials.
BUCKET_MERGE_FRACTION = 1 / 16


def buckets_for(encoded_splits: Sequence[batching.Encoded]) -> tuple[int, ...]:
    """The data module's buckets, cut at (and ending with) the longest row of these splits; a bucket within
    BUCKET_MERGE_FRACTION of the longest is merged into it."""
    longest = max(int(e.lengths.max()) for e in encoded_splits)
    merge_above = longest * (1 - BUCKET_MERGE_FRACTION)
    return tuple(b for b in batching.DEFAULT_BUCKETS if b < merge_above) + (longest,)


def model_batches(encoded: batching.Encoded, batch_size: int, *, seed=None, drop_last=False, buckets,
                  sort_by_length=False, keys: Sequence[str] = MODEL_KEYS) -> Iterator[dict]:
    """batches.iterate, keeping only what the readout and the loss read (`keys`: MODEL_KEYS, plus "index" for a
    caller that joins other rows of the same examples, e.g. robust.anchor.with_perturbed)."""
    for batch in batching.iterate(encoded, batch_size, seed=seed, drop_last=drop_last, buckets=buckets,
                                  sort_by_length=sort_by_length):
        yield {k: batch[k] for k in keys}


def sharded_batches(encoded: batching.Encoded, batch_size: int, mesh, fixed_length: Optional[int] = None, *,
                    sort_by_length: bool = False, buckets: Optional[Sequence[int]] = None,
                    keys: Sequence[str] = MODEL_KEYS) -> Iterator[dict]:
    """Batches of the global batch size for the statistics and suppression passes (filler rows flagged), made
    lazily (memory does not grow with the split). fixed_length: every batch gets exactly that many token
    positions (needed when every position is captured, so that the statistics keep one shape); otherwise
    `buckets` (default: the data module's). File order, or with sort_by_length rows sorted longest first within
    chunks of 32 batches (batches.iterate), so that each batch pads only to the bucket of rows of similar length
    (the statistics are sums and counts: the order changes at most the float32 rounding of the TRAIN sums).
    keys: MODEL_KEYS, plus "index" (row in `encoded`, -1 on filler rows) for a caller that joins per-row data."""
    shards = parallel.num_data_shards(mesh)
    parallel.check_divisible(batch_size, mesh, what="evaluation batch size (config eval_batch_size)")
    options = {} if buckets is None else {"buckets": tuple(int(b) for b in buckets)}
    if fixed_length is not None:
        options = {"buckets": (int(fixed_length),)}
    if fixed_length is not None and int(encoded.lengths.max()) > fixed_length:
        raise ValueError(f"task {encoded.task!r}: a text of {int(encoded.lengths.max())} tokens is longer than the "
                         f"{fixed_length} token positions the statistics were started with")
    for batch in batching.iterate(encoded, batch_size, seed=None, num_devices=shards,
                                  sort_by_length=sort_by_length, **options):
        yield {k: batch[k] for k in keys}


def round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple



def hold(output, what: str):
    """io.stage_lock on a stage's output (folder or file) for this run, by process 0 of a multi-host program:
    a second run writing the same output is refused with io.LockHeld naming the holder."""
    return io.stage_lock(layout.lock_path(output), output, what, enabled=jax.process_index() == 0)
