"""Benchmark: our JAX pipeline against the PyTorch + forward-hooks reference, in one process.

    python -m benchmarks.run --output OUT.json                 # both models, real texts (minutes on 2 cores)
    python -m benchmarks.run --output OUT.json --model minilm  # one model
    python -m benchmarks.run --output OUT.json --lengths full  # the same-work comparison (synthetic, padded)
    python -m benchmarks.run --output OUT.json --quick         # tiny random models (the smoke test)
    python -m benchmarks.run --output OUT.json --dtype bfloat16  # bfloat16 compute on both sides

For each model, both sides get the same weights (the random RoBERTa is saved by PyTorch to a temporary
safetensors folder and read by our loader), the same examples, prompt (100 tokens), batch sizes and thread
count. Workloads (--lengths; benchmarks/__init__.py, benchmarks/realdata.py):
  real (default): the offline `tweets` task's first examples, tokenized by the model's tokenizer and truncated to
        128 text tokens; the reference pads EVERY example to 128 + 3 text positions as the original formatter
        did, ours batches them as our pipeline does (length buckets, sorted by length; prompt tuning's
        group_by_length epochs). The JSON records the mode, the mean real length and the token positions
        each side computed (`data`, and `tokens` under predictivity / train).
  full: synthetic batches padded to 128 text tokens on both sides: the same work for both.
Measured, as medians over --repeats timed runs, alternating the sides, after warm-up runs that compile every
batch shape (compile time reported separately):
  1. predictivity pass (forward with prompt + eqs. 2-5 statistics): examples/s, after checking that both
     sides agree example by example (activations, baselines, DEV counts, predictivities; `check_agreement`);
  2. prompt-tuning training step: examples/s, after checking that the first losses agree (one batch of the
     same examples on both sides);
  2b. training-step MFU at equal work: analytic FLOPs of the forward and the backward to the prompt
     (benchmarks.encoder_train_flops, no weight gradients) / time / the float32 matmul peak;
  3. forward MFU: analytic matmul FLOPs (benchmarks.encoder_forward_flops) / time / this machine's float32
     matmul peak measured in the same run (benchmarks/peak.py), on a fixed 100 + 128 token batch in either mode;
  4. peak RSS of the predictivity stage at N and 10N examples, each in a fresh process (benchmarks/memory.py).
The JSON's top-level ratios are those of the headline model (roberta-base-random when run, else the first
model); every model's figures are under "models". Each timing records the 1-minute load average: other work on
the machine slows both sides, but not necessarily equally (the two libraries' thread pools react differently to
busy cores), so compare ratios measured on a quiet machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

# Targets of the benchmark issue: key -> (comparison, threshold).
TARGETS = {
    "predictivity_speedup": (">=", 2.0),
    "train_speedup": (">=", 1.5),
    "forward_mfu": (">=", 0.5),
    "memory_ratio_10x": ("<", 1.2),
}
WORK_BOUND_NOTE = ("work_bound_speedup = reference_flops / unpadded_flops: the speedup that computing each real "
                   "example at its own length (no padding) gives when both sides run their matmuls equally fast; "
                   "beyond it, only faster kernels count (benchmarks/profile.py: where our time goes)")
HEADLINE_ORDER = ("roberta-base-random", "minilm", "tiny-roberta-random", "tiny-bert-random")
MODEL_CHOICES = {
    "both": ("minilm", "roberta-base-random"),
    "minilm": ("minilm",),
    "roberta-base-random": ("roberta-base-random",),
    "quick": ("tiny-roberta-random", "tiny-bert-random"),
}
# Sizes: full (the 100 prompt + 128 text tokens) and --quick (tiny, seconds).
# memory_models: how many of the models (in order) get the fresh-process memory measurement (None = all;
# --quick measures the first only, to stay within the smoke test's time: each child imports torch or jax);
# memory_jobs: children run at once (--quick: all four; full sizes: one, the reference's 10N child alone
# holds gigabytes).
FULL = dict(prompt_len=100, text_len=128, max_text_tokens=128, batch_size=32, train_batch_size=16, train_steps=2,
            examples=64, memory_examples=32, memory_batch_size=16, repeats=3, memory_models=None, memory_jobs=1)
QUICK = dict(prompt_len=8, text_len=16, max_text_tokens=16, batch_size=4, train_batch_size=4, train_steps=2,
             examples=16, memory_examples=8, memory_batch_size=4, repeats=2, memory_models=1, memory_jobs=4)
# Real texts (--lengths real, the default): more examples, so that each split has several batches and the
# length buckets show (a single batch of 32 random tweets always reaches the 64-token bucket).
REAL_OVERRIDES = dict(examples=128, train_steps=4)

# Agreement tolerances (float32 on both sides, different kernels and summation orders): activations and
# baselines must satisfy |ours - reference| <= ACT_ATOL + ACT_RTOL * |reference|, element by element.
ACT_ATOL = 1e-4
ACT_RTOL = 1e-4
LOSS_ATOL = 1e-4     # first training loss
# --dtype bfloat16: both sides round every matmul input to 8 significant bits, in different kernels and orders,
# so they agree only to bfloat16 precision. The checks then use these tolerances and RECORD their outcome
# instead of stopping the run (float32 runs stop on any disagreement); docs/PERFORMANCE.md states the
# bfloat16-against-float32 differences of a real run.
BF16_ACT_ATOL = 5e-2
BF16_ACT_RTOL = 5e-2
BF16_LOSS_ATOL = 5e-2


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads(threads: int) -> int:
    """Same thread count for PyTorch and XLA; call BEFORE importing torch or jax. Returns the count.

    PyTorch: torch.set_num_threads (and the OpenMP/MKL variables). XLA sizes its CPU thread pool from the
    cores the process may run on, so fewer threads than cores also pins the process to that many cores
    (sched_setaffinity: a hard limit that both libraries obey)."""
    have = available_threads()
    n = threads or have
    if n > have:
        raise ValueError(f"--threads {n} exceeds the {have} cores this process may use")
    if n < have and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n


# --------------------------------------------------------------------------------------------- timing
def timed(fn, repeats: int) -> dict:
    """Median wall time of `repeats` calls of fn() (the caller has already warmed it up).

    Also recorded: this process's CPU seconds per call (all threads) and the 1-minute load average before
    and after, to tell a contended measurement (other work on the machine) from a slow one."""
    times, cpu = [], []
    load_before = _loadavg()
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return dict(median_s=statistics.median(times), times_s=times, cpu_s=cpu,
                load_1min=[None if load_before is None else load_before[0],
                           None if _loadavg() is None else _loadavg()[0]])


def timed_interleaved(fns: dict, repeats: int) -> dict:
    """Each function timed `repeats` times in alternation (a, b, ..., a, b, ...), so that load from other work
    on the machine, which drifts over minutes, falls on all of them alike. Returns {name: timed()-like dict}."""
    runs = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            runs[key].append(timed(fn, 1))
    return {k: dict(median_s=statistics.median(r["times_s"][0] for r in v), times_s=[r["times_s"][0] for r in v],
                    cpu_s=[r["cpu_s"][0] for r in v], load_1min=[r["load_1min"][0] for r in v])
            for k, v in runs.items()}


def timed_pair(reference_fn, ours_fn, repeats: int) -> tuple[dict, dict]:
    """(reference, ours) timed in alternation; see timed_interleaved."""
    out = timed_interleaved({"reference": reference_fn, "ours": ours_fn}, repeats)
    return out["reference"], out["ours"]


def first_call(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# --------------------------------------------------------------------------------------------- agreement
def _tol(x, atol=None, rtol=None):
    import numpy as np
    return (ACT_ATOL if atol is None else atol) + (ACT_RTOL if rtol is None else rtol) * np.abs(x)


def _flush(x):
    """float32 with subnormals flushed to (signed) zero, as XLA's CPU and GPU backends compute (FTZ/DAZ):
    activations of dead GELU neurons underflow to subnormals, and there NumPy and XLA compare differently."""
    import numpy as np
    x = np.asarray(x, np.float32)
    return np.where(np.abs(x) < np.finfo(np.float32).tiny, np.float32(0) * np.sign(x), x)


def check_agreement(ref: dict, ours: dict, ref_dev_acts, ours_dev_acts, dev_labels, streamed_recount, *,
                    atol: float = ACT_ATOL, rtol: float = ACT_RTOL, strict: bool = True) -> dict:
    """Both predictivity results on the same data; raises AssertionError when they disagree.

    ref / ours: baseline [L, P, N], correct [L, P, N] (DEV counts of 1[a > b] == y), n_dev, predictivity [L, N];
    *_dev_acts: each side's DEV activations [L, E, P, N]; dev_labels [E]; streamed_recount [L, P, N]: our
    streaming accuracy code run on ours_dev_acts with our baseline as the threshold. Checks, in order:
      1. activations (every DEV element) and baselines agree within ACT_ATOL + ACT_RTOL * |reference|;
      2. the streaming counts equal a NumPy count of the same activations against the same threshold,
         exactly (the streaming statistics lose nothing; subnormals flushed to zero, as XLA computes);
      3. every count that differs between the sides is explained by near-ties: comparisons whose reference
         activation lies within the tolerance of (1) of the threshold (|a - b| <= tol(a) + tol(b)); only there
         can float32 rounding put the two sides on different sides of the threshold. Anything else is a bug;
      4. the predictivities differ by at most (largest count difference) / n_dev, as eqs. 3-5 imply.
    atol / rtol: the tolerance of (1) and (3); strict=False records the outcome without raising (bfloat16).
    """
    tol = lambda x: _tol(x, atol, rtol)
    import numpy as np

    a_ref, a_ours = np.asarray(ref_dev_acts), np.asarray(ours_dev_acts)
    if a_ref.shape != a_ours.shape:
        raise AssertionError(f"DEV activations have shapes {a_ref.shape} (reference) and {a_ours.shape} (ours)")
    act_err = np.abs(a_ours.astype(np.float64) - a_ref)
    act_ok = bool(np.all(act_err <= tol(a_ref)))
    b_ref, b_ours = np.asarray(ref["baseline"], np.float64), np.asarray(ours["baseline"], np.float64)
    base_err = np.abs(b_ours - b_ref)
    base_ok = bool(np.all(base_err <= tol(b_ref)))
    c_ref, c_ours = np.asarray(ref["correct"], np.int64), np.asarray(ours["correct"], np.int64)
    if c_ref.shape != c_ours.shape or ref["n_dev"] != ours["n_dev"]:
        raise AssertionError(f"shapes differ: reference counts {c_ref.shape} over {ref['n_dev']} DEV examples, "
                             f"ours {c_ours.shape} over {ours['n_dev']}")
    y = np.asarray(dev_labels).astype(bool)[None, :, None, None]
    recount = np.sum((_flush(a_ours) > _flush(ours["baseline"])[:, None]) == y, axis=1)
    streamed_exact = bool(np.array_equal(recount, np.asarray(streamed_recount)))
    diff = np.abs(c_ours - c_ref)
    near = np.sum(np.abs(a_ref - b_ref[:, None]) <= tol(a_ref) + tol(b_ref)[:, None], axis=1)
    unexplained = int(np.sum(diff > near))
    pred_diff = float(np.max(np.abs(np.asarray(ours["predictivity"]) - np.asarray(ref["predictivity"]))))
    n_dev = int(ref["n_dev"])
    out = dict(
        activation_max_abs_diff=float(act_err.max()), activation_max_abs=float(np.abs(a_ref).max()),
        activations_ok=act_ok, baseline_max_abs_diff=float(base_err.max()), baseline_ok=base_ok,
        streamed_counts_exact=streamed_exact,
        counts_equal_fraction=float(np.mean(diff == 0)), counts_max_abs_diff=int(diff.max()),
        counts_differing=int(np.sum(diff > 0)), counts_total=int(diff.size),
        near_tie_comparisons=int(near.sum()), comparisons_total=int(a_ref.size),
        counts_unexplained_by_ties=unexplained,
        predictivity_max_abs_diff=pred_diff, predictivity_bound=float(diff.max() / n_dev), n_dev=n_dev,
        tolerance=dict(act_atol=atol, act_rtol=rtol),
    )
    if diff.any():  # the worst neuron: how tightly its DEV activations sit around the threshold
        l, j, n = np.unravel_index(np.argmax(diff), diff.shape)
        out["worst_count_cell"] = dict(layer=int(l), token=int(j), neuron=int(n), count_diff=int(diff[l, j, n]),
                                       threshold=float(b_ref[l, j, n]),
                                       max_abs_distance_to_threshold=float(np.max(np.abs(a_ref[l, :, j, n]
                                                                                          - b_ref[l, j, n]))))
    out["passed"] = bool(act_ok and base_ok and streamed_exact and unexplained == 0
                         and pred_diff <= out["predictivity_bound"] + 1e-7)
    if strict and not out["passed"]:
        raise AssertionError(f"the reference and ours disagree; not timing a wrong computation: {out}")
    return out


def check_best_practice(best: dict, ours: dict, *, atol: float = ACT_ATOL, rtol: float = ACT_RTOL,
                        strict: bool = True) -> dict:
    """The best-practice PyTorch side against ours on the same batches: baselines within the agreement tolerance,
    and predictivities within the bound that near-tie count differences allow (recorded: max count difference /
    n_dev); raises AssertionError otherwise (a wrong computation is not timed)."""
    import numpy as np
    b_best, b_ours = np.asarray(best["baseline"], np.float64), np.asarray(ours["baseline"], np.float64)
    base_err = np.abs(b_ours - b_best)
    diff = np.abs(np.asarray(best["correct"], np.int64) - np.asarray(ours["correct"], np.int64))
    pred_diff = float(np.max(np.abs(np.asarray(best["predictivity"]) - np.asarray(ours["predictivity"]))))
    out = dict(baseline_max_abs_diff=float(base_err.max()),
               baseline_ok=bool(np.all(base_err <= _tol(b_best, atol, rtol))),
               counts_equal_fraction=float(np.mean(diff == 0)), counts_max_abs_diff=int(diff.max()),
               predictivity_max_abs_diff=pred_diff, n_dev=int(best["n_dev"]))
    out["passed"] = bool(out["baseline_ok"] and best["n_dev"] == ours["n_dev"]
                         and pred_diff <= diff.max() / best["n_dev"] + 1e-7)
    if strict and not out["passed"]:
        raise AssertionError(f"best-practice PyTorch and ours disagree: {out}")
    return out


# --------------------------------------------------------------------------------------------- one model
def bench_model(name: str, sizes: dict, args, peak_gflops: float, torch_peak_gflops: float, log, *,
                peak_loop=None, measure_memory: bool = True) -> dict:
    """All four measurements for one model. peak_gflops: the run's JAX matmul peak; peak_loop: (run, FLOPs) of
    the compiled peak loop, timed again in alternation with the forward: the MFU denominator is the larger of
    the two peaks, so a peak measured while the machine was busy cannot inflate the MFU."""
    import numpy as np

    import benchmarks as B
    from benchmarks import memory, ours as ours_mod, realdata, sides as sides_mod
    from benchmarks.torch_reference import BestPractice, Reference, build_model

    w = B.Workload(model=name, prompt_len=sizes["prompt_len"], text_len=sizes["text_len"],
                   batch_size=sizes["batch_size"], train_batch_size=sizes["train_batch_size"],
                   examples=sizes["examples"], train_steps=sizes["train_steps"], seed=args.seed,
                   lengths=args.lengths, max_text_tokens=sizes["max_text_tokens"])
    repeats = sizes["repeats"]
    res: dict = dict(workload=dict(dataclasses.asdict(w), seq_len=w.seq_len))

    log(f"[{name}] building the PyTorch model")
    tmodel = build_model(name, args.seed, attention=args.reference_attention)
    tmp = tempfile.TemporaryDirectory(prefix=f"bench_{name}_")
    folder = ours_mod.checkpoint_folder(name, tmodel, tmp.name)
    reference = Reference(tmodel, w.prompt_len, dtype=args.dtype)
    ours = ours_mod.for_model(name, ours_mod.load(folder, args.dtype), w.prompt_len)
    strict = args.dtype == "float32"     # bfloat16: the checks are recorded, not enforced (BF16_* tolerances)
    tol = dict(atol=ACT_ATOL, rtol=ACT_RTOL) if strict else dict(atol=BF16_ACT_ATOL, rtol=BF16_ACT_RTOL)
    loss_atol = LOSS_ATOL if strict else BF16_LOSS_ATOL
    res["dtype"] = args.dtype
    res["model"] = dict(layers=tmodel.num_layers, hidden=tmodel.hidden, intermediate=tmodel.intermediate,
                        vocab=tmodel.vocab_size, family=tmodel.family, weights=folder if B.MODELS[name]["source"] ==
                        "minilm" else "random (seed %d), via a temporary safetensors folder" % args.seed,
                        torch_attention=getattr(tmodel.config, "_attn_implementation", None),
                        readout=ours.readout_source)
    prompt = B.initial_prompt(tmodel.word_embeddings.weight.detach().numpy(), w.prompt_len, w.seed)
    log(f"[{name}] data: lengths={w.lengths}")
    sides = sides_mod.build(w, tmodel.vocab_size, ours.mesh, data_dir=args.data_dir,
                            memory_examples=sizes["memory_examples"] if measure_memory else 0)
    res["data"] = sides.info
    E = w.examples
    dims = dict(layers=tmodel.num_layers, hidden=tmodel.hidden, intermediate=tmodel.intermediate)
    flops_ex = B.encoder_forward_flops(seq_len=w.seq_len, **dims)
    P = w.prompt_len

    # ---- correctness first (also the warm-up run of both sides: every bucket shape of the pass is compiled)
    log(f"[{name}] correctness: activations, baselines, counts, predictivities")
    ref_warm, ref_out = first_call(lambda: reference.predictivity(prompt, sides.ref_train, sides.ref_dev,
                                                                  return_dev_activations=True))
    ours_warm, ours_out = first_call(lambda: ours.predictivity(prompt, sides.ours_train, sides.ours_dev))
    ref_rows = np.concatenate([b["index"][b["example_mask"]] for b in sides.ref_dev])
    if not np.array_equal(ref_rows, np.arange(len(ref_rows))):
        raise AssertionError("the reference's DEV batches are not in the split's order")
    ours_acts = ours.activations(prompt, sides.ours_dev)     # rows in the split's order, as the reference's
    streamed = ours.recount(ours_acts, sides.dev_labels, ours_out["baseline"], w.batch_size)
    res["correctness"] = check_agreement(ref_out, ours_out, ref_out.pop("dev_activations"), ours_acts,
                                         sides.dev_labels, streamed, **tol, strict=strict)
    del ours_acts

    # ---- 1. predictivity pass
    log(f"[{name}] timing the predictivity pass ({E} examples, {repeats} repeats per side)")
    t_ref, t_ours = timed_pair(lambda: reference.predictivity(prompt, sides.ref_train, sides.ref_dev),
                               lambda: ours.predictivity(prompt, sides.ours_train, sides.ours_dev), repeats)
    ref_flops = realdata.forward_flops(sides.ref_train + sides.ref_dev, P, dims)
    ours_flops = realdata.forward_flops(sides.ours_train + sides.ours_dev, P, dims)
    res["predictivity"] = dict(
        examples=E, reference_examples_per_s=E / t_ref["median_s"], ours_examples_per_s=E / t_ours["median_s"],
        reference=t_ref, ours=t_ours, ours_first_call_s=ours_warm, reference_first_call_s=ref_warm,
        ours_compile_s=max(ours_warm - t_ours["median_s"], 0.0),
        warmed_up="the correctness pass ran every batch of both sides first (every bucket shape compiled)",
        reference_flops=ref_flops, ours_flops=ours_flops,
        ours_gflops=ours_flops / t_ours["median_s"] / 1e9, reference_gflops=ref_flops / t_ref["median_s"] / 1e9,
        tokens=sides.info["tokens"]["predictivity"],
        unpadded_flops=realdata.unpadded_flops(sides.ours_train + sides.ours_dev, P, dims),
        work_bound_note=WORK_BOUND_NOTE)
    res["predictivity"]["work_bound_speedup"] = ref_flops / res["predictivity"]["unpadded_flops"]
    res["predictivity_speedup"] = t_ref["median_s"] / t_ours["median_s"]

    # ---- 1b. the best-practice PyTorch side on the same batches as ours (equal work): checked, then timed
    # in alternation with ours again
    best = BestPractice(reference)
    log(f"[{name}] best-practice PyTorch (our batches, statistics reduced in torch): checking and timing")
    best_warm, best_out = first_call(lambda: best.predictivity(prompt, sides.ours_train, sides.ours_dev))
    res["best_practice_check"] = check_best_practice(best_out, ours_out, **tol, strict=strict)
    t_best, t_ours_eq = timed_pair(lambda: best.predictivity(prompt, sides.ours_train, sides.ours_dev),
                                   lambda: ours.predictivity(prompt, sides.ours_train, sides.ours_dev), repeats)
    res["predictivity"].update(best_practice_examples_per_s=E / t_best["median_s"], best_practice=t_best,
                               ours_equal_work=t_ours_eq, best_practice_first_call_s=best_warm)
    res["predictivity_speedup_equal_work"] = t_best["median_s"] / t_ours_eq["median_s"]

    # ---- 2. training step
    log(f"[{name}] timing the training step ({w.train_steps} steps of {w.train_batch_size} per repeat)")
    ref_step, _ = reference.make_train_step(prompt)
    ours_step, _ = ours.make_train_step(prompt)
    # First step: the same examples on both sides (each padded its own way), so the losses must agree.
    ref_t0, ref_loss0 = first_call(lambda: ref_step(sides.check_ref))
    ours_t0, ours_loss0 = first_call(lambda: ours_step(sides.check_ours))
    if strict and not abs(ref_loss0 - ours_loss0) <= loss_atol:
        raise AssertionError(f"first training losses differ: reference {ref_loss0}, ours {ours_loss0}")
    # Warm-up: one untimed pass over every step's batch on both sides (compiles each of our bucket shapes).
    warm = {"reference": first_call(lambda: [ref_step(b) for b in sides.ref_steps])[0],
            "ours": first_call(lambda: [ours_step(b) for b in sides.ours_steps])[0]}
    n_train = w.train_steps * w.train_batch_size
    t_ref, t_ours = timed_pair(lambda: [ref_step(b) for b in sides.ref_steps],
                               lambda: [ours_step(b) for b in sides.ours_steps], repeats)
    res["train"] = dict(
        batch_size=w.train_batch_size, steps_per_repeat=w.train_steps,
        reference_examples_per_s=n_train / t_ref["median_s"], ours_examples_per_s=n_train / t_ours["median_s"],
        reference=t_ref, ours=t_ours, ours_first_call_s=ours_t0, reference_first_call_s=ref_t0,
        warm_up_pass_s=warm, warmed_up="one untimed pass over every timed batch on both sides first",
        first_loss_reference=ref_loss0, first_loss_ours=ours_loss0, tokens=sides.info["tokens"]["train"],
        reference_flops=realdata.forward_flops(sides.ref_steps, P, dims),
        ours_flops=realdata.forward_flops(sides.ours_steps, P, dims),
        unpadded_flops=realdata.unpadded_flops(sides.ours_steps, P, dims), work_bound_note=WORK_BOUND_NOTE)
    res["train"]["work_bound_speedup"] = res["train"]["reference_flops"] / res["train"]["unpadded_flops"]
    res["correctness"]["first_loss_abs_diff"] = abs(ref_loss0 - ours_loss0)
    res["train_speedup"] = t_ref["median_s"] / t_ours["median_s"]
    best_step, _ = best.make_train_step(prompt)
    best_loss0 = best_step(sides.check_ours)
    if strict and not abs(best_loss0 - ours_loss0) <= loss_atol:
        raise AssertionError(f"first training losses differ: best-practice PyTorch {best_loss0}, ours {ours_loss0}")
    [best_step(b) for b in sides.ours_steps]   # warm-up on every bucket shape
    t_best, t_ours_eq = timed_pair(lambda: [best_step(b) for b in sides.ours_steps],
                                   lambda: [ours_step(b) for b in sides.ours_steps], repeats)
    res["train"].update(best_practice_examples_per_s=n_train / t_best["median_s"], best_practice=t_best,
                        ours_equal_work=t_ours_eq, first_loss_best_practice=best_loss0)
    res["train_speedup_equal_work"] = t_best["median_s"] / t_ours_eq["median_s"]
    res["correctness"]["first_loss_best_practice_abs_diff"] = abs(best_loss0 - ours_loss0)
    res["correctness"]["first_loss_within_tolerance"] = bool(max(abs(ref_loss0 - ours_loss0),
                                                                 abs(best_loss0 - ours_loss0)) <= loss_atol)
    res["train"]["equal_work_flops"] = realdata.train_flops(sides.ours_steps, P, dims)

    # ---- 3. forward MFU: the forward and the matmul-peak loop timed in alternation, on the fixed-length
    # synthetic batch (prompt + text_len tokens, every row padded to text_len) whatever the workload mode
    log(f"[{name}] timing the plain forward and the matmul peak (MFU)")
    batch = B.synthetic_batches(w, tmodel.vocab_size, examples=w.batch_size, seed_offset=2)[0]
    fwd_warm, _ = first_call(lambda: ours.forward(prompt, batch))
    reference.forward(prompt, batch)
    fns = {"reference": lambda: reference.forward(prompt, batch), "ours": lambda: ours.forward(prompt, batch)}
    if peak_loop is not None:
        fns["peak"] = peak_loop[0]
    t = timed_interleaved(fns, repeats)
    t_ref, t_ours = t["reference"], t["ours"]
    local_peak = None
    if peak_loop is not None:
        local_peak = dict(t["peak"], gflops=peak_loop[1] / t["peak"]["median_s"] / 1e9)
        peak_gflops = max(peak_gflops, local_peak["gflops"])
    flops = flops_ex * w.batch_size
    res["forward"] = dict(
        batch_size=w.batch_size, flops_per_example=flops_ex,
        flop_formula="layers * (8*T*H^2 + 4*T^2*H + 4*T*H*F), T = prompt + text tokens",
        ours_gflops=flops / t_ours["median_s"] / 1e9, reference_gflops=flops / t_ref["median_s"] / 1e9,
        ours=t_ours, reference=t_ref, ours_first_call_s=fwd_warm,
        reference_mfu_of_torch_peak=flops / t_ref["median_s"] / 1e9 / torch_peak_gflops,
        peak_gflops_used=peak_gflops, peak_interleaved=local_peak)
    res["forward_mfu"] = res["forward"]["ours_gflops"] / peak_gflops
    res["forward"]["reference_mfu"] = res["forward"]["reference_gflops"] / peak_gflops
    res["predictivity"]["ours_mfu"] = res["predictivity"]["ours_gflops"] / peak_gflops
    tr = res["train"]
    for side, timing in (("ours", tr["ours_equal_work"]), ("best_practice", tr["best_practice"])):
        tr[f"{side}_train_gflops"] = tr["equal_work_flops"] / timing["median_s"] / 1e9
        tr[f"{side}_train_mfu"] = tr[f"{side}_train_gflops"] / peak_gflops
    tr["train_mfu_note"] = ("equal-work training steps: benchmarks.encoder_train_flops (forward + backward to the "
                            "prompt, every position) / median time / the float32 matmul peak used for the forward "
                            "MFU")
    res["train_mfu"] = tr["ours_train_mfu"]

    # ---- 4. memory, fresh processes
    if not measure_memory:
        res["memory_ratio_10x"] = None
    else:
        n = sizes["memory_examples"]
        runs = [(side, count) for side in ("ours", "reference") for count in (n, 10 * n)]
        data_file = None
        if sides.encoded is not None:  # real texts: the children read the encoded splits (no tokenizer there)
            data_file = str(pathlib.Path(tmp.name) / "encoded.npz")
            realdata.save_encoded(data_file, **sides.encoded)
        mem = {}
        for i in range(0, len(runs), sizes["memory_jobs"]):  # children at once (RSS is per process either way)
            group = runs[i:i + sizes["memory_jobs"]]
            log(f"[{name}] memory: " + ", ".join(f"{side} at {count} examples" for side, count in group)
                + " (fresh processes)")
            handles = {f"{side}_{count}": memory.start(
                side, name, count, folder=folder, prompt_len=w.prompt_len, text_len=w.text_len,
                batch_size=sizes["memory_batch_size"], seed=w.seed, threads=args.threads_used,
                attention=args.reference_attention, lengths=w.lengths, max_text_tokens=w.max_text_tokens,
                data=data_file) for side, count in group}
            mem.update({key: memory.finish(h) for key, h in handles.items()})
        peak = lambda side, count: mem[f"{side}_{count}"]["peak_rss_bytes"]
        res["memory"] = dict(
            examples_n=n, examples_10n=10 * n, runs=mem,
            ours_peak_bytes_n=peak("ours", n), ours_peak_bytes_10n=peak("ours", 10 * n),
            reference_peak_bytes_n=peak("reference", n), reference_peak_bytes_10n=peak("reference", 10 * n),
            reference_ratio_10x=peak("reference", 10 * n) / peak("reference", n))
        res["memory_ratio_10x"] = peak("ours", 10 * n) / peak("ours", n)
    tmp.cleanup()
    return res


# --------------------------------------------------------------------------------------------- main
def targets_report(res: dict) -> dict:
    out = {}
    for key, (op, threshold) in TARGETS.items():
        value = res.get(key)
        met = None if value is None else (value >= threshold if op == ">=" else value < threshold)
        out[key] = dict(value=value, target=f"{op} {threshold}", met=met)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="JSON file to write")
    p.add_argument("--model", default="both", choices=("both", "minilm", "roberta-base-random"),
                   help="which model(s); --quick replaces them by tiny random models")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes (the smoke test; seconds)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (median reported)")
    p.add_argument("--examples", type=int, default=None,
                   help="examples per predictivity pass (half TRAIN, half DEV; whole batches)")
    p.add_argument("--memory_examples", type=int, default=None, help="N of the memory measurement (also 10N)")
    p.add_argument("--batch_size", type=int, default=None, help="predictivity / forward batch size")
    p.add_argument("--train_batch_size", type=int, default=None)
    p.add_argument("--train_steps", type=int, default=None, help="timed training steps per repeat")
    p.add_argument("--threads", type=int, default=0, help="threads for both sides (0 = every available core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_memory", action="store_true", help="skip the fresh-process memory measurement")
    p.add_argument("--lengths", default="real", choices=("real", "full"),
                   help="real (default): real tweets, the reference padded to the original fixed length, ours in "
                        "the pipeline's length buckets; full: synthetic batches padded to text_len on both sides "
                        "(the same-work comparison)")
    p.add_argument("--data_dir", default=None,
                   help="folder with tokenizers/roberta-base (default: $SKILLNEURONS_SHARED_DATA or ../shared/data); "
                        "without it roberta-base-random uses the MiniLM tokenizer's lengths")
    p.add_argument("--max_text_tokens", type=int, default=None, help="--lengths real: text tokens after truncation")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype of both sides (weights stay float32; PyTorch: torch.autocast). bfloat16 "
                        "records the agreement checks instead of enforcing them (BF16_* tolerances)")
    p.add_argument("--reference_attention", default=None, choices=("sdpa", "eager"),
                   help="the reference's attention implementation (default: transformers' default, sdpa; "
                        "'eager' is what the original code ran)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.threads_used = configure_threads(args.threads)
    sizes = dict(QUICK if args.quick else FULL)
    if args.lengths == "real" and not args.quick:
        sizes.update(REAL_OVERRIDES)
    for key in ("repeats", "examples", "memory_examples", "batch_size", "train_batch_size", "train_steps",
                "max_text_tokens"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    models = MODEL_CHOICES["quick" if args.quick else args.model]

    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    import torch
    torch.set_num_threads(args.threads_used)
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # The tweets reader logs how it carves the splits, once per split and model: not news here.
    logging.getLogger("skillneurons_jax.data.readers").setLevel(logging.ERROR)
    import jax

    from benchmarks import peak
    from skillneurons_jax import io

    log(f"measuring the float32 matmul peak ({args.threads_used} threads)")
    n_peak = 512 if args.quick else 2048
    peak_kw = dict(n=n_peak, iters=4 if args.quick else 8)
    jax_peak = peak.jax_matmul_peak(**peak_kw, repeats=sizes["repeats"] + 2)
    torch_peak = peak.torch_matmul_peak(**peak_kw, repeats=sizes["repeats"] + 2)
    peak_run, peak_flops, _ = peak.jax_matmul_loop(**peak_kw)

    per_model = {}
    for i, name in enumerate(models):
        measure_memory = not args.skip_memory and (sizes["memory_models"] is None or i < sizes["memory_models"])
        per_model[name] = bench_model(name, sizes, args, jax_peak["gflops"], torch_peak["gflops"], log,
                                      peak_loop=(peak_run, peak_flops),
                                      measure_memory=measure_memory)
    headline = next(m for m in HEADLINE_ORDER if m in per_model)
    result = {key: per_model[headline][key] for key in TARGETS}
    result.update(
        predictivity_speedup_equal_work=per_model[headline]["predictivity_speedup_equal_work"],
        train_speedup_equal_work=per_model[headline]["train_speedup_equal_work"],
        train_mfu=per_model[headline]["train_mfu"], dtype=args.dtype,
        headline_model=headline,
        correctness_passed=all(r["correctness"]["passed"] for r in per_model.values()),
        max_predictivity_diff=max(r["correctness"]["predictivity_max_abs_diff"] for r in per_model.values()),
        targets=targets_report(result),
        threads=args.threads_used,
        matmul_peak=dict(jax=jax_peak, torch=torch_peak, dtype="float32",
                         method=f"jitted fori_loop of {n_peak}x{n_peak} matmuls, median of repeats; measured at "
                                "the start and again in alternation with each model's forward, the larger used"),
        models=per_model, sizes=sizes, quick=bool(args.quick), lengths=args.lengths,
        data={name: {k: r["data"].get(k) for k in ("mode", "tokenizer", "mean_real_text_len", "reference_text_len")}
              for name, r in per_model.items()},
        machine=dict(platform=platform.platform(), processor=platform.processor(), cores=os.cpu_count(),
                     jax_devices=[str(d) for d in jax.devices()], loadavg_at_end=_loadavg()),
        versions=io.package_versions(), python=platform.python_version(),
        command=" ".join([os.path.basename(sys.executable), "-m", "benchmarks.run"] + list(argv or sys.argv[1:])),
    )
    io.atomic_write_json(args.output, result)
    summary = {k: result[k] for k in TARGETS}
    summary.update({k: per_model[headline].get(k) for k in ("predictivity_speedup_equal_work",
                                                              "train_speedup_equal_work", "train_mfu")})
    summary.update(threads=result["threads"], headline_model=headline, lengths=args.lengths,
                   max_predictivity_diff=result["max_predictivity_diff"],
                   correctness_passed=result["correctness_passed"])
    print(json.dumps(summary, indent=2))
    for name, r in per_model.items():
        print(f"{name}: speed-up over the original way (its fixed padding, host copies) x"
              f"{r['predictivity_speedup']:.2f} predictivity, x{r['train_speedup']:.2f} train; at equal work "
              f"(best-practice PyTorch: our batches, statistics reduced in torch) x"
              f"{r['predictivity_speedup_equal_work']:.2f} predictivity, x{r['train_speedup_equal_work']:.2f} train; "
              f"training-step MFU {r['train_mfu']:.2f} (best-practice PyTorch {r['train']['best_practice_train_mfu']:.2f})"
              f" [{r['dtype']}]")
        print(f"{name}: predictivity {r['predictivity']['ours_examples_per_s']:.2f} vs "
              f"{r['predictivity']['reference_examples_per_s']:.2f} ex/s (x{r['predictivity_speedup']:.2f}); "
              f"train {r['train']['ours_examples_per_s']:.2f} vs {r['train']['reference_examples_per_s']:.2f} ex/s "
              f"(x{r['train_speedup']:.2f}); work bound x{r['predictivity']['work_bound_speedup']:.2f} / "
              f"x{r['train']['work_bound_speedup']:.2f}; forward {r['forward']['ours_gflops']:.1f} GFLOP/s of "
              f"{r['forward']['peak_gflops_used']:.1f} peak (MFU {r['forward_mfu']:.2f}); memory 10x ratio "
              f"{r['memory_ratio_10x'] if r['memory_ratio_10x'] is None else round(r['memory_ratio_10x'], 3)}")
    return result


def _loadavg():
    try:
        return os.getloadavg()
    except OSError:
        return None


if __name__ == "__main__":
    main()
