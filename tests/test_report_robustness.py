"""The report's robustness-study section (issue 17) on synthetic robust/ and patching/ outputs: both tables with
hand-computed cells, the recovery figure, summary.json "robustness_study"; nothing at all without the study; a
corrupt patching file listed as a problem, not a crash."""
import json
import math

import numpy as np
import pytest
from matplotlib import image as mimage
from scipy import stats

import analysis_synthetic as synth
from robust_outputs import PERTURBED_DEV, patching_doc, write_arm_eval, write_patching, write_predictivity
from skillneurons_jax import layout
from skillneurons_jax.analysis import figures, results
from skillneurons_jax.analysis.sections import robustness_study

CONFIG = {"analysis": {"n_permutations": 0, "dpi": 30}}
T2 = stats.t.ppf(0.975, 2)      # 95% t quantile with 3 seeds
T1 = stats.t.ppf(0.975, 1)      # ... with 2 seeds


def _write_arms(workdir):
    """plain and anchored arms of model m on sst2 (clean dev, 100 examples) and advsst2 (40), seeds 0, 1, 2."""
    write_arm_eval(workdir, "plain", [0.90, 0.92, 0.88], [0.40, 0.45, 0.50], clean_label_counts=[60, 40])
    write_arm_eval(workdir, "anchored", [0.86, 0.90, 0.85], [0.55, 0.50, 0.60])


def _build(tmp_path, workdir):
    return synth.build_report(workdir, tmp_path / "report", CONFIG)


def test_section_tables_figure_and_summary(tmp_path):
    workdir = tmp_path / "work"
    _write_arms(workdir)
    write_patching(workdir, patching_doc(source="original"))
    write_patching(workdir, patching_doc(source="mean"))
    rep = _build(tmp_path, workdir)
    assert rep.errors == [] and rep.problems == []
    markdown, html = rep.index_md.read_text(), rep.index_html.read_text()
    assert f"## {robustness_study.HEADING}" in markdown
    assert markdown.index(robustness_study.HEADING) < markdown.index("## Configuration")
    assert "null hypothesis" in markdown and "excludes 0" in markdown

    # anchored on advsst2: accuracies [.55, .50, .60] -> 55.0 ± t(2) * 0.05 / sqrt(3) = ± 12.4;
    # vs plain: [.55-.40, .50-.45, .60-.50] = [.15, .05, .10] -> +10.0 ± 12.4 (sd 0.05 again)
    half = T2 * 0.05 / math.sqrt(3)
    assert round(100 * half, 1) == 12.4
    # (no per-example outcomes in these files: t intervals over seeds, no p; anchored - perturbed: no perturbed arm)
    # MDE: (t(2) quantiles at 97.5 % and 80 %) x se = 5.363 x 0.05 / sqrt(3)
    assert ("| m | sst2 | anchored | advsst2 | 0,1,2 | 40 | – | 55.0 [42.6, 67.4] | +10.0 [-2.4, +22.4]; MDE 15.5 | – "
            "| – | – | – |") in markdown
    # anchored on the clean dev: [.86, .90, .85] -> 87.0 ± t(2) * sqrt(.0007) / sqrt(3) = ± 6.6; cost plain - anchored
    # = [.04, .02, .03] -> +3.0 ± t(2) * 0.01 / sqrt(3) = ± 2.5
    assert "| m | sst2 | anchored | clean dev | 0,1,2 | 100 | – | 87.0 [80.4, 93.6] | -3.0 [-5.5, -0.5]; MDE 3.1 | – " \
           "| – | – | +3.0 [+0.5, +5.5] |" in markdown
    assert "| m | sst2 | plain | clean dev | 0,1,2 | 100 | 60.0 | 90.0 [85.0, 95.0] | – | – | – | – | – |" in markdown

    # patching at k = 5: unpatched [.4, .5] -> 45.0, original [.9, .8] -> 85.0, skill [.7, .7] -> 70.0 (sd 0),
    # random per seed (mean over draws) [.45, .55] -> 50.0; skill - random [.25, .15] -> +20.0 ± t(1) * sd / sqrt(2)
    # with sd = 0.1 / sqrt(2): ± 63.5; recovered (70 - 45) / (85 - 45) = 62.5%
    assert round(100 * T1 * (0.1 / math.sqrt(2)) / math.sqrt(2), 1) == 63.5
    assert "| m | sst2 → advsst2 | original | 5 | 0,1 | 30 | 45.0 | 85.0 | 70.0 [70.0, 70.0] | 50.0 | " \
           "+20.0 [-43.5, +83.5]; MDE 70.4 | – | 62.5 |" in markdown
    assert "| m | sst2 → advsst2 | mean | 5 | 0,1 | 30 | 45.0 | – | 70.0 [70.0, 70.0] | 50.0 | " \
           "+20.0 [-43.5, +83.5]; MDE 70.4 | – | – |" in markdown

    figure = tmp_path / "report" / robustness_study.FIGURE
    assert figure.exists() and figure in rep.figures
    assert f"]({robustness_study.FIGURE})" in markdown and f'src="{robustness_study.FIGURE}"' in html

    study = json.loads(rep.summary.read_text())["robustness_study"]
    assert set(study) == {"arms", "manipulation", "predictivity", "patching"}   # docs/interfaces.md's keys, no more
    assert [(r["arm"], r["split"]) for r in study["arms"]] == [("plain", "clean"), ("plain", "adversarial"),
                                                               ("anchored", "clean"), ("anchored", "adversarial")]
    assert study["arms"][0]["vs_plain_mean"] is None
    assert [(r["source"], r["k"]) for r in study["patching"]] == [("mean", 5), ("original", 5)]
    assert study["patching"][1]["fraction_recovered"] == pytest.approx(0.25 / 0.4)


