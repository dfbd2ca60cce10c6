"""Stage prune in the study: launch.reproduce with config.prune on writes the pruned checkpoints, the result file
and the report's pruning section (tiny random BERT, tiny SST-2); its settings are checked with file and field."""
import json
import re

import ml_collections
import numpy as np
import pytest

pytest.importorskip("torch")

import analysis_synthetic as synth  # noqa: E402  (tests/ is on sys.path under pytest)
import reproduce_fixtures as rf  # noqa: E402
from skillneurons_jax import layout  # noqa: E402
from skillneurons_jax.models import load_pretrained  # noqa: E402
from skillneurons_jax.pipeline import build, runner  # noqa: E402
from skillneurons_jax.pipeline.settings import StudySettings  # noqa: E402
from skillneurons_jax.stages import prune as prune_stage  # noqa: E402
from skillneurons_jax.stages.prune import PruneSettings, keep_masks  # noqa: E402
from skillneurons_jax.stages.setup import DevRows, make_setup  # noqa: E402

M = rf.MODEL


def _config(world, **prune):
    c = rf.config(world["model"], world["data"], tasks="sst2")
    c.suppression.levels = "0,10"
    c.suppression.random_draws = 1
    if prune:
        c.prune = ml_collections.ConfigDict(prune)
    return c


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    return {"root": root, "model": rf.make_model(root), "data": rf.write_data(root / "data")}


