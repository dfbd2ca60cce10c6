"""What each side of the benchmark is fed, in either workload mode (benchmarks.Workload.lengths).

`build(workload, vocab_size, mesh, ...) -> Sides`: the predictivity batches (TRAIN, DEV), the training steps'
batches and one training batch per side holding the SAME examples (for the first-loss check), for the reference
and for ours. "full": both sides get the same synthetic batches. "real": benchmarks/realdata.py (real texts; the
reference pads to the original fixed length, ours uses the pipeline's length buckets).

Every batch dict also carries `index` int32 [B] (row of its split, -1 on filler rows), so that results can be
compared example by example; the models are handed only realdata.MODEL_KEYS.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

import benchmarks as B
from benchmarks import realdata


@dataclasses.dataclass
class Sides:
    ref_train: list
    ref_dev: list
    ours_train: list
    ours_dev: list
    dev_labels: np.ndarray        # [E/2] in the split's file order (the order of `index`)
    ref_steps: list               # training: timed steps, one batch each
    ours_steps: list
    check_ref: dict               # one training batch per side, the same examples: the first-loss check
    check_ours: dict
    info: dict                    # mode, tokenizer, lengths, tokens per side (for the JSON)
    encoded: Optional[dict] = None   # real mode: {"train": Encoded, "dev": Encoded} (the memory children's data)


def _with_index(batches: list[dict], start: int = 0) -> list[dict]:
    out, row = [], start
    for b in batches:
        n = b["input_ids"].shape[0]
        out.append(dict(b, index=np.arange(row, row + n, dtype=np.int32)))
        row += n
    return out


def _full(w: B.Workload, vocab_size: int) -> Sides:
    train, dev = B.predictivity_batches(w, vocab_size)
    train, dev = _with_index(train), _with_index(dev)
    steps = _with_index(B.training_batches(w, vocab_size))
    labels = np.concatenate([b["labels"] for b in dev])
    info = dict(mode="full", data=f"synthetic ids, lengths uniform in [{w.text_len // 2}, {w.text_len}], every "
                                  f"batch padded to {w.text_len} text positions on both sides")
    return Sides(train, dev, train, dev, labels, steps, steps, steps[0], steps[0], info)


def _real(w: B.Workload, vocab_size: int, mesh, data_dir, memory_examples: int) -> Sides:
    n_train_steps = w.train_steps * w.train_batch_size
    per_split = max(w.examples // 2, n_train_steps, 10 * memory_examples // 2)
    tok, source, exact = realdata.load_tokenizer(w.model, data_dir)
    enc = {split: realdata.encode(w.model, split, per_split, vocab_size, w.max_text_tokens, tokenizer=tok,
                                  exact=exact, seed=w.seed) for split in ("train", "dev")}
    half = w.examples // 2
    pred = {s: realdata.subset(enc[s], half) for s in ("train", "dev")}
    if len(np.unique(pred["dev"].labels)) < 2:   # neuron accuracy against a constant label means nothing
        raise ValueError(f"the benchmark's {half} DEV examples hold one label only; use more --examples")
    ref_train, ref_dev = (realdata.reference_batches(pred[s], w.batch_size, w.max_text_tokens)
                          for s in ("train", "dev"))
    ours_train, ours_dev = (realdata.ours_predictivity_batches(pred[s], w.batch_size, mesh,
                                                               [pred["train"], pred["dev"]]) for s in ("train", "dev"))

    # Training: one epoch over the first n_train_steps TRAIN examples; the reference in a seeded shuffle (as a
    # DataLoader), ours as prompt tuning batches an epoch.
    from skillneurons_jax.data.batches import DEFAULT_BUCKETS
    from skillneurons_jax.prompt.train import epoch_seed
    order_seed = epoch_seed(w.seed, 0)
    steps_enc = realdata.subset(enc["train"], n_train_steps)
    ref_steps = realdata.reference_batches(steps_enc, w.train_batch_size, w.max_text_tokens, seed=order_seed,
                                           drop_last=True)
    # buckets cut at the longest row of every split the run encodes, the training rows included (the tune stage
    # cuts them over its train and dev splits): with fewer predictivity rows the longest may be a training row
    ours_steps = realdata.ours_training_batches(steps_enc, [pred["train"], pred["dev"], steps_enc],
                                                w.train_batch_size, w.seed)
    # The loss check: our first batch's examples, padded the reference's way.
    first = ours_steps[0]["index"]
    check_ref = realdata.reference_batches(realdata.subset(steps_enc, rows=first), w.train_batch_size,
                                           w.max_text_tokens)[0]
    check_ref["index"] = first.copy()

    lengths = {s: pred[s].lengths for s in ("train", "dev")}
    info = dict(
        mode="real", task=realdata.TASK, tokenizer=source, exact_tokenizer=exact,
        max_text_tokens=w.max_text_tokens, reference_text_len=realdata.reference_text_len(w.max_text_tokens),
        mean_real_text_len=float(np.mean(np.concatenate(list(lengths.values())))),
        real_text_len_percentiles={str(q): float(np.percentile(np.concatenate(list(lengths.values())), q))
                                   for q in (50, 90, 99, 100)},
        rows_truncated=int(sum(np.sum(l >= w.max_text_tokens + 2) for l in lengths.values())),  # cls text sep
        ours_predictivity="stages.setup.sharded_batches as the predictivity stage calls it: buckets "
                          f"{'/'.join(map(str, DEFAULT_BUCKETS))} cut at the longest row of TRAIN and DEV, sorted "
                          "by length within chunks of 32 batches",
        ours_training="stages/tune.make_train_batches with group_by_length (configs/default.py): buckets "
                      "cut at the longest row, sorted within chunks, batch order shuffled",
        reference="every example padded to max_text_tokens + 3 text positions (the original formatter)")
    return Sides(ref_train, ref_dev, ours_train, ours_dev, pred["dev"].labels.copy(), ref_steps, ours_steps,
                 check_ref, ours_steps[0], info, encoded=enc)


def build(w: B.Workload, vocab_size: int, mesh, *, data_dir=None, memory_examples: int = 0) -> Sides:
    sides = _full(w, vocab_size) if w.lengths == "full" else _real(w, vocab_size, mesh, data_dir, memory_examples)
    P = w.prompt_len
    sides.info["tokens"] = {
        "predictivity": {"reference": realdata.token_counts(sides.ref_train + sides.ref_dev, P),
                         "ours": realdata.token_counts(sides.ours_train + sides.ours_dev, P)},
        "train": {"reference": realdata.token_counts(sides.ref_steps, P),
                  "ours": realdata.token_counts(sides.ours_steps, P)}}
    return sides
