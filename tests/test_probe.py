"""The learnability probe: analysis.linear_probe (logistic regression, strength carve, bootstrap interval) and
stages.probe (features of a frozen tiny model, encodings, the result file) on tiny data."""
import json

import numpy as np
import pytest

import prompt_fixtures as fx
from skillneurons_jax import layout, models
from skillneurons_jax.analysis import linear_probe
from skillneurons_jax.data import batches, tasks
from skillneurons_jax.stages import probe


def _blobs(n, d=6, shift=1.5, seed=0, skew=0.5):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < skew).astype(int)
    x = rng.normal(size=(n, d))
    x[:, 0] += shift * (2 * y - 1)
    return x, y


def test_probe_separates_separable_classes_and_not_noise():
    x, y = _blobs(400, shift=3.0)
    fit = linear_probe.fit_probe(x, y, seed=0)
    xt, yt = _blobs(300, shift=3.0, seed=1)
    s = linear_probe.score(fit, xt, yt, resamples=500)
    assert s["balanced_accuracy"] > 0.95 and s["n"] == 300
    assert s["interval"][0] <= s["balanced_accuracy"] <= s["interval"][1]
    assert set(fit.carve_scores) == set(linear_probe.L2_GRID) and fit.l2 in linear_probe.L2_GRID
    noise = linear_probe.fit_probe(x, np.random.default_rng(5).integers(0, 2, 400), seed=0)
    sn = linear_probe.score(noise, xt, yt, resamples=500)
    assert sn["interval"][0] < 0.5 + 0.1 and abs(sn["balanced_accuracy"] - 0.5) < 0.12


def test_balanced_weights_keep_a_skewed_probe_off_the_majority():
    # 90 % of the train rows are class 0 and the signal is weak: an unweighted fit answers 0 nearly always
    x, y = _blobs(600, shift=0.6, skew=0.1, seed=2)
    xt, yt = _blobs(2000, shift=0.6, skew=0.5, seed=3)
    s = linear_probe.score(linear_probe.fit_probe(x, y, seed=0), xt, yt, resamples=200)
    assert s["balanced_accuracy"] > 0.6
    assert s["majority_rate"] == pytest.approx(max(np.bincount(yt)) / len(yt))


