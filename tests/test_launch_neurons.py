"""The predictivity and suppress stages (skillneurons_jax.stages) and their launch scripts end to end on a tiny
random BERT (no MLM head: the tied readout) and a tiny SST-2 / AdvGLUE data folder written here; bad inputs fail
with errors that say what to do."""
import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")

import tiny_encoders  # noqa: E402  (tests/ is on sys.path under pytest)
from configs import tune as tune_config  # noqa: E402
from launch import common  # noqa: E402
from skillneurons_jax import io, layout  # noqa: E402
from skillneurons_jax.pipeline.session import Session  # noqa: E402
from skillneurons_jax.stages import predictivity as predictivity_stage  # noqa: E402
from skillneurons_jax.stages import setup as stage_setup  # noqa: E402
from skillneurons_jax.stages import suppress as suppress_stage  # noqa: E402
from skillneurons_jax.data import batches as batching  # noqa: E402
from skillneurons_jax.data import readers  # noqa: E402
from skillneurons_jax.models.ffn import Capture  # noqa: E402
from skillneurons_jax.neurons import predictivity as statistics  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = "tiny-bert"
PROMPT_LEN, SEEDS = 4, (0, 1)
WORDS = [w for w in tiny_encoders.BERT_WORDS if w not in ("fun", "boring")]


def _sentences(rng, n):
    labels = rng.integers(0, 2, size=n)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) + (" good" if y else " bad") for y in labels]
    return texts, labels


