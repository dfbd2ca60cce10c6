"""Skill-neuron predictivity of a task's tuned prompts (eqs. 2-5), streamed over the data.

    python -m launch.predictivity --model_path DIR --task sst2 --data_dir DIR --seeds 0,1,2 --workdir DIR

Reads   WORKDIR/prompts/<model>/<prompt task>/seed_<s>/prompt.npy   [P, H], one per seed (all seeds in one pass)
Writes  WORKDIR/predictivity/<model>/<task>.npz (atomically) with
          pred [L, N], pred_per_seed [S, L, N], acc [S, L, T, N], baseline [S, L, T, N]
          (+ threshold [S, L, T, N] when the threshold is the median)
          (+ decoder_pred, decoder_pred_per_seed, decoder_acc, decoder_baseline for T5: the first decoder step)
        and its sidecar <task>.npz.json: task, baseline task, prompt task, split sizes, seeds, the model's accuracy
        and F1 per seed on the dev split (`model_accuracy`, `model_f1`), the options, prompt hashes.

Adversarial tasks (advsst2, ...) take the baseline from their CLEAN task's TRAIN split and the prompt tuned on the
clean task; the result is written under the adversarial task's own name, so nothing is ever overwritten (trap 3).
When the clean task's result exists and was computed from the same prompts, data cap and options, its TRAIN
baseline is reused instead of recomputed (the sidecar says so).

Also the helpers launch/suppress.py shares: loading prompts with clear errors, batches, the capturing forward.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import time
from typing import Any, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from launch import common
from skillneurons_jax import io as sio
from skillneurons_jax import parallel
from skillneurons_jax.data import batches as batching
from skillneurons_jax.data import tasks
from skillneurons_jax.models.ffn import Capture
from skillneurons_jax.neurons import predictivity as P
from skillneurons_jax.neurons.stats_options import StatsOptions
from skillneurons_jax.prompt import metrics as mx

log = logging.getLogger(__name__)

PROMPT_FILE = "prompt.npy"
DECODER_PREFIX = "decoder_"
# configs/tune.py fields that change what the model computes (so a baseline may only be shared when they match).
READOUT_CONFIG = ("readout", "mask_slot", "prefix_positions", "tied_scale")
# Stream name -> prefix of its arrays in the npz.
STREAM_PREFIX = {"encoder": "", "decoder": DECODER_PREFIX}


# ------------------------------------------------------------------------------------------- shared helpers

def prompt_path(workdir, model: str, task: str, seed: int) -> pathlib.Path:
    return pathlib.Path(workdir) / "prompts" / model / task / f"seed_{seed}" / PROMPT_FILE


def predictivity_path(workdir, model: str, task: str) -> pathlib.Path:
    return pathlib.Path(workdir) / "predictivity" / model / f"{task}.npz"


def clean_task_of(task: str) -> str:
    """The task whose TRAIN split and prompt an (adversarial) task uses; the task itself for clean tasks."""
    return tasks.get_task(task).clean_task or tasks.get_task(task).name


# Prompt sidecar field (written by launch.tune) -> how to read the same setting off this run's readout/config.
READOUT_SETTINGS = {
    "readout": lambda setup, cfg: setup.readout.kind.name,
    "mask_slot": lambda setup, cfg: setup.readout.mask_slot,
    "prefix_positions": lambda setup, cfg: setup.readout.prefix_positions,
    "tied_scale": lambda setup, cfg: float(cfg["tied_scale"]),
    "max_text_tokens": lambda setup, cfg: int(cfg["max_text_tokens"]),
}


def load_prompts(workdir, setup: common.Setup, task: str, seeds: Sequence[int], config=None
                 ) -> tuple[np.ndarray, list[str]]:
    """The tuned prompts of `task` for `seeds` -> (float32 [S, P, H], sha256 of each file).

    Errors name the file: a missing prompt (tune first), a prompt whose width is not the model's hidden size or
    whose sidecar names another model (a prompt tuned for another model), a prompt tuned with other readout
    settings than `config` gives (its activations would not be the ones it was tuned with), seeds with different
    prompt lengths."""
    loaded = setup.loaded
    cfg = default_config() if config is None else config
    hidden = int(loaded.config.hidden)
    prompts, digests = [], []
    for seed in seeds:
        path = prompt_path(workdir, loaded.name, task, seed)
        if not path.exists():
            raise FileNotFoundError(
                f"no tuned prompt for task {task!r}, seed {seed}, model {loaded.name!r}: {path} does not exist; "
                f"run `python -m launch.tune --task {task} --seeds {seed} ...` first")
        data = path.read_bytes()
        prompt = np.load(path, allow_pickle=False)
        if prompt.ndim != 2 or prompt.shape[1] != hidden:
            raise ValueError(f"{path}: prompt of shape {prompt.shape} does not fit model {loaded.name!r} "
                             f"(hidden size {hidden}); it was tuned for another model")
        side = sio.sidecar_path(path)
        if side.exists():
            meta = json.loads(side.read_text())
            model = meta.get("model")
            if model is not None and str(model) != loaded.name:
                raise ValueError(f"{path}: the prompt was tuned for model {model!r} (its sidecar {side} says so), "
                                 f"not for {loaded.name!r}")
            for key, now in READOUT_SETTINGS.items():
                if key in meta and meta[key] != now(setup, cfg):
                    raise ValueError(f"{path}: the prompt was tuned with {key}={meta[key]!r} but this run uses "
                                     f"{now(setup, cfg)!r}; pass --config.{key}={meta[key]} (as in tuning)")
        prompts.append(prompt.astype(np.float32))
        digests.append(hashlib.sha256(data).hexdigest())
    lengths = {p.shape[0] for p in prompts}
    if len(lengths) != 1:
        raise ValueError(f"the prompts of task {task!r} for seeds {list(seeds)} have different lengths "
                         f"{sorted(lengths)}")
    return np.stack(prompts), digests


def default_config():
    """configs/tune.py: the readout and data settings prompts are tuned with (eval_batch_size 64, the original's)."""
    from configs import tune
    return tune.get_config()


def encode_split(setup: common.Setup, task: str, split: str, data_dir, max_examples: Optional[int],
                 max_text_tokens: int) -> batching.Encoded:
    """A split of `task` (which may differ from setup.task: the clean TRAIN of an adversarial task)."""
    examples = tasks.load_split(task, split, data_dir, max_examples=max_examples)
    if not examples:
        raise ValueError(f"task {task!r}: the {split} split is empty")
    return batching.encode(examples, setup.loaded.tokenizer, task, setup.loaded.family,
                           max_text_tokens=max_text_tokens)


def batches(encoded: batching.Encoded, batch_size: int, mesh, fixed_length: Optional[int] = None, *,
            sort_by_length: bool = False, buckets: Optional[Sequence[int]] = None) -> Iterator[dict]:
    """Batches of the global batch size (filler rows flagged), made lazily (memory does not grow with the split).
    fixed_length: every batch gets exactly that many token positions (needed when every position is captured,
    so that the statistics keep one shape); otherwise `buckets` (default: the data module's). File order, or
    with sort_by_length rows sorted longest first within chunks of 32 batches (batches.iterate), so that each
    batch pads only to the bucket of rows of similar length (the statistics are sums and counts: the order
    changes at most the float32 rounding of the TRAIN sums)."""
    n = parallel.num_data_shards(mesh)
    parallel.check_divisible(batch_size, mesh, what="evaluation batch size (config eval_batch_size)")
    kw = {} if buckets is None else {"buckets": tuple(int(b) for b in buckets)}
    if fixed_length is not None:
        kw = {"buckets": (int(fixed_length),)}
    if fixed_length is not None and int(encoded.lengths.max()) > fixed_length:
        raise ValueError(f"task {encoded.task!r}: a text of {int(encoded.lengths.max())} tokens is longer than the "
                         f"{fixed_length} token positions the statistics were started with")
    for b in batching.iterate(encoded, batch_size, seed=None, num_devices=n, sort_by_length=sort_by_length, **kw):
        yield {k: b[k] for k in common.MODEL_KEYS}


def make_forward(readout, capture: Optional[Capture], decoder_capture: Optional[Capture]):
    """jit: (params, prompts [S, P, H], batch) -> (scores [S, B, C], {"encoder": [S, L, B, T, N], ...}).

    All seeds in one call (vmap over prompts); the batch axis of the activations stays sharded as the batch is."""

    def one(params, prompt, batch):
        kw = {} if decoder_capture is None else {"decoder_capture": decoder_capture}
        scores, out = readout.scores(params, prompt, batch, capture=capture, **kw)
        streams = {}
        if capture is not None:
            streams["encoder"] = out.neurons
        if decoder_capture is not None:
            streams["decoder"] = out.decoder_neurons
        return scores, streams

    @jax.jit
    def forward(params, prompts, batch):
        return jax.vmap(one, in_axes=(None, 0, None))(params, prompts, batch)

    return forward


# ------------------------------------------------------------------------------------------ this stage

@dataclasses.dataclass
class PredictivityRun:
    """One predictivity stage. `config`: the readout / data settings the prompts were tuned with (configs/tune.py
    fields readout, mask_slot, prefix_positions, tied_scale, max_text_tokens, eval_batch_size; default that file)."""
    model_path: str
    task: str
    data_dir: str
    seeds: Sequence[int]
    workdir: str
    max_examples: Optional[int] = None
    batch_size: Optional[int] = None        # default: config.eval_batch_size
    options: StatsOptions = StatsOptions()
    config: Any = None
    baseline_task: Optional[str] = None     # default: the clean task (the task itself for clean tasks)
    prompt_task: Optional[str] = None       # default: the clean task
    decoder: bool = True                    # T5: also the first decoder step
    reuse_baseline: bool = True


def _fixed_length(*encoded: batching.Encoded) -> int:
    return int(max(int(e.lengths.max()) for e in encoded))


def _blocks(forward, params, prompts, batch_seq, mesh, prompt_len: int, positions: str,
            confusion: Optional[list] = None) -> Iterator[dict]:
    """Runs the capturing forward over batches and yields {stream: ActivationBlock}."""
    for batch in batch_seq:
        dev = parallel.shard_batch(batch, mesh)
        scores, streams = forward(params, prompts, dev)
        if confusion is not None:
            labels = jnp.broadcast_to(dev["labels"], scores.shape[:-1])
            mask = jnp.broadcast_to(dev["example_mask"], scores.shape[:-1])
            confusion.append(np.asarray(P.to_host(mx.confusion(scores, labels, mask))))
        out = {}
        for name, acts in streams.items():
            token_mask = None
            if positions == "all" and name == "encoder":
                token_mask = jnp.concatenate(
                    [jnp.ones((dev["attention_mask"].shape[0], prompt_len), bool),
                     dev["attention_mask"].astype(bool)], axis=1)
            out[name] = P.ActivationBlock(acts, dev["example_mask"], dev["labels"], token_mask)
        yield out


def _train_fingerprint(run: PredictivityRun, cfg, loaded, baseline_task, prompt_task, digests, streams) -> dict:
    """Everything that determines a TRAIN baseline: equal fingerprints may share it."""
    o = run.options
    return {"model": loaded.name, "baseline_task": baseline_task, "prompt_task": prompt_task,
            "seeds": [int(s) for s in run.seeds], "prompt_sha256": list(digests), "max_examples": run.max_examples,
            "max_text_tokens": int(cfg["max_text_tokens"]), "readout": {k: cfg[k] for k in READOUT_CONFIG},
            "positions": o.positions, "pre_activation": o.pre_activation,
            "threshold": o.threshold, "median_bins": o.median_bins, "median_max_passes": o.median_max_passes,
            "streams": sorted(streams)}


def _reusable_train(workdir, model: str, fingerprint: dict) -> Optional[dict[str, P.TrainSummary]]:
    """The TRAIN summaries of an earlier result with the same fingerprint (the clean task's own run), or None."""
    path = predictivity_path(workdir, model, fingerprint["baseline_task"])
    side = sio.sidecar_path(path)
    if not (path.exists() and side.exists()):
        return None
    try:
        meta = json.loads(side.read_text())
        if meta.get("train_fingerprint") != fingerprint:
            return None
        out = {}
        with np.load(path, allow_pickle=False) as z:
            for name in fingerprint["streams"]:
                pre = STREAM_PREFIX[name]
                base = np.asarray(z[pre + "baseline"])
                thr = np.asarray(z[pre + "threshold"]) if pre + "threshold" in z.files else base
                info = meta["streams"][name]
                out[name] = P.TrainSummary(base, thr, int(meta["n_train"]), info.get("median_passes", 0),
                                           info.get("median_width", 0.0))
        return out
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        log.warning("cannot reuse the TRAIN baseline in %s (%s); recomputing", path, e)
        return None


def run_predictivity(run: PredictivityRun) -> pathlib.Path:
    t0 = time.time()
    seeds = [int(s) for s in run.seeds]
    spec = tasks.get_task(run.task)
    baseline_task = run.baseline_task or clean_task_of(spec.name)
    prompt_task = run.prompt_task or clean_task_of(spec.name)
    cfg = default_config() if run.config is None else run.config
    setup = common.setup_model_and_task(run.model_path, spec.name, cfg)
    loaded, readout = setup.loaded, setup.readout
    prompts_np, digests = load_prompts(run.workdir, setup, prompt_task, seeds, cfg)
    prompt_len = prompts_np.shape[1]
    opts = run.options
    batch_size = int(run.batch_size or cfg["eval_batch_size"])
    max_text_tokens = int(cfg["max_text_tokens"])
    streams = ["encoder"] + (["decoder"] if loaded.family == "t5" and run.decoder else [])
    length = None if opts.positions == "all" else prompt_len
    capture = Capture(start=0, length=length, pre_activation=opts.pre_activation)
    dec_capture = (Capture(start=0, length=1, pre_activation=opts.pre_activation)
                   if "decoder" in streams else None)
    forward = make_forward(readout, capture, dec_capture)

    mesh = parallel.make_mesh()
    params = parallel.replicate(loaded.params, mesh)
    prompts = parallel.replicate(jnp.asarray(prompts_np), mesh)

    dev_enc = encode_split(setup, spec.name, "dev", run.data_dir, run.max_examples, max_text_tokens)
    fingerprint = _train_fingerprint(run, cfg, loaded, baseline_task, prompt_task, digests, streams)
    reused = _reusable_train(run.workdir, loaded.name, fingerprint) if (
        run.reuse_baseline and baseline_task != spec.name) else None
    train_enc = None
    if reused is None:
        train_enc = encode_split(setup, baseline_task, "train", run.data_dir, run.max_examples, max_text_tokens)
    # Every position captured: one fixed length for TRAIN and DEV, so the statistics keep one shape.
    fixed = None
    if opts.positions == "all":
        if reused is not None:
            fixed = int(reused["encoder"].baseline.shape[2]) - prompt_len
        else:
            fixed = _fixed_length(train_enc, dev_enc)

    # Sorted by length, buckets cut at the longest row: a batch pads to the bucket of rows of similar length and
    # never past the longest text (sums and counts do not need file order).
    buckets = common.buckets_for([e for e in (train_enc, dev_enc) if e is not None])

    def blocks(enc, confusion=None):
        return _blocks(forward, params, prompts, batches(enc, batch_size, mesh, fixed, sort_by_length=True,
                                                         buckets=buckets),
                       mesh, prompt_len, opts.positions, confusion)

    if reused is None:
        train = P.summarize_train(lambda: blocks(train_enc), opts)
    else:
        train = reused
        log.info("reusing the TRAIN baseline of %s", predictivity_path(run.workdir, loaded.name, baseline_task))
    confusion: list = []
    stats = P.evaluate_dev(train, blocks(dev_enc, confusion), opts, split=f"{spec.name} dev")
    conf = np.sum(confusion, axis=0)   # [S, C, C]

    arrays = {}
    for name, st in stats.items():
        pre = STREAM_PREFIX[name]
        arrays.update({pre + "pred": st.pred, pre + "pred_per_seed": st.pred_per_seed, pre + "acc": st.acc,
                       pre + "baseline": st.baseline})
        if opts.threshold != "mean":
            arrays[pre + "threshold"] = st.threshold
    out = predictivity_path(run.workdir, loaded.name, spec.name)
    enc = stats["encoder"]
    meta = {
        "stage": "predictivity", "model": loaded.name, "model_path": str(run.model_path), "family": loaded.family,
        "task": spec.name, "baseline_task": baseline_task, "prompt_task": prompt_task, "seeds": seeds,
        "n_train": enc.n_train, "n_dev": enc.n_dev, "dev_label_counts": enc.dev_label_counts.tolist(),
        "model_accuracy": mx.accuracy(conf).tolist(), "model_f1": mx.f1(conf).tolist(),
        "prompt_len": prompt_len, "batch_size": batch_size, "max_examples": run.max_examples,
        "options": opts.to_dict(), "config": {k: cfg[k] for k in READOUT_CONFIG + ("max_text_tokens",)},
        "streams": {name: {"tokens": int(st.acc.shape[2]), "median_passes": st.median_passes,
                           "median_width": st.median_width} for name, st in stats.items()},
        "train_fingerprint": fingerprint, "reused_baseline_from": (
            str(predictivity_path(run.workdir, loaded.name, baseline_task)) if reused is not None else None),
        "seconds": round(time.time() - t0, 3), "devices": jax.device_count(), "processes": jax.process_count(),
    }
    if jax.process_index() == 0:
        sio.atomic_save_npz(out, **arrays)
        sio.write_sidecar(out, **meta)
    print(json.dumps({"output": str(out), "task": spec.name, "baseline_task": baseline_task,
                      "model_accuracy": meta["model_accuracy"], "top_pred": float(enc.pred.max()),
                      "seconds": meta["seconds"]}))
    return out


# ------------------------------------------------------------------------------------------------ flags

def stats_options(config=None) -> StatsOptions:
    """config.stats (when the config has that block), then the statistics flags that were given."""
    block = config.get("stats") if config is not None else None
    base = dict(block.items()) if block is not None else {}
    for field in ("positions", "threshold", "token_aggregation", "seed_aggregation", "pre_activation",
                  "median_bins", "median_max_passes"):
        value = getattr(flags.FLAGS, field, None)
        if value is not None:
            base[field] = value
    return StatsOptions.from_mapping(base)


def define_stage_flags() -> None:
    """Flags of the neuron stages beyond launch/common.py's (which defines --model_path ... --max_examples)."""
    flags.DEFINE_string("prompt_task", None, "task whose tuned prompts to use (default: the clean task)")
    flags.DEFINE_integer("batch_size", None, "evaluation batch (default: config eval_batch_size)")


def _define_flags() -> None:
    common.define_config("tune.py")
    define_stage_flags()
    flags.DEFINE_string("baseline_task", None, "task whose TRAIN split gives the baseline (default: the clean task)")
    flags.DEFINE_enum("positions", None, ["prompt", "all"], "token positions of the statistics")
    flags.DEFINE_enum("threshold", None, ["mean", "median"], "per-neuron threshold of eq. 3")
    flags.DEFINE_enum("token_aggregation", None, ["max", "mean"], "aggregation over tokens (eq. 5: max)")
    flags.DEFINE_enum("seed_aggregation", None, ["mean", "min"], "aggregation over seeds (eq. 5: mean)")
    flags.DEFINE_bool("pre_activation", None, "capture the FFN pre-activation instead of the post-activation")
    flags.DEFINE_integer("median_bins", None, "median search: bins per pass")
    flags.DEFINE_integer("median_max_passes", None, "median search: most passes over TRAIN")
    flags.DEFINE_bool("decoder", True, "T5: also the first decoder step")
    flags.DEFINE_bool("reuse_baseline", True, "reuse the clean task's TRAIN baseline when it matches")


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    common.require("model_path", "task", "data_dir", "workdir")
    common.start_distributed()
    run_predictivity(PredictivityRun(
        model_path=f.model_path, task=f.task, data_dir=f.data_dir, seeds=common.parse_seeds(f.seeds),
        workdir=f.workdir, max_examples=f.max_examples, batch_size=f.batch_size, options=stats_options(f.config),
        config=f.config, baseline_task=f.baseline_task, prompt_task=f.prompt_task, decoder=f.decoder,
        reuse_baseline=f.reuse_baseline))


if __name__ == "__main__":
    _define_flags()
    common.run(main)
