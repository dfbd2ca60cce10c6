"""Loading result files: discovery, typed readers, and clear errors naming the path for missing/corrupt files."""
import json

import numpy as np
import pytest

import analysis_synthetic as syn
from skillneurons_jax.analysis import results


def _pred(rng, L=3, N=16):
    return rng.uniform(0.5, 1.0, size=(L, N))


def test_task_order_and_types():
    assert results.order_tasks(["advsst2", "zzz_default", "qqp", "sst2", "qqp"]) == \
        ["sst2", "qqp", "advsst2", "zzz_default"]
    assert results.clean_task("advmnli") == "mnli" and results.clean_task("sst2") is None
    assert results.task_type("advqqp") == "paraphrase" and results.task_type("unknown") == "other"


def test_predictivity_roundtrip_with_sidecar(tmp_path):
    rng = np.random.default_rng(0)
    pred = _pred(rng)
    syn.write_predictivity(tmp_path, "m", "sst2", pred, seeds=2, tokens=4, model_accuracy=[0.8, 0.9])
    pr = results.load_predictivity(tmp_path, "m", "sst2", arrays=("pred", "acc"))
    np.testing.assert_allclose(pr.pred, pred, rtol=1e-6)
    assert pr.acc.shape == (2, 3, 4, 16) and pr.baseline is None and pr.pred_per_seed is None
    np.testing.assert_allclose(pr.model_accuracy, [0.8, 0.9])
    assert pr.meta["task"] == "sst2"


def test_discover(tmp_path):
    rng = np.random.default_rng(1)
    syn.write_predictivity(tmp_path, "m", "sst2", _pred(rng))
    syn.write_transfer(tmp_path, "m", "sst2", "advsst2", [0.5])
    syn.write_prompt(tmp_path, "m", "sst2", 3, [0.6, 0.7])
    (tmp_path / "transfer" / "m" / ".sst2__imdb.json.abc.tmp").write_text("{")       # an atomic-write leftover
    inv = results.discover(tmp_path)
    assert inv.models == ["m"]
    assert inv.prompts == {"m": {"sst2": [3]}} and inv.transfer == {"m": [("sst2", "advsst2")]}
    assert inv.tasks("m") == ["sst2", "advsst2"]
    assert results.discover(tmp_path / "absent").models == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing_array", "wrong_ndim", "out_of_range"])
def test_corrupt_predictivity_is_reported_with_its_path(tmp_path, damage):
    rng = np.random.default_rng(2)
    path = syn.write_predictivity(tmp_path, "m", "qqp", _pred(rng))
    if damage == "truncate":
        syn.corrupt_truncate(path)
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "missing_array":
        np.savez(path, pred_per_seed=np.ones((1, 3, 16)))
    elif damage == "wrong_ndim":
        np.savez(path, pred=np.full((3, 16, 1), 0.7), pred_per_seed=np.ones((1, 3, 16)))
    elif damage == "out_of_range":
        np.savez(path, pred=np.full((3, 16), 0.2), pred_per_seed=np.ones((1, 3, 16)))
    with pytest.raises(results.CorruptResultError) as e:
        results.load_predictivity(tmp_path, "m", "qqp")
    assert str(path) in str(e.value) and e.value.path == path


def test_missing_file_is_file_not_found_with_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictivity/m/sst2.npz"):
        results.load_predictivity(tmp_path, "m", "sst2")
    with pytest.raises(FileNotFoundError, match="suppression/m/sst2__sst2.json"):
        results.load_suppression(tmp_path, "m", "sst2", "sst2")


def test_corrupt_sidecar_is_reported(tmp_path):
    rng = np.random.default_rng(3)
    path = syn.write_predictivity(tmp_path, "m", "sst2", _pred(rng))
    side = path.with_name(path.name + ".json")
    side.write_text('{"model_accuracy": [0.8, ')
    with pytest.raises(results.CorruptResultError, match="sst2.npz.json"):
        results.load_predictivity(tmp_path, "m", "sst2")
    side.write_text(json.dumps({"model_accuracy": [80.0]}))        # a percentage, not a fraction
    with pytest.raises(results.CorruptResultError, match="outside \\[0, 1\\]"):
        results.load_predictivity(tmp_path, "m", "sst2")


def test_suppression_roundtrip_and_key_formats(tmp_path):
    rng = np.random.default_rng(4)
    skill, random = syn.suppression_arrays([5, 0, 15], seeds=2, draws=3, rng=rng)
    path = syn.write_suppression(tmp_path, "m", "sst2", "sst2", [5, 0, 15], skill, random)
    obj = json.loads(path.read_text())
    obj["skill"]["5.0"] = obj["skill"].pop("5")                       # '5.0' and 5 name the same level
    path.write_text(json.dumps(obj))
    res = results.load_suppression(tmp_path, "m", "sst2", "sst2")
    np.testing.assert_array_equal(res.ks, [0, 5, 15])                   # sorted by k
    np.testing.assert_allclose(res.skill, skill[[1, 0, 2]])
    assert res.random.shape == (3, 3, 2)


