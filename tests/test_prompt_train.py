"""The prompt-tuning loop on a tiny stand-in model (tests/prompt_standin.py): several seeds at once equal each seed
alone, frozen params stay bit-identical, resumption continues exactly, NaN losses stop with a clear message, and
the prompt initialisers, metrics and prompt files behave."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import prompt_standin as st
from skillneurons_jax import parallel
from skillneurons_jax.prompt import metrics
from skillneurons_jax.prompt import files
from skillneurons_jax.prompt import soft_prompt as sp
from skillneurons_jax.prompt import train as T

SEEDS = [0, 1, 2]
B = 8


@pytest.fixture(scope="module")
def data():
    return st.make_data(64, 1), st.make_data(20, 2)


def _cfg(**kw):
    base = dict(learning_rate=0.1, batch_size=B, epochs=2, eval_every=4, progress=False)
    return T.TrainConfig(**{**base, **kw})


def _run(data, seeds, cfg, init=None, **kw):
    tr, dv = data
    init = sp.init_prompts(seeds, st.PROMPT_LEN, st.HIDDEN) if init is None else init
    return T.train(st.score_fn, st.make_params(), init, seeds, st.train_batches(tr, B), st.dev_batches(dv, B),
                   cfg, **kw)


def test_seeds_together_equal_seeds_alone(data):
    cfg = _cfg()
    together = _run(data, SEEDS, cfg)
    assert together.steps == 16 and len(together.history) == 4 * len(SEEDS)
    for i, s in enumerate(SEEDS):
        alone = _run(data, [s], cfg)
        np.testing.assert_allclose(together.prompts[i], alone.prompts[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(together.best_prompts[i], alone.best_prompts[0], atol=1e-5, rtol=0)
        assert together.best_accuracy[i] == alone.best_accuracy[0]
    # seeds differ in init and data order: their prompts must differ
    assert not np.allclose(together.prompts[0], together.prompts[1])


def test_data_order_is_per_seed_and_per_epoch(data):
    tr, _ = data
    fn = st.train_batches(tr, B)
    first = lambda s, e: fn(s, e)[0]["input_ids"]
    assert np.array_equal(first(3, 0), first(3, 0))
    assert not np.array_equal(first(3, 0), first(4, 0))
    assert not np.array_equal(first(3, 0), first(3, 1))


def test_frozen_params_bit_identical_and_only_prompt_moves(data):
    params = st.make_params()
    before = jax.tree.map(np.copy, params)
    tr, dv = data
    init = sp.init_prompts([0], st.PROMPT_LEN, st.HIDDEN)
    res = T.train(st.score_fn, params, init, [0], st.train_batches(tr, B), st.dev_batches(dv, B), _cfg(epochs=1))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params)):
        assert np.array_equal(a, np.asarray(b))
    assert not np.allclose(res.prompts[0], np.asarray(init[0]))


def test_best_by_dev_and_files(data, tmp_path):
    dirs = [tmp_path / f"seed_{s}" for s in SEEDS]
    res = _run(data, SEEDS, _cfg(eval_at_start=True), run_dirs=dirs, run_info={"model": "standin"})
    for i, d in enumerate(dirs):
        rows = [json.loads(line) for line in (d / T.METRICS_FILE).read_text().splitlines()]
        assert [r["step"] for r in rows] == [0, 4, 8, 12, 16]
        accs = [r["dev_accuracy"] for r in rows]
        assert res.best_accuracy[i] == max(accs)
        assert res.best_step[i] == rows[int(np.argmax(accs))]["step"]       # first best wins ties
        saved = np.load(d / T.PROMPT_FILE)
        assert saved.shape == (st.PROMPT_LEN, st.HIDDEN) and saved.dtype == np.float32
        np.testing.assert_array_equal(saved, res.best_prompts[i])
        meta = json.loads((d / "prompt.npy.json").read_text())
        assert meta["seed"] == SEEDS[i] and meta["dev_accuracy"] == res.best_accuracy[i]
        assert meta["model"] == "standin" and "versions" in meta


def test_resume_continues_exactly(data, tmp_path):
    full = _run(data, SEEDS, _cfg(max_steps=12))
    dirs = [tmp_path / f"seed_{s}" for s in SEEDS]
    first = _run(data, SEEDS, _cfg(max_steps=8), run_dirs=dirs)
    assert first.resumed_from is None and first.steps == 8
    second = _run(data, SEEDS, _cfg(max_steps=12), run_dirs=dirs)
    assert second.resumed_from == 8 and second.steps == 12
    np.testing.assert_array_equal(second.prompts, full.prompts)
    np.testing.assert_array_equal(second.best_prompts, full.best_prompts)
    np.testing.assert_array_equal(second.best_accuracy, full.best_accuracy)
    steps = [json.loads(line)["step"] for line in (dirs[0] / T.METRICS_FILE).read_text().splitlines()]
    assert steps == [4, 8, 12]
    with pytest.raises(ValueError, match="different configuration.*learning_rate"):
        _run(data, SEEDS, _cfg(max_steps=12, learning_rate=0.5), run_dirs=dirs)


def _nan_after_growth(params, prompt, batch):
    """The stand-in, but the scores turn NaN once the prompt has grown far from its initialisation."""
    scores = st.score_fn(params, prompt, batch)
    return jnp.where(jnp.abs(prompt).max() > 2.5, jnp.nan, scores)


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(data, tmp_path):
    tr, dv = data
    dirs = [tmp_path / "seed_0"]
    init = sp.init_prompts([0], st.PROMPT_LEN, st.HIDDEN)
    with pytest.raises(T.TrainingDiverged, match=r"not finite\) at step \d+ for seed\(s\) \[0\].*last good "
                                                  r"checkpoint \(step \d+\) is kept") as err:
        T.train(_nan_after_growth, st.make_params(), init, [0], st.train_batches(tr, B), st.dev_batches(dv, B),
                _cfg(learning_rate=1.0, eval_every=2), run_dirs=dirs)
    bad, kept = map(int, re.findall(r"step (\d+)", str(err.value)))
    assert 0 < kept < bad
    saved = sorted(int(p.name) for p in (dirs[0] / "state").iterdir() if p.name.isdigit())
    assert saved[-1] == kept                                 # nothing was saved for the diverged step
    assert (dirs[0] / T.PROMPT_FILE).exists()


class _RecordedLoss:
    """A step's loss that logs when the loop reads it on the host."""

    def __init__(self, value, index, log):
        self.value, self.index, self.log = value, index, log

    def __array__(self, dtype=None, copy=None):
        self.log.append(("read", self.index))
        return np.asarray(self.value, dtype)


