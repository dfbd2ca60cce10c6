"""The transfer stage: a source task's prompts scored on a target task with the TARGET's verbalizer, written in
the analysis format (readable by analysis.results), one compiled evaluation per target shared by all sources."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

import reproduce_fixtures as rf  # noqa: E402
from skillneurons_jax.analysis import results  # noqa: E402
from skillneurons_jax.pipeline.session import Session  # noqa: E402
from skillneurons_jax.stages import transfer as transfer_stage  # noqa: E402

SEEDS = (0, 1)


def _write_prompts(workdir, task, hidden, length=4, offset=0):
    for s in SEEDS:
        path = workdir / "prompts" / rf.MODEL / task / f"seed_{s}" / "prompt.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.random.default_rng(offset + s).normal(size=(length, hidden)).astype(np.float32))


def _transfer(session, model_path, source, targets, workdir, data_dir, tune_config):
    """The plan's transfer stage body: the session's prepared targets, scored with `source`'s prompts."""
    prepared = [session.transfer_target(model_path, t, data_dir, tune_config) for t in targets]
    return transfer_stage.transfer(prepared, source, SEEDS, workdir, model_path=model_path, data_dir=data_dir)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    model = rf.make_model(root)
    data = rf.write_data(root / "data")
    workdir = root / "work"
    for i, task in enumerate(("sst2", "mrpc")):
        _write_prompts(workdir, task, 16, offset=10 * i)
    cfg = rf.config(model, data).tune
    session = Session()
    paths = _transfer(session, str(model), "sst2", ["sst2", "mrpc", "advsst2"], workdir, data, cfg)
    return {"model": model, "data": data, "workdir": workdir, "cfg": cfg, "session": session, "paths": paths}


def test_files_follow_the_analysis_format(env):
    assert [p.name for p in env["paths"]] == ["sst2__sst2.json", "sst2__mrpc.json", "sst2__advsst2.json"]
    for path, target in zip(env["paths"], ("sst2", "mrpc", "advsst2")):
        t = results.load_transfer(env["workdir"], rf.MODEL, "sst2", target)
        assert t.accuracy.shape == (2,) and t.f1.shape == (2,) and t.seeds == list(SEEDS)
        assert np.all((t.accuracy >= 0) & (t.accuracy <= 1))
        obj = json.loads(path.read_text())
        assert obj["source"] == "sst2" and obj["target"] == target and obj["n_dev"] == {"sst2": 16, "mrpc": 16,
                                                                                         "advsst2": 12}[target]
        meta = json.loads(path.with_name(path.stem + ".meta.json").read_text())
        assert meta["stage"] == "transfer" and len(meta["prompt_sha256"]) == 2


def test_target_verbalizer_scores_the_source_prompt(env):
    """Recompute sst2 -> mrpc by hand with mrpc's readout (label words false/true)."""
    import jax.numpy as jnp
    from skillneurons_jax.stages import setup as common
    session, cfg = env["session"], env["cfg"]
    target = session.setup(str(env["model"]), "mrpc", cfg)
    source = session.setup(str(env["model"]), "sst2", cfg)
    assert target.label_words.words == ("false", "true") and source.label_words.words == ("negative", "positive")
    enc = common.encode_split(target, "dev", env["data"], None, cfg.max_text_tokens)
    want = []
    for s in SEEDS:
        prompt = jnp.asarray(np.load(env["workdir"] / "prompts" / rf.MODEL / "sst2" / f"seed_{s}" / "prompt.npy"))
        correct = total = 0
        for batch in common.model_batches(enc, 16, buckets=common.buckets_for([enc])):
            scores, _ = target.readout.scores(target.loaded.params, prompt, {k: jnp.asarray(v) for k, v in
                                                                             batch.items()})
            pred = np.argmax(np.asarray(scores), -1)
            m = batch["example_mask"]
            correct += int(np.sum((pred == batch["labels"]) & m))
            total += int(m.sum())
        want.append(correct / total)
    got = results.load_transfer(env["workdir"], rf.MODEL, "sst2", "mrpc").accuracy
    np.testing.assert_allclose(got, want)


def test_one_compiled_evaluation_per_target_for_all_sources(env, capsys, caplog):
    session = env["session"]
    before = {k: v for k, v in session.cache.items() if k[0] == "transfer"}
    with caplog.at_level("INFO", logger="skillneurons_jax.stages.transfer"):
        _transfer(session, str(env["model"]), "mrpc", ["sst2", "mrpc"], env["workdir"], env["data"], env["cfg"])
    # each pair's accuracy goes to the log (launch.reproduce: WORKDIR/logs/), not to the console
    assert capsys.readouterr().out == "" and "mrpc -> sst2: accuracy" in caplog.text
    after = {k: v for k, v in session.cache.items() if k[0] == "transfer"}
    assert set(after) == set(before) and all(after[k] is before[k] for k in before)
    assert session.loads == 1


def test_a_prompt_of_another_model_or_a_missing_one_is_a_clear_error(env, tmp_path):
    workdir = tmp_path / "w"
    for s in SEEDS:
        path = workdir / "prompts" / rf.MODEL / "sst2" / f"seed_{s}" / "prompt.npy"
        path.parent.mkdir(parents=True)
        np.save(path, np.zeros((4, 768), np.float32))
    with pytest.raises(ValueError, match=r"seed_0/prompt.npy.*does not fit"):
        _transfer(env["session"], str(env["model"]), "sst2", ["mrpc"], workdir, env["data"], env["cfg"])
    with pytest.raises(FileNotFoundError, match="no tuned prompt for task 'mrpc'"):
        _transfer(env["session"], str(env["model"]), "mrpc", ["sst2"], workdir, env["data"], env["cfg"])
    assert not (workdir / "transfer").exists()
