"""Stage predictivity: skill-neuron predictivity of a task's tuned prompts (eqs. 2-5), streamed over the data.

    summary = predictivity(setup, workdir, data_dir, seeds, model_path=path, max_text_tokens=128,
                           eval_batch_size=64, options=StatsOptions())

Reads   WORKDIR/prompts/<model>/<prompt task>/seed_<s>/prompt.npy   [P, H], one per seed (all seeds in one pass)
Writes  WORKDIR/predictivity/<model>/<task>.npz (atomically) with
          pred [L, N], pred_per_seed [S, L, N], acc [S, L, T, N], baseline [S, L, T, N],
          baseline_sq [S, L, T, N] (TRAIN mean of a^2: the Gaussian scale relative to the train std)
          (+ threshold [S, L, T, N] when the threshold is the median)
          (+ decoder_pred, decoder_pred_per_seed, decoder_acc, decoder_baseline for T5: the first decoder step)
          (+ with options.label_permutations = R > 0, the label-permutation null counted in the same DEV pass:
             null_pred [R, L, N], null_pred_layer_mean [R, L] (Pred's floor), null_pred_layer_max [R, L],
             null_pred_max [R],
             null_pred_per_seed_max [R, S]; with options.subsample_sizes, Pred at matched n: matched_n [M],
             matched_pred [M, L, N], matched_pred_per_seed [M, S, L, N]; column_arrays)
        and its sidecar <task>.npz.json: task, baseline task, prompt task, split sizes, seeds, the model's accuracy
        and F1 per seed on the dev split (`model_accuracy`, `model_f1`), the options, prompt hashes.

Adversarial tasks (advsst2, ...) take the baseline from their CLEAN task's TRAIN split and the prompt tuned on the
clean task; the result is written under the adversarial task's own name, so nothing is ever overwritten (trap 3).
When the clean task's result exists and was computed from the same prompts, data cap and options, its TRAIN
baseline is reused instead of recomputed (the sidecar says so).
"""
from __future__ import annotations

import json
import logging
import time
from io import BytesIO
from typing import Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax import io, layout, parallel
from skillneurons_jax.analysis.report_context import Section
from skillneurons_jax.analysis.sections import predictivity as predictivity_section
from skillneurons_jax.analysis.sections import specificity as specificity_section
from skillneurons_jax.data import batches as batching
from skillneurons_jax.data import tasks
from skillneurons_jax.models.ffn import Capture
from skillneurons_jax.neurons import predictivity as statistics
from skillneurons_jax.neurons.stats_options import StatsOptions
from skillneurons_jax.prompt import eval_loop, files, metrics, scoring
from skillneurons_jax.stages import registry
from skillneurons_jax.stages.setup import MODEL_KEYS, TaskSetup, buckets_for, encode_split, hold, sharded_batches

log = logging.getLogger(__name__)

DECODER_PREFIX = "decoder_"
# Stream name -> prefix of its arrays in the npz.
STREAM_PREFIX = {"encoder": "", "decoder": DECODER_PREFIX}


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


def _fixed_length(*encoded: batching.Encoded) -> int:
    return int(max(int(e.lengths.max()) for e in encoded))


def _blocks(forward, params, prompts, batch_seq, mesh, prompt_len: int, positions: str,
            confusion: Optional[list] = None, columns: Optional[np.ndarray] = None) -> Iterator[dict]:
    """Runs the capturing forward over batches and yields {stream: ActivationBlock}; with `confusion`, appends
    each batch's counts [S, C, C] (scoring.seed_confusion: the model's accuracy on the same pass); with
    `columns` int [E, C] (statistics.label_columns, rows in file order), each block carries its rows' columns
    (the batches must then hold "index")."""
    def step(placed):
        block_columns = None
        if columns is not None:
            index = np.asarray(placed.host["index"])
            block_columns = parallel.shard_batch(
                {"columns": np.where(index[:, None] >= 0, columns[np.maximum(index, 0)], -1).astype(np.int32)},
                mesh)["columns"]
        return block_columns, forward(params, prompts, placed.device)

    # the statistics accumulate on the devices: each batch's blocks are handed to them as they come
    for placed, (block_columns, (scores, streams)) in eval_loop.outputs(step, batch_seq, mesh):
        on_mesh = placed.device
        if confusion is not None:
            confusion.append(np.asarray(statistics.to_host(
                scoring.seed_confusion(scores, on_mesh["labels"], on_mesh["example_mask"]))))
        out = {}
        for name, acts in streams.items():
            token_mask = None
            if positions == "all" and name == "encoder":
                token_mask = jnp.concatenate(
                    [jnp.ones((on_mesh["attention_mask"].shape[0], prompt_len), bool),
                     on_mesh["attention_mask"].astype(bool)], axis=1)
            out[name] = statistics.ActivationBlock(acts, on_mesh["example_mask"], on_mesh["labels"], token_mask,
                                                   block_columns)
        yield out