def test_a_step_loss_is_read_while_the_next_step_runs(data):
    """The host does not wait for each step before dispatching the next: step k's loss is read after step k + 1
    was dispatched (at evaluations, before evaluating), and the results are those of the plain loop."""
    log = []

    def factory(tx, mesh):
        step = T.make_train_step(st.score_fn, tx, mesh)

        def recorded(*args):
            i = sum(1 for kind, _ in log if kind == "dispatch")
            log.append(("dispatch", i))
            prompts, opt_state, loss = step(*args)
            return prompts, opt_state, _RecordedLoss(loss, i, log)
        return recorded

    cfg = _cfg(epochs=1, eval_every=4)
    res = _run(data, [0], cfg, step_factory=factory)
    plain = _run(data, [0], cfg)
    assert log[:5] == [("dispatch", 0), ("dispatch", 1), ("read", 0), ("dispatch", 2), ("read", 1)]
    assert log[5:8] == [("dispatch", 3), ("read", 2), ("read", 3)]      # step 4 evaluates: everything read first
    np.testing.assert_array_equal(res.prompts, plain.prompts)
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in plain.history]


def test_cpu_train_step_compiles_with_its_measured_options(data):
    """On CPU the step is compiled without YNNPACK fusions (parallel.CPU_TRAIN_STEP_OPTIONS, measured faster on
    MiniLM's backward); XLA's default would fuse the stand-in's dots into them."""
    tr, _ = data
    mesh = parallel.make_mesh()
    tx = optax.adamw(0.1)
    batch = T.stack_seed_batches([st.train_batches(tr, B)(0, 0)[0]], 0)
    prompts = jnp.asarray(sp.init_prompts([0], st.PROMPT_LEN, st.HIDDEN))
    args = (prompts, jax.vmap(tx.init)(prompts), st.make_params(), batch)
    assert parallel.train_step_compiler_options(mesh) == parallel.CPU_TRAIN_STEP_OPTIONS
    text = T.make_train_step(st.score_fn, tx, mesh).lower(*args).compile().as_text()
    assert "__ynn_fusion" not in text


def test_time_limit_stops_after_an_evaluation_and_checkpoint(data, tmp_path):
    res = _run(data, [0], _cfg(time_limit_s=1e-9, eval_every=100), run_dirs=[tmp_path / "seed_0"])
    assert res.steps == 1 and [h["step"] for h in res.history] == [1]
    assert (tmp_path / "seed_0" / "state" / "1").is_dir()


