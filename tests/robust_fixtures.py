"""A tiny random BERT with an MLM head, its readout, a prompt and two aligned text batches, for the robust tests."""
import collections

import numpy as np

from skillneurons_jax.models import load_pretrained
from skillneurons_jax.prompt import readout as ro
from tiny_encoders import make_checkpoint, padded_batch

P = 4
Words = collections.namedtuple("Words", "ids lengths")
# Row i of ADVERSARIAL is an edit of row i of ORIGINAL (same label); lengths differ, so the batches do too.
ORIGINAL = ["the movie was good !", "a boring film , not fun", "this plot is great", "bad actor"]
ADVERSARIAL = ["the film was fun", "a bad film , not very fun .", "this plot is not great", "the bad actor !"]
LABELS = np.array([1, 0, 1, 0], np.int32)


def tiny_model(folder):
    make_checkpoint(folder, "bert", lm_head=True, seed=3)
    loaded = load_pretrained(folder)
    vocab = loaded.tokenizer.get_vocab()
    words = Words(ids=np.array([[vocab["bad"]], [vocab["good"]]], np.int32), lengths=np.array([1, 1], np.int32))
    return loaded, ro.make_readout(loaded, words)


def batch(tokenizer, texts, labels=LABELS):
    ids, mask = padded_batch(tokenizer, texts)
    return {"input_ids": ids, "attention_mask": mask, "labels": np.asarray(labels, np.int32),
            "example_mask": np.ones(len(texts), bool)}


def prompts(hidden, seeds=2):
    return np.random.default_rng(1).normal(0, 0.5, (seeds, P, hidden)).astype(np.float32)