def column_arrays(stats: statistics.NeuronStatistics, sizes: np.ndarray, permutations: int) -> dict:
    """The npz arrays of the label columns (none without columns): the null's summary (statistics.null_summary:
    null_pred [R, L, N], null_pred_layer_mean / null_pred_layer_max [R, L], null_pred_max [R],
    null_pred_per_seed_max [R, S]) and the
    matched-n Pred, averaged over draws per size: matched_n int [M], matched_pred [M, L, N],
    matched_pred_per_seed [M, S, L, N]."""
    if stats.column_pred is None:
        return {}
    out = {}
    r = int(permutations)
    if r:
        out.update(statistics.null_summary(stats.column_pred[:r], stats.column_pred_per_seed[:r]))
    rest = np.asarray(sizes[r:])
    if rest.size:
        matched = sorted(set(rest.tolist()))
        out["matched_n"] = np.asarray(matched, np.int32)
        out["matched_pred"] = np.stack([stats.column_pred[r:][rest == m].mean(0) for m in matched]
                                       ).astype(np.float32)
        out["matched_pred_per_seed"] = np.stack([stats.column_pred_per_seed[r:][rest == m].mean(0)
                                                 for m in matched]).astype(np.float32)
    return out


def train_fingerprint(setup: TaskSetup, *, seeds, max_examples, max_text_tokens: int, options: StatsOptions,
                      baseline_task: str, prompt_task: str, digests, streams) -> dict:
    """Everything that determines a TRAIN baseline: equal fingerprints may share it."""
    return {"model": setup.loaded.name, "baseline_task": baseline_task, "prompt_task": prompt_task,
            "seeds": [int(s) for s in seeds], "prompt_sha256": list(digests), "max_examples": max_examples,
            "max_text_tokens": int(max_text_tokens), "readout": setup.readout_settings.to_dict(),
            "positions": options.positions, "pre_activation": options.pre_activation,
            "threshold": options.threshold, "median_bins": options.median_bins,
            "median_max_passes": options.median_max_passes, "streams": sorted(streams),
            # the label columns change the npz (not the baseline): a result without them is not this computation
            **({"label_columns": {"label_permutations": options.label_permutations,
                                  "subsample_sizes": list(options.subsample_sizes),
                                  "subsample_draws": options.subsample_draws,
                                  "permutation_seed": options.permutation_seed}}
               if options.label_permutations or options.subsample_sizes else {})}


def _reusable_train(workdir, model: str, fingerprint: dict) -> Optional[dict[str, statistics.TrainSummary]]:
    """The TRAIN summaries of an earlier result with the same fingerprint (the clean task's own run), or None."""
    path = layout.predictivity_path(workdir, model, fingerprint["baseline_task"])
    side = io.sidecar_path(path)
    if not (path.exists() and side.exists()):
        return None
    try:
        meta = json.loads(side.read_text())
        if meta.get("train_fingerprint") != fingerprint:
            return None
        out = {}
        # the bytes its records vouch for (io.read_verified), read once: a result edited since is not reused
        with np.load(BytesIO(io.read_verified(workdir, path)), allow_pickle=False) as z:
            for name in fingerprint["streams"]:
                prefix = STREAM_PREFIX[name]
                base = np.asarray(z[prefix + "baseline"])
                threshold = np.asarray(z[prefix + "threshold"]) if prefix + "threshold" in z.files else base
                info = meta["streams"][name]
                square = np.asarray(z[prefix + "baseline_sq"]) if prefix + "baseline_sq" in z.files else None
                out[name] = statistics.TrainSummary(base, threshold, int(meta["n_train"]),
                                                    info.get("median_passes", 0), info.get("median_width", 0.0),
                                                    baseline_sq=square)
        return out
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        log.warning("cannot reuse the TRAIN baseline in %s (%s); recomputing", path, e)
        return None


