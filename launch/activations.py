"""Activation dump (TransformerLens-style): every FFN neuron of every layer for every token of some texts.

    python -m launch.activations --model_path DIR --input_file TEXTS.txt --output OUT.npz

TEXTS.txt holds one text per line (line i -> example i; a blank line is an example with only special tokens).
OUT.npz holds `activations` float32 [layers, examples, tokens, neurons] (padding = 0), `tokens` int32
[examples, tokens], `lengths` int32 [examples], and for T5 `decoder_activations` / `decoder_tokens`
(skillneurons_jax.stages.activations has the details). No prompt is prepended. The file is written atomically
with a JSON sidecar (OUT.npz.json).
"""
from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from launch import common
from skillneurons_jax import io, models
from skillneurons_jax.stages import activations

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


def main(argv):
    del argv
    common.require("model_path", "input_file", "output")
    options = settings()
    common.positive("batch_size", options["batch_size"], allow_none=False)
    common.positive("max_tokens", options["max_tokens"], allow_none=False)
    texts = activations.read_texts(FLAGS.input_file)
    loaded = models.load_pretrained(FLAGS.model_path, dtype=options["dtype"])
    arrays = activations.activations(loaded, texts, batch_size=options["batch_size"],
                                     max_tokens=options["max_tokens"], decoder_input=options["decoder_input"])
    io.atomic_save_npz(FLAGS.output, **arrays)
    io.write_sidecar(FLAGS.output, stage="activations", model=loaded.name, model_path=str(FLAGS.model_path),
                     family=loaded.family, input_file=str(FLAGS.input_file), examples=len(texts), **options,
                     shapes={k: list(v.shape) for k, v in arrays.items()})
    print(json.dumps({"output": str(FLAGS.output), "model": loaded.name, "examples": len(texts),
                      "activations": list(arrays["activations"].shape)}), flush=True)


if __name__ == "__main__":
    define_flags()
    common.run(main)
