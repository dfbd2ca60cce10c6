"""Tokenization, templates, truncation, batching, and the label traps (multi-token targets; never three classes)."""
import dataclasses
import random

import numpy as np
import pytest

from skillneurons_jax.data import batches, tasks
from skillneurons_jax.data.batches import encode, iterate
from skillneurons_jax.data.tasks import Example, get_task, label_word_ids

TINY_BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "good", "bad", "no", "yes",
                   "negative", "positive", "false", "true", "unacceptable", "acceptable", "en", "##tail", "##ment",
                   "a", "b", "c", "d"]


@pytest.fixture(scope="module")
def bert_tok(tmp_path_factory):
    """A real BertTokenizer on a 25-word WordPiece vocab (no download)."""
    from transformers import BertTokenizer
    folder = tmp_path_factory.mktemp("tiny_bert")
    (folder / "vocab.txt").write_text("\n".join(TINY_BERT_VOCAB) + "\n")
    return BertTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def t5_tok(tmp_path_factory):
    """A real T5Tokenizer on a SentencePiece model trained here in well under a second."""
    import sentencepiece as spm
    from transformers import T5Tokenizer
    rng = random.Random(0)
    common = ("the a film movie was good bad great plot actor hypothesis premise sentence contradiction negative "
              "positive false true no yes acceptable").split()
    lines = []
    for _ in range(2000):
        words = [rng.choice(common) for _ in range(6)]
        words += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 7)))
                  for _ in range(4)]
        rng.shuffle(words)
        lines.append(" ".join(words) + " : [SEP] ? .")
    folder = tmp_path_factory.mktemp("tiny_t5")
    (folder / "corpus.txt").write_text("\n".join(lines + ["entail tail ment men"] * 20))
    spm.SentencePieceTrainer.train(input=str(folder / "corpus.txt"), model_prefix=str(folder / "spiece"),
                                   vocab_size=300, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    return T5Tokenizer.from_pretrained(str(folder), extra_ids=4)


@pytest.fixture(scope="module")
def roberta_tok(shared_data):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(shared_data / "tokenizers" / "roberta-base"))


# ----------------------------------------------------------------------------------------------- templates
def test_encoder_templates_follow_the_original(bert_tok):
    single = encode([Example("the film", None, 1)], bert_tok, "sst2", "bert")
    assert single.input_ids == [[2, 5, 6, 3]]                                  # [CLS] a [SEP]
    pair = encode([Example("the film", "was good", 0)], bert_tok, "mrpc", "bert")
    assert pair.input_ids == [[2, 5, 6, 3, 7, 8, 3]]                           # [CLS] a [SEP] b [SEP]
    assert pair.labels.tolist() == [0] and pair.lengths.tolist() == [7]


def test_roberta_pair_is_s_a_sep_b_sep(roberta_tok):
    enc = encode([Example("Who won?", "The red team won.", 1)], roberta_tok, "qnli", "roberta")
    a = roberta_tok.encode("Who won?", add_special_tokens=False)
    b = roberta_tok.encode("The red team won.", add_special_tokens=False)
    assert enc.input_ids == [[0] + a + [2] + b + [2]]


def test_t5_templates_match_the_original_strings(t5_tok):
    ex = Example("the film was good", "a bad plot", 1)
    enc = encode([ex], t5_tok, "qnli", "t5")
    # The original: encode("hypothesis: " + a) + encode(" [SEP] sentence: ") + encode("premise: " + b), then </s>.
    joint = (t5_tok.encode("hypothesis: " + ex.text_a, add_special_tokens=False)
             + t5_tok.encode(" [SEP] sentence: ", add_special_tokens=False)
             + t5_tok.encode("premise: " + ex.text_b, add_special_tokens=False) + [t5_tok.eos_token_id])
    assert enc.input_ids == [joint]
    para = encode([ex], t5_tok, "qqp", "t5").input_ids[0]
    sentinel = t5_tok.convert_tokens_to_ids("<extra_id_0>")
    assert para == (t5_tok.encode(ex.text_a, add_special_tokens=False) + [sentinel]
                    + t5_tok.encode(ex.text_b, add_special_tokens=False) + [t5_tok.eos_token_id])
    assert encode([Example("good", None, 0)], t5_tok, "sst2", "t5").input_ids[0][-1] == t5_tok.eos_token_id


def test_pair_mismatch_is_an_error(bert_tok):
    with pytest.raises(ValueError, match="needs a second text"):
        encode([Example("a", None, 0)], bert_tok, "mrpc", "bert")
    with pytest.raises(ValueError, match="has no place for a second text"):
        encode([Example("a", "b", 0)], bert_tok, "sst2", "bert")


