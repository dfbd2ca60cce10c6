"""Activation dump (TransformerLens-style): every FFN neuron of every layer for every token of some texts.

    python -m launch.activations --model_path DIR --input_file TEXTS.txt --output OUT.npz

TEXTS.txt holds one text per line (line i -> example i; a blank line is an example with only special tokens).
OUT.npz holds
  activations          float32 [layers, examples, tokens, neurons]  post-activation FFN neurons, padding = 0
  tokens               int32   [examples, tokens]  tokenizer ids incl. special tokens, the pad id in padding
  lengths              int32   [examples]          real tokens per example
and for T5 models also
  decoder_activations  float32 [decoder_layers, examples, D, neurons] for the decoder input
  decoder_tokens       int32   [D]   (default: just the decoder start token; `--decoder_input TEXT` appends TEXT)
`tokens` is the longest example's length (at most --max_tokens). No prompt is prepended. The file is written
atomically with a JSON sidecar (OUT.npz.json). Examples are batched by length (sorted, padded to a few bucket
lengths, so only a handful of shapes are compiled) and written back in file order.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import flags
from ml_collections import config_flags

from launch import common

FLAGS = flags.FLAGS
# --config (optional ml_collections file) may set these fields; a flag given on the command line wins.
CONFIG_FIELDS = ("batch_size", "max_tokens", "decoder_input", "dtype")


def define_flags() -> None:
    """Flags of this entry point, defined only when it runs (other launch modules share flag names)."""
    flags.DEFINE_string("input_file", None, "Text file, one example per line.")
    flags.DEFINE_string("output", None, "Output .npz path.")
    flags.DEFINE_integer("batch_size", 16, "Examples per forward pass.")
    flags.DEFINE_integer("max_tokens", 128, "Truncate each text to this many tokens (special tokens included).")
    flags.DEFINE_string("decoder_input", None, "T5 only: text after the decoder start token (default: the start "
                        "token alone).")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (activations are saved as "
                      "float32 either way).")
    config_flags.DEFINE_config_file("config", None, "Optional config file with any of: " + ", ".join(CONFIG_FIELDS),
                                    lock_config=False)


def settings() -> dict:
    """Flag values, with --config fields filling flags that were not given on the command line."""
    out = {name: FLAGS[name].value for name in CONFIG_FIELDS}
    config = FLAGS.config
    if config is not None:
        for name in CONFIG_FIELDS:
            if name in config and not FLAGS[name].present:
                out[name] = config[name]
    return out


MIN_BUCKET = 8


def read_texts(path) -> list[str]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--input_file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not any(line.strip() for line in lines):
        raise ValueError(f"--input_file {path} has no texts (it is empty); expected one text per line")
    return lines


def bucket_length(n: int, cap: int) -> int:
    """Smallest power of two >= n (at least MIN_BUCKET), never above `cap`."""
    b = MIN_BUCKET
    while b < n:
        b *= 2
    return min(b, cap)


def plan_batches(lengths: np.ndarray, batch_size: int, cap: int) -> list[tuple[np.ndarray, int]]:
    """Example indices grouped by length (longest first) -> [(indices [<= batch_size], padded length)]."""
    order = np.argsort(-lengths, kind="stable")
    return [(order[i:i + batch_size], bucket_length(int(lengths[order[i]]), cap))
            for i in range(0, len(order), batch_size)]


def make_forward(loaded, decoder_ids):
    """A jitted (params, ids [B, T], mask [B, T]) -> (neurons [L, B, T, N] with padding zeroed, decoder neurons)."""
    import jax
    import jax.numpy as jnp
    from skillneurons_jax.models.ffn import Capture

    module = loaded.module
    if loaded.family == "t5":
        def forward(params, ids, mask):
            dec = jnp.broadcast_to(jnp.asarray(decoder_ids), (ids.shape[0], len(decoder_ids)))
            out = module.apply({"params": params}, ids, mask, decoder_input_ids=dec, capture=Capture(),
                               decoder_capture=Capture())
            return out.neurons * mask[None, :, :, None], out.decoder_neurons
    else:
        def forward(params, ids, mask):
            out = module.apply({"params": params}, ids, mask, capture=Capture())
            return out.neurons * mask[None, :, :, None], None
    return jax.jit(forward)


def dump(loaded, texts: list[str], *, batch_size: int, max_tokens: int, decoder_input: str | None = None) -> dict:
    """The arrays of OUT.npz for `texts` (see the module docstring)."""
    if batch_size < 1 or max_tokens < 1:
        raise ValueError(f"--batch_size and --max_tokens must be positive (got {batch_size}, {max_tokens})")
    tok = loaded.tokenizer
    if tok.pad_token_id is None:
        raise ValueError(f"the tokenizer of {loaded.name} has no pad token")
    encoded = tok(texts, truncation=True, max_length=max_tokens)["input_ids"]
    lengths = np.array([len(e) for e in encoded], np.int32)
    longest = int(lengths.max())
    examples, pad_id = len(texts), int(tok.pad_token_id)

    decoder_ids = None
    if loaded.family == "t5":
        extra = tok(decoder_input, add_special_tokens=False)["input_ids"] if decoder_input else []
        decoder_ids = np.array([loaded.config.decoder_start_token_id] + list(extra), np.int32)
    elif decoder_input is not None:
        raise ValueError(f"--decoder_input applies to T5 models only; {loaded.name} is a {loaded.family} encoder")

    cfg = loaded.config
    tokens = np.full((examples, longest), pad_id, np.int32)
    for i, ids in enumerate(encoded):
        tokens[i, :len(ids)] = ids
    acts = np.zeros((cfg.num_layers, examples, longest, cfg.intermediate), np.float32)
    dec_acts = (np.zeros((cfg.num_decoder_layers, examples, len(decoder_ids), cfg.intermediate), np.float32)
                if decoder_ids is not None else None)

    forward = make_forward(loaded, decoder_ids)
    for rows, length in plan_batches(lengths, batch_size, longest):
        ids = np.full((batch_size, length), pad_id, np.int32)   # filler rows keep one shape per bucket
        mask = np.zeros((batch_size, length), np.int32)
        ids[:len(rows)] = tokens[rows, :length]
        mask[:len(rows)] = np.arange(length)[None, :] < lengths[rows][:, None]
        neurons, dec_neurons = forward(loaded.params, ids, mask)
        acts[:, rows, :length] = np.asarray(neurons)[:, :len(rows)]
        if dec_acts is not None:
            dec_acts[:, rows] = np.asarray(dec_neurons)[:, :len(rows)]

    out = {"activations": acts, "tokens": tokens, "lengths": lengths}
    if dec_acts is not None:
        out["decoder_activations"] = dec_acts
        out["decoder_tokens"] = decoder_ids
    return out


def main(argv):
    del argv
    common.require("model_path", "input_file", "output")
    from skillneurons_jax import io
    from skillneurons_jax.models import load_pretrained

    opts = settings()
    texts = read_texts(FLAGS.input_file)
    loaded = load_pretrained(FLAGS.model_path, dtype=opts["dtype"])
    arrays = dump(loaded, texts, batch_size=opts["batch_size"], max_tokens=opts["max_tokens"],
                  decoder_input=opts["decoder_input"])
    io.atomic_save_npz(FLAGS.output, **arrays)
    io.write_sidecar(FLAGS.output, stage="activations", model=loaded.name, model_path=str(FLAGS.model_path),
                     family=loaded.family, input_file=str(FLAGS.input_file), examples=len(texts), **opts,
                     shapes={k: list(v.shape) for k, v in arrays.items()})
    print(json.dumps({"output": str(FLAGS.output), "model": loaded.name, "examples": len(texts),
                      "activations": list(arrays["activations"].shape)}), flush=True)


if __name__ == "__main__":
    define_flags()
    common.run(main)
