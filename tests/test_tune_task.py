"""skillneurons_jax/stages/tune.py: the one tuning body of launch.tune and the plan's tune kind — hyperparameter
resolution, the training batch schedule shared by the seeds, split caps, and a tiny in-process run."""
import json

import numpy as np
import pytest

import prompt_fixtures as fx
from skillneurons_jax.data import batches
from skillneurons_jax.prompt import train
from skillneurons_jax.stages import tune as tune_task


def _encoded(n=100, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 40, n)
    # row i is the token i + 1 repeated: a batch row names its example (model batches carry no `index`)
    return batches.Encoded(input_ids=[[i + 1] * int(k) for i, k in enumerate(lengths)],
                           labels=rng.integers(0, 2, n).astype(np.int32),
                           lengths=lengths.astype(np.int32), pad_id=0, task="sst2", family="bert",
                           max_text_tokens=64, truncated=0)


def _rows(batch_list):
    return np.concatenate([b["input_ids"][:, 0] - 1 for b in batch_list])


def _per_seed_schedule(enc, bs, buckets):
    """The schedule before the shared one: each seed shuffled its own batch order."""
    def fn(seed, epoch):
        s = train.epoch_seed(seed, epoch)
        out = list(batches.iterate(enc, bs, seed=s, drop_last=True, buckets=buckets, sort_by_length=True))
        return [out[i] for i in np.random.default_rng(s).permutation(len(out))]
    return fn


def test_grouped_batches_have_one_length_schedule_for_every_seed():
    enc, bs, buckets = _encoded(), 8, (8, 16, 24, 32, 40)
    fn = tune_task.make_train_batches(enc, bs, buckets, group_by_length=True)
    old = _per_seed_schedule(enc, bs, buckets)
    for epoch in (0, 1):
        a, b = fn(0, epoch), fn(1, epoch)
        assert len(a) == len(b) == len(enc) // bs
        assert [x["input_ids"].shape[1] for x in a] == [y["input_ids"].shape[1] for y in b]
        # every seed still sees its own examples in its own order, each once per epoch
        ia, ib = _rows(a), _rows(b)
        assert len(set(ia)) == len(ia) == len(set(ib)) and not np.array_equal(ia, ib)
        # a seed's batches depend on (seed, epoch) only
        assert np.array_equal(ia, _rows(fn(0, epoch)))
        # the stacked [S, B, T] batches pad less than with a batch order per seed
        padded = lambda f: sum(max(x["input_ids"].shape[1], y["input_ids"].shape[1])
                               for x, y in zip(f(0, epoch), f(1, epoch)))
        assert padded(fn) < padded(old)
    assert [x["input_ids"].shape[1] for x in fn(0, 0)] != [x["input_ids"].shape[1] for x in fn(0, 1)]


def test_ungrouped_batches_follow_the_seed_order():
    enc = _encoded()
    fn = tune_task.make_train_batches(enc, 8, (40,), group_by_length=False)
    first = _rows(fn(3, 0)[:1])
    order = np.random.default_rng(train.epoch_seed(3, 0)).permutation(len(enc))
    assert np.array_equal(first, order[:8])


def test_resolve_tune_config_fills_none_fields_from_the_table():
    from configs import tune
    cfg = tune.get_config()
    out = tune_task.resolve_tune_config(cfg, "all-minilm-l6-v2", "bert", "sst2")
    assert out["learning_rate"] == 3e-2 and out["batch_size"] == 16 and out["init"] == "label_words"
    cfg.learning_rate, cfg.batch_size = 1e-3, 4
    out = tune_task.resolve_tune_config(cfg, "roberta-base", "roberta", "mrpc", max_steps=7, eval_every=2)
    assert (out["learning_rate"], out["batch_size"], out["init"]) == (1e-3, 4, "normal")
    assert (out["max_steps"], out["eval_every"], out["hparams_row"]) == (7, 2, "roberta-base")
    with pytest.raises(ValueError, match="no hyperparameters"):
        tune_task.resolve_tune_config(cfg, "gpt", "gpt2", "sst2")
    assert tune_task.init_vocab_range({}, 30522) == (1000, 6000)
    assert tune_task.init_vocab_range({}, 50) == (5, 50)
    assert tune_task.init_vocab_range({"init_vocab_range": (3, 9)}, 50) == (3, 9)


def test_max_steps_by_task_gives_one_task_its_own_budget():
    from configs import tune
    cfg = tune.get_config()
    cfg.max_steps, cfg.max_steps_by_task = 150, "sst2:450, qnli:30"
    resolve = lambda task, **kw: tune_task.resolve_tune_config(cfg, "all-minilm-l6-v2", "bert", task, **kw)
    assert (resolve("sst2")["max_steps"], resolve("qnli")["max_steps"], resolve("mrpc")["max_steps"]) == (450, 30, 150)
    assert resolve("sst2", max_steps=7)["max_steps"] == 7          # launch.tune's explicit flag still wins
    tune_task.check_tune_config(cfg)
    assert tune_task.parse_steps_by_task("SST2:5") == {"sst2": 5}      # the task table's name
    for bad in ("sst2", "sst2:0", "sst2:x", ":4", "sst2:4,sst2:5", "sst-2:4", "sst2:4,SST2:5"):
        cfg.max_steps_by_task = bad
        with pytest.raises(ValueError, match="^--config.max_steps_by_task"):   # launch.tune's spelling
            tune_task.check_tune_config(cfg)
    assert tune_task.parse_steps_by_task("") == {} and tune_task.parse_steps_by_task(None) == {}


