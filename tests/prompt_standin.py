"""A tiny stand-in model and data for testing the prompt-tuning loop without a transformer.

The score function reads the prompt through attention-like pooling over the text, so the gradient w.r.t. the
prompt depends on every example; labels follow a hidden rule the prompt can learn.
Used by tests/test_prompt_train.py and the subprocess scripts it starts.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax.prompt import soft_prompt, train

VOCAB, HIDDEN, CLASSES, PROMPT_LEN = 50, 8, 2, 4


def make_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"embed": rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32),
            "out": rng.normal(size=(HIDDEN, CLASSES)).astype(np.float32)}


def score_fn(params, prompt, batch):
    """params, prompt [P, H], batch {input_ids [B, T], attention_mask [B, T]} -> scores [B, C]."""
    x = params["embed"][batch["input_ids"]]                                   # [B, T, H]
    att = jnp.einsum("bth,ph->btp", x, prompt)                                # [B, T, P]
    att = jnp.where(batch["attention_mask"][..., None] > 0, att, -1e9)
    w = jax.nn.softmax(att, axis=1)
    pooled = jnp.einsum("btp,bth->bh", w, x) / prompt.shape[0] + prompt.mean(0)
    return jnp.tanh(pooled) @ params["out"]


def make_data(n: int, seed: int, max_len: int = 12, pad_id: int = 0) -> dict:
    """Variable-length examples; label = whether token ids < VOCAB/2 are the majority."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, max_len + 1, size=n)
    ids = np.full((n, max_len), pad_id, np.int32)
    for i, L in enumerate(lengths):
        ids[i, :L] = rng.integers(1, VOCAB, size=L)
    low = ((ids > 0) & (ids < VOCAB // 2)).sum(1)
    labels = (2 * low > lengths).astype(np.int32)
    return {"ids": ids, "lengths": lengths, "labels": labels}


def _batch(data, idx, batch_size, pad_id=0):
    """Rows idx (fillers beyond len(idx)), padded to a bucket of 8 or 12 tokens (few compiled shapes)."""
    n = len(idx)
    idx = np.concatenate([idx, np.zeros(batch_size - n, np.int64)]) if n < batch_size else idx
    T = 8 if data["lengths"][idx].max() <= 8 else data["ids"].shape[1]
    ids = data["ids"][idx, :T].copy()
    mask = (np.arange(T)[None, :] < data["lengths"][idx][:, None]).astype(np.int32)
    ids[mask == 0] = pad_id
    example_mask = np.arange(batch_size) < n
    return {"input_ids": ids, "attention_mask": mask, "labels": data["labels"][idx].astype(np.int32),
            "example_mask": example_mask}


def train_batches(data, batch_size):
    from skillneurons_jax.prompt.train import epoch_seed

    def fn(seed, epoch):
        order = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(data["labels"]))
        return [_batch(data, order[i:i + batch_size], batch_size)
                for i in range(0, len(order) - batch_size + 1, batch_size)]
    return fn


def dev_batches(data, batch_size):
    n = len(data["labels"])
    return [_batch(data, np.arange(i, min(i + batch_size, n)), batch_size) for i in range(0, n, batch_size)]


def run_training(data, cfg, seeds, batch_size, **kw):
    """prompt.train.train on the stand-in: `data` = (train, dev) from make_data, prompts from init_prompts."""
    train_data, dev_data = data
    init = soft_prompt.init_prompts(seeds, PROMPT_LEN, HIDDEN)
    return train.train(score_fn, make_params(), init, seeds, train_batches(train_data, batch_size),
                       dev_batches(dev_data, batch_size), cfg, **kw)
