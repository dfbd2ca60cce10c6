"""Trap 6: no original of an adversarial record may be in its clean task's TRAIN split (the split that tunes the
clean prompt and gives the eq. 2 baseline), whatever file it comes from; the exclusions are counted."""
import json
import logging

import pytest

from skillneurons_jax.data import adversarial, readers, tasks
from skillneurons_jax.data.readers import read_split

from tests.test_data_readers import MNLI_TRAIN, QNLI_HEADER, _mnli_row, tsv, write

N_ROWS = 300


def _qnli_dev(tmp_path):
    """A QNLI dev.tsv of N_ROWS rows in GLUE's spelling (no space before '?'); no train.tsv, so train is carved."""
    rows = [(str(i), f"Where is place {i}?", f"Place {i} is far away.", "entailment" if i % 2 else "not_entailment")
            for i in range(N_ROWS)]
    write(tmp_path, "glue/QNLI/dev.tsv", tsv(QNLI_HEADER, *rows))
    return rows


def _advqnli(tmp_path, originals, annotated=True):
    """AdvGLUE records perturbing the question of QNLI rows `originals` (AdvGLUE's tokenized spelling)."""
    plain, ann = [], []
    for k, i in enumerate(originals):
        rec = {"idx": k, "question": f"Where is spot {i} ?", "sentence": f"Place {i} is far away .", "label": 0}
        plain.append(rec)
        ann.append({**rec, "original_question": f"Where is place {i} ?", "method": "SememePSO"})
    write(tmp_path, "advglue/dev.json", json.dumps({"qnli": plain}))
    if annotated:
        write(tmp_path, "advglue/dev_ann.json", json.dumps({"qnli": ann}))


def _train_questions(tmp_path):
    return {e.text_a for e in read_split("qnli", "train", tmp_path).examples}


def test_originals_are_left_out_of_the_carved_train_split_and_counted(tmp_path, caplog):
    _qnli_dev(tmp_path)
    before = _train_questions(tmp_path)                     # no AdvGLUE file yet: nothing to exclude
    in_train = sorted(int(q.split()[-1].rstrip("?")) for q in before)[:20]
    _advqnli(tmp_path, in_train)
    with caplog.at_level(logging.INFO):
        train = read_split("qnli", "train", tmp_path)
    questions = {e.text_a for e in train.examples}
    assert not any(f"Where is place {i}?" in questions for i in in_train)      # the old code kept all 20
    assert questions == before - {f"Where is place {i}?" for i in in_train}  # nothing else is lost
    assert train.excluded_adversarial_originals == 20
    assert train.adversarial_match.startswith("original_fields: ") and "dev_ann.json" in train.adversarial_match
    assert "left out 20 examples that are originals of advqnli" in caplog.text
    # the dev split (evaluation) is not filtered: only the split that tunes and gives the baseline
    dev = read_split("qnli", "dev", tmp_path)
    assert dev.excluded_adversarial_originals == 0 and dev.adversarial_match is None


def test_without_dev_ann_the_adversarial_text_itself_is_matched(tmp_path, caplog):
    _qnli_dev(tmp_path)
    before = _train_questions(tmp_path)
    in_train = sorted(int(q.split()[-1].rstrip("?")) for q in before)[:10]
    _advqnli(tmp_path, in_train, annotated=False)
    with caplog.at_level(logging.WARNING):
        train = read_split("qnli", "train", tmp_path)
    assert train.excluded_adversarial_originals == 10
    assert train.adversarial_match.startswith("adversarial_text: ")
    assert "dev_ann.json is absent, so the match is on the adversarial text itself" in caplog.text
    assert not any(f"Where is place {i}?" in {e.text_a for e in train.examples} for i in in_train)


def test_originals_are_excluded_from_a_train_file_too(tmp_path):
    """Whatever file the train split comes from: an MNLI train.tsv holding an original loses it."""
    write(tmp_path, "glue/MNLI/train.tsv", tsv(MNLI_TRAIN, _mnli_row(0, "We have little space.", "No room.",
                                                                     "entailment", 12),
                                             _mnli_row(1, "It rained.", "It was wet.", "entailment", 12),
                                             _mnli_row(2, "It was sunny.", "It rained.", "contradiction", 12)))
    rec = {"idx": 0, "premise": "we have golden space .", "hypothesis": "No room .", "label": 0}
    write(tmp_path, "advglue/dev.json", json.dumps({"mnli": [rec], "mnli-mm": []}))
    write(tmp_path, "advglue/dev_ann.json", json.dumps({"mnli": [{**rec, "original_premise": "we have little space ."}],
                                                        "mnli-mm": []}))
    train = read_split("mnli", "train", tmp_path)
    assert [e.text_b for e in train.examples] == ["It rained.", "It was sunny."]
    assert train.excluded_adversarial_originals == 1


def test_every_adversarial_task_guards_its_clean_tasks():
    guarded = {name: spec.excludes_originals_of for name, spec in tasks.TASKS.items() if spec.excludes_originals_of}
    for name, spec in tasks.TASKS.items():
        if spec.clean_task is not None:
            assert name in guarded[spec.clean_task], name
    assert "advqqp" in guarded["mrpc"]          # a paraphrase set a user might tune AdvQQP's side on


def test_normalize_ignores_case_spacing_and_punctuation():
    assert adversarial.normalize("Kennedy Space Center?") == adversarial.normalize("kennedy space center ?")
    assert adversarial.normalize(None) == ""