def _write_data(folder: pathlib.Path, seed: int, single_label_dev: bool = False) -> pathlib.Path:
    rng = np.random.default_rng(seed)
    sst = folder / "glue" / "SST-2"
    sst.mkdir(parents=True)
    for split, n in (("train", 21), ("dev", 19)):
        texts, labels = _sentences(rng, n)
        if split == "dev" and single_label_dev:
            labels = np.ones_like(labels)
        sst.joinpath(f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(
            f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    texts, labels = _sentences(rng, 13)
    (folder / "advglue").mkdir()
    (folder / "advglue" / "dev.json").write_text(json.dumps(
        {"sst2": [{"idx": i, "sentence": t, "label": int(y)} for i, (t, y) in enumerate(zip(texts, labels))]}))
    return folder


def _write_prompts(workdir: pathlib.Path, task: str, seeds, hidden: int, model: str = MODEL) -> None:
    for s in seeds:
        path = layout.prompt_path(workdir, model, task, s)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.random.default_rng(100 + s).normal(size=(PROMPT_LEN, hidden)).astype(np.float32))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("neurons")
    ckpt = root / MODEL
    tiny_encoders.make_checkpoint(ckpt, "bert", lm_head=False, seed=0)
    vocab = ckpt / "vocab.txt"   # give the tiny vocabulary the SST-2 label words (same size, so weights still fit)
    vocab.write_text(vocab.read_text().replace("\nfun\n", "\nnegative\n").replace("\nboring\n", "\npositive\n"))
    data = _write_data(root / "data", 0)
    workdir = root / "work"
    _write_prompts(workdir, "sst2", SEEDS, tiny_encoders.TINY["hidden_size"])
    return {"root": root, "ckpt": ckpt, "data": data, "workdir": workdir}


SESSION = Session(max_models=2)     # the tiny BERT and the tiny T5, each loaded once


def _run(env, task="sst2", *, model_path=None, data_dir=None, seeds=SEEDS, workdir=None, batch_size=8, **kw):
    """The predictivity stage with the tuning config's readout and data settings; returns the npz path."""
    config, model_path = tune_config.get_config(), model_path or str(env["ckpt"])
    summary = predictivity_stage.predictivity(
        SESSION.setup(model_path, task, config), workdir or str(env["workdir"]), data_dir or str(env["data"]), seeds,
        model_path=model_path, max_text_tokens=config.max_text_tokens, eval_batch_size=config.eval_batch_size,
        batch_size=batch_size, **kw)
    return pathlib.Path(summary["output"])


def _suppress(model_path, source, target, data_dir, seeds, workdir, **kw):
    """The suppress stage (target setup from the session); returns the JSON path."""
    config = tune_config.get_config()
    summary = suppress_stage.suppress(
        SESSION.setup(model_path, target, config), source, workdir, data_dir, seeds, model_path=model_path,
        max_text_tokens=config.max_text_tokens, eval_batch_size=config.eval_batch_size, **kw)
    return pathlib.Path(summary["output"])


@pytest.fixture(scope="module")
def sst2(env):
    path = _run(env)
    return path, np.load(path), json.loads(io.sidecar_path(path).read_text())


def test_predictivity_file_matches_a_direct_forward(env, sst2):
    path, z, meta = sst2
    assert path == env["workdir"] / "predictivity" / MODEL / "sst2.npz"
    L, N = tiny_encoders.TINY["num_hidden_layers"], tiny_encoders.TINY["intermediate_size"]
    assert z["pred"].shape == (L, N) and z["pred_per_seed"].shape == (2, L, N)
    assert z["acc"].shape == z["baseline"].shape == (2, L, PROMPT_LEN, N)
    assert meta["task"] == meta["baseline_task"] == "sst2" and meta["seeds"] == list(SEEDS)
    # SST-2's test split is carved out of train.tsv and, with no dev_ann.json, train rows whose words overlap an
    # AdvSST-2 record's (Jaccard >= 0.5: common in this tiny vocabulary) are left out as its originals (trap 6)
    train = readers.read_split("sst2", "train", env["data"])
    assert train.excluded_adversarial_originals > 0 and (meta["n_train"], meta["n_dev"]) == (len(train.examples), 19)
    assert meta["excluded_adversarial_originals"] == {
        "count": train.excluded_adversarial_originals, "split": "train", "match": train.adversarial_match}
    assert meta["truncation"]["train"]["examples"] == len(train.examples)
    assert meta["truncation"]["dev"]["examples"] == 19 and meta["truncation"]["dev"]["truncated"] == 0
    # Reference: one seed at a time, all real rows gathered, eqs. 2-5 in numpy.
    setup = common.load_setup(str(env["ckpt"]), "sst2", tune_config.get_config())
    loaded, readout = setup.loaded, setup.readout
    prompts = [jnp.asarray(np.load(layout.prompt_path(env["workdir"], MODEL, "sst2", s))) for s in SEEDS]

    def acts(split):
        enc = stage_setup.encode_split(setup, split, env["data"], None, 128)
        per_seed, labels, scores = [], [], []
        for b in batching.iterate(enc, 8):
            keep = b["example_mask"]
            got = [readout.scores(loaded.params, prompt, b, capture=Capture(0, PROMPT_LEN)) for prompt in prompts]
            per_seed.append(np.stack([np.asarray(out.neurons)[:, keep] for _, out in got]))   # [S, L, b, T, N]
            scores.append(np.stack([np.asarray(sc)[keep] for sc, _ in got]))
            labels.append(b["labels"][keep])
        return np.concatenate(per_seed, axis=2), np.concatenate(labels), np.concatenate(scores, axis=1)

    train, _, _ = acts("train")
    dev, y, scores = acts("dev")
    np.testing.assert_allclose(z["baseline"], train.mean(axis=2), rtol=0, atol=1e-5)
    def n_correct(shift):   # eq. 3's count with the threshold moved by `shift`
        above = dev > z["baseline"][:, :, None] + shift
        return (above == (y == 1)[None, None, :, None, None]).sum(axis=2)

    # The stage's forward (padded to fixed buckets) and this one differ by ~1e-6, so an activation that close to
    # its baseline may fall on either side: the stage's count must lie between the counts at baseline -+ 1e-4.
    correct, counted = n_correct(0.0), np.rint(z["acc"] * 19).astype(int)
    low, high = np.minimum(n_correct(-1e-4), n_correct(1e-4)), np.maximum(n_correct(-1e-4), n_correct(1e-4))
    assert np.all((low <= counted) & (counted <= high))
    assert np.mean(counted == correct) > 0.99             # and away from such ties, it is the same count
    acc = counted / 19
    np.testing.assert_allclose(z["pred"], np.maximum(acc, 1 - acc).max(axis=2).mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(meta["model_accuracy"], (scores.argmax(-1) == y[None]).mean(axis=1), atol=1e-9)


def test_adversarial_task_uses_the_clean_baseline_under_its_own_name(env, sst2):
    path, z, _ = sst2
    before = path.read_bytes()
    adv = _run(env, "advsst2")
    assert adv.name == "advsst2.npz" and path.read_bytes() == before   # trap 3: nothing overwritten
    za, meta = np.load(adv), json.loads(io.sidecar_path(adv).read_text())
    assert meta["baseline_task"] == "sst2" and meta["prompt_task"] == "sst2" and meta["n_dev"] == 13
    assert meta["reused_baseline_from"] == str(path)
    np.testing.assert_array_equal(za["baseline"], z["baseline"])
    # Recomputed from the clean TRAIN split (no reuse) it is the same baseline.
    other = env["root"] / "recompute"
    _write_prompts(other, "sst2", SEEDS, tiny_encoders.TINY["hidden_size"])
    zr = np.load(_run(env, "advsst2", workdir=str(other)))
    np.testing.assert_array_equal(zr["baseline"], z["baseline"])
    np.testing.assert_array_equal(zr["acc"], za["acc"])


def test_label_permutation_null_rides_the_same_pass(env, sst2):
    """options.label_permutations = R and subsample_sizes add the null's and the matched-n arrays to the npz in the
    same DEV pass; every array the stage wrote before is byte-for-byte the same (R = 0 changes nothing)."""
    from skillneurons_jax.neurons.stats_options import StatsOptions
    path, z, _ = sst2
    other = env["root"] / "with_null"
    _write_prompts(other, "sst2", SEEDS, tiny_encoders.TINY["hidden_size"])
    options = StatsOptions(label_permutations=6, subsample_sizes=(10,), subsample_draws=2)
    zn = np.load(_run(env, workdir=str(other), options=options))
    L = tiny_encoders.TINY["num_hidden_layers"]
    assert set(zn.files) - set(z.files) == {"null_pred", "null_pred_layer_mean", "null_pred_layer_max", "null_pred_max",
                                            "null_pred_per_seed_max", "matched_n", "matched_pred",
                                            "matched_pred_per_seed"}
    for name in z.files:
        assert zn[name].tobytes() == z[name].tobytes(), name
    assert zn["null_pred_layer_mean"].shape == (6, L) and zn["null_pred_per_seed_max"].shape == (6, len(SEEDS))
    assert zn["matched_n"].tolist() == [10] and zn["matched_pred"].shape == (1,) + z["pred"].shape
    # Pred of permuted labels is Pred all the same: at least 0.5 everywhere, and its max at most 1
    assert (zn["null_pred_layer_mean"] >= 0.5).all() and (zn["null_pred_max"] <= 1).all()
    assert (zn["null_pred_layer_max"] >= zn["null_pred_layer_mean"]).all()


def test_control_pair_for_f6a(env, sst2):
    """F6a's control: an unrelated set (IMDB here) capped at the adversarial set's size, scored with the clean
    task's prompts and TRAIN baseline, written apart from every task's result; the verdict then tests the
    adversarial correlation against the control's."""
    from skillneurons_jax.analysis import results, verdicts
    rng = np.random.default_rng(3)
    for split in ("train", "test"):
        for polarity, label in (("neg", 0), ("pos", 1)):
            folder = env["data"] / "aclImdb" / split / polarity
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(12):
                texts, _ = _sentences(rng, 1)
                (folder / f"{i}_1.txt").write_text(texts[0])
    _run(env, "advsst2")
    path = _run(env, "imdb", control_for="advsst2")
    assert path == layout.control_predictivity_path(env["workdir"], MODEL, "advsst2")
    meta = json.loads(io.sidecar_path(path).read_text())
    assert meta["control_for"] == "advsst2" and meta["prompt_task"] == meta["baseline_task"] == "sst2"
    assert meta["n_dev"] == 13                                     # AdvSST-2's size
    assert not layout.predictivity_path(env["workdir"], MODEL, "imdb").exists()
    control, name = results.load_control(env["workdir"], MODEL, "advsst2")
    assert name == "imdb" and control.shape == sst2[1]["pred_per_seed"].shape
    found = verdicts.study_verdicts(env["workdir"], MODEL, ["sst2"], {"advsst2": "sst2"})
    f6a = [v for v in found.verdicts if v.finding == "F6a"][0]
    assert "control imdb" in f6a.statistic and "control pair" in f6a.test
    with pytest.raises(ValueError, match="unrelated"):
        _run(env, "sst2", control_for="advsst2")


def test_suppression_curves(env, sst2):
    _run(env, "advsst2")
    out = _suppress(str(env["ckpt"]), "sst2", "advsst2", env["data"], SEEDS, env["workdir"],
                             levels=(0, 10, 100), random_draws=2, batch_size=8)
    assert out == env["workdir"] / "suppression" / MODEL / "sst2__advsst2.json"
    res = json.loads(out.read_text())
    adv_meta = json.loads(io.sidecar_path(layout.predictivity_path(env["workdir"], MODEL, "advsst2")).read_text())
    assert res["skill"]["0"] == adv_meta["model_accuracy"]              # nothing suppressed = the plain model
    assert res["random"]["0"] == [adv_meta["model_accuracy"]] * 2
    L, N = tiny_encoders.TINY["num_hidden_layers"], tiny_encoders.TINY["intermediate_size"]
    assert res["neurons_per_layer"]["10"] == [N // 10] * L and res["neurons_per_layer"]["100"] == [N] * L
    assert res["random"]["100"][0] == res["random"]["100"][1] == res["skill"]["100"]   # all neurons: same mask
    from skillneurons_jax.analysis import results
    loaded = results.load_suppression(env["workdir"], MODEL, "sst2", "advsst2")
    assert loaded.skill.shape == (3, 2) and loaded.random.shape == (3, 2, 2)
    again = _suppress(str(env["ckpt"]), "sst2", "advsst2", env["data"], SEEDS, env["workdir"],
                               levels=(0, 10, 100), random_draws=2, batch_size=8)
    assert json.loads(again.read_text()) == res                           # fixed draws: reproducible
    mean = json.loads(_suppress(str(env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, env["workdir"],
                                         levels=(0, 50), intervention="mean", random_draws=1,
                                         batch_size=8).read_text())
    assert mean["skill"]["0"] == json.loads(io.sidecar_path(sst2[0]).read_text())["model_accuracy"]


def test_suppression_with_prompt_slot_0_excluded(env, sst2):
    """F5 beside the default: skill neurons selected by Pred without prompt slot 0 (the readout slot), from the
    npz's acc, written apart from the default result, which stays as it was."""
    from skillneurons_jax.analysis import results
    from skillneurons_jax.neurons import suppression
    default = _suppress(str(env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, env["workdir"], levels=(0, 10),
                        random_draws=1, batch_size=8)
    before = default.read_bytes()
    out = _suppress(str(env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, env["workdir"], levels=(0, 10),
                    random_draws=1, batch_size=8, exclude_slots=(0,))
    assert out == layout.suppression_slots_excluded_path(env["workdir"], MODEL, "sst2", "sst2")
    assert default.read_bytes() == before
    res = json.loads(out.read_text())
    assert res["excluded_prompt_slots"] == [0] and res["skill"]["0"] == json.loads(before)["skill"]["0"]
    acc = sst2[1]["acc"].astype(np.float64)
    without = np.maximum(acc, 1 - acc)[:, :, 1:].max(2).mean(0)
    loaded_model = SESSION.setup(str(env["ckpt"]), "sst2", tune_config.get_config()).loaded
    used = suppress_stage.load_source(env["workdir"], loaded_model, "sst2", "encoder", False, exclude_slots=(0,))[0]
    np.testing.assert_allclose(used, without, atol=1e-6)                   # the Pred the selection used
    want = suppression.skill_masks(without, [10])[0]
    assert want.sum(1).tolist() == res["neurons_per_layer"]["10"]
    assert not np.array_equal(want, suppression.skill_masks(sst2[1]["pred"], [10])[0])    # another selection
    loaded = results.load_suppression(env["workdir"], MODEL, "sst2", "sst2", slot0_excluded=True)
    assert loaded.skill.shape == (2, 2)


def test_suppression_writes_what_the_paired_test_and_interventions_need(env, sst2):
    """Per-example correctness reproduces every accuracy; the mean intervention says which positions had a TRAIN
    mean; the predictivity npz carries the TRAIN mean of a^2 for a Gaussian scale relative to the train std."""
    path, arrays, meta = sst2
    baseline, square = arrays["baseline"], arrays["baseline_sq"]
    assert square.shape == baseline.shape and np.all(square >= baseline ** 2 - 1e-4)   # E[a^2] >= E[a]^2
    assert np.asarray(meta["model_confusion"]).shape == (len(SEEDS), 2, 2)
    res = json.loads(_suppress(str(env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, env["workdir"],
                               levels=(0, 20), random_draws=2, batch_size=8).read_text())
    labels = np.asarray(res["labels"])
    assert len(labels) == res["n_dev"]
    for key in ("0", "20"):
        assert np.allclose(np.mean(res["skill_correct"][key], axis=-1), res["skill"][key])
        assert np.allclose(np.mean(res["random_correct"][key], axis=-1), res["random"][key])
    mean = json.loads(_suppress(str(env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, env["workdir"],
                                levels=(0, 50), intervention="mean", random_draws=1, batch_size=8).read_text())
    assert mean["mean_positions"] == baseline.shape[2]          # the prompt positions captured, not the text
    absolute = json.loads(_suppress(str(env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, env["workdir"],
                                    levels=(0, 50), intervention="gaussian", noise_scale=0.5, random_draws=1,
                                    batch_size=8).read_text())
    relative = json.loads(_suppress(str(env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, env["workdir"],
                                    levels=(0, 50), intervention="gaussian", noise_scale=0.5, random_draws=1,
                                    batch_size=8, noise_relative_to="train_std").read_text())
    assert absolute["noise_relative_to"] == "absolute" and relative["noise_relative_to"] == "train_std"
    assert relative["skill"]["0"] == absolute["skill"]["0"]
    with pytest.raises(ValueError, match="noise_relative_to"):
        _suppress(str(env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, env["workdir"], levels=(0,),
                  intervention="gaussian", noise_relative_to="percent")


def test_bad_inputs(env, sst2, tmp_path):
    with pytest.raises(FileNotFoundError, match="launch.tune"):
        _run(env, seeds=(0, 5))
    _write_prompts(tmp_path, "sst2", (0,), hidden=24)
    with pytest.raises(ValueError, match="tuned for another model"):
        _run(env, seeds=(0,), workdir=str(tmp_path))
    _write_prompts(tmp_path / "w2", "sst2", (0,), hidden=tiny_encoders.TINY["hidden_size"])
    side = io.sidecar_path(layout.prompt_path(tmp_path / "w2", MODEL, "sst2", 0))
    side.write_text(json.dumps({"model": "roberta-base"}))
    with pytest.raises(ValueError, match="tuned for model 'roberta-base'"):
        _run(env, seeds=(0,), workdir=str(tmp_path / "w2"))
    side.write_text(json.dumps({"model": MODEL, "tied_scale": 4.0}))
    with pytest.raises(ValueError, match="tied_scale=4.0"):
        _run(env, seeds=(0,), workdir=str(tmp_path / "w2"))
    single = _write_data(tmp_path / "single", 1, single_label_dev=True)
    with pytest.warns(statistics.SingleLabelWarning, match="label 1 only"):
        _run_single(env, single, tmp_path)
    with pytest.raises(ValueError, match=r"outside \[0, 100\]"):
        suppress_stage.parse_levels("0,5,150")
    with pytest.raises(ValueError, match=r"outside \[0, 100\]"):
        _suppress(str(env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, env["workdir"], levels=(0, -3))
    with pytest.raises(FileNotFoundError, match="launch.predictivity"):
        _suppress(str(env["ckpt"]), "mrpc", "sst2", env["data"], SEEDS, env["workdir"], levels=(0,))


def _run_single(env, data, tmp_path):
    work = tmp_path / "single_work"
    _write_prompts(work, "sst2", (0,), tiny_encoders.TINY["hidden_size"])
    return _run(env, data_dir=str(data), seeds=(0,), workdir=str(work))


def common_flags(env, work):
    return ["--model_path", str(env["ckpt"]), "--data_dir", str(env["data"]), "--seeds", "0,1",
            "--workdir", str(work), "--max_examples", "16", "--batch_size", "8"]


def test_command_lines(env, sst2, tmp_path):
    """The absl entry points parse the contract's flags and write the contract's files."""
    work = tmp_path / "cli"
    _write_prompts(work, "sst2", SEEDS, tiny_encoders.TINY["hidden_size"])
    common_args = common_flags(env, work)
    for cmd in (["launch.predictivity", "--task", "sst2", "--threshold", "median", "--median_bins", "16"],
                ["launch.suppress", "--source_task", "sst2", "--levels", "0,10", "--random_draws", "2"]):
        proc = subprocess.run([sys.executable, "-m", *cmd, *common_args], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    z = np.load(work / "predictivity" / MODEL / "sst2.npz")
    assert "threshold" in z.files and z["threshold"].shape == z["baseline"].shape
    meta = json.loads((work / "predictivity" / MODEL / "sst2.npz.json").read_text())
    assert meta["options"]["threshold"] == "median" and meta["streams"]["encoder"]["median_width"] == 0.0
    n_train = min(16, len(readers.read_split("sst2", "train", env["data"]).examples))   # --max_examples 16
    assert meta["n_train"] == n_train and meta["n_dev"] == 16
    res = json.loads((work / "suppression" / MODEL / "sst2__sst2.json").read_text())
    assert res["ks"] == [0.0, 10.0] and len(res["random"]["10"]) == 2
    bad = subprocess.run([sys.executable, "-m", "launch.predictivity", "--task", "sst2", *common_flags(env, work),
                          "--seeds", "7"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "launch.tune" in bad.stderr


@pytest.fixture(scope="module")
def t5_env(env, tmp_path_factory):
    """A tiny T5 v1.0 (ReLU) with a SentencePiece vocabulary trained on the test sentences and label words."""
    pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("t5") / "tiny-t5"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(WORDS + ["negative", "positive", "good", "bad"] * 3, size=8))
                 for _ in range(300)]
    tiny_encoders.make_t5_checkpoint(folder, sentences, vocab_size=60, num_decoder_layers=3,
                                     hard_vocab_limit=False)
    workdir = env["root"] / "t5work"
    _write_prompts(workdir, "sst2", SEEDS, 16, model="tiny-t5")
    return {"ckpt": folder, "workdir": workdir}


def test_t5_encoder_and_first_decoder_step(env, t5_env):
    path = _run(env, model_path=str(t5_env["ckpt"]), workdir=str(t5_env["workdir"]))
    z = np.load(path)
    assert z["acc"].shape == (2, 2, PROMPT_LEN, 24) and z["pred"].shape == (2, 24)
    assert z["decoder_acc"].shape == (2, 3, 1, 24) and z["decoder_baseline"].shape == (2, 3, 1, 24)
    assert z["decoder_pred"].shape == (3, 24) and z["decoder_pred_per_seed"].shape == (2, 3, 24)
    assert np.all((z["decoder_pred"] >= 0.5) & (z["decoder_pred"] <= 1))
    meta = json.loads(io.sidecar_path(path).read_text())
    assert set(meta["streams"]) == {"encoder", "decoder"}
    res = json.loads(_suppress(str(t5_env["ckpt"]), "sst2", "sst2", env["data"], SEEDS, t5_env["workdir"],
                                        levels=(0, 50), random_draws=1, stream="decoder", batch_size=8).read_text())
    assert res["skill"]["0"] == meta["model_accuracy"] and res["stream"] == "decoder"
    assert res["neurons_per_layer"]["50"] == [12] * 3


def test_explorer_records_the_top_neurons_of_a_task_and_its_adversarial_set(env, sst2):
    from skillneurons_jax.stages import explorer as explorer_stage
    path, z, _ = sst2
    adv = np.load(_run(env, "advsst2"))
    config = tune_config.get_config()
    setups = [SESSION.setup(str(env["ckpt"]), t, config) for t in ("sst2", "advsst2")]
    summary = explorer_stage.record_neurons(setups, str(env["workdir"]), str(env["data"]), SEEDS,
                                            model_path=str(env["ckpt"]), max_text_tokens=config.max_text_tokens,
                                            eval_batch_size=8, top_k=3, examples=2)
    out = np.load(summary["output"], allow_pickle=False)
    meta = json.loads(io.sidecar_path(summary["output"]).read_text())
    assert summary["output"] == str(env["workdir"] / "explorer" / MODEL / "sst2.npz")
    assert meta["tasks"] == ["sst2", "advsst2"] and meta["seed"] == SEEDS[0] and meta["n_dev"] == {
        "sst2": 19, "advsst2": 13}
    neurons, token = out["neurons"], out["token"]
    # the union of both tasks' top 3 by Pred, each task's best first
    flat = z["pred"].ravel()
    best = np.unravel_index(np.argsort(-flat, kind="stable")[:3], z["pred"].shape)
    assert [tuple(x) for x in neurons[:3]] == list(zip(*best))
    assert 3 <= len(neurons) <= 6
    seed_pred = np.maximum(z["acc"][0], 1 - z["acc"][0])        # [L, T, N]
    for (l, n), j in zip(neurons, token):
        assert seed_pred[l, j, n] == seed_pred[l, :, n].max()
    # the activations are the first seed's prompt's at (layer, j*, neuron), row r = dev file row r
    setup = setups[0]
    prompt = jnp.asarray(np.load(layout.prompt_path(env["workdir"], MODEL, "sst2", SEEDS[0])))
    enc = stage_setup.encode_split(setup, "dev", env["data"], None, 128)
    rows = []
    for b in batching.iterate(enc, 8):
        _, o = setup.readout.scores(setup.loaded.params, prompt, b, capture=Capture(0, PROMPT_LEN))
        rows.append(np.asarray(o.neurons)[:, b["example_mask"]])     # [L, b, T, N]
    acts = np.concatenate(rows, axis=1)
    expected = np.stack([acts[l, :, j, n] for (l, n), j in zip(neurons, token)], axis=1)
    np.testing.assert_allclose(out["act__sst2"], expected, atol=1e-5)
    np.testing.assert_array_equal(out["labels__sst2"], enc.labels)
    for task, stats in (("sst2", z), ("advsst2", adv)):
        want = stats["baseline"][0][neurons[:, 0], token, neurons[:, 1]]
        np.testing.assert_array_equal(out[f"threshold__{task}"], want)   # the adversarial set: the CLEAN baseline
        assert meta["acc_check"][task] <= 1 / meta["n_dev"][task] + 1e-9
        act = out[f"act__{task}"]
        assert np.all(act[out[f"top__{task}"][:, 0], np.arange(len(neurons))] == act.max(axis=0))
        assert np.all(act[out[f"bottom__{task}"][:, 0], np.arange(len(neurons))] == act.min(axis=0))
        assert set(out[f"rows__{task}"]) == set(out[f"top__{task}"].ravel()) | set(out[f"bottom__{task}"].ravel())
    dev = readers.load_split("sst2", "dev", env["data"])
    assert list(out["texts__sst2"]) == [dev[r].text_a for r in out["rows__sst2"]]


def test_explorer_records_the_rows_the_predictivity_was_measured_on(env, tmp_path):
    """With a checkpoint-selection part carved from dev (tune.select_percent), the predictivity is measured on
    the other rows: the explorer records the same rows (stages.setup.read_split), so its eq. 3 accuracies
    reproduce the npz's (before, it read the whole dev split and disagreed by up to 0.155 on a small set)."""
    from skillneurons_jax.stages import explorer as explorer_stage
    workdir = tmp_path / "work"
    shutil.copytree(env["workdir"] / "prompts", workdir / "prompts")
    config = tune_config.get_config()
    setups = [dataclasses.replace(SESSION.setup(str(env["ckpt"]), t, config),
                                  dev_rows=stage_setup.DevRows(select_percent=50)) for t in ("sst2", "advsst2")]
    for setup in setups:
        predictivity_stage.predictivity(setup, str(workdir), str(env["data"]), SEEDS, model_path=str(env["ckpt"]),
                                        max_text_tokens=config.max_text_tokens, eval_batch_size=8,
                                        prompt_task="sst2", baseline_task="sst2")
    summary = explorer_stage.record_neurons(setups, str(workdir), str(env["data"]), SEEDS,
                                            model_path=str(env["ckpt"]), max_text_tokens=config.max_text_tokens,
                                            eval_batch_size=8, top_k=3, examples=2)
    meta = json.loads(io.sidecar_path(summary["output"]).read_text())
    for setup in setups:
        task = setup.task.name
        measured = stage_setup.read_split(setup, "dev", str(env["data"]), None).examples
        full = readers.load_split(task, "dev", env["data"])
        assert meta["n_dev"][task] == len(measured) < len(full)
        assert meta["acc_check"][task] <= 1 / meta["n_dev"][task] + 1e-9
