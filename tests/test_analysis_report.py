"""The report builds from partial and partly corrupt synthetic results, lists what is missing, and never crashes."""
import json
import re

import numpy as np
import pytest
from matplotlib import image as mimage

import analysis_synthetic as syn
from skillneurons_jax.analysis import figures, results, specificity

MODEL = "tiny-bert"
KS = [0, 5, 15]


def _workdir(tmp_path):
    """sst2, imdb, movierationales (sentiment; correlated neurons), mrpc (paraphrase), advsst2 (with sst2's prompt).
    Partial on purpose: no suppression for imdb/mrpc/movierationales, no transfer into mrpc, imdb's predictivity
    sidecar corrupt."""
    rng = np.random.default_rng(0)
    wd = tmp_path / "work"
    L, N = 3, 40
    base = rng.uniform(0.5, 1.0, (L, N))
    preds = {"sst2": base, "imdb": np.clip(base + rng.normal(0, 0.03, (L, N)), 0.5, 1),
             "movierationales": np.clip(base + rng.normal(0, 0.05, (L, N)), 0.5, 1),
             "mrpc": rng.uniform(0.5, 1.0, (L, N)), "advsst2": np.clip(base + rng.normal(0, 0.1, (L, N)), 0.5, 1)}
    for task, p in preds.items():
        syn.write_predictivity(wd, MODEL, task, p, seeds=2, tokens=3, rng=rng,
                               model_accuracy=[0.8, 0.85] if task != "mrpc" else None)
    for task in ("sst2", "imdb", "movierationales", "mrpc"):
        for seed in (0, 1):
            syn.write_prompt(wd, MODEL, task, seed, [0.6, 0.7 + 0.05 * seed])
    for s in ("sst2", "imdb", "movierationales"):
        for t in ("sst2", "imdb", "movierationales", "advsst2"):
            syn.write_transfer(wd, MODEL, s, t, [0.8, 0.9] if s == t else [0.6, 0.7])
    skill, random = syn.suppression_arrays(KS, seeds=2, draws=3, rng=rng)
    syn.write_suppression(wd, MODEL, "sst2", "sst2", KS, skill, random)
    syn.write_suppression(wd, MODEL, "sst2", "advsst2", KS, skill, random)
    side = results.predictivity_path(wd, MODEL, "imdb")
    side.with_name(side.name + ".json").write_text("{ not json")
    return wd


def test_report_with_partial_and_corrupt_inputs(tmp_path):
    wd = _workdir(tmp_path)
    bad_supp = results.suppression_path(wd, MODEL, "movierationales", "movierationales")
    syn.write_text(bad_supp, '{"ks": [0, 5], "skill": ')                      # truncated JSON
    out = tmp_path / "report"
    config = {"tasks": "sst2,imdb,movierationales,mrpc,advsst2,qqp", "analysis": {"n_permutations": 49, "dpi": 40}}
    rep = syn.build_report(wd, out, config)

    assert rep.errors == []
    md, html = rep.index_md.read_text(), rep.index_html.read_text()
    # every figure type is present, readable, and linked (relatively) from both documents
    names = {p.name for p in rep.figures}
    for expected in ("transfer_absolute.png", "transfer_relative.png", "spearman.png", "spearman_zscored.png",
                     "predictivity_per_layer.png", "predictivity_boxes_model_accuracy.png",
                     "neuron_accuracy_boxes.png", "predictivity_layers_sst2.png", "suppression_same_task.png",
                     "suppression_cross_task.png"):
        assert expected in names
    for path in rep.figures:
        assert mimage.imread(path).shape[0] > 50
        rel = str(path.relative_to(out))
        assert f"]({rel})" in md and f'src="{rel}"' in html
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (out / link).exists()
    # what is missing is listed, by path; corrupt files are listed by path
    missing = "\n".join(rep.missing)
    assert "task qqp: named in the config" in missing
    assert str(results.suppression_path(wd, MODEL, "imdb", "imdb")) in missing
    assert "transfer: 8 of 20 pairs absent" in missing and "sst2__mrpc" in missing and "mrpc__advsst2" in missing
    assert any(str(bad_supp) in p for p in rep.problems)
    assert any("imdb.npz.json" in p for p in rep.problems)
    assert str(bad_supp) in md and "task qqp" in html
    # the tables: accuracy with the adversarial set evaluated with sst2's prompt
    # (columns: model, task, prompt, seeds, n, majority class, accuracy; n and majority unknown here)
    assert "| tiny-bert | advsst2 | sst2 | 2 | – | – | 65.0 ± 7.1 |" in md     # sst2__advsst2: [0.6, 0.7], std ddof=1
    assert "| tiny-bert | mrpc | mrpc | 2 | – | – | 72.5 ± 3.5 |" in md        # best dev accuracy of tuning logs (ddof=1)
    # config and numbers are recorded
    assert '"n_permutations": 49' in md
    summary = json.loads(rep.summary.read_text())
    spec = summary["specificity"][MODEL]
    assert spec["tasks"] == ["sst2", "imdb", "movierationales", "mrpc", "advsst2"]
    assert spec["within_between"]["within"] > spec["within_between"]["between"]
    assert spec["pvalues"][0][1] == pytest.approx(1 / 50)
    assert summary["transfer"][MODEL]["relative"][0][0] == pytest.approx(1.0)
    assert (out / "index.md.json").exists()


