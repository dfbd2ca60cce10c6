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
    with caplog.at_level(logging.WARNING):
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
    of AdvQNLI's originals (today's data: 49 rows, the originals of 98 of the 148 records, were in it)."""
    if not (shared_data / adversarial.ANNOTATED_FILE).exists():
        pytest.skip("advglue/dev_ann.json is absent from the real data folder")
    originals = readers.adversarial_originals(("advqnli",), shared_data)
    train = read_split("qnli", "train", shared_data)
    leaked = [e for e in train.examples if originals.matches(e)]
    assert leaked == []
    assert train.excluded_adversarial_originals > 0
    # the exclusion is all that changed: the carve with the originals put back has exactly that many more rows
    carved = readers.READERS["tsv"](shared_data / "glue/QNLI/dev.tsv", tasks.get_task("qnli").carve.source)[0]
    low, high = tasks.get_task("qnli").carve.parts["train"]
    in_train = [r for r in carved if low <= readers._bucket("hash", r.key, None, None) < high]
    assert len(in_train) == len(train.examples) + train.excluded_adversarial_originals
    assert sum(originals.matches(r.example) for r in in_train) == train.excluded_adversarial_originals


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