def _copy_same_result(source_root, workdir, model: str, task: str, fingerprint: dict, n_dev: int,
                      model_path: str) -> Optional[dict]:
    """Copies source_root's result for (model, task) to `workdir` when it is this computation: the same
    train_fingerprint (prompts by hash, seeds, baseline and prompt task, caps, readout, options), dev size and
    model path (the data directory is the plan's). Returns the stage's summary, or None (nothing written)."""
    source = layout.predictivity_path(source_root, model, task)
    side = io.sidecar_path(source)
    if not (source.exists() and side.exists()):
        return None
    try:
        io.inside(source_root, side)
        meta = json.loads(side.read_text(encoding="utf-8"))
    except io.OutsideFolder as err:
        log.warning("predictivity %s/%s under %s: not copied (%s); computing it here", model, task, workdir, err)
        return None
    except (OSError, ValueError) as err:         # a corrupt source is no reason to stop: computed here instead
        log.warning("predictivity %s/%s under %s: not copied from %s (unreadable sidecar: %s)", model, task,
                    workdir, source, err)
        return None
    if not isinstance(meta, dict):
        log.warning("predictivity %s/%s under %s: not copied from %s (its sidecar is not a JSON object)", model,
                    task, workdir, source)
        return None
    same = (meta.get("train_fingerprint") == io.as_written(fingerprint) and meta.get("n_dev") == int(n_dev)
            and io.folder_key(meta.get("model_path")) == io.folder_key(model_path))
    if not same:
        log.info("predictivity %s/%s under %s: not copied from %s (another computation)", model, task, workdir,
                 source)
        return None
    try:     # the integrity rule (docs/interfaces.md): only bytes the source's own records vouch for are copied
        data = io.read_verified(source_root, source)
    except (io.OutsideFolder, io.Unverified) as err:
        log.warning("predictivity %s/%s under %s: not copied (%s); computing it here", model, task, workdir, err)
        return None
    out = layout.predictivity_path(workdir, model, task)
    if jax.process_index() == 0:
        io.atomic_write_bytes(out, data)
        io.write_sidecar(out, **io.copied_meta(source, meta))
    return {"output": str(out), "task": task, "baseline_task": meta.get("baseline_task"),
            "model_accuracy": meta.get("model_accuracy"), "top_pred": None, "copied_from": str(source)}


def predictivity(setup: TaskSetup, workdir, data_dir, seeds: Sequence[int], *, model_path, max_text_tokens: int,
                 eval_batch_size: int, options: StatsOptions = StatsOptions(), max_examples: Optional[int] = None,
                 batch_size: Optional[int] = None, baseline_task: Optional[str] = None,
                 prompt_task: Optional[str] = None, decoder: bool = True, reuse_baseline: bool = True,
                 reuse_from=None, control_for: Optional[str] = None,
                 dev_transform: Optional[Callable[[list], list]] = None, dev_record: Optional[dict] = None,
                 output=None) -> dict:
    """Computes and writes the predictivity of `setup.task` (see the module docstring); returns a summary dict
    ({"output", "task", "baseline_task", "model_accuracy", "top_pred", "seconds"}).

    `max_text_tokens` and the readout of `setup` must be the prompts' tuning settings (checked against their
    sidecars). baseline_task / prompt_task default to the clean task; batch_size to eval_batch_size; decoder:
    T5 also captures the first decoder step. `model_path` is recorded in the sidecar. `reuse_from`: another
    workdir-shaped root whose result of this task is the same computation (the robustness study's plain arm and
    the main study): copied instead of computed (_copy_same_result says when).

    control_for: an adversarial task A; the result is then F6a's control pair of A, written to
    layout.control_predictivity_path(workdir, model, A): `setup.task` is an unrelated clean task whose dev split,
    capped at A's dev size, is scored with the prompts and TRAIN baseline of A's clean task (baseline_task and
    prompt_task default to it), so that the correlation the shared prompt and baseline give by themselves can be
    measured (analysis.verdicts.f6_correlation).

    dev_transform: [E] examples -> [E] examples applied to the dev rows before they are encoded (stages.setup
    encode_split's `transform`; e.g. a perturbed copy: robust_perturbed_predictivity); it needs `output` (another
    file than the task's result) and `dev_record` (what the transform is, for the sidecar's "dev_transform"). The
    result is never copied from `reuse_from`; the TRAIN baseline of the task's own result under `workdir` is
    reused when it is the same computation."""
    if dev_transform is not None:
        if output is None or dev_record is None:
            raise ValueError("predictivity with a dev_transform needs an output path and a dev_record: it must "
                             "not overwrite the task's own result")
        if control_for is not None:
            raise ValueError("predictivity: dev_transform and control_for do not combine")
    elif output is not None or dev_record is not None:
        raise ValueError("predictivity: output and dev_record go with a dev_transform")
    if control_for is not None:
        clean = tasks.clean_task_of(tasks.get_task(control_for))
        if clean == control_for:
            raise ValueError(f"control_for={control_for!r} is not an adversarial task")
        related = (clean, control_for, prompt_task or clean)     # an adversarial set may use another clean prompt
        if tasks.clean_task_of(setup.task) in related or setup.task.name in related:
            raise ValueError(f"the control set of {control_for!r} must be unrelated to it; got {setup.task.name!r}")
        baseline_task, prompt_task = baseline_task or clean, prompt_task or clean
        output = layout.control_predictivity_path(workdir, setup.loaded.name, control_for)
    elif output is None:
        output = layout.predictivity_path(workdir, setup.loaded.name, setup.task.name)
    with hold(output, f"predictivity {setup.loaded.name}/{setup.task.name}"):
        return _predictivity(setup, workdir, data_dir, seeds, model_path=model_path, max_text_tokens=max_text_tokens,
                             eval_batch_size=eval_batch_size, options=options, max_examples=max_examples,
                             batch_size=batch_size, baseline_task=baseline_task, prompt_task=prompt_task,
                             decoder=decoder, reuse_baseline=reuse_baseline,
                             reuse_from=None if (control_for or dev_transform) else reuse_from,
                             control_for=control_for, output=output, dev_transform=dev_transform,
                             dev_record=dev_record)


