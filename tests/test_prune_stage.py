"""Stage prune in the study: launch.reproduce with config.prune on writes the pruned checkpoints, the result file
and the report's pruning section (tiny random BERT, tiny SST-2); its settings are checked with file and field."""
import json
import re

import ml_collections
import numpy as np
import pytest

pytest.importorskip("torch")

import reproduce_fixtures as rf  # noqa: E402  (tests/ is on sys.path under pytest)
from skillneurons_jax import layout  # noqa: E402
from skillneurons_jax.models import load_pretrained  # noqa: E402
from skillneurons_jax.pipeline import build, runner  # noqa: E402
from skillneurons_jax.pipeline.settings import StudySettings  # noqa: E402
from skillneurons_jax.stages.prune import PruneSettings, keep_masks  # noqa: E402

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
