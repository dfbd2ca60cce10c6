"""Tiny random checkpoints and tiny GLUE-format data for the prompt-tuning tests (built here, never downloaded).

`make_bert(folder, lm_head=...)` saves a BertForMaskedLM (or a head-less BertModel, like sentence-transformers
MiniLM) whose WordPiece vocabulary holds every task's label words as single tokens; `write_sst2(data_dir, ...)`
writes `glue/SST-2/{train,dev}.tsv` with a learnable sentiment rule.
"""
from __future__ import annotations

import pathlib

import numpy as np

LABEL_WORDS = "negative positive false true no yes unacceptable acceptable".split()
POSITIVE = "good great fun wonderful fine lovely".split()
NEGATIVE = "bad boring awful dull poor terrible".split()
NEUTRAL = "the a movie film plot was is it this and very".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + LABEL_WORDS + POSITIVE + NEGATIVE + NEUTRAL + [".", "!"]


def make_bert(folder, *, lm_head: bool = True, hidden: int = 16, layers: int = 2, seed: int = 0,
              max_positions: int = 96) -> pathlib.Path:
    import torch
    import transformers as tf
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    cfg = tf.BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=max_positions, pad_token_id=0,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    model = tf.BertForMaskedLM(cfg) if lm_head else tf.BertModel(cfg, add_pooling_layer=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" not in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(folder)  # the tokenizer is read from vocab.txt (AutoTokenizer, model_type bert)
    return folder


def sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """Short sentences whose label is 1 when positive words outnumber negative ones."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = int(rng.integers(2))
        strong = POSITIVE if label else NEGATIVE
        weak = NEGATIVE if label else POSITIVE
        words = list(rng.choice(NEUTRAL, rng.integers(2, 6))) + list(rng.choice(strong, 2)) + \
            list(rng.choice(weak, rng.integers(0, 2)))
        rng.shuffle(words)
        out.append((" ".join(words) + " .", label))
    return out


def write_sst2(data_dir, n_train: int = 48, n_dev: int = 16, seed: int = 0) -> pathlib.Path:
    data_dir = pathlib.Path(data_dir)
    folder = data_dir / "glue" / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("dev", n_dev, seed + 1)):
        rows = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in sentences(n, s)]
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return data_dir
