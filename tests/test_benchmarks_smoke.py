"""Keeps the benchmark code working (benchmarks are never timed in tests).

The smoke test runs `python -m benchmarks.run --quick` on tiny random models in a subprocess (the default
real-text workload) and checks the JSON it writes; the other tests pin the pieces the benchmark's verdicts rest
on (the agreement check must reject a wrong computation, the FLOP count, the synthetic workload). The real-text
batching itself is tested in tests/test_benchmarks_realdata.py.
"""
import sys

import numpy as np
import pytest

import benchmarks as B
from benchmarks import run


def test_quick_benchmark_writes_the_ratios_and_passes_its_correctness_check(run_benchmark_module):
    res = run_benchmark_module("benchmarks.run")
    for key in ("predictivity_speedup", "train_speedup", "forward_mfu", "memory_ratio_10x"):
        assert isinstance(res[key], float) and np.isfinite(res[key]) and res[key] > 0, (key, res[key])
        assert res["targets"][key]["met"] in (True, False)
    assert res["correctness_passed"] is True
    assert res["threads"] >= 1 and res["matmul_peak"]["jax"]["gflops"] > 0
    assert set(res["models"]) == {"tiny-roberta-random", "tiny-bert-random"}
    for name, m in res["models"].items():
        c = m["correctness"]
        assert c["passed"] and c["activations_ok"] and c["counts_unexplained_by_ties"] == 0, (name, c)
        assert c["predictivity_max_abs_diff"] <= c["predictivity_bound"] + 1e-7
        assert c["first_loss_abs_diff"] <= run.LOSS_ATOL
        assert m["workload"]["seq_len"] == m["workload"]["prompt_len"] + m["workload"]["text_len"]
        assert m["predictivity"]["ours_examples_per_s"] > 0 and m["train"]["reference_examples_per_s"] > 0
        for stage in ("predictivity", "train"):   # no padding is the least work: both sides pad at least that
            s = m[stage]
            assert 0 < s["unpadded_flops"] <= min(s["ours_flops"], s["reference_flops"]), (name, stage)
            assert s["work_bound_speedup"] == pytest.approx(s["reference_flops"] / s["unpadded_flops"])
    for key in ("predictivity_speedup_equal_work", "train_speedup_equal_work", "train_mfu"):
        assert isinstance(res[key], float) and np.isfinite(res[key]) and res[key] > 0, (key, res[key])
    assert res["dtype"] == "float32"
    for name, m in res["models"].items():
        assert m["best_practice_check"]["passed"] and m["best_practice_check"]["baseline_ok"], name
        assert m["predictivity"]["best_practice_examples_per_s"] > 0 and m["train"]["best_practice_examples_per_s"] > 0
        assert abs(m["train"]["first_loss_best_practice"] - m["train"]["first_loss_ours"]) <= run.LOSS_ATOL
    mem = res["models"][res["headline_model"]]["memory"]
    assert mem["examples_10n"] == 10 * mem["examples_n"]
    assert min(mem["ours_peak_bytes_n"], mem["reference_peak_bytes_10n"]) > 10 * 2 ** 20  # a real RSS figure
    assert res["memory_ratio_10x"] == pytest.approx(mem["ours_peak_bytes_10n"] / mem["ours_peak_bytes_n"])
    if sys.platform.startswith("linux"):  # the child's own high-water mark, not ru_maxrss inherited at fork
        assert all(r["peak_source"] == "VmHWM" for r in mem["runs"].values())
        assert all(r["peak_rss_bytes"] >= r["rss_before_pass_bytes"] for r in mem["runs"].values())
    assert "jax" in res["versions"] and "torch" in res["versions"]
    # The default workload: real texts, the reference at the original fixed length, ours in length buckets.
    assert res["lengths"] == "real"
    for name, m in res["models"].items():
        d = m["data"]
        assert d["mode"] == "real" and d["reference_text_len"] == d["max_text_tokens"] + 3, (name, d)
        assert 3 <= d["mean_real_text_len"] <= d["max_text_tokens"] + 2
        for stage in ("predictivity", "train"):
            t = d["tokens"][stage]
            assert t["ours"]["real"] == t["reference"]["real"] > 0          # the same examples on both sides
            assert set(t["reference"]["text_lengths"]) == {d["reference_text_len"]}
            assert m[stage]["tokens"] == t
        assert m["predictivity"]["ours_flops"] > 0 and m["predictivity"]["reference_flops"] > 0