def test_bootstrap_is_seeded_and_bad_inputs_are_named():
    yt = np.array([0, 1] * 50)
    pred = np.where(np.arange(100) % 3 == 0, 1 - yt, yt)
    a = linear_probe.bootstrap_balanced(yt, pred, seed=1, resamples=300)
    assert a == linear_probe.bootstrap_balanced(yt, pred, seed=1, resamples=300) and a[0] < a[1]
    with pytest.raises(ValueError, match="two"):
        linear_probe.fit_probe(np.zeros((10, 2)), np.zeros(10, int))
    with pytest.raises(ValueError, match="NaN"):
        linear_probe.fit_probe(np.full((10, 2), np.nan), np.arange(10) % 2)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        linear_probe.fit_probe(np.zeros(10), np.arange(10) % 2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    headless = models.load_pretrained(str(fx.make_bert(root / "bert", lm_head=False)))
    with_head = models.load_pretrained(str(fx.make_bert(root / "bertlm", lm_head=True)))
    data = fx.write_sst2(root / "data", n_train=120, n_dev=24)
    mrpc = data / "glue" / "MRPC"
    mrpc.mkdir(parents=True)
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    for name, n, seed in (("train.tsv", 40, 3), ("dev.tsv", 12, 4), ("msr_paraphrase_test.txt", 10, 5)):
        rows = fx.sentences(2 * n, seed)
        lines = [f"{int(rows[i][1] == rows[i + n][1])}\t{i}\t{i + n}\t{rows[i][0]}\t{rows[i + n][0]}" for i in range(n)]
        (mrpc / name).write_text("\n".join([header] + lines) + "\n")
    return {"headless": headless, "lm": with_head, "data": data}


def test_features_come_back_in_row_order(tiny):
    loaded = tiny["headless"]
    rows = [tasks.Example(t, None, y) for t, y in fx.sentences(9, 7)]
    enc = batches.encode(rows, loaded.tokenizer, "sst2", "bert", 32)
    feats = probe.features(loaded, enc, batch_size=4)    # rows sorted by length inside: written back by index
    pool = probe.make_pool(loaded)
    for i in (0, 4, 8):
        ids = np.array([enc.input_ids[i]], np.int32)
        mean, slot0 = pool(loaded.params, ids, np.ones_like(ids))
        np.testing.assert_allclose(feats["mean"][i], np.asarray(mean)[0], atol=1e-5)
        np.testing.assert_allclose(feats["slot0"][i], np.asarray(slot0)[0], atol=1e-5)


def test_probe_stage_writes_dev_and_test_scores(tiny, tmp_path):
    settings = probe.ProbeSettings(train_cap=50, batch_size=16, max_text_tokens=32)
    out = probe.probe(tiny["headless"], "sst2", tiny["data"], tmp_path, settings)
    path = layout.probe_path(tmp_path, tiny["headless"].name, "sst2")
    assert json.loads(path.read_text()) == json.loads(json.dumps(out))
    assert json.loads((path.with_name("sst2.meta.json")).read_text())["stage"] == "probe"
    assert set(out["probes"]) == {"joint/mean", "joint/slot0"} and out["reference"] in out["probes"]
    assert out["train"]["rows_fitted"] == 50 and out["train"]["rows_available"] > 50
    dev = out["probes"]["joint/mean"]["dev"]
    assert dev["n"] == 24 and sum(dev["label_counts"].values()) == 24
    assert dev["majority_rate"] == max(dev["label_counts"].values()) / 24
    assert "test" in out["probes"]["joint/mean"]


def test_pairs_are_encoded_separately_for_a_sentence_encoder_only(tiny, tmp_path):
    settings = probe.ProbeSettings(train_cap=40, batch_size=8, max_text_tokens=48)
    bi = probe.probe(tiny["headless"], "mrpc", tiny["data"], tmp_path / "a", settings)
    assert set(bi["probes"]) == {"joint/mean", "joint/slot0", "separate/mean", "separate/slot0"}
    assert bi["probes"]["separate/mean"]["dim"] == 4 * bi["probes"]["joint/mean"]["dim"]
    assert bi["reference"].startswith("joint/")
    assert bi["probes"]["separate/slot0"]["test"]["n"] == 10
    mlm = probe.probe(tiny["lm"], "mrpc", tiny["data"], tmp_path / "b", settings)
    assert set(mlm["probes"]) == {"joint/mean", "joint/slot0"}


def test_probe_refuses_adversarial_sets_and_bad_settings(tiny, tmp_path):
    with pytest.raises(ValueError, match="adversarial"):
        probe.probe(tiny["headless"], "advsst2", tiny["data"], tmp_path)
    with pytest.raises(ValueError, match="encodings"):
        probe.ProbeSettings(encodings="sometimes")
    with pytest.raises(ValueError, match="train_cap"):
        probe.ProbeSettings(train_cap=0)


def test_beyond_model_rule_and_document(tiny, tmp_path):
    from skillneurons_jax.analysis import learnability
    assert learnability.beyond_model(0.55, 0.52) is True
    assert learnability.beyond_model(0.55, 0.75) is False        # prompts learned what the probe did not
    assert learnability.beyond_model(0.78, 0.52) is False        # the probe says the task is learnable
    assert learnability.beyond_model(None, 0.5) is None
    probe.probe(tiny["headless"], "sst2", tiny["data"], tmp_path, probe.ProbeSettings(train_cap=40, batch_size=16))
    out = learnability.write_document(tmp_path / "L.md", tmp_path, tiny["headless"].name, command="cmd",
                                      notes=["load 3"])
    text = out.read_text()
    result = learnability.load_probes(tmp_path, tiny["headless"].name)["sst2"]
    dev = result["probes"][result["reference"]]["dev"]
    assert f"{dev['balanced_accuracy']:.3f} [{dev['interval'][0]:.3f}, {dev['interval'][1]:.3f}]" in text
    assert "| sst2 | sentiment |" in text and "`cmd`" in text and "- load 3" in text


def test_rule_rows_put_the_probe_beside_the_prompts():
    from skillneurons_jax.analysis import learnability, robustness

    def result(dev):
        row = {"balanced_accuracy": dev, "interval": [dev - 0.02, dev + 0.02], "n": 100, "majority_rate": 0.5}
        return {"reference": "joint/mean", "probes": {"joint/mean": {"dev": row, "test": row}}}
    entries = [robustness.AccuracyEntry("m", "hard", "hard", np.array([0.5, 0.52]),
                                        balanced_accuracy=np.array([0.5, 0.54])),
               robustness.AccuracyEntry("m", "easy", "easy", np.array([0.8, 0.8]),
                                        balanced_accuracy=np.array([0.8, 0.8])),
               robustness.AccuracyEntry("m", "advhard", "hard", np.array([0.4]), balanced_accuracy=np.array([0.4]))]
    rows, records = learnability.rule_rows(entries, {("m", "hard"): result(0.55), ("m", "easy"): result(0.78)})
    assert [r["task"] for r in records] == ["hard", "easy"]               # adversarial rows are not judged
    assert [r["beyond_model"] for r in records] == [True, False]
    # one row per split: dev (the rule's) and test (the probe's test figure; no held-out prompt entry given)
    assert [r[:3] for r in rows] == [["m", "hard", "dev"], ["m", "hard", "test"], ["m", "easy", "dev"],
                                     ["m", "easy", "test"]]
    assert rows[0][7] == "52.0 ± 2.8" and rows[0][8] == "0.550 [0.530, 0.570]" and rows[0][10].startswith("yes")
    assert rows[1][6] == "-" and rows[1][8] == "0.550 [0.530, 0.570]" and rows[1][10] == ""
    held = [robustness.AccuracyEntry("m", "hard", "hard", np.array([0.6, 0.6]), balanced_accuracy=np.array([0.6, 0.6]),
                                     n_examples=80, label_counts=[60, 20])]
    rows, records = learnability.rule_rows(entries, {("m", "hard"): result(0.55)}, test_entries=held)
    assert rows[1][3:8] == ["2", "80", "75.0", "60.0 ± 0.0", "60.0 ± 0.0"]
    assert records[0]["prompt_balanced_accuracy_test"] == 0.6 and records[0]["majority_rate_test"] == 0.75


def test_learning_curves_document_reads_the_metrics_and_evaluations(tmp_path):
    from skillneurons_jax.analysis import learnability
    run = layout.run_dir(tmp_path, "m", "sst2", 0)
    run.mkdir(parents=True)
    rows = [{"seed": 0, "step": s, "dev_accuracy": a, "dev_balanced_accuracy": b, "train_loss": 0.7, "best_step": s}
            for s, a, b in ((50, 0.6, 0.55), (100, 0.7, 0.68))]
    (run / layout.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval_test.json").write_text(json.dumps({"accuracy": 0.7, "examples": 40, "prompts": [
        {"accuracy": 0.7, "balanced_accuracy": 0.69, "majority_rate": 0.55}]}))
    text = learnability.learning_curves({"cosine": tmp_path}, "m", "sst2")
    assert "### cosine" in text and "| 0 | 100 | 0.680 | 0.700 | 0.700 | 100 |" in text
    assert "test split (n = 40, majority rate 0.550): accuracy 0.700, balanced accuracy 0.690" in text
