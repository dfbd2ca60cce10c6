"""Stage prune on a tiny study: the old plan trains the prompts and computes Pred, then stages.prune writes the
pruned checkpoints and its result, and the report builds its pruning section (tiny random BERT, tiny SST-2)."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

import reproduce_fixtures as rf  # noqa: E402  (tests/ is on sys.path under pytest)
from skillneurons_jax import layout  # noqa: E402
from skillneurons_jax.analysis.report import build_report  # noqa: E402
from skillneurons_jax.models import load_pretrained  # noqa: E402
from skillneurons_jax.pipeline import runner  # noqa: E402
from skillneurons_jax.pipeline.settings import StudySettings  # noqa: E402
from skillneurons_jax.prompt.readout import ReadoutSettings  # noqa: E402
from skillneurons_jax.stages.prune import PruneSettings, keep_masks, prune  # noqa: E402
from skillneurons_jax.stages.setup import make_setup  # noqa: E402

M = rf.MODEL


def test_prune_writes_the_models_the_result_and_the_report_section(tmp_path):
    model, data = rf.make_model(tmp_path), rf.write_data(tmp_path / "data")
    c = rf.config(model, data, tasks="sst2")
    c.suppression.levels = "0,10"
    c.suppression.random_draws = 1
    workdir = tmp_path / "work"
    assert not runner.run_plan(StudySettings.from_config(c, workdir), printer=lambda *_: None)["failed"]
    loaded = load_pretrained(model)
    setup = make_setup(loaded, "sst2", ReadoutSettings.from_config(c.tune))
    prune(setup, workdir, data, [0, 1], model_path=str(model), max_text_tokens=c.tune.max_text_tokens,
          eval_batch_size=16, settings=PruneSettings(keep_percent=10.0, random_draws=2))
    result = json.loads(layout.prune_path(workdir, M, "sst2").read_text())
    assert result["layers"] == [1] and result["seeds"] == [0, 1]          # 2 layers: the upper two thirds is layer 1
    assert len(result["pruned"]["accuracy"]) == 2 and len(result["random"]) == 2
    assert 0 < result["majority_rate"] <= 1 and result["n_dev"] > 0
    pruned = load_pretrained(layout.pruned_model_dir(workdir, M, "sst2", 0))
    kept = max(1, int(loaded.config.intermediate * 10 // 100))
    assert pruned.config.intermediate_sizes == (loaded.config.intermediate, kept)
    assert pruned.params["layers_1"]["ffn"]["wi"]["kernel"].shape == (loaded.config.hidden, kept)
    report = build_report(workdir, tmp_path / "report", {"tasks": "sst2"})
    index = report.index_md.read_text()
    assert "Skill-neuron pruning" in index and "figures/prune_tiny-bert.png" in index
    summary = json.loads(report.summary.read_text())
    assert summary["prune"][M][0]["pruned"] == result["pruned"]["accuracy"]


def test_keep_masks_keep_the_top_neurons_and_as_many_random_ones():
    pred = np.random.default_rng(0).random((3, 50))
    skill, random = keep_masks(pred, [1, 2], 4.0, 2, 0)
    assert skill[0].all() and (skill[1:].sum(1) == 2).all()
    assert set(np.flatnonzero(skill[2])) == set(np.argsort(-pred[2])[:2])
    assert random.shape == (2, 3, 50) and random[:, 0].all() and (random[:, 1:].sum(-1) == 2).all()
    assert not (random[0] == random[1]).all()
    one, _ = keep_masks(pred, [2], 0.5, 0, 0)         # 0.5 % of 50 floors to 0: at least one stays
    assert one[2].sum() == 1
    with pytest.raises(ValueError, match="keep_percent=0"):
        PruneSettings(keep_percent=0)
    with pytest.raises(ValueError, match=r"layer\(s\) \[7\] outside 0\.\.1"):
        PruneSettings(layers=(7,)).pruned_layers(2)
