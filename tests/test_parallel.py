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


# ------------------------------------------------------------------ multi-host start-up helpers (one process)
def test_split_address_and_a_busy_port():
    import socket
    from skillneurons_jax import parallel
    assert parallel.split_address("10.0.0.2:8476") == ("10.0.0.2", 8476)
    assert parallel.split_address("[::1]:80") == ("::1", 80)
    for bad in ("10.0.0.2", ":80", "host:0", "host:port", "host:70000"):
        with pytest.raises(ValueError, match="is not host:port"):
            parallel.split_address(bad)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=f"coordinator port {port} is already in use"):
            parallel.check_port_free(port)
    parallel.check_port_free(port)   # closed again: free (TIME_WAIT does not count)


def test_digests_see_content_names_and_config_changes(tmp_path):
    import ml_collections
    from skillneurons_jax import parallel
    data = tmp_path / "data"
    (data / "glue").mkdir(parents=True)
    (data / "glue" / "train.tsv").write_text("a\t1\n")
    (data / ".cache").mkdir()
    (data / ".cache" / "x").write_text("ignored")
    first = parallel.digest_files(data)
    (data / ".cache" / "x").write_text("changed")
    assert parallel.digest_files(data) == first, "hidden folders are not data"
    (data / "glue" / "train.tsv").write_text("a\t0\n")
    assert parallel.digest_files(data) != first
    (data / "glue" / "train.tsv").write_text("a\t1\n")
    assert parallel.digest_files(data) == first
    (data / "glue" / "train.tsv").rename(data / "glue" / "dev.tsv")
    assert parallel.digest_files(data) != first
    assert parallel.digest_files(None) is None and parallel.digest_files(tmp_path / "nope") == "absent:nope"
    c = ml_collections.ConfigDict({"lr": 0.1, "tune": {"steps": 2}})
    d = parallel.config_digest(c)
    c.tune.steps = 3
    assert parallel.config_digest(c) != d
    fp = parallel.run_fingerprint({"config": c, "seeds": "0,1", "process_id": 1, "workdir": "/a",
                                   "data_dir": str(data), "coordinator": "h:1"})
    assert set(fp) == {"config", "seeds", "data"} and fp["config"] == parallel.config_digest(c)
    assert fp == parallel.run_fingerprint({"config": c, "seeds": "0,1", "process_id": 0, "workdir": "/b",
                                           "data_dir": str(data), "coordinator": "h:2"})
    # one process: nothing to compare with, the digest of the fields comes back
    assert parallel.check_hosts_agree(fp) == parallel.check_hosts_agree(dict(fp))
    assert parallel.check_hosts_agree(fp) != parallel.check_hosts_agree({**fp, "seeds": "0"})


def test_initialize_distributed_rejects_bad_arguments_before_starting_anything():
    from skillneurons_jax import parallel
    with pytest.raises(ValueError, match="num_processes must be >= 1"):
        parallel.initialize_distributed("127.0.0.1:1234", 0, 0)
    with pytest.raises(ValueError, match="process_id 2 is outside 0..1"):
        parallel.initialize_distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="timeouts must be >= 1 s"):
        parallel.initialize_distributed("127.0.0.1:1234", 2, 0, heartbeat_timeout_s=0)
    with pytest.raises(ValueError, match="is not host:port"):
        parallel.initialize_distributed("127.0.0.1", 2, 0)


def test_a_rerun_saves_over_a_step_that_only_some_seeds_finished(tmp_path):
    """A host killed between two seeds' saves (seen in tests/test_multihost.py): seed 0 holds step 4, seed 1 only
    orbax's unfinished temporary folder of it. The rerun resumes from step 2 and must be able to save step 4
    again (orbax alone raises StepAlreadyExistsError)."""
    import shutil
    import numpy as np
    from skillneurons_jax.prompt import checkpoint as ckpt
    dirs = [tmp_path / "seed_0", tmp_path / "seed_1"]
    state = lambda v: {"prompts": np.full((2, 3), v, np.float32), "opt_state": (np.zeros(2),), "step": np.int64(v)}
    first = ckpt.SeedCheckpoints(dirs)
    first.save(2, [state(2), state(2)])
    first.managers[0].save(4, args=ckpt.ocp.args.StandardSave(ckpt._flatten(state(4))), force=True)
    first.managers[0].wait_until_finished()
    first.close()
    shutil.copytree(dirs[1] / "state" / "2", dirs[1] / "state" / "4.orbax-checkpoint-tmp")
    rerun = ckpt.SeedCheckpoints(dirs)
    assert rerun.latest_common_step() == 2
    rerun.save(4, [state(40), state(41)])
    assert rerun.latest_common_step() == 4
    restored = rerun.restore(4, [state(0), state(0)])
    assert [float(r["prompts"][0, 0]) for r in restored] == [40.0, 41.0]
    rerun.close()
