"""The tuning recipe (prompt.train): learning-rate schedules, selection and patience on balanced dev accuracy, the
reparameterised prompt folded into a plain [P, H] prompt, and the selection rows of stages.tune (readers.Part,
dev rows that are no AdvGLUE original) on the tiny stand-in model and tiny files."""
import json

import numpy as np
import pytest

import prompt_standin as st
from skillneurons_jax.data import readers, tasks
from skillneurons_jax.prompt import metrics
from skillneurons_jax.prompt import soft_prompt as sp
from skillneurons_jax.prompt import train as T
from skillneurons_jax.stages import setup
from skillneurons_jax.stages import tune as tune_stage

from tests.test_data_readers import tsv, write

SEEDS = [0, 1]
B = 8


@pytest.fixture(scope="module")
def data():
    return st.make_data(64, 1), st.make_data(24, 2)


def _run(data, cfg, **kw):
    return st.run_training(data, cfg, SEEDS, B, **kw)


def _cfg(**kw):
    return T.TrainConfig(**{**dict(learning_rate=0.1, batch_size=B, epochs=2, eval_every=4, progress=False), **kw})


def test_schedules_warm_up_then_decay_to_the_floor_at_the_last_step():
    cfg = _cfg(learning_rate=0.5, warmup_steps=4, lr_schedule="cosine", min_lr_fraction=0.1)
    lr = T.learning_rate_schedule(cfg, 20)
    assert float(lr(0)) == 0.0 and float(lr(2)) == pytest.approx(0.25) and float(lr(4)) == pytest.approx(0.5)
    assert float(lr(12)) == pytest.approx(0.05 + 0.45 * 0.5, rel=1e-5)          # half-way through the decay
    assert float(lr(20)) == pytest.approx(0.05, rel=1e-5)
    linear = T.learning_rate_schedule(_cfg(learning_rate=0.5, lr_schedule="linear"), 10)
    assert float(linear(0)) == pytest.approx(0.5) and float(linear(5)) == pytest.approx(0.25)
    assert T.learning_rate_schedule(_cfg(learning_rate=0.5), None) == 0.5       # constant needs no horizon
    with pytest.raises(ValueError, match="total steps"):
        T.learning_rate_schedule(_cfg(lr_schedule="linear"), None)
    with pytest.raises(ValueError, match="lr_schedule"):
        _cfg(lr_schedule="step").validate()


def test_a_decay_changes_training_and_a_flat_decay_is_the_constant_rate(data):
    constant = _run(data, _cfg())
    flat = _run(data, _cfg(lr_schedule="linear", min_lr_fraction=1.0))
    np.testing.assert_array_equal(flat.prompts, constant.prompts)
    decayed = _run(data, _cfg(lr_schedule="cosine"))
    assert not np.allclose(decayed.prompts, constant.prompts)


def test_the_fingerprint_of_a_default_recipe_is_the_old_one():
    # runs made before the recipe fields existed must still resume
    assert set(_cfg().fingerprint()) == set(T.TrainConfig.RESUME_KEYS)
    decayed = _cfg(lr_schedule="cosine", select_metric="balanced_accuracy", max_steps=12).fingerprint()
    assert decayed["lr_schedule"] == "cosine" and decayed["select_metric"] == "balanced_accuracy"
    assert decayed["max_steps"] == 12          # the horizon of the decay: a larger budget is another schedule


def test_selection_on_balanced_accuracy_ignores_majority_gains():
    state = T.initial_state(np.zeros((1, 2, 3), np.float32), T.make_optimizer(_cfg()))
    balanced = np.array([[[30, 10], [10, 30]]])            # accuracy 0.75, balanced 0.75
    majority = np.array([[[75, 0], [20, 5]]])              # accuracy 0.80, balanced 0.60
    s1, _ = T.record_evaluation(state, 1, np.zeros((1, 2, 3)), balanced, "balanced_accuracy")
    s2, improved = T.record_evaluation(s1, 2, np.ones((1, 2, 3)), majority, "balanced_accuracy")
    assert not improved[0] and s2.best_step[0] == 1 and s2.evals_since_improvement == 1
    _, improved_acc = T.record_evaluation(s1, 2, np.ones((1, 2, 3)), majority, "accuracy")
    assert improved_acc[0]
    assert metrics.balanced_accuracy(majority[0]) == pytest.approx(0.6)