def test_predictivity_table_per_arm(tmp_path):
    """The clean skill neurons (top 50 % per layer of the main study's pred: 4 of 8) per arm; per seed the skill
    neurons hold one value and the rest 0.5, so every cell is by hand."""
    workdir = tmp_path / "work"
    _write_arms(workdir)
    write_predictivity(workdir, "sst2", [[[0.9, 0.8, 0.5, 0.6], [0.5, 0.55, 0.7, 0.95]]], seeds=(0,))
    skill = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    for arm, clean, adversarial in (("plain", [0.9, 0.8, 0.85], [0.6, 0.6, 0.65]),
                                    ("anchored", [0.88, 0.8, 0.84], [0.8, 0.7, 0.75])):
        root = layout.robust_arm_dir(workdir, arm)
        write_predictivity(root, "sst2", [np.where(skill, v, 0.97) for v in clean])    # others first on clean
        write_predictivity(root, "advsst2", [np.where(skill, v, 0.5) for v in adversarial])
    markdown = _build(tmp_path, workdir).index_md.read_text()
    assert "The clean task's skill neurons on adversarial data, per arm" in markdown
    # plain: clean [.9, .8, .85] -> 85.0 ± t(2) * .05 / sqrt(3) = ± 12.4; adversarial [.6, .6, .65] -> 61.7
    # ± t(2) * .0289 / sqrt(3) = ± 7.2; drop [.3, .2, .2] -> +23.3 ± 14.3; every neuron (4 x 61.7 + 4 x 50) / 8
    # = 55.8; Spearman -1 per layer (clean ranks the other neurons first, adversarial the skill neurons)
    assert "| m | sst2 | plain | advsst2 | 0,1,2 | 4 | 85.0 [72.6, 97.4] | 61.7 [54.5, 68.8] | " \
           "+23.3 [+9.0, +37.7] | 55.8 | – | – | -1.000 |" in markdown
    # anchored vs plain on AdvSST-2: [.2, .1, .1] -> +13.3 ± 14.3
    assert "| +13.3 [-1.0, +27.7] | -1.000 |" in markdown
    assert "top 50% (per layer)" in markdown


def test_perturbed_dev_rows_and_what_they_check(tmp_path):
    """The perturbed clean dev (robust_perturbed_predictivity) is rendered per arm beside the adversarial set, with
    a sentence saying it is the manipulation check, its perturbation settings and seed, and anchored − perturbed."""
    workdir = tmp_path / "work"
    _write_arms(workdir)
    write_arm_eval(workdir, "perturbed", [0.88, 0.9, 0.87], [0.5, 0.5, 0.55])
    write_predictivity(workdir, "sst2", [[[0.9, 0.8, 0.5, 0.6], [0.5, 0.55, 0.7, 0.95]]], seeds=(0,))
    skill = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    for arm, perturbed in (("plain", [0.7, 0.6, 0.65]), ("perturbed", [0.72, 0.7, 0.68]),
                           ("anchored", [0.8, 0.75, 0.7])):
        root = layout.robust_arm_dir(workdir, arm)
        write_predictivity(root, "sst2", [np.where(skill, v, 0.97) for v in (0.9, 0.8, 0.85)])
        write_predictivity(root, "advsst2", [np.where(skill, v, 0.5) for v in (0.6, 0.6, 0.65)])
        write_predictivity(root, "sst2", [np.where(skill, v, 0.5) for v in perturbed], dev_transform=PERTURBED_DEV)
    markdown = _build(tmp_path, workdir).index_md.read_text()
    assert "the anchor did not do what it was meant to do" in markdown
    assert "(char_swap 0.1, word_drop 0.05; mode all, perturbation seed 100003)" in markdown
    # plain: perturbed dev [.7, .6, .65] -> 65.0; drop from clean [.9, .8, .85] on the same rows: +20.0 exactly
    assert "| m | sst2 | plain | sst2, perturbed dev (held-out, training kind) | 0,1,2 | 4 | 85.0 [72.6, 97.4] | " \
           "65.0 [52.6, 77.4] | +20.0 [+20.0, +20.0] |" in markdown
    # anchored: vs plain [.1, .15, .05] -> +10.0 ± t(2) * .05 / sqrt(3) = ± 12.4; vs perturbed [.08, .05, .02]
    # -> +5.0 ± t(2) * .03 / sqrt(3) = ± 7.5
    assert "| +10.0 [-2.4, +22.4] | -1.000 | +5.0 [-2.5, +12.5] |" in markdown