@pytest.mark.parametrize("edit, message", [
    (lambda o: o.pop("random"), "lacks field"),
    (lambda o: o["skill"].pop("15"), "k=15"),
    (lambda o: o.update(ks=[0, 5, 150]), "\\[0, 100\\]"),
    (lambda o: o["random"].update({"5": [[0.5, 0.5], [0.5]]}), "different numbers of seeds"),
    (lambda o: o["skill"].update({"5": [0.5, 0.5, 0.5]}), "same number of seeds"),
    (lambda o: o.update(target="qqp"), "'target' is 'qqp'"),
    (lambda o: o["skill"].update({"0": [1.5, 0.5]}), "outside \\[0, 1\\]"),
])
def test_suppression_schema_errors(tmp_path, edit, message):
    rng = np.random.default_rng(5)
    skill, random = syn.suppression_arrays([0, 5, 15], seeds=2, draws=2, rng=rng)
    path = syn.write_suppression(tmp_path, "m", "sst2", "sst2", [0, 5, 15], skill, random)
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))
    with pytest.raises(results.CorruptResultError, match=message) as e:
        results.load_suppression(tmp_path, "m", "sst2", "sst2")
    assert str(path) in str(e.value)


def test_transfer_schema(tmp_path):
    path = syn.write_transfer(tmp_path, "m", "sst2", "imdb", [0.7, 0.8], f1=[0.6, 0.7], seeds=[0, 1])
    tr = results.load_transfer(tmp_path, "m", "sst2", "imdb")
    np.testing.assert_allclose(tr.f1, [0.6, 0.7])
    assert tr.seeds == [0, 1]
    path.write_text(json.dumps({"accuracy": [0.7, 0.8], "f1": [0.6]}))
    with pytest.raises(results.CorruptResultError, match="'f1' has 1 seeds"):
        results.load_transfer(tmp_path, "m", "sst2", "imdb")
    path.write_text(json.dumps({"acc": 0.7}))
    with pytest.raises(results.CorruptResultError, match="'accuracy'"):
        results.load_transfer(tmp_path, "m", "sst2", "imdb")


def test_tuning_metrics_best_dev_and_truncated_last_line(tmp_path):
    d = syn.write_prompt(tmp_path, "m", "sst2", 0, [0.6, 0.8, 0.7])
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "dev_acc')                              # an interrupted append
    (run,) = results.load_tuning_runs(tmp_path, "m", "sst2", [0])
    assert run.best_dev_accuracy == pytest.approx(0.8) and run.best_dev_f1 is None
    lines = (d / "metrics.jsonl").read_text().splitlines()
    (d / "metrics.jsonl").write_text("\n".join([lines[0], "{broken", lines[1]]) + "\n")
    with pytest.raises(results.CorruptResultError, match="line 2"):
        results.load_tuning_runs(tmp_path, "m", "sst2", [0])


def test_label_counts_and_data_facts_are_read_from_where_they_are_recorded(tmp_path):
    wd = tmp_path
    assert results.load_label_counts(wd, "m", "tweets") == (None, None)
    assert results.load_data_facts(wd, "m", "tweets", seeds=[0]).truncation is None     # nothing: no error
    # the predictivity sidecar's dev_label_counts ...
    path = syn.write_predictivity(wd, "m", "tweets", np.full((2, 4), 0.6), model_accuracy=[0.8, 0.8])
    side = path.with_name(path.name + ".json")
    meta = json.loads(side.read_text())
    meta.update(dev_label_counts=[70, 30], truncation={"dev": {"examples": 100, "truncated": 9,
                                                               "max_text_tokens": 32}})
    side.write_text(json.dumps(meta))
    assert results.load_label_counts(wd, "m", "tweets") == ([70, 30], str(path) + ".json")
    assert results.load_data_facts(wd, "m", "tweets").truncation_text() == "dev 9/100 at 32"
    # ... unless the own-prompt transfer JSON has a confusion matrix (rows = true label)
    syn.write_transfer(wd, "m", "tweets", "tweets", [0.8])
    tr = results.transfer_path(wd, "m", "tweets", "tweets")
    obj = json.loads(tr.read_text())
    obj["confusion"] = [[[60, 5], [15, 20]]]
    tr.write_text(json.dumps(obj))
    assert results.load_label_counts(wd, "m", "tweets") == ([65, 35], str(tr))
    obj["confusion"] = [[[60, 5], [15, 20]], [[1, 2], [3, 4]]]           # 2 seeds but 1 accuracy
    tr.write_text(json.dumps(obj))
    with pytest.raises(results.CorruptResultError, match="confusion"):
        results.load_transfer(wd, "m", "tweets", "tweets")