def test_metrics_rows_carry_balanced_accuracy_and_patience_follows_the_selection_metric(data, tmp_path):
    dirs = [tmp_path / f"seed_{s}" for s in SEEDS]
    result = _run(data, _cfg(select_metric="balanced_accuracy", eval_every=2), run_dirs=dirs)
    rows = [json.loads(line) for line in (dirs[0] / T.METRICS_FILE).read_text().splitlines()]
    assert all(0 <= r["dev_balanced_accuracy"] <= 1 for r in rows)
    best = max(rows, key=lambda r: (r["dev_balanced_accuracy"], -r["step"]))
    assert result.best_step[0] == best["step"]
    assert json.loads((dirs[0] / "prompt.npy.json").read_text())["recipe"]["select_metric"] == "balanced_accuracy"


def test_a_reparameterised_prompt_is_folded_into_a_plain_prompt(data, tmp_path):
    prompts0 = sp.init_prompts(SEEDS, st.PROMPT_LEN, st.HIDDEN)
    tree = T.init_reparam(np.asarray(prompts0), 6, SEEDS)
    np.testing.assert_allclose(np.asarray(T.fold(tree)), prompts0, atol=1e-6)     # starts as the initial prompt
    dirs = [tmp_path / f"seed_{s}" for s in SEEDS]
    result = _run(data, _cfg(reparam_hidden=6, epochs=2), run_dirs=dirs)
    assert result.best_prompts.shape == result.prompts.shape == (2, st.PROMPT_LEN, st.HIDDEN)
    saved = np.load(dirs[1] / T.PROMPT_FILE)
    assert saved.shape == (st.PROMPT_LEN, st.HIDDEN)
    np.testing.assert_array_equal(saved, result.best_prompts[1])
    # the saved plain prompt scores what the run recorded for it
    dev = st.dev_batches(data[1], B)
    conf = sum(metrics.confusion(np.asarray(st.score_fn(st.make_params(), saved, b))[None], b["labels"],
                                 b["example_mask"])[0] for b in dev)
    assert metrics.accuracy(conf) == pytest.approx(result.best_accuracy[1])
    plain = _run(data, _cfg(epochs=2))
    assert not np.allclose(plain.prompts, result.prompts)                          # another parameterisation
    # a longer rerun resumes from the reparameterised checkpoint and matches an uninterrupted run
    longer = _run(data, _cfg(reparam_hidden=6, epochs=3), run_dirs=dirs)
    assert longer.resumed_from == 16
    straight = _run(data, _cfg(reparam_hidden=6, epochs=3), run_dirs=[tmp_path / "u0", tmp_path / "u1"])
    np.testing.assert_allclose(longer.prompts, straight.prompts, atol=1e-6)
    with pytest.raises(ValueError, match="reparam_hidden"):
        _run(data, _cfg(reparam_hidden=6), step_factory=lambda tx, mesh: None)


def _sst2_with_originals(tmp_path, n=200, originals=(3, 10, 57, 120)):
    rows = [(f"sentence number {i} about scene {i // 2} .", str(i % 2)) for i in range(n)]
    write(tmp_path, "glue/SST-2/dev.tsv", tsv(["sentence", "label"], *rows))
    write(tmp_path, "glue/SST-2/train.tsv", tsv(["sentence", "label"], *[(f"train row {i}", str(i % 2))
                                                                          for i in range(40)]))
    ann = [{"idx": k, "sentence": f"sentence numbr {i} about scene {i // 2} .", "label": i % 2,
            "original_sentence": rows[i][0]} for k, i in enumerate(originals)]
    write(tmp_path, "advglue/dev_ann.json", json.dumps({"sst2": ann}))
    write(tmp_path, "advglue/dev.json", json.dumps({"sst2": [{k: v for k, v in r.items() if k != "original_sentence"}
                                                             for r in ann]}))
    return rows, originals


