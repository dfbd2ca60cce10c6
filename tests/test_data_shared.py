"""The real files in ../shared/data: exact counts and label balance per split, checked against MANIFEST.md, and
`python -m launch.tasks`."""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from launch.tasks import task_lines
from skillneurons_jax.data import readers
from skillneurons_jax.data.readers import load_split

REPO = pathlib.Path(__file__).resolve().parents[1]

# (task, split) -> (label 0, label 1) after the label conventions, from ../shared/data/MANIFEST.md.
MANIFEST_COUNTS = {
    # SST-2 train.tsv (29,780 / 37,569) split by sha256(sentence) mod 100 into train (< 95) and a held-out test:
    ("sst2", "train"): (28359, 35657), ("sst2", "test"): (1421, 1912), ("sst2", "dev"): (428, 444),
    ("mrpc", "train"): (1194, 2474), ("mrpc", "dev"): (129, 279),
    ("mrpc", "test"): (578, 1147),                                  # msr_paraphrase_test.txt
    ("ethicsdeontology", "train"): (8374, 9790), ("ethicsdeontology", "dev"): (1810, 1786),
    ("ethicsdeontology", "test"): (1773, 1763),                      # test_hard
    ("ethicsjustice", "train"): (9961, 11830), ("ethicsjustice", "dev"): (1350, 1354),
    ("ethicsjustice", "test"): (1002, 1050),
    ("advsst2", "dev"): (72, 76), ("advqqp", "dev"): (46, 32),
    ("advqnli", "dev"): (74, 74),                                   # GLUE ids 0:74 / 1:74, flipped
    # mnli 0:32 (ent) / 1:39 (neutral) / 2:50 (contra) + mnli-mm 0:60 / 1:45 / 2:57, neutral dropped:
    ("advmnli", "dev"): (50 + 57, 32 + 60),
    # 1,000 neg + 1,000 pos reviews, split by cv number 0-799 / 800-899 / 900-999 within each polarity:
    ("movierationales", "train"): (800, 800), ("movierationales", "dev"): (100, 100),
    ("movierationales", "test"): (100, 100),
}
# QNLI dev.tsv: entailment 2,702 / not_entailment 2,761, carved by sha256(index) mod 100: < 70 train, < 80 test,
# else dev; train without the 46 rows that are originals of AdvQNLI records (advglue/dev_ann.json; trap 6).
# grouped by question (the row-wise carve had train (1886, 1843), test (294, 283), dev (561, 550), 46 excluded)
QNLI_CARVED = {"train": (1852, 1854), "test": (308, 288), "dev": (575, 529)}
QNLI_EXCLUDED = 57


@pytest.fixture(scope="module")
def listing(shared_data):
    return task_lines(shared_data)


def test_counts_match_the_manifest(listing):
    got = {(l["task"], l["split"]): (l["label_counts"]["0"], l["label_counts"]["1"]) for l in listing if "split" in l}
    for key, counts in MANIFEST_COUNTS.items():
        assert got[key] == counts, key
    for line in listing:
        if "split" in line:
            assert line["examples"] == sum(line["label_counts"].values())
            assert set(line["label_counts"]) == {"0", "1"}                  # binary everywhere


def test_qnli_carved_from_its_dev_file(listing):
    qnli = {l["split"]: l for l in listing if l["task"] == "qnli" and "split" in l}
    assert {s: (l["label_counts"]["0"], l["label_counts"]["1"]) for s, l in qnli.items()} == QNLI_CARVED
    assert sum(sum(v) for v in QNLI_CARVED.values()) + QNLI_EXCLUDED == 5463
    assert qnli["train"]["excluded_adversarial_originals"] == QNLI_EXCLUDED
    assert qnli["train"]["adversarial_match"].startswith("original_fields: ")
    assert "excluded_adversarial_originals" not in qnli["dev"]                # only train is filtered
    assert all(l["source"].endswith("glue/QNLI/dev.tsv") and "sha256(normalized question)" in l["carved"] for l in qnli.values())


def test_absent_tasks_are_listed_with_paths(listing, shared_data):
    missing = {l["task"]: l for l in listing if "missing" in l}
    assert {"imdb", "qqp", "mnli"} <= set(missing)
    assert str(shared_data / "glue" / "QQP" / "train.tsv") in missing["qqp"]["missing"]
    assert missing["mnli"]["splits"] == ["train", "dev", "test"]


def test_advmnli_never_carries_a_third_class(shared_data):
    data = readers.read_split("advmnli", "dev", shared_data)
    assert {e.label for e in data.examples} == {0, 1} and data.dropped == {"1": 39 + 45}


def test_mrpc_rebuilt_from_msr_equals_glue_files(shared_data, tmp_path):
    for name in ("msr_paraphrase_train.txt", "dev_ids.tsv"):
        (tmp_path / "glue" / "MRPC").mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / "glue" / "MRPC" / name, tmp_path / "glue" / "MRPC" / name)
    for split in ("train", "dev"):
        rebuilt = readers.read_split("mrpc", split, tmp_path)
        assert rebuilt.source.endswith("msr_paraphrase_train.txt")
        assert rebuilt.examples == load_split("mrpc", split, shared_data)


def test_cli_prints_json_lines(tmp_path):
    sst = tmp_path / "glue" / "SST-2"
    sst.mkdir(parents=True)
    (sst / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\nfine\t1\nsad\t0\n")   # sad: test bucket
    (sst / "dev.tsv").write_text("sentence\tlabel\nok\t1\n")
    out = subprocess.run([sys.executable, "-m", "launch.tasks", "--data_dir", str(tmp_path), "--only", "sst2,qqp"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert lines[0] == {"task": "sst2", "split": "train", "examples": 3, "label_counts": {"0": 1, "1": 2},
                        "source": str(sst / "train.tsv"), "carved": "sha256(sentence) mod 100 in [0, 95)"}
    assert lines[1]["split"] == "dev" and lines[1]["examples"] == 1
    assert lines[2] == {"task": "sst2", "split": "test", "examples": 1, "label_counts": {"0": 1, "1": 0},
                        "source": str(sst / "train.tsv"), "carved": "sha256(sentence) mod 100 in [95, 100)"}
    assert lines[3]["task"] == "qqp" and str(tmp_path / "glue" / "QQP" / "dev.tsv") in lines[3]["missing"]
    (sst / "dev.tsv").write_text("sentence\tlabel\nok\t5\n")
    out = subprocess.run([sys.executable, "-m", "launch.tasks", "--data_dir", str(tmp_path), "--only", "sst2"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "dev.tsv:2: label '5'" in out.stderr
