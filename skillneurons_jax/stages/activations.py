"""Stage activations: every FFN neuron of every layer for every token of some texts (a TransformerLens-style
dump; the body of launch.activations).

    arrays = activations(loaded, texts, batch_size=16, max_tokens=128)

Returns
  activations          float32 [layers, examples, tokens, neurons]  post-activation FFN neurons, padding = 0
  tokens               int32   [examples, tokens]  tokenizer ids incl. special tokens, the pad id in padding
  lengths              int32   [examples]          real tokens per example
and for T5 models also
  decoder_activations  float32 [decoder_layers, examples, D, neurons] for the decoder input
  decoder_tokens       int32   [D]   (default: just the decoder start token; `decoder_input` appends its tokens)
`tokens` is the longest example's length (at most max_tokens). No prompt is prepended. Examples are batched by
length (sorted, padded to power-of-two bucket lengths, so only a handful of shapes are compiled) and written
back in input order.
"""
from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax.data import batches as batching
from skillneurons_jax.models.ffn import Capture
from skillneurons_jax.prompt import eval_loop

MIN_BUCKET = 8


def read_texts(path) -> list[str]:
    """One text per line (line i -> example i; a blank line is an example with only special tokens)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--input_file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not any(line.strip() for line in lines):
        raise ValueError(f"--input_file {path} has no texts (it is empty); expected one text per line")
    return lines


def bucket_length(n: int, cap: int) -> int:
    """Smallest power of two >= n (at least MIN_BUCKET), never above `cap`: batches.bucket_length over the
    power-of-two buckets cut at `cap`."""
    powers, b = [], MIN_BUCKET
    while b < cap:
        powers.append(b)
        b *= 2
    return batching.bucket_length(min(int(n), int(cap)), tuple(powers) + (int(cap),))


def plan_batches(lengths: np.ndarray, batch_size: int, cap: int) -> list[tuple[np.ndarray, int]]:
    """Example indices grouped by length (longest first) -> [(indices [<= batch_size], padded length)]."""
    order = np.argsort(-lengths, kind="stable")
    return [(order[i:i + batch_size], bucket_length(int(lengths[order[i]]), cap))
            for i in range(0, len(order), batch_size)]


def make_forward(loaded, decoder_ids):
    """A jitted (params, ids [B, T], mask [B, T]) -> (neurons [L, B, T, N] with padding zeroed, decoder neurons)."""
    module = loaded.module
    if loaded.family == "t5":
        def forward(params, ids, mask):
            decoder = jnp.broadcast_to(jnp.asarray(decoder_ids), (ids.shape[0], len(decoder_ids)))
            out = module.apply({"params": params}, ids, mask, decoder_input_ids=decoder, capture=Capture(),
                               decoder_capture=Capture())
            return out.neurons * mask[None, :, :, None], out.decoder_neurons
    else:
        def forward(params, ids, mask):
            out = module.apply({"params": params}, ids, mask, capture=Capture())
            return out.neurons * mask[None, :, :, None], None
    return jax.jit(forward)


def activations(loaded, texts: list[str], *, batch_size: int, max_tokens: int, decoder_input: str | None = None
                ) -> dict:
    """The arrays of the dump for `texts` (see the module docstring)."""
    if batch_size < 1 or max_tokens < 1:
        raise ValueError(f"--batch_size and --max_tokens must be positive (got {batch_size}, {max_tokens})")
    tokenizer = loaded.tokenizer
    if tokenizer.pad_token_id is None:
        raise ValueError(f"the tokenizer of {loaded.name} has no pad token")
    encoded = tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    lengths = np.array([len(e) for e in encoded], np.int32)
    longest = int(lengths.max())
    examples, pad_id = len(texts), int(tokenizer.pad_token_id)

    decoder_ids = None
    if loaded.family == "t5":
        extra = tokenizer(decoder_input, add_special_tokens=False)["input_ids"] if decoder_input else []
        decoder_ids = np.array([loaded.config.decoder_start_token_id] + list(extra), np.int32)
    elif decoder_input is not None:
        raise ValueError(f"--decoder_input applies to T5 models only; {loaded.name} is a {loaded.family} encoder")

    cfg = loaded.config
    tokens = np.full((examples, longest), pad_id, np.int32)
    for i, ids in enumerate(encoded):
        tokens[i, :len(ids)] = ids
    acts = np.zeros((cfg.num_layers, examples, longest, cfg.intermediate), np.float32)
    decoder_acts = (np.zeros((cfg.num_decoder_layers, examples, len(decoder_ids), cfg.intermediate), np.float32)
                    if decoder_ids is not None else None)

    def batches():
        """[B, length] token ids and mask per planned batch; filler rows (example_mask False, index -1) keep one
        shape per bucket."""
        for rows, length in plan_batches(lengths, batch_size, longest):
            ids = np.full((batch_size, length), pad_id, np.int32)
            mask = np.zeros((batch_size, length), np.int32)
            ids[:len(rows)] = tokens[rows, :length]
            mask[:len(rows)] = np.arange(length)[None, :] < lengths[rows][:, None]
            index = np.full(batch_size, -1, np.int64)
            index[:len(rows)] = rows
            yield {"input_ids": ids, "attention_mask": mask, "example_mask": index >= 0, "index": index}

    forward = make_forward(loaded, decoder_ids)
    # mesh None: the forward is a plain jit on the default device, as launch.activations has always run it
    for placed, (neurons, decoder_neurons) in eval_loop.outputs(
            lambda b: forward(loaded.params, b.host["input_ids"], b.host["attention_mask"]), batches(), None):
        keep = placed.keep
        rows, length = placed.host["index"][keep], placed.host["input_ids"].shape[1]
        acts[:, rows, :length] = np.asarray(neurons)[:, keep]
        if decoder_acts is not None:
            decoder_acts[:, rows] = np.asarray(decoder_neurons)[:, keep]

    out = {"activations": acts, "tokens": tokens, "lengths": lengths}
    if decoder_acts is not None:
        out["decoder_activations"] = decoder_acts
        out["decoder_tokens"] = decoder_ids
    return out