def _predictivity(setup: TaskSetup, workdir, data_dir, seeds: Sequence[int], *, model_path, max_text_tokens: int,
                  eval_batch_size: int, options: StatsOptions, max_examples: Optional[int], batch_size: Optional[int],
                  baseline_task: Optional[str], prompt_task: Optional[str], decoder: bool, reuse_baseline: bool,
                  reuse_from=None, control_for: Optional[str] = None, output=None,
                  dev_transform: Optional[Callable[[list], list]] = None, dev_record: Optional[dict] = None) -> dict:
    """The body of `predictivity`, run while its output is held."""
    t0 = time.time()
    seeds = [int(s) for s in seeds]
    spec = setup.task
    baseline_task = baseline_task or tasks.clean_task_of(spec)
    prompt_task = prompt_task or tasks.clean_task_of(spec)
    loaded, readout = setup.loaded, setup.readout
    prompts_np, digests = files.load_tuned_prompts(workdir, loaded, readout, prompt_task, seeds, max_text_tokens)
    prompt_len = prompts_np.shape[1]
    batch_size = int(batch_size or eval_batch_size)
    max_text_tokens = int(max_text_tokens)
    streams = ["encoder"] + (["decoder"] if loaded.family == "t5" and decoder else [])
    length = None if options.positions == "all" else prompt_len
    capture = Capture(start=0, length=length, pre_activation=options.pre_activation)
    decoder_capture = (Capture(start=0, length=1, pre_activation=options.pre_activation)
                       if "decoder" in streams else None)
    forward = make_forward(readout, capture, decoder_capture)

    mesh = parallel.make_mesh()
    params = parallel.replicate(loaded.params, mesh)
    prompts = parallel.replicate(jnp.asarray(prompts_np), mesh)

    dev_cap = max_examples
    if control_for is not None:      # the control set has the adversarial set's size
        n_control = len(encode_split(setup, "dev", data_dir, max_examples, max_text_tokens, task=control_for))
        dev_cap = n_control if max_examples is None else min(int(max_examples), n_control)
    dev_enc = encode_split(setup, "dev", data_dir, dev_cap, max_text_tokens, transform=dev_transform)
    if control_for is not None and len(dev_enc) < dev_cap:
        raise ValueError(f"control set {spec.name!r} has {len(dev_enc)} dev rows, fewer than {control_for!r}'s "
                         f"{dev_cap}: the control pair needs the same size")
    fingerprint = train_fingerprint(setup, seeds=seeds, max_examples=max_examples, max_text_tokens=max_text_tokens,
                                    options=options, baseline_task=baseline_task, prompt_task=prompt_task,
                                    digests=digests, streams=streams)
    if reuse_from is not None:
        copied = _copy_same_result(reuse_from, workdir, loaded.name, spec.name, fingerprint, len(dev_enc),
                                   str(model_path))
        if copied is not None:
            return {**copied, "seconds": round(time.time() - t0, 3)}
    # an adversarial set, or a transformed dev of the task itself, reuses the TRAIN baseline of the baseline task's
    # own result when it is the same computation
    reused = _reusable_train(workdir, loaded.name, fingerprint) if (
        reuse_baseline and (baseline_task != spec.name or dev_transform is not None)) else None
    train_enc = None
    if reused is None:
        train_enc = encode_split(setup, "train", data_dir, max_examples, max_text_tokens, task=baseline_task)
    # Every position captured: one fixed length for TRAIN and DEV, so the statistics keep one shape.
    fixed = None
    if options.positions == "all":
        if reused is not None:
            fixed = int(reused["encoder"].baseline.shape[2]) - prompt_len
        else:
            fixed = _fixed_length(train_enc, dev_enc)

    # Sorted by length, buckets cut at the longest row: a batch pads to the bucket of rows of similar length and
    # never past the longest text (sums and counts do not need file order).
    buckets = buckets_for([e for e in (train_enc, dev_enc) if e is not None])

    def blocks(encoded, confusion=None, columns=None):
        keys = MODEL_KEYS + (("index",) if columns is not None else ())
        return _blocks(forward, params, prompts, sharded_batches(encoded, batch_size, mesh, fixed,
                                                                 sort_by_length=True, buckets=buckets, keys=keys),
                       mesh, prompt_len, options.positions, confusion, columns)

    if reused is None:
        train = statistics.summarize_train(lambda: blocks(train_enc), options)
    else:
        train = reused
        log.info("reusing the TRAIN baseline of %s", layout.predictivity_path(workdir, loaded.name, baseline_task))
    confusion: list = []
    # The label-permutation null and the matched-n subsamples: extra label columns counted in the same DEV pass.
    columns, column_sizes = statistics.label_columns(dev_enc.labels, options.label_permutations,
                                                     options.subsample_sizes, options.subsample_draws,
                                                     options.permutation_seed)
    stats = statistics.evaluate_dev(train, blocks(dev_enc, confusion, columns if columns.shape[1] else None),
                                    options, split=f"{spec.name} dev")
    confusion = np.sum(confusion, axis=0)   # [S, C, C]

    arrays = {}
    for name, stream_stats in stats.items():
        prefix = STREAM_PREFIX[name]
        arrays.update({prefix + "pred": stream_stats.pred, prefix + "pred_per_seed": stream_stats.pred_per_seed,
                       prefix + "acc": stream_stats.acc, prefix + "baseline": stream_stats.baseline})
        if options.threshold != "mean":
            arrays[prefix + "threshold"] = stream_stats.threshold
        if stream_stats.baseline_sq is not None:
            arrays[prefix + "baseline_sq"] = stream_stats.baseline_sq
        arrays.update({prefix + k: v for k, v in column_arrays(stream_stats, column_sizes,
                                                              options.label_permutations).items()})
    out = output or layout.predictivity_path(workdir, loaded.name, spec.name)
    encoder = stats["encoder"]
    meta = {
        "stage": "predictivity", "model": loaded.name, "model_path": str(model_path), "family": loaded.family,
        "task": spec.name, "baseline_task": baseline_task, "prompt_task": prompt_task, "seeds": seeds,
        **({"control_for": control_for} if control_for else {}),
        **({"dev_transform": dev_record} if dev_transform is not None else {}),
        "n_train": encoder.n_train, "n_dev": encoder.n_dev, "dev_label_counts": encoder.dev_label_counts.tolist(),
        "model_accuracy": metrics.accuracy(confusion).tolist(), "model_f1": metrics.f1(confusion).tolist(),
        "model_confusion": confusion.astype(int).tolist(),
        "prompt_len": prompt_len, "batch_size": batch_size, "max_examples": max_examples,
        "options": options.to_dict(), "config": {**setup.readout_settings.to_dict(),
                                                 "max_text_tokens": max_text_tokens},
        "streams": {name: {"tokens": int(st.acc.shape[2]), "median_passes": st.median_passes,
                           "median_width": st.median_width} for name, st in stats.items()},
        "train_fingerprint": fingerprint, "reused_baseline_from": (
            str(layout.predictivity_path(workdir, loaded.name, baseline_task)) if reused is not None else None),
        "seconds": round(time.time() - t0, 3), "devices": jax.device_count(), "processes": jax.process_count(),
        # truncation of both splits; the TRAIN split (the baseline task's) says how many adversarial originals
        # reading left out of it (trap 6); a reused baseline's train split is recorded in its own sidecar
        **batching.data_record({"train": train_enc, "dev": dev_enc}),
    }
    if jax.process_index() == 0:
        io.atomic_save_npz(out, **arrays)
        io.write_sidecar(out, **meta)
    return {"output": str(out), "task": spec.name, "baseline_task": baseline_task,
            "model_accuracy": meta["model_accuracy"], "top_pred": float(encoder.pred.max()),
            "seconds": meta["seconds"]}