def test_report_shows_t5_decoder_predictivity(tmp_path):
    rng = np.random.default_rng(2)
    wd = tmp_path / "w"
    path = syn.write_predictivity(wd, "t5-base", "sst2", rng.uniform(0.5, 1, (2, 20)))
    arrays = dict(np.load(path))
    np.savez(path, **arrays, decoder_pred=rng.uniform(0.5, 1, (3, 20)),
             decoder_null_pred_layer_mean=np.full((4, 3), 0.6), decoder_null_pred_layer_max=np.full((4, 3), 0.7))
    rep = syn.build_report(wd, tmp_path / "out", {"analysis": {"n_permutations": 0, "dpi": 30}})
    assert rep.errors == [] and "decoder_predictivity_layers_sst2.png" in {p.name for p in rep.figures}
    assert rep.problems == []                     # the decoder's permutation floor is read (and drawn)
    np.savez(path, **arrays, decoder_pred=rng.uniform(0.5, 1, (3, 20)), decoder_null_pred_layer_mean=np.zeros(3))
    rep = syn.build_report(wd, tmp_path / "out1", {"analysis": {"n_permutations": 0, "dpi": 30}})
    assert any("decoder_null_pred_layer_mean" in p and str(path) in p for p in rep.problems)
    np.savez(path, **arrays, decoder_pred=np.zeros((3, 20)))
    rep = syn.build_report(wd, tmp_path / "out2", {"analysis": {"n_permutations": 0, "dpi": 30}})
    assert any("decoder_pred" in p and str(path) in p for p in rep.problems)


def test_report_on_empty_workdir_lists_that_nothing_exists(tmp_path):
    rep = syn.build_report(tmp_path / "nothing", tmp_path / "out", {"tasks": ["sst2"]})
    assert rep.errors == [] and rep.figures == []
    assert any("no results at all" in m for m in rep.missing)
    assert any("task sst2" in m for m in rep.missing)
    assert "no results at all" in rep.index_md.read_text()


def test_report_accepts_config_dict_objects_and_single_task(tmp_path):
    ml_collections = pytest.importorskip("ml_collections")
    rng = np.random.default_rng(1)
    wd = tmp_path / "w"
    syn.write_predictivity(wd, MODEL, "sst2", rng.uniform(0.5, 1, (2, 20)), model_accuracy=[0.9])
    cfg = ml_collections.ConfigDict({"tasks": ["sst2"], "analysis": {"neuron_accuracy_boxes": False}})
    rep = syn.build_report(wd, tmp_path / "out", cfg)
    assert rep.errors == []
    assert any("task specificity" in m and "at least 2" in m for m in rep.missing)
    assert {p.name for p in rep.figures} >= {"predictivity_per_layer.png", "predictivity_layers_sst2.png"}
    assert "neuron_accuracy_boxes.png" not in {p.name for p in rep.figures}


def test_report_section_failure_is_listed_not_raised(tmp_path, monkeypatch):
    wd = _workdir(tmp_path)
    monkeypatch.setattr(specificity, "analyse", lambda *a, **k: 1 / 0)

    def boom(*args, **kwargs):
        raise RuntimeError("synthetic bug")
    monkeypatch.setattr(figures, "transfer_heatmap", boom)
    rep = syn.build_report(wd, tmp_path / "out", {"analysis": {"n_permutations": 9, "dpi": 40}})
    figure_errors = [e for e in rep.errors if "synthetic bug" in e]
    assert len(figure_errors) == 2 and all("transfer_" in e for e in figure_errors)   # absolute and relative
    section_errors = [e for e in rep.errors if e.startswith("task specificity")]
    assert len(section_errors) == 1 and "ZeroDivisionError" in section_errors[0] and len(rep.errors) == 3
    assert "suppression_same_task.png" in {p.name for p in rep.figures}     # later sections still built
    assert "synthetic bug" in rep.index_md.read_text()


