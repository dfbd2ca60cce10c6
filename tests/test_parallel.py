"""Data parallelism on 4 simulated CPU devices (XLA_FLAGS must be set before jax starts: a subprocess).

Prompt tuning on a mesh of 4 devices must give the same prompts as on 1 device after the same steps (1e-5), for
the stand-in model and for a tiny BERT with the real MLM readout and data pipeline (whose frozen parameters stay
bit-identical); a global batch the device count does not divide is a clear error.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import prompt_fixtures as fx

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r"""
    import json, sys
    import jax, numpy as np
    from skillneurons_jax import parallel
    from skillneurons_jax.prompt import soft_prompt as sp, train as T
    import prompt_standin as st

    out = {"devices": jax.device_count()}
    mesh4, mesh1 = parallel.make_mesh(), parallel.make_mesh(jax.devices()[:1])
    out["mesh4"] = parallel.num_data_shards(mesh4)

    # stand-in model, 3 seeds
    tr, dv = st.make_data(64, 1), st.make_data(20, 2)
    cfg = T.TrainConfig(learning_rate=0.1, batch_size=8, epochs=1, eval_every=4, progress=False)
    init = sp.init_prompts([0, 1, 2], st.PROMPT_LEN, st.HIDDEN)
    run = lambda mesh: T.train(st.score_fn, st.make_params(), init, [0, 1, 2], st.train_batches(tr, 8),
                               st.dev_batches(dv, 8), cfg, mesh=mesh)
    a, b = run(mesh4), run(mesh1)
    out["standin_diff"] = float(np.abs(a.prompts - b.prompts).max())
    out["standin_acc"] = [a.best_accuracy.tolist(), b.best_accuracy.tolist()]

    # a sharded batch really is split over the 4 devices
    x = parallel.shard_batch({"input_ids": np.zeros((2, 8, 5), np.int32)}, mesh4, batch_axis=1)["input_ids"]
    out["shards"] = sorted({tuple(s.data.shape) for s in x.addressable_shards}) == [(2, 2, 5)] and \
        len(x.addressable_shards) == 4

    # errors: batch 6 over 4 devices
    errors = []
    for fn in (lambda: parallel.shard_batch({"input_ids": np.zeros((6, 3))}, mesh4),
               lambda: T.train(st.score_fn, st.make_params(), init[:1], [0], st.train_batches(tr, 6),
                               st.dev_batches(dv, 6), T.TrainConfig(learning_rate=0.1, batch_size=6,
                                                                   progress=False), mesh=mesh4)):
        try:
            fn()
            errors.append(None)
        except ValueError as e:
            errors.append(str(e))
    out["errors"] = errors

    # tiny BERT, real readout and data pipeline, 2 seeds
    from launch import common
    from skillneurons_jax.stages import setup as stage_setup
    import ml_collections
    config = ml_collections.ConfigDict({"readout": "auto", "mask_slot": "auto", "prefix_positions": "zero",
                                        "tied_scale": 1.0})
    setup = common.load_setup(sys.argv[1], "sst2", config)
    enc = stage_setup.encode_split(setup, "train", sys.argv[2], 32, 64)
    dev = stage_setup.encode_split(setup, "dev", sys.argv[2], 8, 64)
    buckets = stage_setup.buckets_for([enc, dev])
    batches = lambda s, e: list(stage_setup.model_batches(enc, 8, seed=T.epoch_seed(s, e), drop_last=True,
                                                          buckets=buckets))
    dev_b = list(stage_setup.model_batches(dev, 8, buckets=buckets))
    init = sp.init_prompts([0, 1], 4, setup.loaded.config.hidden)
    before = jax.tree.map(np.array, setup.loaded.params)
    cfg = T.TrainConfig(learning_rate=0.05, batch_size=8, epochs=1, eval_every=2, progress=False)
    res = [T.train(setup.readout.score_fn(), setup.loaded.params, init, [0, 1], batches, dev_b, cfg, mesh=m,
                   pad_id=enc.pad_id) for m in (mesh4, mesh1)]
    out["bert_diff"] = float(np.abs(res[0].prompts - res[1].prompts).max())
    out["bert_moved"] = float(np.abs(res[0].prompts - np.asarray(init)).max())
    out["params_identical"] = all(np.array_equal(a, np.asarray(b)) for a, b in
                                  zip(jax.tree.leaves(before), jax.tree.leaves(setup.loaded.params)))
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_four_devices_equal_one_device(tmp_path):
    model = fx.make_bert(tmp_path / "bert")
    data = fx.write_sst2(tmp_path / "data")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model), str(data)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["devices"] == 4 and out["mesh4"] == 4 and out["shards"]
    assert out["standin_diff"] < 1e-5, out
    assert out["standin_acc"][0] == out["standin_acc"][1]
    assert out["bert_moved"] > 1e-3, "the prompt did not train"
    assert out["bert_diff"] < 1e-5, out
    assert out["params_identical"], "the frozen model parameters changed"
    for msg in out["errors"]:
        assert msg is not None and "not divisible by the 4 devices" in msg, out["errors"]