# ----------------------------------------------------------------------------------------------- truncation
def test_longest_first_matches_hugging_face(bert_tok):
    rng = np.random.default_rng(0)
    words = ["the", "film", "was", "good", "bad", "a", "b", "c"]
    for _ in range(30):
        la, lb, budget = (int(x) for x in rng.integers(1, 20, size=3))
        a, b = " ".join(rng.choice(words, la)), " ".join(rng.choice(words, lb))
        ref = bert_tok(a, b, truncation="longest_first", max_length=budget + 3)["input_ids"]
        ours = encode([Example(a, b, 0)], bert_tok, "mrpc", "bert", max_text_tokens=budget).input_ids[0]
        assert ours == ref, (la, lb, budget)


def test_truncation_to_128_text_tokens(roberta_tok):
    long_a, long_b = " ".join(["word"] * 300), " ".join(["other"] * 50)
    enc = encode([Example(long_a, long_b, 1), Example("short", "pair", 0)], roberta_tok, "mrpc", "roberta")
    assert enc.lengths.tolist()[0] == 128 + 3 and enc.truncated == 1
    ids = enc.input_ids[0]
    seps = [i for i, t in enumerate(ids) if t == roberta_tok.sep_token_id]
    assert seps[0] - 1 == 78 and seps[1] - seps[0] - 1 == 50        # the longer text gave up its tokens first


def test_t5_template_words_count_toward_the_budget(t5_tok):
    enc = encode([Example("the film " * 100, "a bad plot " * 100, 1)], t5_tok, "mnli", "t5", max_text_tokens=64)
    assert enc.lengths[0] == 64 + 1                                    # + </s>
    with pytest.raises(ValueError, match="leaves no room for text"):
        encode([Example("a", "b", 1)], t5_tok, "mnli", "t5", max_text_tokens=5)


# ----------------------------------------------------------------------------------------------- batches
def _encoded(bert_tok, n=10):
    exs = [Example(" ".join(["good"] * (1 + 7 * i % 40)), None, i % 2) for i in range(n)]
    return encode(exs, bert_tok, "sst2", "bert")


def test_batches_buckets_and_filler_rows(bert_tok):
    enc = _encoded(bert_tok, 10)
    out = list(iterate(enc, 4))
    assert [b["input_ids"].shape for b in out] == [(4, 32), (4, 48), (4, 32)]   # longest rows 24, 38, 26 tokens
    last = out[-1]
    assert last["example_mask"].tolist() == [True, True, False, False]
    assert last["index"].tolist() == [8, 9, -1, -1]
    assert (last["input_ids"][2] == last["input_ids"][0]).all() and last["attention_mask"][3].sum() > 0
    for b in out:
        assert b["input_ids"].dtype == np.int32 and b["attention_mask"].dtype == np.int32
        assert b["labels"].dtype == np.int32 and b["example_mask"].dtype == bool
        for row, i in zip(range(4), b["index"]):
            if i >= 0:
                n = enc.lengths[i]
                assert b["input_ids"][row, :n].tolist() == enc.input_ids[i]
                assert b["attention_mask"][row].sum() == n and (b["input_ids"][row, n:] == enc.pad_id).all()
    assert len(list(iterate(enc, 4, drop_last=True))) == 2 == batches.num_batches(enc, 4, drop_last=True)


def test_shuffling_is_deterministic_per_seed(bert_tok):
    enc = _encoded(bert_tok, 40)
    order = lambda seed: np.concatenate([b["index"] for b in iterate(enc, 8, seed=seed)]).tolist()
    assert order(1) == order(1) and order(1) != order(2) and sorted(order(1)) == list(range(40))
    assert order(None) == list(range(40))


def test_batch_must_split_across_devices(bert_tok):
    enc = _encoded(bert_tok, 8)
    with pytest.raises(ValueError, match="batch size 6 is not divisible by the 4 devices"):
        next(iterate(enc, 6, num_devices=4))
    assert next(iterate(enc, 8, num_devices=4))["input_ids"].shape[0] == 8


def test_sort_by_length_keeps_every_example_once(bert_tok):
    enc = _encoded(bert_tok, 40)
    plain = list(iterate(enc, 8))
    tight = list(iterate(enc, 8, sort_by_length=True))
    idx = np.concatenate([b["index"][b["example_mask"]] for b in tight])
    assert sorted(idx.tolist()) == list(range(40))
    cost = lambda bs: sum(b["input_ids"].size for b in bs)
    assert cost(tight) < cost(plain)
    with pytest.raises(ValueError, match="longer than the largest bucket 16"):
        next(iterate(enc, 8, buckets=(8, 16)))


# ----------------------------------------------------------------------------------------------- verbalizers
def test_roberta_label_ids_are_the_original_bare_tokens(roberta_tok):
    expected = {"sst2": [33407, 22173], "mrpc": [22303, 29225], "qnli": [2362, 10932], "ethicsjustice": [879, 32047]}
    for task, ids in expected.items():
        lw = label_word_ids(task, roberta_tok, "roberta")
        assert lw.ids.shape == (2, 1) and lw.ids[:, 0].tolist() == ids and lw.lengths.tolist() == [1, 1]