def test_reproduce_with_pruning_writes_the_models_the_result_and_the_report_section(world):
    workdir = world["root"] / "work"
    settings = StudySettings.from_config(_config(world, enabled=True, keep_percent=10.0, random_draws=2), workdir)
    result = runner.run_plan(settings, printer=lambda *_: None)
    assert not result["failed"], result["failed"]
    data = json.loads(layout.prune_path(workdir, M, "sst2").read_text())
    assert data["layers"] == [1] and data["seeds"] == [0, 1]           # 2 layers: the upper two thirds is layer 1
    assert len(data["pruned"]["accuracy"]) == 2 and len(data["random"]) == 2
    assert 0 < data["majority_rate"] <= 1 and data["n_dev"] > 0
    pruned = load_pretrained(layout.pruned_model_dir(workdir, M, "sst2", 0))
    full = load_pretrained(world["model"])
    kept = max(1, int(full.config.intermediate * 10 // 100))
    assert pruned.config.intermediate_sizes == (full.config.intermediate, kept)
    assert pruned.params["layers_1"]["ffn"]["wi"]["kernel"].shape == (full.config.hidden, kept)
    index = (workdir / "report" / "index.md").read_text()
    assert "Skill-neuron pruning" in index and "figures/prune_tiny-bert.png" in index
    assert (workdir / "report" / "figures" / "prune_tiny-bert.png").exists()
    summary = json.loads((workdir / "report" / "summary.json").read_text())
    assert summary["prune"][M][0]["pruned"] == data["pruned"]["accuracy"]


def test_pruning_is_off_by_default_and_its_settings_are_checked(world, tmp_path):
    stages = build.build_plan(StudySettings.from_config(_config(world), tmp_path))
    assert not [s for s in stages if s.kind == "prune"]
    on = build.build_plan(StudySettings.from_config(_config(world, enabled=True), tmp_path))
    prune_stage = next(s for s in on if s.kind == "prune")
    assert prune_stage.key == f"prune/{M}/sst2" and f"predictivity/{M}/sst2" in prune_stage.deps
    for field, value, message in (("keep_percent", 0.0, "keep_percent=0.0"),
                                  ("keep_percent", 101.0, "keep_percent=101.0"),
                                  ("random_draws", -1, "random_draws=-1"), ("layers", "1,x", "layers='1,x'"),
                                  ("train_examples", 0, "train_examples=0")):
        with pytest.raises(ValueError, match=re.escape(f"--config.prune.{message}")):
            PruneSettings.from_config({field: value})
    with pytest.raises(ValueError, match="--config.prune.kept: unknown key"):
        PruneSettings.from_config({"kept": 2})
    with pytest.raises(ValueError, match=r"layer\(s\) \[7\] outside 0\.\.1"):
        PruneSettings(layers=(7,)).pruned_layers(2)


def test_keep_masks_keep_the_top_neurons_and_as_many_random_ones():
    pred = np.random.default_rng(0).random((3, 50))
    skill, random = keep_masks(pred, [1, 2], 4.0, 2, 0)
    assert skill[0].all() and (skill[1:].sum(1) == 2).all()
    assert set(np.flatnonzero(skill[2])) == set(np.argsort(-pred[2])[:2])
    assert random.shape == (2, 3, 50) and random[:, 0].all() and (random[:, 1:].sum(-1) == 2).all()
    assert not (random[0] == random[1]).all()
    one, _ = keep_masks(pred, [2], 0.5, 0, 0)         # 0.5 % of 50 floors to 0: at least one stays
    assert one[2].sum() == 1


def test_continued_tuning_tunes_each_pruned_model_on_the_select_rows_and_measures_on_the_rest(world, tmp_path):
    """continue_steps: the seed's prompt is tuned on on the skill-kept and on the random-kept model (the task's
    recipe, prompt.train.train), selected on the dev select rows (step 0 a candidate) and measured on the
    measurement rows; both accuracies, before and after, are in the result and the report's section. Off (0), the
    stage's fingerprint is the one it had before the option existed. (Prompts and Pred are random here: the stage
    reads them from the workdir; tuning them is the tune stage's test.)"""
    assert PruneSettings().fingerprint(None) == {"keep_percent": 2.0, "layers": [], "random_draws": 1,
                                                 "random_seed": 0, "train_examples": None}
    assert PruneSettings(continue_steps=3).fingerprint(None)["continue_steps"] == 3
    with pytest.raises(ValueError, match=re.escape("--config.prune.continue_steps=-1")):
        PruneSettings.from_config({"continue_steps": -1})
    config = _config(world, keep_percent=10.0, random_draws=1, continue_steps=3)
    config.tune.select_percent = 50
    plain = _config(world, keep_percent=10.0, random_draws=1)
    plain.tune.select_percent = 50
    cost = [next(s.cost_s for s in build.build_plan(StudySettings.from_config(c, tmp_path / "plan"))
                 if s.kind == "prune") for c in (plain, config)]
    assert cost[1] > cost[0]

    loaded = load_pretrained(world["model"])
    workdir = tmp_path / "work"
    rng = np.random.default_rng(0)
    synth.write_predictivity(workdir, M, "sst2", rng.uniform(0.5, 1.0, (2, loaded.config.intermediate)))
    layout.prompt_path(workdir, M, "sst2", 0).parent.mkdir(parents=True)
    np.save(layout.prompt_path(workdir, M, "sst2", 0), rng.normal(0, 0.5, (4, loaded.config.hidden)).astype("f4"))
    setup = make_setup(loaded, "sst2", dev_rows=DevRows(select_percent=50))
    prune_stage.prune(setup, workdir, world["data"], [0], model_path=world["model"], max_text_tokens=12,
                      eval_batch_size=16, settings=PruneSettings.from_config(config.prune),
                      tune_config=StudySettings.from_config(config, tmp_path / "plan").tune)
    data = json.loads(layout.prune_path(workdir, M, "sst2").read_text())
    tuned = data["continued"]
    assert tuned["steps"] == 3 and tuned["recipe"]["max_steps"] == 3 and tuned["recipe"]["learning_rate"] > 0
    assert tuned["n_select"] > 0 and tuned["n_select"] + data["n_dev"] == 16       # disjoint parts of dev
    assert len(tuned["pruned"]["accuracy"]) == 1 and len(tuned["random"]) == 1
    for arm, before, after in (("pruned", data["pruned"], tuned["pruned"]),
                               ("random", data["random"][0], tuned["random"][0])):
        step = tuned["best_step"][arm][0] if arm == "pruned" else tuned["best_step"][arm][0][0]
        curve = tuned["curves"][arm][0] if arm == "pruned" else tuned["curves"][arm][0][0]
        # evaluated at the start and as the recipe says (eval_every 2), through the last of the 3 updates
        assert [c["step"] for c in curve] == [0, 2, 3] and curve[0]["train_loss"] is None
        assert curve[-1]["train_loss"] > 0
        scores = [c["select_accuracy"] for c in curve]
        assert step == curve[scores.index(max(scores))]["step"]            # the first best on the select rows
        if step == 0:      # the prompt it started from, measured again
            assert after["accuracy"][0] == before["accuracy"][0]
    index = synth.build_report(workdir, tmp_path / "report", {"analysis": {"dpi": 30}}).index_md.read_text()
    assert "After continued prompt tuning: each seed's prompt tuned on for 3 updates" in index
    assert f"(n = {tuned['n_select']}; the starting prompt" in index
