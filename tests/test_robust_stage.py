"""robust.stage.run_patching end to end on a tiny model and a synthetic dev_ann.json; its JSON is in the
suppression format the analysis reads."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from skillneurons_jax import io  # noqa: E402
from skillneurons_jax.analysis import results  # noqa: E402
from skillneurons_jax.robust import patching, stage  # noqa: E402
import robust_fixtures as fx  # noqa: E402


def test_run_patching_writes_a_suppression_format_result(tmp_path):
    loaded, readout = fx.tiny_model(tmp_path / "model")
    records = [{"idx": i, "sentence": adv, "original_sentence": orig, "label": int(y)}
               for i, (adv, orig, y) in enumerate(zip(fx.ADVERSARIAL, fx.ORIGINAL, fx.LABELS))]
    records.append({"idx": 9, "sentence": "a human wrote this", "label": 1})
    (tmp_path / "data" / "advglue").mkdir(parents=True)
    (tmp_path / "data" / "advglue" / "dev_ann.json").write_text(json.dumps({"sst2": records}))
    cfg = loaded.config
    pred = np.random.default_rng(0).random((cfg.num_layers, cfg.intermediate))
    out = stage.patching_path(tmp_path / "work", loaded.name, "sst2", "advsst2", "original")
    settings = patching.PatchingSettings(percents=(5, 25), random_draws=2)
    doc = stage.run_patching(loaded, readout, "sst2", "advsst2", fx.prompts(cfg.hidden), pred, tmp_path / "data",
                             settings, out, seeds=[0, 1], batch_size=3)
    assert json.loads(out.read_text()) == doc
    assert io.sidecar_path(out).exists()
    assert doc["n_pairs_used"] == 4 and doc["pairs"]["skipped"] == {"no original text (human-written adversarial "
                                                                     "example)": 1}
    # the analysis reads it as a suppression result (ks, skill [K, S], random [K, D, S])
    copy = results.suppression_path(tmp_path / "work", loaded.name, "sst2", "advsst2")
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(out.read_text())
    loaded_result = results.load_suppression(tmp_path / "work", loaded.name, "sst2", "advsst2")
    assert list(loaded_result.ks) == [0, 5, 25]
    assert np.asarray(loaded_result.random).shape == (3, 2, 2)
    with pytest.raises(ValueError, match="expected \\[1 seeds"):
        stage.run_patching(loaded, readout, "sst2", "advsst2", fx.prompts(cfg.hidden), pred, tmp_path / "data",
                           settings, out, seeds=[0])