def test_encoder_families_need_single_token_words(bert_tok, roberta_tok):
    two_pieces = dataclasses.replace(get_task("qnli"), label_words={"bert": ("no", "entailment"),
                                                                    "roberta": ("no", "unacceptable")})
    with pytest.raises(ValueError, match=r"'entailment' .* is 3 tokens .* must be single tokens"):
        label_word_ids(two_pieces, bert_tok, "bert")
    with pytest.raises(ValueError, match=r"'unacceptable' .* is 2 tokens"):
        label_word_ids(two_pieces, roberta_tok, "roberta")
    unknown = dataclasses.replace(get_task("sst2"), label_words={"bert": ("meh", "good")})
    with pytest.raises(ValueError, match="unknown token"):
        label_word_ids(unknown, bert_tok, "bert")


def test_bert_words_are_single_minilm_tokens(minilm_path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    for name in tasks.TASKS:
        lw = label_word_ids(name, tok, "bert")
        assert lw.ids.shape == (2, 1) and lw.ids[0, 0] != lw.ids[1, 0]


def test_trap1_multi_token_targets_stay_with_their_examples(t5_tok):
    lw = label_word_ids("mnli", t5_tok, "t5")
    assert lw.words == ("contradiction", "entailment")
    assert lw.lengths[0] != lw.lengths[1], "the tiny tokenizer should give targets of different lengths"
    assert lw.ids.shape == (2, int(lw.lengths.max())) and (lw.ids[~lw.mask] == t5_tok.pad_token_id).all()
    rng = random.Random(1)
    exs = [Example(f"the film {i} " + "good " * rng.randint(0, 30), f"premise {i}", rng.randint(0, 1))
           for i in range(37)]
    enc = encode(exs, t5_tok, "mnli", "t5")
    seen = 0
    for batch in iterate(enc, 8, seed=5, label_words=lw, sort_by_length=True, sort_chunk=16):
        assert batch["target_ids"].shape == (8, lw.ids.shape[1])      # one target row per example, never flattened
        for row in np.flatnonzero(batch["example_mask"]):
            ex = exs[batch["index"][row]]
            assert batch["labels"][row] == ex.label
            assert batch["input_ids"][row, :enc.lengths[batch["index"][row]]].tolist() == enc.input_ids[
                batch["index"][row]]
            n = batch["target_lengths"][row]
            word = t5_tok.decode(batch["target_ids"][row, :n].tolist())
            assert word == lw.words[ex.label]
            seen += 1
    assert seen == len(exs)


def test_trap2_nothing_is_scored_against_three_classes(bert_tok, t5_tok):
    for name, spec in tasks.TASKS.items():
        assert spec.num_labels == 2
        for family, tok in (("bert", bert_tok), ("t5", t5_tok)):
            assert label_word_ids(name, tok, family).ids.shape[0] == 2
    with pytest.raises(ValueError, match=r"label 2 outside range\(2\)"):
        encode([Example("H", "P", 2)], bert_tok, "mnli", "bert")


def test_truncation_record_counts_what_was_cut_per_split(bert_tok):
    """Encoded.truncated used to be computed and dropped; the record carries it per split, as plain JSON."""
    long_row = Example("the film was good " * 5, None, 1)
    short_row = Example("bad", None, 0)
    train = encode([long_row, short_row, long_row], bert_tok, "sst2", "bert", max_text_tokens=6)
    dev = encode([short_row], bert_tok, "sst2", "bert", max_text_tokens=6)
    record = batches.truncation_record({"train": train, "dev": dev})
    assert record == {"train": {"examples": 3, "truncated": 2, "max_text_tokens": 6},
                      "dev": {"examples": 1, "truncated": 0, "max_text_tokens": 6}}
    import json
    assert json.loads(json.dumps(record)) == record
    roomy = encode([long_row], bert_tok, "sst2", "bert", max_text_tokens=64)
    assert batches.truncation_summary(roomy) == {"examples": 1, "truncated": 0, "max_text_tokens": 64}


def test_buckets_end_at_the_longest_row_and_merge_a_bucket_just_below_it():
    from types import SimpleNamespace
    from skillneurons_jax.stages.setup import buckets_for
    split = lambda *lengths: SimpleNamespace(lengths=np.asarray(lengths))
    # texts cut at 48 tokens + 2 specials: 48 would be a shape of its own for rows of 33-48 tokens; merged into 50
    assert buckets_for([split(10, 50), split(30)]) == (16, 32, 50)
    # 48 is more than 1/16 below 60: kept, since padding its rows to 60 would cost more than one compile
    assert buckets_for([split(60)]) == (16, 32, 48, 60)
    assert buckets_for([split(48)]) == (16, 32, 48)
    assert buckets_for([split(34)]) == (16, 34) and buckets_for([split(35)]) == (16, 32, 35)   # 32 < 35 * 15/16
    assert buckets_for([split(12)]) == (12,)