def test_unwritable_out_dir_fails_early_and_clearly(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write the report"):
        syn.build_report(tmp_path, blocker / "report", {})


def test_report_states_verdicts_balanced_accuracy_majority_and_data_facts(tmp_path):
    """Issue 14: every accuracy with its n, seeds and majority rate; balanced accuracy from the confusion matrix;
    truncation and exclusions from sidecars; one computed sentence per test, whatever the answer."""
    wd = _workdir(tmp_path)
    # sst2's own-prompt transfer with confusion matrices (rows = true label) and a sidecar recording truncation
    confusion = [[[30, 10], [5, 55]], [[35, 5], [10, 50]]]
    path = results.transfer_path(wd, MODEL, "sst2", "sst2")
    obj = json.loads(path.read_text())
    obj.update(accuracy=[0.85, 0.85], confusion=confusion, n_dev=100)
    path.write_text(json.dumps(obj))
    path.with_suffix(".meta.json").write_text(json.dumps({
        "truncation": {"dev": {"examples": 100, "truncated": 7, "max_text_tokens": 32}},
        "excluded_adversarial_originals": {"count": 3}}))
    # per-example suppression data for sst2 -> sst2: skill suppression costs far more than random
    rng = np.random.default_rng(5)
    n, seeds, draws = 100, 2, 3
    labels = np.array([0] * 40 + [1] * 60)
    skill_correct = (rng.uniform(size=(len(KS), seeds, n)) < np.array([0.85, 0.5, 0.4])[:, None, None]).astype(int)
    random_correct = (rng.uniform(size=(len(KS), draws, seeds, n)) < 0.85).astype(int)
    syn.write_suppression(wd, MODEL, "sst2", "sst2", KS, skill_correct.mean(-1),
                          random_correct.mean(-1))
    supp = results.suppression_path(wd, MODEL, "sst2", "sst2")
    obj = json.loads(supp.read_text())
    obj.update(skill_correct={str(k): skill_correct[i].tolist() for i, k in enumerate(KS)},
               random_correct={str(k): random_correct[i].tolist() for i, k in enumerate(KS)},
               labels=labels.tolist())
    supp.write_text(json.dumps(obj))

    rep = syn.build_report(wd, tmp_path / "out", {"analysis": {"n_permutations": 19, "dpi": 40,
                                                                  "sign_flips": 999}})
    assert rep.errors == []
    md = rep.index_md.read_text()
    balanced = (30 / 40 + 55 / 60 + 35 / 40 + 50 / 60) / 4
    # sst2 row: n 100, majority 60.0 (from the confusion's row sums), balanced accuracy, truncation, exclusions
    assert re.search(r"\| tiny-bert \| sst2 \| sst2 \| 2 \| 100 \| 60\.0 \| 85\.0 ± 0\.0 \| "
                     + re.escape(f"{100 * balanced:.1f}") + r" ± \d\.\d \| – \| dev 7/100 at 32 \| 3 \|", md)
    assert "F1 for AdvQQP only in its footnote 2" in md and "as in the paper" not in md
    assert "sst2 → sst2, k = 15%: skill neurons hurt more than random: yes" in md
    assert "sst2 → advsst2, k = 15%: skill neurons hurt more than random:" in md
    assert "no per-example data" in md                          # sst2 -> advsst2 has none
    assert "Within-type correlation higher than between-type: " in md
    assert "smallest attainable p" in md                        # 3 sentiment sets + mrpc: too few to reach 0.05
    summary = json.loads(rep.summary.read_text())
    row = next(r for r in summary["accuracy"] if r["task"] == "sst2")
    assert row["balanced_accuracy"]["mean"] == pytest.approx(balanced) and row["majority_rate"] == pytest.approx(0.6)
    assert row["n_examples"] == 100 and row["seeds"] == 2 and row["truncation"]["dev"]["truncated"] == 7
    spec = summary["specificity"][MODEL]
    assert spec["type_test"]["exact"] and spec["type_test"]["excluded_pairs"] == [["advsst2", "sst2"]]
    assert spec["type_test"]["verdict"].startswith("Within-type correlation higher than between-type: ")
    assert spec["reliability"]["sst2"]["split_half"] == pytest.approx(1.0)
    comparison = summary["suppression"][MODEL]["sst2__sst2"]
    assert comparison["per_example"] and comparison["majority_rate"] == pytest.approx(0.6)
    assert comparison["comparison"][-1]["verdict"] == "yes" and comparison["comparison"][-1]["p_value"] < 0.01


def test_suppression_curves_left_out_by_the_config_are_said_once_not_listed_as_missing(tmp_path):
    wd = _workdir(tmp_path)
    config = {"tasks": "sst2,imdb,mrpc,advsst2", "suppression": {"tasks": "sst2,advsst2"},
              "analysis": {"n_permutations": 0, "dpi": 30}}
    rep = syn.build_report(wd, tmp_path / "out", config)
    missing = "\n".join(rep.missing)
    assert "suppression:" not in missing                       # imdb and mrpc were not asked for
    said = re.findall(r"Not computed, by the configuration[^\n]*", rep.index_md.read_text())
    assert len(said) == 1 and "imdb" in said[0] and "mrpc" in said[0] and "sst2," not in said[0].split(":")[-1]
    rep = syn.build_report(wd, tmp_path / "out2", {**config, "suppression": {"tasks": ""}})
    assert str(results.suppression_path(wd, MODEL, "imdb", "imdb")) in "\n".join(rep.missing)   # "": every task


def test_the_specificity_table_shows_the_label_dependence_the_pipeline_measured(tmp_path):
    """Issue 14: the task-type comparison must rest on nearly independent labels, and the report must show it.
    With the measured overlaps passed in, each pair's cell gives its shared texts and label r; a pair of different
    task types with dependent labels is named; without a measurement the report says so instead of a verdict."""
    rng = np.random.default_rng(1)
    wd = tmp_path / "work"
    for task in ("sst2", "imdb", "mrpc"):
        syn.write_predictivity(wd, MODEL, task, rng.uniform(0.5, 1.0, (2, 30)), seeds=2, tokens=3, rng=rng)
    config = {"analysis": {"n_permutations": 0, "dpi": 30}}

    def pair(a, b, shared, r):
        return {"task_a": a, "task_b": b, "splits": ["train", "dev", "test"], "shared_texts": shared,
                "pearson_r": r, "label_agreement": None if not shared else 0.5}

    independent = {"pairs": [pair("sst2", "imdb", 0, None), pair("sst2", "mrpc", 0, None),
                             pair("imdb", "mrpc", 120, 0.03)], "splits": ["train", "dev", "test"]}
    md = syn.build_report(wd, tmp_path / "a", config, label_overlap=independent).index_md.read_text()
    assert re.search(r"\| sst2 \| mrpc \| different \| no \| 0 \(disjoint\) \|", md)
    assert re.search(r"\| imdb \| mrpc \| different \| no \| 120 \(r = \+0\.03\) \|", md)
    assert "Every measured pair of different task types (2) is disjoint or below |r| = 0.1" in md

    dependent = {**independent, "pairs": [pair("sst2", "imdb", 0, None), pair("sst2", "mrpc", 400, -0.82),
                                          pair("imdb", "mrpc", 120, 0.03)]}
    rep = syn.build_report(wd, tmp_path / "b", config, label_overlap=dependent)
    md = rep.index_md.read_text()
    assert "not shown to have nearly independent labels: sst2/mrpc (400 (r = -0.82))" in md
    assert "Every measured pair" not in md
    saved = json.loads(rep.summary.read_text())["specificity"][MODEL]["label_overlap"]
    assert saved["pairs"][1]["pearson_r"] == -0.82

    md = syn.build_report(wd, tmp_path / "c", config).index_md.read_text()
    assert "Shared texts (label r): not measured (the report was built without the datasets" in md
    assert re.search(r"\| sst2 \| mrpc \| different \| no \| – \|", md)
    md = syn.build_report(wd, tmp_path / "d", config,
                             label_overlap={"error": "ValueError: x.tsv line 3: no label"}).index_md.read_text()
    assert "not measured (ValueError: x.tsv line 3: no label)" in md


def test_report_puts_the_probe_and_the_rule_beside_table_1(tmp_path):
    rng = np.random.default_rng(1)
    wd = tmp_path / "w"
    syn.write_predictivity(wd, MODEL, "sst2", rng.uniform(0.5, 1, (2, 20)), model_accuracy=[0.52, 0.55])
    row = {"balanced_accuracy": 0.56, "interval": [0.52, 0.6], "n": 872, "majority_rate": 0.51}
    probe_file = wd / "probe" / MODEL / "sst2.json"
    probe_file.parent.mkdir(parents=True)
    probe_file.write_text(json.dumps({"reference": "joint/mean", "probes": {"joint/mean": {"dev": row}}}))
    rep = syn.build_report(wd, tmp_path / "out", {"tasks": ["sst2"], "analysis": {"neuron_accuracy_boxes": False}})
    md = rep.index_md.read_text()
    assert "Learnability: prompts beside the frozen-feature probe" in md and "0.560 [0.520, 0.600]" in md
    record = json.loads((tmp_path / "out" / "summary.json").read_text())["learnability"][0]
    assert record["task"] == "sst2" and record["probe_dev"]["n"] == 872