def test_selection_and_measurement_parts_are_disjoint_and_cover_dev(tmp_path):
    rows, _ = _sst2_with_originals(tmp_path)
    full = readers.read_split("sst2", "dev", tmp_path).examples
    select = readers.read_split("sst2", "dev", tmp_path, part=readers.Part("select", 30)).examples
    measure = readers.read_split("sst2", "dev", tmp_path, part=readers.Part("measure", 30)).examples
    assert len(select) + len(measure) == len(full) and not set(select) & set(measure)
    assert 0.15 < len(select) / len(full) < 0.45
    with pytest.raises(ValueError, match="select_percent"):
        readers.Part("select", 100)
    with pytest.raises(ValueError, match="part"):
        readers.Part("train", 30)


def test_dev_rows_that_are_adversarial_originals_can_be_left_out(tmp_path):
    rows, originals = _sst2_with_originals(tmp_path)
    full = readers.read_split("sst2", "dev", tmp_path)
    assert full.excluded_adversarial_originals == 0 and len(full.examples) == len(rows)   # evaluation: every row
    kept = readers.read_split("sst2", "dev", tmp_path, exclude_originals=True)
    assert kept.excluded_adversarial_originals == len(originals)
    assert not {rows[i][0] for i in originals} & {e.text_a for e in kept.examples}
    rows = setup.DevRows.from_config({"select_percent": 40, "select_without_originals": True})
    assert rows.options("select") == {"part": readers.Part("select", 40), "exclude_originals": True}
    assert rows.options("measure")["part"] == readers.Part("measure", 40)
    assert setup.DevRows.from_config({}) is None                 # the default: the whole dev split, as before


def test_recipe_fields_are_checked_before_anything_loads():
    good = {"lr_schedule": "cosine", "min_lr_fraction": 0.1, "select_metric": "balanced_accuracy",
            "reparam_hidden": 64, "select_percent": 30}
    tune_stage.check_tune_config(good)
    for field, bad in (("lr_schedule", "exp"), ("select_metric", "f1"), ("min_lr_fraction", 2.0),
                       ("reparam_hidden", -1), ("select_percent", 100)):
        with pytest.raises(ValueError, match=f"--config.{field}"):
            tune_stage.check_tune_config({**good, field: bad})
    resolved = {"learning_rate": 0.1, "batch_size": 8, "epochs": 1, "max_steps": None, "eval_every": 0,
                "eval_at_start": False, "warmup_steps": 2, "clip_norm": 0.0, "weight_decay": 0.0,
                "keep_checkpoints": 1, "progress": False, **good}
    cfg = tune_stage.train_config(resolved)
    assert (cfg.lr_schedule, cfg.select_metric, cfg.reparam_hidden) == ("cosine", "balanced_accuracy", 64)
    assert tasks.get_task("qnli").originals_match == "text_a"


def test_stages_read_the_measure_part_and_tune_selects_on_the_other(tmp_path):
    """Every stage reading dev through encode_split gets the measurement rows; tune asks for the selection rows;
    the two are disjoint and neither holds an AdvGLUE original (the train split of the same task is untouched)."""
    rows, originals = _sst2_with_originals(tmp_path)
    import transformers
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sentence"]) + "\n")
    loaded = type("Loaded", (), {"tokenizer": transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")),
                                 "family": "bert"})()
    rows_of = setup.DevRows.from_config({"select_percent": 30, "select_without_originals": True})
    fake = setup.TaskSetup(loaded=loaded, task=tasks.get_task("sst2"), label_words=None, readout=None,
                           dev_rows=rows_of)
    texts = {}
    for role in ("measure", "select"):
        data = readers.read_split("sst2", "dev", tmp_path, **rows_of.options(role))
        texts[role] = {e.text_a for e in data.examples}
        assert len(setup.encode_split(fake, "dev", tmp_path, None, 64, role=role)) == len(data.examples)
    assert len(setup.encode_split(fake, "dev", tmp_path, None, 64)) == len(texts["measure"])   # the default role
    train = setup.encode_split(fake, "train", tmp_path, None, 64)
    measure, select = texts["measure"], texts["select"]
    seen = measure | select
    assert not measure & select
    assert len(seen) == len(rows) - len(originals) and not seen & {rows[i][0] for i in originals}
    assert len(train) == len(readers.read_split("sst2", "train", tmp_path).examples)   # train: as before