# ---------------------------------------------------------------------------------------------------------------
# The stage kind (stages/registry.py): predictivity/<m>/<task> for every task present -> predictivity/<m>/<task>.npz
# (+ sidecar). An adversarial task uses its clean task's prompts and the clean TRAIN split for the baseline, stored
# under its own name (trap 3); it depends on the clean task's predictivity so that baseline is computed once and
# reused. config `adversarial_prompts` ("advqqp:mrpc") gives an adversarial set another clean task of its type
# instead (StudySettings.prompt_task_of). Settings: config.stats (neurons.stats_options.StatsOptions).
# ---------------------------------------------------------------------------------------------------------------
def plan(ctx) -> None:
    s, m = ctx.study, ctx.model.name
    for task in ctx.tasks.present:
        clean = s.prompt_task_of(task)
        out = layout.predictivity_path(ctx.workdir, m, task)
        deps = [f"tune/{m}/{clean}"] + ([f"predictivity/{m}/{clean}"] if clean != task else [])
        # Only an override is passed on: otherwise the stage's default (the table's clean task) applies.
        ctx.add(f"predictivity/{m}/{task}", [out, out.with_name(out.name + ".json")],
                args={"task": task, "prompt_task": s.adversarial_prompts.get(task)}, deps=deps, group_task=clean,
                settings=ctx.settings(clean, stats=s.stats))