def test_no_study_no_section(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    rep = _build(tmp_path, workdir)
    assert rep.errors == []
    assert robustness_study.HEADING not in rep.index_md.read_text()
    assert "robustness_study" not in json.loads(rep.summary.read_text())


def test_corrupt_patching_is_a_problem_not_a_crash(tmp_path):
    workdir = tmp_path / "work"
    _write_arms(workdir)
    bad = write_patching(workdir, patching_doc())
    bad.write_text('{"model": "m", "ks": [0, 5], "skill": ')        # truncated JSON
    rep = _build(tmp_path, workdir)
    assert rep.errors == []
    assert any(p.startswith(str(bad)) for p in rep.problems), rep.problems
    markdown = rep.index_md.read_text()
    # the arms still render; the patching part says why it is empty
    assert robustness_study.HEADING in markdown and "| m | sst2 | anchored | advsst2 |" in markdown
    assert "The patching files could not be read" in markdown
    assert json.loads(rep.summary.read_text())["robustness_study"]["patching"] == []


def test_patching_recovery_curves_png(tmp_path):
    """figsize * dpi pixels; a single-seed panel (NaN bounds, no original accuracy) draws; no panel raises."""
    ks = np.array([1.0, 5.0, 10.0])
    nan = np.full(3, np.nan)
    panels = [figures.PatchingPanel("m: sst2 → advsst2 (original)", ks, np.array([0.5, 0.6, 0.7]),
                                    np.array([0.4, 0.5, 0.6]), np.array([0.6, 0.7, 0.8]), np.full(3, 0.45),
                                    adversarial=0.4, original=0.85, n_seeds=3),
              figures.PatchingPanel("m: sst2 → advsst2 (mean)", ks, np.array([0.5, 0.6, 0.7]), nan, nan,
                                    np.full(3, 0.45), adversarial=0.4, original=None, n_seeds=1)]
    path = figures.patching_recovery_curves(panels, tmp_path / "p.png", title="t", figsize=(6.0, 3.0), dpi=40)
    assert mimage.imread(path).shape[:2] == (120, 240)
    with pytest.raises(ValueError, match="no patching results"):
        figures.patching_recovery_curves([], tmp_path / "none.png", title="t")


def test_the_robustness_document_is_generated_beside_its_figure(tmp_path):
    """config report.robustness_doc (configs/robust.py: docs/ROBUSTNESS_RESULTS.md): the report writes the
    document from the results, with the command that regenerates it, where and when they were computed, the
    arms table (majority rate beside each accuracy), the patching table and its figure beside the document."""
    workdir = tmp_path / "work"
    _write_arms(workdir)
    write_patching(workdir, patching_doc(source="original"))
    doc_path = tmp_path / "docs" / "ROBUSTNESS_RESULTS.md"
    config = {**CONFIG, "seeds": "0,1,2", "report": {"robustness_doc": str(doc_path),
                                                     "robustness_command": "python -m launch.reproduce X"}}
    rep = synth.build_report(workdir, tmp_path / "report", config)
    assert rep.errors == [] and rep.problems == []
    text = doc_path.read_text()
    assert "do not edit by hand" in text and "- Command: `python -m launch.reproduce X`" in text
    assert "Machines recorded by the stages' sidecars: " in text and "Commits recorded" in text
    assert "| m | sst2 | plain | clean dev | 0,1,2 | 100 | 60.0 | 90.0 [85.0, 95.0] | – | – |" in text
    assert "| m | sst2 → advsst2 | original | 5 | 0,1 | 30 | 45.0 | 85.0 |" in text
    figure = doc_path.parent / "robustness_results" / "patching_recovery.png"
    assert figure.exists() and "](robustness_results/patching_recovery.png)" in text
    # an evaluation without labels takes the set's majority rate from the study it reused (same row count only)
    reused = tmp_path / "reused"
    for name, counts in (("advsst2", [30, 10]), ("sst2", [50, 49])):       # 40 rows: used; 99 rows: not
        layout_path = results.transfer_path(reused, "m", "sst2", name)
        layout_path.parent.mkdir(parents=True, exist_ok=True)
        layout_path.write_text(json.dumps({"model": "m", "source": "sst2", "target": name, "prompt_task": "sst2",
                                           "seeds": [0], "accuracy": [0.5], "f1": [0.5], "n_dev": sum(counts),
                                           "split": "dev", "label_counts": counts}))
    config["reuse_from"] = str(reused)
    synth.build_report(workdir, tmp_path / "report3", config)
    text = doc_path.read_text()
    assert "| m | sst2 | anchored | advsst2 | 0,1,2 | 40 | 75.0† | 55.0 [42.6, 67.4]" in text
    assert "† The set's majority rate from the study this one reused" in text
    assert "| m | sst2 | anchored | clean dev | 0,1,2 | 100 | – | 87.0" in text
    del config["reuse_from"]
    # without the option no document is written
    doc_path.unlink()
    synth.build_report(workdir, tmp_path / "report2", CONFIG)
    assert not list((tmp_path / "docs").glob("*.md"))
    # a malformed confusion is named, not a crash of the document
    arm = layout.robust_eval_path(workdir, "m", "sst2", "plain")
    broken = json.loads(arm.read_text())
    broken["clean"]["confusion"] = 5
    arm.write_text(json.dumps(broken))
    rep = synth.build_report(workdir, tmp_path / "report4", config)
    assert doc_path.exists() and any("'confusion' must be" in problem for problem in rep.problems), rep.problems


def test_pred_drop_is_compared_at_matched_n(tmp_path):
    """Pred at 78 rows against Pred at 112 rows is no comparison (the floor and the max rise as n falls): the drop
    uses the clean task's Pred subsampled to the adversarial n when the stage computed it (stats option
    subsample_sizes), is left out otherwise, and the adversarial set's permutation floor stands beside it."""
    workdir = tmp_path / "work"
    _write_arms(workdir)
    write_predictivity(workdir, "sst2", [[[0.9, 0.8, 0.5, 0.6], [0.5, 0.55, 0.7, 0.95]]], seeds=(0,))
    skill = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    for arm, clean, matched, adversarial in (("plain", [0.9, 0.8, 0.85], [0.7, 0.7, 0.7], [0.6, 0.6, 0.65]),
                                             ("anchored", [0.88, 0.8, 0.84], None, [0.8, 0.7, 0.75])):
        root = layout.robust_arm_dir(workdir, arm)
        extra = {} if matched is None else {
            "matched_n": [78], "matched_pred_per_seed": [[np.where(skill, v, 0.97) for v in matched]]}
        write_predictivity(root, "sst2", [np.where(skill, v, 0.97) for v in clean], n_dev=112, **extra)
        write_predictivity(root, "advsst2", [np.where(skill, v, 0.5) for v in adversarial], n_dev=78,
                           null_pred_layer_mean=np.full((5, 2), 0.62))
    markdown = _build(tmp_path, workdir).index_md.read_text()
    # plain: matched clean [.7, .7, .7] - adversarial [.6, .6, .65] = [.1, .1, .05] -> +8.3; floor 62.0
    assert "| 85.0 [72.6, 97.4] | 61.7 [54.5, 68.8] | +8.3 [+1.2, +15.5] | 55.8 | 62.0 |" in markdown
    assert "not compared: n = 112 clean vs 78 adversarial" in markdown          # anchored: no matched Pred


def test_paired_drop_table_by_exact_mcnemar(tmp_path):
    """Where patching recorded per-example outcomes, the document shows the paired drop from the originals to the
    adversarial versions with its exact McNemar p (largest over seeds), Holm over rows, interval and MDE."""
    workdir = tmp_path / "work"
    _write_arms(workdir)
    doc = patching_doc(source="original")
    original = [1] * 24 + [0] * 6
    doc.update(original_correct=[original, original], adversarial_correct=[[0] * 12 + original[12:]] * 2)
    write_patching(workdir, doc)
    write_patching(workdir, patching_doc(source="mean"))
    markdown = _build(tmp_path, workdir).index_md.read_text()
    assert "paired by example" in markdown
    # 12 discordant pairs, all original-right: one-sided binomial p = 0.5^12 = 0.000244 in each seed
    # 2 seeds: below inference.MIN_BOOTSTRAP_SEEDS the interval is the t interval over seeds
    assert "| m | sst2 → advsst2 | seeds | n = 30 pairs | +40.0 [" in markdown
    assert "| 12/0, 12/0 | 0.0002441 | 0.0002441 | yes |" in markdown
