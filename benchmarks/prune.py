"""Forward-pass speed of a skill-neuron-pruned encoder against the unpruned one, in one process.

    python -m benchmarks.prune --output prune.json [--model minilm|roberta-base-random] [--keep_percent 2]
                               [--layers 2,3,4,5] [--batch 32]

The model is the offline MiniLM (offline:all-minilm-l6-v2: 6 layers, 1536 FFN neurons each), or with --model
roberta-base-random a RoBERTa-base-shaped encoder with random weights (12 layers, hidden 768, 3072 FFN neurons, 12
heads, vocabulary 50265; Flax initialisation, seeded: the speed does not depend on the values), Skill-Neuron's
setting with --layers 3,4,5,6,7,8,9,10,11 (layers 4-12 of 12, 1-based). In the chosen layers
(default: the upper two thirds) only keep_percent % of the FFN neurons
stay (models.prune.prune_params; which neurons does not change the speed, so they are drawn at random here, and the
removed neurons' constants are random too). Both models run the same jit-compiled forward on the same batches
(a soft prompt of `prompt_len` positions before `text_len` text tokens, as the pipeline feeds them), timed in
alternation (benchmarks.run.timed_interleaved) so that load from other work falls on both alike. Two passes:
`all_rows` (every position's hidden state) and `readout_rows` (only the first row of the last layer, as the
<mask>-slot readout computes it). The pruned model's output is checked against the unpruned model with the removed
neurons set to the same constants (Intervention.mean) before anything is timed. Writes one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.run import _loadavg, timed_interleaved
from skillneurons_jax import io
from skillneurons_jax.models import load_pretrained
from skillneurons_jax.models.config import ModelConfig
from skillneurons_jax.models.ffn import Intervention
from skillneurons_jax.models.prune import prune_params
from skillneurons_jax.models.roberta import EncoderModel

MODEL = "offline:all-minilm-l6-v2"
MODELS = ("minilm", "roberta-base-random")
ROBERTA_BASE = ModelConfig(family="roberta", vocab_size=50265, hidden=768, intermediate=3072, num_layers=12,
                           num_heads=12, activation="gelu", has_lm_head=False, pad_token_id=1, max_positions=514,
                           type_vocab_size=1, layer_norm_eps=1e-5)


def random_roberta_base(seed: int = 0):
    """(module, params, config) of a RoBERTa-base-shaped encoder with random (Flax-initialised) weights."""
    module = EncoderModel(ROBERTA_BASE)
    ids = jnp.full((1, 8), 5, jnp.int32)
    params = jax.jit(module.init)(jax.random.PRNGKey(seed), ids, jnp.ones_like(ids))["params"]
    return module, params, ROBERTA_BASE


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def ffn_flops_share(config, sizes, tokens: int, batch: int) -> dict:
    """FLOPs (2 per multiply-add) of the encoder layers per all-rows pass over the batch (attention projections,
    scores and weighted sum, FFN), unpruned vs pruned."""
    h, t = config.hidden, tokens * batch
    attn = 4 * 2 * h * h * t + 2 * 2 * tokens * t * h
    full = config.num_layers * (attn + 2 * 2 * h * config.intermediate * t)
    pruned = sum(attn + 2 * 2 * h * n * t for n in sizes)
    return {"unpruned_gflop": full / 1e9, "pruned_gflop": pruned / 1e9, "flop_ratio": full / pruned}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True)
    p.add_argument("--model", default="minilm", choices=MODELS)
    p.add_argument("--keep_percent", type=float, default=2.0)
    p.add_argument("--layers", default="", help="comma-separated layer indices; empty = the upper two thirds")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt_len", type=int, default=100)
    p.add_argument("--text_len", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)

    if args.model == "minilm":
        loaded = load_pretrained(MODEL, tokenizer=False)
        module, params0, cfg = loaded.module, loaded.params, loaded.config
    else:
        module, params0, cfg = random_roberta_base()
    layers = ([int(x) for x in args.layers.split(",")] if args.layers
              else list(range(cfg.num_layers // 3, cfg.num_layers)))
    rng = np.random.default_rng(0)
    keep = np.ones((cfg.num_layers, cfg.intermediate), bool)
    count = max(1, int(cfg.intermediate * args.keep_percent / 100))
    for layer in layers:
        keep[layer] = False
        keep[layer, rng.choice(cfg.intermediate, count, replace=False)] = True
    means = rng.normal(0.0, 0.1, keep.shape).astype(np.float32)
    pruned_params, pruned_cfg = prune_params(params0, cfg, keep, means)
    pruned_params = jax.tree.map(jnp.asarray, pruned_params)
    pruned_module = type(module)(pruned_cfg)

    ids = jnp.asarray(rng.integers(1000, cfg.vocab_size, (args.batch, args.text_len)), jnp.int32)
    mask = jnp.ones((args.batch, args.text_len), jnp.int32)
    prefix = jnp.asarray(rng.normal(0, 0.1, (1, args.prompt_len, cfg.hidden)), jnp.float32)

    def forward(module, rows):
        return jax.jit(lambda params: module.apply({"params": params}, ids, mask, prefix=prefix,
                                                   output_rows=rows).hidden)

    # the pruned model is the unpruned one with the removed neurons at their constants (checked, not assumed)
    reference = jax.jit(lambda params: module.apply(
        {"params": params}, ids, mask, prefix=prefix, intervention=Intervention.mean(~keep, means)).hidden)
    diff = float(jnp.max(jnp.abs(reference(params0) - forward(pruned_module, None)(pruned_params))))
    if diff > 1e-3:
        raise SystemExit(f"pruned model differs from the intervened unpruned model by {diff}")

    passes = {}
    for name, rows in (("all_rows", None), ("readout_rows", 1)):
        fns = {"unpruned": forward(module, rows), "pruned": forward(pruned_module, rows)}
        params = {"unpruned": params0, "pruned": pruned_params}
        compiled = {k: (lambda f=f, k=k: jax.block_until_ready(f(params[k]))) for k, f in fns.items()}
        for f in compiled.values():
            f()                                          # compile and warm up
        timing = timed_interleaved(compiled, args.repeats)
        passes[name] = {"unpruned_median_s": timing["unpruned"]["median_s"],
                        "pruned_median_s": timing["pruned"]["median_s"],
                        "speedup": timing["unpruned"]["median_s"] / timing["pruned"]["median_s"],
                        "times_s": {k: v["times_s"] for k, v in timing.items()},
                        "load_1min": timing["pruned"]["load_1min"]}
    result = {
        "benchmark": "prune", "model": MODEL if args.model == "minilm" else args.model,
        "shape": {"layers": cfg.num_layers, "hidden": cfg.hidden, "ffn": cfg.intermediate, "heads": cfg.num_heads},
        "keep_percent": args.keep_percent, "pruned_layers": layers,
        "neurons_kept_per_pruned_layer": count, "intermediate_sizes": list(pruned_cfg.intermediate_sizes),
        "batch": args.batch, "prompt_len": args.prompt_len, "text_len": args.text_len, "repeats": args.repeats,
        "max_abs_diff_vs_intervention": diff,
        "flops": ffn_flops_share(cfg, pruned_cfg.intermediate_sizes, args.prompt_len + args.text_len,
                                 args.batch),
        "passes": passes, "cpu": cpu_name(), "cpu_count": os.cpu_count(), "load_avg": _loadavg(),
        "jax": jax.__version__, "backend": jax.default_backend(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime()),
    }
    io.atomic_write_json(args.output, result)
    print(json.dumps({k: result[k] for k in ("keep_percent", "pruned_layers", "load_avg")}
                     | {k: round(v["speedup"], 3) for k, v in passes.items()}))
    return result


if __name__ == "__main__":
    main()
