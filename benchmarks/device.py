"""Device benchmark: `python -m benchmarks.device [--quick] [--output OUT.json]`.

On whatever backend JAX finds (CPU, GPU, TPU; every device of it, data parallel over the pipeline's mesh), for a
RoBERTa-base-shaped and a T5-base-shaped model with random weights (seeded Hugging Face models saved to a
temporary folder and read by our loader), in float32 and bfloat16 (the compute dtype; parameters stay float32):

  train         examples/s and model FLOP utilisation (MFU) of the prompt-tuning step
                (prompt.train.make_train_step: one seed, AdamW, the pipeline's readout and loss), batches of
                full-length rows (P prompt + T text positions, no padding)
  predictivity  examples/s and MFU of the streamed predictivity pass (the pipeline's capturing forward feeding
                neurons.predictivity.compute_statistics; half the examples TRAIN, half DEV, encoder neurons at
                the P prompt positions)

MFU = model FLOPs per second / peak FLOP/s, given against two peaks: `measured` (a jitted loop of large square
matmuls in that dtype on every device, the best this backend reaches on a matmul) and `datasheet` (the
vendor's dense peak per chip x chips, skillneurons_jax.accelerators.PEAKS, where the device is known).
Model FLOPs (analytic, matmuls only, 2*m*n*k each): the encoder forward is benchmarks.encoder_forward_flops;
T5 adds the first decoder step (self-attention and FFN on one position, cross-attention over the encoder
positions); the readout's few vocabulary rows and everything that is not a matmul are not counted. A training
step needs no weight gradients (only the prompt is trained): each weight matmul costs its forward plus one
backward matmul (2x), each attention matmul (scores, weighted sum) its forward plus two (3x).

--quick: tiny models of both families and few steps (the smoke test runs it on CPU in seconds).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import sys
import tempfile
import time
import types

from absl import app, flags

import benchmarks as B

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Tiny models and few steps (a smoke test).")
flags.DEFINE_string("output", None, "Write the JSON here (atomically) as well as printing it.")
flags.DEFINE_string("models", "roberta-base,t5-base", "Comma-separated names of benchmarks.device.SHAPES.")
flags.DEFINE_string("dtypes", "float32,bfloat16", "Compute dtypes.")
flags.DEFINE_integer("repeats", None, "Timed repeats (median reported); default 3, --quick 2.")


@dataclasses.dataclass(frozen=True)
class Shape:
    family: str                # "roberta" | "t5"
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    prompt_len: int            # P
    text_len: int              # T
    train_batch: int           # global batch of a training step (rounded up to the device count)
    eval_batch: int            # global batch of the predictivity pass
    train_steps: int           # timed steps per repeat
    pass_batches: int          # predictivity batches per repeat (half TRAIN, half DEV)
    label_ids: tuple = (10, 11)
    mask_id: int = 3


SHAPES = {
    # RoBERTa-base and T5-base (v1.0: ReLU FFN, d_kv 64 x 12 heads = 768) with the study's sizes: P = 100 prompt
    # tokens, T = 128 text tokens, the original's batch 16 (train) and 64 (eval), here doubled for a device.
    "roberta-base": Shape("roberta", 768, 3072, 12, 12, 50265, 100, 128, 32, 64, 10, 4,
                          label_ids=(33407, 22173), mask_id=50264),
    "t5-base": Shape("t5", 768, 3072, 12, 12, 32128, 100, 128, 32, 64, 10, 4, label_ids=(2841, 1465)),
    "tiny-roberta": Shape("roberta", 32, 64, 2, 4, 1000, 4, 12, 8, 8, 2, 2),
    "tiny-t5": Shape("t5", 32, 64, 2, 4, 1000, 4, 12, 8, 8, 2, 2),
}
QUICK_MODELS = {"roberta-base": "tiny-roberta", "t5-base": "tiny-t5"}


# ------------------------------------------------------------------------------------------------ FLOPs
def forward_flops(shape: Shape) -> dict:
    """Matmul FLOPs of one example's forward, split into weight matmuls and attention matmuls (see the module
    docstring). Encoder over S = P + T positions; T5 also one decoder position attending to S."""
    S, H, F, L = shape.prompt_len + shape.text_len, shape.hidden, shape.intermediate, shape.layers
    weight = L * (8 * S * H * H + 4 * S * H * F)
    attention = L * 4 * S * S * H
    assert weight + attention == B.encoder_forward_flops(layers=L, hidden=H, intermediate=F, seq_len=S)
    if shape.family == "t5":
        weight += L * (8 * H * H          # self-attention Q, K, V, O on the one decoder position
                       + 4 * H * H        # cross-attention Q and O on it
                       + 4 * S * H * H    # cross-attention K and V over the encoder positions
                       + 4 * H * F)       # FFN
        attention += L * (4 * H + 4 * S * H)   # self-attention over 1 position, cross-attention over S
    return {"weight": weight, "attention": attention, "forward": weight + attention,
            "train_step": 2 * weight + 3 * attention}


# ------------------------------------------------------------------------------------------------ peaks
def measured_peak(dtype_name: str, quick: bool, repeats: int) -> dict:
    """FLOP/s of a jitted loop of square matmuls in `dtype_name`, one [n, n] @ [n, n] chain per device (data
    parallel over the mesh, so every device is busy): the median of `repeats` timed calls after a warm-up."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from skillneurons_jax import parallel

    mesh = parallel.make_mesh()
    devices = parallel.num_data_shards(mesh)
    n = 512 if quick else (2048 if jax.default_backend() == "cpu" else 8192)
    iters = 2 if quick else 8
    dtype = jnp.dtype(dtype_name)
    rng = np.random.default_rng(0)
    a = parallel.put_global(rng.standard_normal((devices, n, n), np.float32), parallel.data_sharding(mesh))
    b = parallel.replicate(rng.standard_normal((n, n), np.float32) / np.sqrt(n), mesh)

    @jax.jit
    def loop(a, b):
        a, b = a.astype(dtype), b.astype(dtype)
        # One chain per device (vmap over the sharded leading axis); products stay O(1) (b is scaled).
        return jax.lax.fori_loop(0, iters, lambda i, c: jnp.einsum("dij,jk->dik", c, b), a)

    loop(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        loop(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    flops = devices * iters * 2.0 * n ** 3
    return {"flops_per_second": flops / statistics.median(times), "n": n, "iters": iters, "devices": devices,
            "times_s": times}


def datasheet(dtype_name: str) -> dict:
    import jax
    from skillneurons_jax import accelerators
    kind = jax.devices()[0].device_kind
    name = accelerators.known(kind)
    per_chip = accelerators.datasheet_peak(name, dtype_name) if name else None
    return {"device_kind": kind, "known_as": name, "per_chip_flops_per_second": per_chip,
            "flops_per_second": per_chip * jax.device_count() if per_chip else None}


# ------------------------------------------------------------------------------------------------ models
def build_model(shape: Shape, folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A randomly initialised Hugging Face model of `shape` (seeded), saved as safetensors into `folder`."""
    import torch
    import transformers as tf
    torch.manual_seed(seed)
    if shape.family == "roberta":
        cfg = tf.RobertaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                               num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                               max_position_embeddings=shape.prompt_len + shape.text_len + 4, type_vocab_size=1,
                               pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
        model = tf.RobertaForMaskedLM(cfg)
    else:
        cfg = tf.T5Config(vocab_size=shape.vocab, d_model=shape.hidden, d_kv=shape.hidden // shape.heads,
                          d_ff=shape.intermediate, num_layers=shape.layers, num_decoder_layers=shape.layers,
                          num_heads=shape.heads, feed_forward_proj="relu", decoder_start_token_id=0,
                          pad_token_id=0, eos_token_id=1)
        model = tf.T5ForConditionalGeneration(cfg)
    model.save_pretrained(folder)
    return folder


def _readout(loaded, shape: Shape):
    import numpy as np
    from skillneurons_jax.prompt import readout as readout_mod
    # The benchmark loads no tokenizer: the <mask> id comes from the shape table (as in benchmarks/ours.py).
    with_mask = dataclasses.replace(loaded, tokenizer=types.SimpleNamespace(mask_token_id=int(shape.mask_id)))
    words = types.SimpleNamespace(ids=np.asarray(shape.label_ids, np.int32)[:, None],
                                  lengths=np.ones(len(shape.label_ids), np.int32))
    return readout_mod.make_readout(with_mask, words)


def _batch(shape: Shape, size: int, seed: int) -> dict:
    """Full-length rows (no padding): input_ids/attention_mask int32 [B, T], labels int32 [B], example_mask."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(5, shape.vocab, (size, shape.text_len)).astype(np.int32),
            "attention_mask": np.ones((size, shape.text_len), np.int32),
            "labels": (np.arange(size) % 2).astype(np.int32)[rng.permutation(size)],
            "example_mask": np.ones(size, bool)}


def _median_time(run, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def bench_model(name: str, shape: Shape, folder: pathlib.Path, dtype_name: str, repeats: int) -> dict:
    """Both measurements for one model and dtype; the figures per second are medians over `repeats`."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from benchmarks import ours
    from skillneurons_jax import parallel
    from skillneurons_jax.models import Capture
    from skillneurons_jax.neurons import predictivity as stats
    from skillneurons_jax.prompt import train as prompt_train

    loaded = ours.load(folder, jnp.dtype(dtype_name))
    readout = _readout(loaded, shape)
    mesh = parallel.make_mesh()
    devices = parallel.num_data_shards(mesh)
    train_batch = round_up(shape.train_batch, devices)
    eval_batch = round_up(shape.eval_batch, devices)
    params = parallel.replicate(loaded.params, mesh)
    rng = np.random.default_rng(1)
    prompt = rng.standard_normal((1, shape.prompt_len, shape.hidden)).astype(np.float32) * 0.5
    flops = forward_flops(shape)

    # ---- training step (one seed)
    tx = optax.adamw(1e-3, weight_decay=0.0)
    step = prompt_train.make_train_step(readout.score_fn(), tx, mesh)
    prompts = parallel.replicate(jnp.asarray(prompt), mesh)
    opt = parallel.replicate(jax.vmap(tx.init)(prompts), mesh)
    batches = [parallel.shard_batch({k: v[None] for k, v in _batch(shape, train_batch, 10 + i).items()}, mesh,
                                    batch_axis=1) for i in range(shape.train_steps)]
    state = {"prompts": prompts, "opt": opt}

    def train_repeat():
        loss = None
        for b in batches:
            state["prompts"], state["opt"], loss = step(state["prompts"], state["opt"], params, b)
        jax.block_until_ready(loss)
        return loss

    t = time.perf_counter()
    first_loss = float(np.asarray(train_repeat())[0])
    train_compile_s = time.perf_counter() - t
    train_s, train_times = _median_time(train_repeat, repeats)
    train_examples = shape.train_steps * train_batch

    # ---- predictivity pass (streamed statistics, encoder neurons at the prompt positions)
    forward = ours.make_forward(readout, Capture(start=0, length=shape.prompt_len), None)
    prompts_eval = parallel.replicate(jnp.asarray(prompt), mesh)
    half = max(shape.pass_batches // 2, 1)
    pass_data = [parallel.shard_batch(_batch(shape, eval_batch, 100 + i), mesh) for i in range(2 * half)]

    def blocks(part):
        for dev in part:
            _, streams = forward(params, prompts_eval, dev)
            yield stats.ActivationBlock(streams["encoder"], dev["example_mask"], dev["labels"], None)

    def pass_repeat():
        out = stats.compute_statistics(lambda: blocks(pass_data[:half]), blocks(pass_data[half:]))
        return out.pred

    t = time.perf_counter()
    pred = np.asarray(pass_repeat())
    pass_compile_s = time.perf_counter() - t
    pass_s, pass_times = _median_time(pass_repeat, repeats)
    pass_examples = 2 * half * eval_batch

    train_rate = train_examples / train_s
    pass_rate = pass_examples / pass_s
    return {
        "model": name, "family": shape.family, "dtype": dtype_name, "devices": devices,
        "shape": dataclasses.asdict(shape), "flops_per_example": flops,
        "train": {"examples_per_second": train_rate, "model_flops_per_second": train_rate * flops["train_step"],
                  "global_batch": train_batch, "steps": shape.train_steps, "median_s": train_s,
                  "times_s": train_times, "first_call_s": train_compile_s, "first_loss": first_loss,
                  "loss_finite": bool(np.isfinite(first_loss))},
        "predictivity": {"examples_per_second": pass_rate,
                         "model_flops_per_second": pass_rate * flops["forward"], "global_batch": eval_batch,
                         "examples": pass_examples, "median_s": pass_s, "times_s": pass_times,
                         "first_call_s": pass_compile_s, "pred_shape": list(pred.shape),
                         "pred_in_range": bool(np.all((pred >= 0.5) & (pred <= 1.0)))},
    }


def round_up(n: int, multiple: int) -> int:
    """n rounded up to a multiple of the device count (the mesh splits every global batch evenly)."""
    return -(-int(n) // multiple) * multiple


def add_mfu(row: dict, peaks: dict) -> dict:
    """row's train/predictivity entries gain mfu {measured, datasheet} (None where a peak is unknown)."""
    for part in ("train", "predictivity"):
        achieved = row[part]["model_flops_per_second"]
        row[part]["mfu"] = {k: (achieved / v if v else None) for k, v in peaks.items()}
    return row


def run(quick: bool, models: list[str], dtypes: list[str], repeats: int, printer=print) -> dict:
    import jax
    from skillneurons_jax import io as project_io
    for d in dtypes:
        if d not in ("float32", "bfloat16"):
            raise ValueError(f"--dtypes: {d!r} is not float32 or bfloat16")
    unknown = [m for m in models if m not in SHAPES]
    if unknown:
        raise ValueError(f"--models: unknown {unknown}; known: {sorted(SHAPES)}")
    out = {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
           "devices": jax.device_count(), "processes": jax.process_count(), "quick": quick,
           "versions": project_io.package_versions(), "peaks": {}, "results": []}
    for d in dtypes:
        peak = {"measured": measured_peak(d, quick, repeats), "datasheet": datasheet(d)}
        out["peaks"][d] = peak
        printer(f"[device] {d} peak: measured {peak['measured']['flops_per_second']:.3g} FLOP/s; datasheet "
                f"{peak['datasheet']['flops_per_second'] or 'unknown'} ({peak['datasheet']['device_kind']})")
    with tempfile.TemporaryDirectory(prefix="device_bench_") as scratch:
        for name in models:
            actual = QUICK_MODELS.get(name, name) if quick else name
            shape = SHAPES[actual]
            folder = build_model(shape, pathlib.Path(scratch) / actual)
            for d in dtypes:
                peaks = {"measured": out["peaks"][d]["measured"]["flops_per_second"],
                         "datasheet": out["peaks"][d]["datasheet"]["flops_per_second"]}
                row = add_mfu(bench_model(actual, shape, folder, d, repeats), peaks)
                out["results"].append(row)
                for part in ("train", "predictivity"):
                    r = row[part]
                    mfu = ", ".join(f"{k} {v:.1%}" for k, v in r["mfu"].items() if v is not None)
                    printer(f"[device] {actual} {d} {part}: {r['examples_per_second']:.1f} examples/s, "
                            f"{r['model_flops_per_second']:.3g} FLOP/s (MFU {mfu})")
    return out


def main(argv):
    del argv
    from skillneurons_jax import io as project_io
    repeats = FLAGS.repeats or (2 if FLAGS.quick else 3)
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    models = [m.strip() for m in FLAGS.models.split(",") if m.strip()]
    dtypes = [d.strip() for d in FLAGS.dtypes.split(",") if d.strip()]
    try:
        out = run(FLAGS.quick, models, dtypes, repeats, printer=lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.output:
        project_io.atomic_write_json(FLAGS.output, out)
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
