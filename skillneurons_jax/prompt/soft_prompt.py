"""Soft prompt parameters `[P, H]` (P prompt tokens, H hidden size) and their initialisers.

The prompt lives in the model's input-embedding space: the model prepends it before the text's word embeddings
(the encoders' and T5's `prefix=` argument). Only the prompt is ever trained.

Initialisers (one table, `INITIALIZERS`):
  normal       N(0, std^2), std 0.02: the original code (`nn.Embedding` re-initialised with initializer_range).
  vocab        word embeddings of P token ids drawn uniformly (with replacement) from the vocabulary
               (Lester et al. 2021, "sampled vocab"); needs `embed_fn` and `vocab_size`.
  label_words  the label words' embeddings first (each word's token embeddings averaged), the remaining rows
               sampled vocabulary embeddings as above (Lester et al.'s "class label" initialisation).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_PROMPT_LEN = 100
DEFAULT_STD = 0.02

EmbedFn = Callable[[jax.Array], jax.Array]  # int ids [...] -> word embeddings [..., H]


def check_prompt_len(prompt_len: int) -> int:
    if not isinstance(prompt_len, (int, np.integer)) or isinstance(prompt_len, bool) or prompt_len < 1:
        raise ValueError(f"prompt length must be a positive integer, got {prompt_len!r}")
    return int(prompt_len)


def _normal(key, prompt_len, hidden, *, std=DEFAULT_STD, **_):
    return std * jax.random.normal(key, (prompt_len, hidden), jnp.float32)


def _sample_ids(key, n, vocab_size, vocab_range=None):
    low, high = (0, vocab_size) if vocab_range is None else vocab_range
    if not 0 <= low < high <= vocab_size:
        raise ValueError(f"vocab_range {vocab_range} must satisfy 0 <= low < high <= vocab_size={vocab_size}")
    return jax.random.randint(key, (n,), low, high)


def _vocab(key, prompt_len, hidden, *, embed_fn=None, vocab_size=None, vocab_range=None, **_):
    _need(embed_fn, vocab_size, "vocab")
    return _embed(embed_fn, _sample_ids(key, prompt_len, vocab_size, vocab_range), hidden)


def _label_words(key, prompt_len, hidden, *, embed_fn=None, vocab_size=None, label_ids=None,
                 label_lengths=None, vocab_range=None, **_):
    _need(embed_fn, vocab_size, "label_words")
    if label_ids is None:
        raise ValueError("prompt init 'label_words' needs the task's label-word ids (label_ids)")
    ids = jnp.asarray(label_ids, jnp.int32)
    if ids.ndim == 1:
        ids = ids[:, None]
    lengths = jnp.full((ids.shape[0],), ids.shape[1]) if label_lengths is None else jnp.asarray(label_lengths)
    valid = (jnp.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(jnp.float32)  # [C, Lmax]
    emb = _embed(embed_fn, ids, hidden)                                                    # [C, Lmax, H]
    words = (emb * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)                  # [C, H]
    words = words[:prompt_len]
    rest = prompt_len - words.shape[0]
    if rest == 0:
        return words
    return jnp.concatenate([words, _embed(embed_fn, _sample_ids(key, rest, vocab_size, vocab_range), hidden)], 0)


def _need(embed_fn, vocab_size, method):
    if embed_fn is None or vocab_size is None:
        raise ValueError(f"prompt init {method!r} needs the model's word embeddings (embed_fn) and vocab_size")


def _embed(embed_fn, ids, hidden):
    out = jnp.asarray(embed_fn(ids), jnp.float32)
    if out.shape[-1] != hidden:
        raise ValueError(f"embed_fn returned hidden size {out.shape[-1]}, expected {hidden}")
    return out


INITIALIZERS = {
    "normal": _normal,
    "vocab": _vocab,
    "label_words": _label_words,
}


def init_prompt(key: jax.Array, prompt_len: int, hidden: int, method: str = "normal",
                embed_fn: Optional[EmbedFn] = None, vocab_size: Optional[int] = None, *,
                label_ids=None, label_lengths=None, std: float = DEFAULT_STD, vocab_range=None) -> jax.Array:
    """A fresh prompt, float32 `[prompt_len, hidden]`.

    key: PRNG key (each seed its own); method: a key of INITIALIZERS; embed_fn: ids -> frozen word embeddings;
    label_ids `[num_labels, max_len]` and label_lengths `[num_labels]` for 'label_words';
    vocab_range: (low, high) ids that 'vocab' / 'label_words' draw from (default the whole vocabulary; e.g. skip
    special and unused tokens, or keep to the frequent part of a frequency-ordered vocabulary).
    """
    prompt_len = check_prompt_len(prompt_len)
    if hidden < 1:
        raise ValueError(f"hidden size must be positive, got {hidden}")
    try:
        fn = INITIALIZERS[method]
    except KeyError:
        raise ValueError(f"unknown prompt init {method!r}; known: {sorted(INITIALIZERS)}") from None
    out = fn(key, prompt_len, hidden, std=std, embed_fn=embed_fn, vocab_size=vocab_size, label_ids=label_ids,
             label_lengths=label_lengths, vocab_range=vocab_range)
    return out.astype(jnp.float32)


def init_prompts(seeds, prompt_len: int, hidden: int, method: str = "normal", **kw) -> jax.Array:
    """One prompt per seed, stacked `[S, P, H]`; seed s always gets the same prompt, alone or with others."""
    return jnp.stack([init_prompt(seed_key(s), prompt_len, hidden, method, **kw) for s in seeds])


def seed_key(seed: int) -> jax.Array:
    """The prompt-initialisation key of one seed (independent of which other seeds train beside it)."""
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), 0x5EED)


def check_prompt(prompt, prompt_len: Optional[int], hidden: int, *, source: str = "prompt") -> np.ndarray:
    """A loaded prompt as float32 `[P, H]`; raises ValueError naming `source` if its shape does not fit."""
    arr = np.asarray(prompt)
    if arr.ndim != 2:
        raise ValueError(f"{source}: a prompt must be a matrix [prompt_len, hidden]; got shape {arr.shape}")
    if arr.shape[1] != hidden:
        raise ValueError(f"{source}: prompt has hidden size {arr.shape[1]} (shape {arr.shape}) but the model's "
                         f"hidden size is {hidden}: it was trained for another model")
    if prompt_len is not None and arr.shape[0] != prompt_len:
        raise ValueError(f"{source}: prompt has {arr.shape[0]} tokens (shape {arr.shape}), expected {prompt_len}")
    check_prompt_len(arr.shape[0])
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{source}: prompt must be floating point, got {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{source}: prompt contains NaN or infinite values")
    return arr.astype(np.float32)