def cost(ctx, task: str, prompt_task: Optional[str] = None) -> float:
    """TRAIN (the baseline: one pass for the mean, up to median_max_passes for the median; none for an
    adversarial set, which reuses its clean task's) and dev; two compiled programs."""
    cm, stats = ctx.cost, ctx.study.stats
    train, dev, seq = cm.sizes(task)
    if tasks.clean_task_of(task) != task:
        train = 0         # the clean task's TRAIN baseline is reused
    passes = 1 if stats.threshold == "mean" else stats.median_max_passes
    return cm.seconds(cm.forward(train * passes + dev, seq) + column_flops(ctx, dev), compiles=2)


def column_flops(ctx, dev: int) -> float:
    """FLOPs of the label columns (stats.label_permutations, subsample_sizes) over `dev` rows: each batch's fired
    bits [S, L, B, T, N] meet its columns [B, C] in one einsum, 2 S L T N C FLOPs per row (T: the captured
    positions; C: the permutations plus the draws of every subsample size below the split's n)."""
    cm, stats = ctx.cost, ctx.study.stats
    columns = stats.label_permutations + stats.subsample_draws * sum(int(m) < dev for m in stats.subsample_sizes)
    positions = cm.P + (cm.max_text if stats.positions == "all" else 0)
    return 2.0 * cm.S * cm.L * positions * cm.F * columns * dev


def run_in(ctx, task: str, workdir, *, prompt_task: Optional[str], reuse_from=None, **transformed) -> dict:
    """`predictivity` of `task` for the plan's model under the workdir-shaped root `workdir` (the study's, or a
    robustness arm's: robust_predictivity); prompt_task: the clean task whose prompts and TRAIN baseline an
    adversarial set uses (None: the task table's clean task); reuse_from: a root whose result of the same
    computation is copied; `transformed`: predictivity's dev_transform, dev_record and output."""
    s, path = ctx.study, ctx.model.path
    return predictivity(ctx.session.setup(path, task, s.tune), workdir, s.data_dir, list(s.seeds), model_path=path,
                        max_text_tokens=int(s.tune["max_text_tokens"]), eval_batch_size=int(s.tune["eval_batch_size"]),
                        options=s.stats, max_examples=s.max_examples, prompt_task=prompt_task,
                        baseline_task=prompt_task, reuse_from=reuse_from, **transformed)


def run(ctx, task: str, prompt_task: Optional[str] = None) -> dict:
    return run_in(ctx, task, ctx.workdir, prompt_task=prompt_task, reuse_from=ctx.study.reuse_from)


KIND = registry.register("predictivity", StatsOptions, config_key="stats", plan=plan, cost=cost, run=run, order=30,
                         sections=[Section("predictivity", predictivity_section.build),
                                   Section("task specificity", specificity_section.build)])