@pytest.mark.slow
def test_tune_task_in_process_writes_the_run_with_its_split_caps(tmp_path):
    from configs import tune
    from launch import common
    model = fx.make_bert(tmp_path / "tiny_minilm", lm_head=False)
    data = fx.write_sst2(tmp_path / "data", n_train=40, n_dev=16)
    cfg = tune.get_config()
    cfg.prompt_len, cfg.batch_size, cfg.eval_batch_size, cfg.progress = 4, 8, 8, False
    cfg.train_max_examples, cfg.dev_max_examples, cfg.group_by_length = 24, 8, True
    setup = common.load_setup(str(model), "sst2", cfg)
    summary = tune_task.tune(setup, [0, 1], tmp_path / "work", data, cfg, model_path=model, max_examples=32,
                             max_steps=3, eval_every=3, sidecar_extra={"stage": "test"}, require_complete=True)
    assert summary["steps"] == 3 and summary["seeds"] == [0, 1] and len(summary["best_dev_accuracy"]) == 2
    run = tmp_path / "work" / "prompts" / "tiny_minilm" / "sst2" / "seed_1"
    assert np.load(run / "prompt.npy").shape == (4, 16)
    meta = json.loads((run / "metrics.jsonl.json").read_text())
    assert (meta["train_examples"], meta["dev_examples"], meta["stage"]) == (24, 8, "test")
    assert meta["config"]["learning_rate"] == 3e-2 and meta["readout"] == "tied"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3] and rows[0]["dev_examples"] == 8

    cfg.time_limit_s = 1e-9            # stops after the first step: a plan stage must not count that as done
    with pytest.raises(RuntimeError, match="stopped at step 4 of 5"):
        tune_task.tune(setup, [0, 1], tmp_path / "work", data, cfg, model_path=model, max_examples=32,
                       max_steps=5, eval_every=3, require_complete=True)


def test_changed_run_reason_tells_a_resumable_run_from_one_of_other_settings(tmp_path):
    from skillneurons_jax import io as project_io
    fingerprint = {"learning_rate": 0.03, "batch_size": 16}
    sidecar = {"config": {"learning_rate": 0.03, "max_steps": 450, "progress": True}, "data_dir": "d",
               "seeds": [0, 1]}

    def run(rows, *, config=None, fp=None, checkpointed=True):
        folder = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        if checkpointed and rows:
            (folder / "state" / str(rows[-1]["step"])).mkdir(parents=True)      # what checkpoint.has_checkpoint sees
        project_io.atomic_write_json(folder / "run_config.json", fp or fingerprint)
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        project_io.write_sidecar(folder / "metrics.jsonl", **{**sidecar, "config": config or sidecar["config"]})
        return folder

    reason = lambda folder, planned=450, every=150: tune_task.changed_run_reason(  # noqa: E731
        folder, fingerprint, sidecar, planned=planned, every=every)
    assert reason(tmp_path / "absent") is None
    steps = lambda *s: [{"step": x} for x in s]  # noqa: E731
    assert reason(run(steps(150, 300))) is None                                  # interrupted: resumes
    shorter = {"learning_rate": 0.03, "max_steps": 150, "progress": False}
    assert reason(run(steps(150), config=shorter)) is None                        # a larger budget: trains on
    # ... but not a run without a checkpoint (a copy): training "on" would start at 0 and overwrite it
    assert "no checkpoint" in reason(run(steps(150), config=shorter, checkpointed=False))
    assert "past this run's 100" in reason(run(steps(150), config=shorter), planned=100)
    assert "not on this run's schedule" in reason(run(steps(150), config=shorter), every=100)
    assert "stopped early" in reason(run(steps(150) + [{"step": 150, "stopped_early": 150}], config=shorter))
    assert "config.learning_rate" in reason(run(steps(150), config={**sidecar["config"], "learning_rate": 0.5}))
    # what changes nothing computed is no reason: a time limit, the checkpoint count, the table's provenance
    assert reason(run(steps(150), config={**sidecar["config"], "time_limit_s": 60.0, "keep_checkpoints": 5,
                                          "hparams_row": "ours", "hparams_source": "x"})) is None
    assert "run_config.json differs in ['learning_rate']" in reason(run(steps(150), fp={**fingerprint,
                                                                                        "learning_rate": 0.5}))
    shorter_run = run(steps(150), config=shorter)
    (shorter_run / "metrics.jsonl").write_text('{"step": 150}\n{"step"\n{"step": 300}\n')
    assert "unreadable" in reason(shorter_run)
    (shorter_run / "metrics.jsonl").write_text('{"step": 150}\n{"step": 30')      # a cut last line is skipped
    assert reason(shorter_run) is None