def _side(acts, labels, baseline, flip=None, pred_shift=0.0):
    """A predictivity result computed from `acts` [L, E, P, N] (as either side would), optionally with one count
    bumped (flip = (l, j, n)) to simulate a statistics bug."""
    correct = np.sum((acts > baseline[:, None]) == labels.astype(bool)[None, :, None, None], axis=1)
    if flip is not None:
        correct = correct.copy()
        correct[flip] += 1
    acc = correct / acts.shape[1]
    return dict(baseline=baseline, correct=correct, n_dev=acts.shape[1],
                predictivity=np.maximum(acc, 1 - acc).max(axis=1) + pred_shift)


def test_agreement_check_accepts_rounding_at_near_ties_and_rejects_everything_else():
    rng = np.random.default_rng(0)
    L, E, P, N = 2, 8, 3, 5
    labels = np.arange(E) % 2
    ref_acts = rng.normal(size=(L, E, P, N)).astype(np.float32)
    baseline = ref_acts.mean(axis=1)
    ref_acts[0, 0, 1, 2] = baseline[0, 1, 2] + 1e-6          # a near-tie ...
    ours_acts = ref_acts.copy()
    ours_acts[0, 0, 1, 2] = baseline[0, 1, 2] - 1e-6         # ... that float32 rounding puts on the other side
    ours_acts += 1e-6 * rng.normal(size=ours_acts.shape).astype(np.float32) * (ours_acts != ours_acts[0, 0, 1, 2])
    ref, ours = _side(ref_acts, labels, baseline), _side(ours_acts, labels, baseline)
    out = run.check_agreement(ref, ours, ref_acts, ours_acts, labels, ours["correct"])
    assert out["passed"] and out["streamed_counts_exact"] and out["counts_unexplained_by_ties"] == 0
    assert out["counts_differing"] == 1 and out["counts_equal_fraction"] == pytest.approx(1 - 1 / (L * P * N))
    assert out["predictivity_max_abs_diff"] <= 1 / E

    flipped = _side(ours_acts, labels, baseline, flip=(1, 0, 0))
    bad = [  # each must be refused
        (flipped, ours_acts, ours["correct"]),                                     # a count the data does not give
        (ours, ours_acts, flipped["correct"]),                                     # streaming counts lose one
        (_side(ours_acts, labels, baseline, pred_shift=0.2), ours_acts, ours["correct"]),  # not from the counts
        (_side(ours_acts, labels, baseline + 1e-2), ours_acts, ours["correct"]),   # baselines apart
        (ours, ours_acts + 1e-2, ours["correct"]),                                 # activations apart
    ]
    for o, acts, streamed in bad:
        with pytest.raises(AssertionError, match="disagree"):
            run.check_agreement(ref, o, ref_acts, acts, labels, streamed)


@pytest.mark.slow
def test_bfloat16_benchmark_records_its_agreement_with_float32_tolerances_relaxed(run_benchmark_module):
    res = run_benchmark_module("benchmarks.run", "--dtype", "bfloat16", "--skip_memory")
    assert res["dtype"] == "bfloat16"
    for key in ("predictivity_speedup_equal_work", "train_speedup_equal_work", "train_mfu"):
        assert isinstance(res[key], float) and np.isfinite(res[key]) and res[key] > 0, (key, res[key])
    for name, m in res["models"].items():
        c = m["correctness"]
        assert m["dtype"] == "bfloat16" and c["tolerance"] == dict(act_atol=run.BF16_ACT_ATOL,
                                                                   act_rtol=run.BF16_ACT_RTOL), name
        # both sides compute in bfloat16, so they still agree to bfloat16 precision (the tiny random models)
        assert c["activations_ok"] and c["first_loss_within_tolerance"], (name, c)
        assert 0 < c["activation_max_abs_diff"] <= run.BF16_ACT_ATOL + run.BF16_ACT_RTOL * c["activation_max_abs"]


def test_train_flops_match_a_hand_count():
    T, H, F, layers = 5, 4, 8, 2
    forward = B.encoder_forward_flops(layers=layers, hidden=H, intermediate=F, seq_len=T)
    # backward to the prompt: one product per projection (input gradient only), two per attention matmul
    backward = layers * (4 * 2 * T * H * H + 2 * 2 * T * H * F + 2 * 2 * (2 * T * T * H))
    assert B.encoder_train_flops(layers=layers, hidden=H, intermediate=F, seq_len=T) == forward + backward


def test_forward_flops_match_a_hand_count():
    T, H, F, layers = 5, 4, 8, 2
    qkvo = 4 * 2 * T * H * H
    attention = 2 * 2 * T * T * H
    ffn = 2 * 2 * T * H * F
    assert B.encoder_forward_flops(layers=layers, hidden=H, intermediate=F, seq_len=T) == layers * (qkvo + attention
                                                                                                   + ffn)
    # RoBERTa-base at 100 + 128 tokens: about 40.6 GFLOP per example.
    assert B.encoder_forward_flops(layers=12, hidden=768, intermediate=3072, seq_len=228) / 1e9 == pytest.approx(
        40.65, abs=0.01)