def test_real_qnli_train_has_no_advqnli_original(shared_data):
    """With the real files: the QNLI train split (carved from GLUE dev.tsv, the file AdvGLUE perturbed) holds none
    of AdvQNLI's originals, not even their questions with another sentence (the row-wise carve kept 49 rows, the
    originals of 98 of the 148 records; the pair match then left 21 records' original questions in train)."""
    if not (shared_data / adversarial.ANNOTATED_FILE).exists():
        pytest.skip("advglue/dev_ann.json is absent from the real data folder")
    originals = readers.adversarial_originals(("advqnli",), shared_data)
    train = read_split("qnli", "train", shared_data)
    leaked = [e for e in train.examples if originals.matches(e, "text_a")]
    assert leaked == []
    assert train.excluded_adversarial_originals > 0
    # the exclusion is all that changed: the carve with the originals put back has exactly that many more rows
    carve = tasks.get_task("qnli").carve
    carved = readers.READERS["tsv"](shared_data / "glue/QNLI/dev.tsv", carve.source)[0]
    low, high = carve.parts["train"]
    in_train = [r for r in carved if low <= readers._bucket(carve.rule, r.key, None, None) < high]
    assert len(in_train) == len(train.examples) + train.excluded_adversarial_originals
    assert sum(originals.matches(r.example, "text_a") for r in in_train) == train.excluded_adversarial_originals


def test_real_qnli_splits_share_no_question(shared_data):
    """The row-wise carve put 398 of 1,111 dev rows and 189 of 577 test rows on a question also asked in train."""
    if not (shared_data / "glue/QNLI/dev.tsv").exists() or (shared_data / "glue/QNLI/train.tsv").exists():
        pytest.skip("QNLI is carved from dev.tsv only without train.tsv")
    norm = adversarial.normalize
    questions = {s: {norm(e.text_a) for e in read_split("qnli", s, shared_data).examples} for s in tasks.SPLITS}
    assert not questions["train"] & questions["dev"] and not questions["train"] & questions["test"]
    assert not questions["dev"] & questions["test"]


def test_an_advglue_file_without_the_tasks_records_excludes_nothing_and_says_so(tmp_path, caplog):
    """A study whose AdvGLUE file holds only some tasks (here qnli records, no qqp) still reads MRPC-like clean
    tasks: with no AdvQQP records there is nothing of the clean train split to judge on, so nothing is left out."""
    _qnli_dev(tmp_path)
    _advqnli(tmp_path, [1, 2, 3])
    assert readers.adversarial_originals(("advqqp",), tmp_path) is None
    with caplog.at_level(logging.INFO):
        both = readers.adversarial_originals(("advqnli", "advqqp"), tmp_path)
    assert both.tasks == ("advqnli",)                       # the present task still guards its clean task
    assert "no ['qqp'] records" in caplog.text
    # reading the adversarial split itself still fails, naming the file and the missing key
    with pytest.raises(readers.DataFormatError, match=r"dev.json: no 'qqp' records"):
        read_split("advqqp", "dev", tmp_path)


def _qnli_dev_with_repeated_questions(tmp_path, n_questions=120, rows_per_question=3):
    """GLUE QNLI's dev.tsv asks most questions several times, each with another sentence."""
    rows = [(str(q * rows_per_question + j), f"Where is place {q}?", f"Sentence {j} about place {q}.",
             "entailment" if (q + j) % 2 else "not_entailment")
            for q in range(n_questions) for j in range(rows_per_question)]
    write(tmp_path, "glue/QNLI/dev.tsv", tsv(QNLI_HEADER, *rows))
    return rows


def test_qnli_carve_keeps_every_row_of_a_question_in_one_split(tmp_path):
    rows = _qnli_dev_with_repeated_questions(tmp_path)
    split_questions = {s: {e.text_a for e in read_split("qnli", s, tmp_path).examples} for s in tasks.SPLITS}
    assert all(split_questions.values())
    for a in tasks.SPLITS:
        for b in tasks.SPLITS:
            if a < b:
                assert not split_questions[a] & split_questions[b], (a, b)   # a row-wise carve shares ~all
    assert sum(len(read_split("qnli", s, tmp_path).examples) for s in tasks.SPLITS) == len(rows)


def test_every_advqnli_original_question_is_out_of_train_whatever_its_sentence(tmp_path):
    _qnli_dev_with_repeated_questions(tmp_path)
    before = read_split("qnli", "train", tmp_path).examples
    in_train = sorted({int(e.text_a.split()[-1].rstrip("?")) for e in before})[:10]
    # each record perturbs ONE row (sentence 0) of a question whose other rows have other sentences
    ann = [{"idx": k, "question": f"Where is spot {i} ?", "sentence": f"Sentence 0 about place {i} .", "label": 0,
            "original_question": f"Where is place {i} ?"} for k, i in enumerate(in_train)]
    write(tmp_path, "advglue/dev.json", json.dumps({"qnli": [{k: v for k, v in r.items() if k != "original_question"}
                                                              for r in ann]}))
    write(tmp_path, "advglue/dev_ann.json", json.dumps({"qnli": ann}))
    train = read_split("qnli", "train", tmp_path)
    questions = {e.text_a for e in train.examples}
    assert not questions & {f"Where is place {i}?" for i in in_train}      # by pair, 20 of these rows stayed
    assert train.excluded_adversarial_originals == 3 * len(in_train)
    assert len(train.examples) == len(before) - 3 * len(in_train)
    # matching by the pair (other tasks) still needs both texts
    originals = readers.adversarial_originals(["advqnli"], tmp_path)
    other = tasks.Example(f"Where is place {in_train[0]}?", "Sentence 2 about place.", 1)
    assert originals.matches(other, "text_a") and not originals.matches(other, "pair")
    with pytest.raises(ValueError, match="match originals by"):
        originals.matches(other, "question")