def test_bad_configs_are_clear_errors(data):
    with pytest.raises(ValueError, match="learning_rate"):
        _run(data, [0], _cfg(learning_rate=float("nan")))
    with pytest.raises(ValueError, match="fewer examples than one batch"):
        tr, dv = data
        T.train(st.score_fn, st.make_params(), sp.init_prompts([0], 4, st.HIDDEN), [0],
                st.train_batches({k: v[:5] for k, v in tr.items()}, B), st.dev_batches(dv, B), _cfg())
    with pytest.raises(ValueError, match="distinct"):
        _run(data, [1, 1], _cfg(), init=np.zeros((2, 4, st.HIDDEN), np.float32))
    with pytest.raises(ValueError, match="init_prompts must be"):
        _run(data, [0, 1], _cfg(), init=np.zeros((3, 4, st.HIDDEN), np.float32))


def test_initialisers():
    key = jax.random.PRNGKey(0)
    table = jnp.arange(40 * 6, dtype=jnp.float32).reshape(40, 6)
    embed = lambda ids: table[ids]
    p = sp.init_prompt(key, 100, 6)
    assert p.shape == (100, 6) and abs(float(p.std()) - 0.02) < 0.005
    v = sp.init_prompt(key, 7, 6, "vocab", embed, 40, vocab_range=(10, 20))
    rows = np.asarray(v)[:, 0] / 6
    assert np.all((rows >= 10) & (rows < 20)) and np.allclose(rows, np.round(rows))
    lw = sp.init_prompt(key, 5, 6, "label_words", embed, 40, label_ids=[[3, 5], [7, 0]], label_lengths=[2, 1])
    np.testing.assert_allclose(lw[0], (table[3] + table[5]) / 2)
    np.testing.assert_allclose(lw[1], table[7])
    assert np.array_equal(np.asarray(sp.init_prompts([4, 9], 3, 6)[1]), np.asarray(sp.init_prompts([9], 3, 6)[0]))
    with pytest.raises(ValueError, match="prompt length must be a positive integer, got 0"):
        sp.init_prompt(key, 0, 6)
    with pytest.raises(ValueError, match="unknown prompt init"):
        sp.init_prompt(key, 3, 6, "zeros")
    with pytest.raises(ValueError, match="needs the model's word embeddings"):
        sp.init_prompt(key, 3, 6, "vocab")


def test_prompt_files(tmp_path):
    torch = pytest.importorskip("torch")
    good = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    torch.save({"task_prompt": torch.from_numpy(good)}, tmp_path / "task_prompt")
    torch.save(torch.from_numpy(good[None]), tmp_path / "bare.pt")
    np.save(tmp_path / "p.npy", good)
    for name in ("task_prompt", "bare.pt", "p.npy"):
        np.testing.assert_array_equal(sp.check_prompt(files.read_prompt(tmp_path / name), 4, 6), good)
    assert files.find_prompts(tmp_path) == [tmp_path / "task_prompt"]
    for s in (10, 2):
        (tmp_path / "runs" / f"seed_{s}").mkdir(parents=True)
        np.save(tmp_path / "runs" / f"seed_{s}" / "prompt.npy", good)
    assert [p.parent.name for p in files.find_prompts(tmp_path / "runs")] == ["seed_2", "seed_10"]
    with pytest.raises(ValueError, match="hidden size 6 .* model's hidden size is 8"):
        sp.check_prompt(good, None, 8)
    with pytest.raises(ValueError, match="has 4 tokens"):
        sp.check_prompt(good, 100, 6)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        files.find_prompts(tmp_path / "nope")
    (tmp_path / "junk").write_bytes(b"not a tensor")
    with pytest.raises(ValueError, match="not a loadable PyTorch tensor file"):
        files.read_prompt(tmp_path / "junk")


def test_metrics():
    scores = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.0, 1.0]])
    labels = jnp.array([1, 0, 0, 1, 1])
    mask = jnp.array([True, True, True, True, False])
    conf = np.asarray(metrics.confusion(scores, labels, mask))
    np.testing.assert_array_equal(conf, [[1, 1], [1, 1]])
    s = metrics.summary(conf)
    assert s == {"accuracy": 0.5, "f1": 0.5, "balanced_accuracy": 0.5, "majority_rate": 0.5, "examples": 4}
    # class-1 F1 by hand: tp=3, fp=1, fn=2 -> 2*3 / (2*3 + 1 + 2)
    assert metrics.f1(np.array([[5, 1], [2, 3]])) == pytest.approx(6 / 9)
    assert metrics.f1(np.array([[3, 0, 0], [0, 2, 0], [0, 0, 0]])) == pytest.approx(2 / 3)  # macro, absent class 0
