"""robust.advglue: adversarial/original pairs from a synthetic dev_ann.json (and the real one when present)."""
import json

import pytest

from skillneurons_jax.data import readers
from skillneurons_jax.data.tasks import Example
from skillneurons_jax.robust import advglue

SYNTHETIC = {
    "sst2": [
        {"idx": 0, "sentence": "a fun movie", "original_sentence": "a great movie", "label": 1},
        {"idx": 1, "sentence": "written by a person", "label": 0},
        {"idx": 2, "sentence": "dull  plot ", "original_sentence": "boring plot", "label": 0},
        {"idx": 3, "sentence": "same text", "original_sentence": "same text ", "label": 1},
    ],
    "qnli": [
        {"idx": 0, "question": "who ran ?", "original_question": "who won ?", "sentence": "Ann won .", "label": 0},
        {"idx": 1, "question": "where ?", "sentence": "Here it is .", "original_sentence": "Here .", "label": 1},
    ],
    "mnli": [{"idx": 0, "premise": "p", "original_premise": "q", "hypothesis": "h", "label": 1}],
    "mnli-mm": [{"idx": 5, "premise": "p2", "hypothesis": "h2", "original_hypothesis": "g2", "label": 2}],
}


def _write(tmp_path, data):
    (tmp_path / "advglue").mkdir(parents=True, exist_ok=True)
    (tmp_path / "advglue" / "dev_ann.json").write_text(json.dumps(data))
    return tmp_path


def test_pairs_keep_labels_and_change_only_the_attacked_field(tmp_path):
    pairs = advglue.load_pairs("advsst2", _write(tmp_path, SYNTHETIC))
    assert pairs.adversarial == (Example("a fun movie", None, 1), Example("dull  plot", None, 0))
    assert pairs.original == (Example("a great movie", None, 1), Example("boring plot", None, 0))
    assert pairs.keys == ("sst2/0", "sst2/2")
    assert pairs.skipped == {advglue.NO_ORIGINAL: ["sst2/1"], advglue.UNCHANGED: ["sst2/3"]}
    qnli = advglue.load_pairs("advqnli", tmp_path)
    # the task's own label convention (QNLI flipped: AdvGLUE 0 = entailment -> 1)
    assert qnli.adversarial == (Example("who ran ?", "Ann won .", 1), Example("where ?", "Here it is .", 0))
    assert qnli.original == (Example("who won ?", "Ann won .", 1), Example("where ?", "Here .", 0))
    assert qnli.attacked_field == ("a", "b")


def test_mnli_reads_both_files_and_drops_neutral(tmp_path):
    data = dict(SYNTHETIC, mnli=SYNTHETIC["mnli"] + [{"idx": 1, "premise": "x", "original_premise": "y",
                                                       "hypothesis": "z", "label": 2}])
    pairs = advglue.load_pairs("advmnli", _write(tmp_path, data))
    assert pairs.keys == ("mnli/1", "mnli-mm/5")
    assert pairs.skipped == {advglue.LABEL_DROPPED: ["mnli/0"]}    # raw 1 = neutral
    # text_a = hypothesis, text_b = premise (the task's fields); contradiction (2) -> 0
    assert pairs.adversarial[1] == Example("h2", "p2", 0) and pairs.original[1] == Example("g2", "p2", 0)


def test_absent_file_and_bad_records_are_clear(tmp_path):
    assert "absent" in advglue.skip_reason("advsst2", tmp_path)
    assert "no AdvGLUE source" in advglue.skip_reason("sst2", tmp_path)
    with pytest.raises(FileNotFoundError, match="dev_ann.json"):
        advglue.load_pairs("advsst2", tmp_path)
    _write(tmp_path, {"sst2": [{"idx": 0, "sentence": "x", "original_sentence": "y", "label": 7}]})
    assert advglue.skip_reason("advsst2", tmp_path) is None
    with pytest.raises(readers.DataFormatError, match=r"dev_ann.json:record 0 of 'sst2': label '7'"):
        advglue.load_pairs("advsst2", tmp_path)
    _write(tmp_path, {"sst2": [{"idx": 0, "label": 1}]})
    with pytest.raises(readers.DataFormatError, match="missing fields"):
        advglue.load_pairs("advsst2", tmp_path)


def test_real_pairs_are_the_dev_split_examples(shared_data):
    from skillneurons_jax.data.readers import load_split
    if advglue.skip_reason("advsst2", shared_data):
        pytest.skip(advglue.skip_reason("advsst2", shared_data))
    pairs = advglue.load_pairs("advsst2", shared_data)
    dev = set(load_split("advsst2", "dev", shared_data))
    assert len(pairs) > 100 and all(e in dev for e in pairs.adversarial)
    assert all(a.label == o.label and a != o for a, o in zip(pairs.adversarial, pairs.original))