def test_synthetic_workload_is_deterministic_and_well_formed():
    w = B.Workload(model="tiny-roberta-random", prompt_len=8, text_len=16, batch_size=4, examples=16)
    train, dev = B.predictivity_batches(w, 1000)
    again, _ = B.predictivity_batches(w, 1000)
    assert len(train) == len(dev) == 2
    for a, b in zip(train, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    sp = B.special_ids("tiny-roberta-random")
    for batch in train + dev:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert ids.shape == (4, 16) and ids.dtype == np.int32 and mask.shape == ids.shape
        assert np.all(ids[:, 0] == sp["cls"]) and np.all(ids[mask == 0] == sp["pad"])
        lengths = mask.sum(1)
        assert np.all(ids[np.arange(4), lengths - 1] == sp["sep"])
    labels = np.concatenate([b["labels"] for b in dev])
    assert set(labels.tolist()) == {0, 1}
    assert not np.array_equal(train[0]["input_ids"], dev[0]["input_ids"])  # TRAIN and DEV differ
    with pytest.raises(ValueError, match="whole batches"):
        B.Workload(model="tiny-roberta-random", batch_size=4, examples=12)
    with pytest.raises(ValueError, match="unknown benchmark model"):
        B.Workload(model="gpt-7")


def test_full_mode_gives_both_sides_the_same_synthetic_batches():
    from benchmarks import sides as sides_mod
    from skillneurons_jax import parallel
    w = B.Workload(model="tiny-bert-random", prompt_len=4, text_len=16, batch_size=4, train_batch_size=4,
                   examples=16, lengths="full")
    s = sides_mod.build(w, 1000, parallel.make_mesh())
    assert s.info["mode"] == "full" and s.ref_train is s.ours_train and s.ref_steps is s.ours_steps
    assert all(b["input_ids"].shape == (4, 16) for b in s.ref_train + s.ref_dev + s.ref_steps)
    assert np.concatenate([b["index"] for b in s.ref_dev]).tolist() == list(range(8))
    np.testing.assert_array_equal(s.dev_labels, np.concatenate([b["labels"] for b in s.ref_dev]))
    t = s.info["tokens"]["predictivity"]
    assert t["ours"] == t["reference"] and t["ours"]["positions"] == 16 * (4 + 16)
    with pytest.raises(ValueError, match="lengths must be"):
        B.Workload(model="tiny-bert-random", lengths="bucketed")


def test_minilm_label_ids_are_the_tokenizers(minilm_path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    assert tuple(tok.convert_tokens_to_ids(["negative", "positive"])) == B.MODELS["minilm"]["label_ids"]
    sp = B.special_ids("minilm")
    assert (sp["cls"], sp["sep"], sp["pad"], sp["mask"]) == (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id,
                                                            tok.mask_token_id)


def test_best_practice_torch_streams_the_reference_statistics_and_its_check_rejects_a_wrong_one():
    """BestPractice (statistics reduced in torch, no host copies) gives the reference's numbers on the same
    batches, including filler rows it must skip; check_best_practice refuses a baseline that is off."""
    from benchmarks.torch_reference import BestPractice, Reference, build_model
    w = B.Workload(model="tiny-bert-random", prompt_len=4, text_len=12, batch_size=4, examples=16, lengths="full")
    tmodel = build_model(w.model, 0)
    reference = Reference(tmodel, w.prompt_len)
    best = BestPractice(reference)
    train, dev = B.predictivity_batches(w, tmodel.vocab_size)
    prompt = B.initial_prompt(tmodel.word_embeddings.weight.detach().numpy(), w.prompt_len, 0)
    ref = reference.predictivity(prompt, train, dev)
    filler = dict(train[0], example_mask=np.zeros(4, bool))          # a filler batch changes nothing
    got = best.predictivity(prompt, train + [filler], dev + [dict(dev[0], example_mask=np.zeros(4, bool))])
    np.testing.assert_allclose(got["baseline"], ref["baseline"], rtol=1e-5, atol=1e-6)
    assert got["n_dev"] == ref["n_dev"] == 8
    np.testing.assert_array_equal(got["correct"], ref["correct"])
    np.testing.assert_allclose(got["predictivity"], ref["predictivity"])
    assert run.check_best_practice(got, ref)["passed"]
    with pytest.raises(AssertionError, match="disagree"):
        run.check_best_practice(dict(got, baseline=got["baseline"] + 1.0), ref)
