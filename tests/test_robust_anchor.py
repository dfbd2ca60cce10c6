"""robust.anchor: the skill-neuron term is exactly off when off, reaches only the prompt, and its hinge is
active exactly when a selected neuron sits on the wrong side of its baseline for the gold label."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("torch")

from skillneurons_jax import parallel  # noqa: E402
from skillneurons_jax.prompt import train as prompt_train  # noqa: E402
from skillneurons_jax.robust import anchor  # noqa: E402
from skillneurons_jax.robust.anchor import AnchorSettings, AnchorTarget  # noqa: E402
import robust_fixtures as fx  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    loaded, readout = fx.tiny_model(tmp_path_factory.mktemp("bert_anchor"))
    clean = fx.batch(loaded.tokenizer, fx.ORIGINAL)
    pert = fx.batch(loaded.tokenizer, fx.ADVERSARIAL)
    batch = dict(clean, perturbed_input_ids=pert["input_ids"], perturbed_attention_mask=pert["attention_mask"])
    cfg = loaded.config
    rng = np.random.default_rng(0)
    seeds = 2
    acc = rng.uniform(0.2, 0.8, (seeds, cfg.num_layers, fx.P, cfg.intermediate))
    baseline = rng.normal(0, 0.3, acc.shape)
    pred = np.maximum(acc, 1 - acc).max(2).mean(0)
    return loaded, readout, batch, jnp.asarray(fx.prompts(cfg.hidden, seeds)), (pred, acc, baseline)


def _target(stats, settings, seed=0):
    targets = anchor.anchor_targets(*stats, settings)
    return jax.tree.map(lambda x: x[seed], targets)


# ----------------------------------------------------------------------------------------------- toy hinge
def _toy_target(direction, baseline=0.0, weight=1.0):
    shape = (1, 1, 1)
    return AnchorTarget(weight=jnp.full(shape, weight), baseline=jnp.full(shape, baseline),
                        direction=jnp.full(shape, direction))


@pytest.mark.parametrize("direction,label,act,want", [
    (1.0, 1, 0.5, 0.0),     # above the baseline predicts 1, gold 1, above: inactive
    (1.0, 1, -0.5, 0.5),    # ... below: active, penalty = distance to the baseline
    (1.0, 0, -0.5, 0.0),    # gold 0: below is the predicting side
    (1.0, 0, 0.25, 0.25),
    (-1.0, 1, -0.5, 0.0),   # above predicts 0 (acc < 0.5): gold 1 wants below
    (-1.0, 1, 0.5, 0.5),
])
def test_hinge_is_active_exactly_on_the_wrong_side(direction, label, act, want):
    acts = jnp.full((1, 1, 1, 1), act)
    got = anchor.sign_term(acts, jnp.array([label]), jnp.array([True]), _toy_target(direction))
    assert float(got) == pytest.approx(want)
    margin = anchor.sign_term(acts, jnp.array([label]), jnp.array([True]), _toy_target(direction), margin=1.0)
    assert float(margin) == pytest.approx(want + 1.0 if want > 0 else max(0.0, 1.0 - abs(act)))
    soft = anchor.sign_term(acts, jnp.array([label]), jnp.array([True]), _toy_target(direction), penalty="softplus")
    assert float(soft) == pytest.approx(float(jax.nn.softplus(want if want > 0 else -abs(act))))


def test_unselected_neurons_and_filler_rows_do_not_count():
    acts = jnp.array([[[[-1.0]], [[-3.0]]]])                   # [L=1, B=2, T=1, N=1]
    target = _toy_target(1.0)
    both = anchor.sign_term(acts, jnp.array([1, 1]), jnp.array([True, True]), target)
    first = anchor.sign_term(acts, jnp.array([1, 1]), jnp.array([True, False]), target)
    assert float(both) == pytest.approx(2.0) and float(first) == pytest.approx(1.0)
    assert float(anchor.sign_term(acts, jnp.array([1, 1]), jnp.array([True, True]), _toy_target(1.0, weight=0.0))) == 0


def test_targets_select_top_k_per_layer_and_the_best_token():
    acc = np.full((1, 2, 3, 10), 0.5)
    acc[0, 0, 2, 4] = 0.9      # layer 0: neuron 4 best, at token 2
    acc[0, 1, 0, 7] = 0.05     # layer 1: neuron 7 best, at token 0, predicting by being BELOW the baseline
    pred = np.maximum(acc, 1 - acc).max(2).mean(0)
    settings = AnchorSettings(strength=1.0, top_percent=10, tokens="best")
    t = anchor.anchor_targets(pred, acc, np.zeros_like(acc), settings)
    weight = np.asarray(t.weight)
    assert weight.sum() == 2 and weight[0, 0, 2, 4] == 1 and weight[0, 1, 0, 7] == 1
    assert float(t.direction[0, 0, 2, 4]) == 1.0 and float(t.direction[0, 1, 0, 7]) == -1.0
    everywhere = anchor.anchor_targets(pred, acc, np.zeros_like(acc), AnchorSettings(strength=1.0, top_percent=10))
    assert np.asarray(everywhere.weight).sum() == 2 * 3


# ----------------------------------------------------------------------------------------------- the loss
def test_off_is_bitwise_the_plain_loss_and_gradient(tiny):
    loaded, readout, batch, prompts, stats = tiny
    score_fn = readout.score_fn()
    plain = jax.jit(jax.value_and_grad(lambda p: prompt_train.cross_entropy(
        score_fn(loaded.params, p, batch), batch["labels"], batch["example_mask"])))
    for settings in (AnchorSettings(), AnchorSettings(top_percent=50, mode="clean", margin=0.3)):
        loss_fn = anchor.make_loss(readout, settings, fx.P)
        ours = jax.jit(jax.value_and_grad(lambda p: loss_fn(loaded.params, p, batch, None)[0]))
        (want, want_grad), (got, got_grad) = plain(prompts[0]), ours(prompts[0])
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
        assert np.asarray(got_grad).tobytes() == np.asarray(want_grad).tobytes()


def test_off_train_step_is_bitwise_prompt_train_step(tiny):
    loaded, readout, batch, prompts, _ = tiny
    mesh = parallel.make_mesh(jax.devices()[:1])
    tx = optax.adamw(1e-2, weight_decay=0.0)
    stacked = {k: np.stack([v, v]) for k, v in batch.items() if not k.startswith("perturbed")}
    plain_step = prompt_train.make_train_step(readout.score_fn(), tx, mesh)
    ours_step = anchor.make_train_step(anchor.make_loss(readout, AnchorSettings(), fx.P), tx, mesh)
    want = plain_step(jnp.array(prompts), jax.vmap(tx.init)(prompts), loaded.params, stacked)
    got = ours_step(jnp.array(prompts), jax.vmap(tx.init)(prompts), loaded.params, stacked, None)
    assert np.asarray(got[0]).tobytes() == np.asarray(want[0]).tobytes()
    assert np.asarray(got[2]).tobytes() == np.asarray(want[2]).tobytes()


@pytest.mark.parametrize("mode", anchor.MODES)
def test_the_anchor_gradient_reaches_the_prompt_and_only_the_prompt(tiny, mode):
    loaded, readout, batch, prompts, stats = tiny
    settings = AnchorSettings(strength=1.0, top_percent=30, mode=mode, margin=0.5)
    target = _target(stats, settings)
    loss_fn = anchor.make_loss(readout, settings, fx.P)
    anchor_of = jax.jit(jax.value_and_grad(lambda p: loss_fn(loaded.params, p, batch, target)[1]["anchor"]))
    value, grad = anchor_of(prompts[0])
    grad = np.asarray(grad)
    assert float(value) > 0
    assert np.abs(grad[1:]).sum() > 0          # the term moves the trained prompt rows
    np.testing.assert_array_equal(grad[0], 0)  # slot 0 holds the frozen [MASK] embedding
    # a train step updates the prompt and leaves every model parameter bit-identical
    mesh = parallel.make_mesh(jax.devices()[:1])
    tx = optax.sgd(0.1)
    before = jax.tree.map(np.array, loaded.params)
    targets = anchor.anchor_targets(*stats, settings)
    stacked = {k: np.stack([v, v]) for k, v in batch.items()}
    step = anchor.make_train_step(loss_fn, tx, mesh)
    new, _, loss, aux = step(jnp.array(prompts), jax.vmap(tx.init)(prompts), loaded.params, stacked, targets)
    assert not np.allclose(np.asarray(new), np.asarray(prompts))
    assert np.all(np.asarray(aux["anchor"]) > 0) and aux["anchor"].shape == (2,)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)), before, loaded.params)


def test_anchored_loss_adds_the_weighted_terms(tiny):
    loaded, readout, batch, prompts, stats = tiny
    settings = AnchorSettings(strength=0.7, top_percent=20, perturbed_weight=0.5)
    loss, aux = anchor.make_loss(readout, settings, fx.P)(loaded.params, prompts[1], batch, _target(stats, settings, 1))
    assert float(loss) == pytest.approx(float(aux["ce"] + 0.5 * aux["perturbed_ce"] + 0.7 * aux["anchor"]), rel=1e-6)
    # the perturbed cross-entropy reads the perturbed text, not the clean one
    assert float(aux["perturbed_ce"]) != pytest.approx(float(aux["ce"]))
    with pytest.raises(ValueError, match="needs an AnchorTarget"):
        anchor.make_loss(readout, settings, fx.P)(loaded.params, prompts[0], batch, None)


def test_adversarial_step_stays_in_the_ball_and_raises_the_loss(tiny):
    loaded, readout, batch, prompts, _ = tiny
    view = anchor.perturbed_view(batch)
    epsilon = 1e-3
    delta = anchor.adversarial_delta(readout, loaded.params, prompts[0], view, epsilon, steps=2)
    mask = np.asarray(view["attention_mask"])
    assert delta.shape == view["input_ids"].shape + (loaded.config.hidden,)
    assert float(jnp.max(jnp.abs(delta))) <= epsilon + 1e-9
    np.testing.assert_array_equal(np.asarray(delta)[mask == 0], 0)
    ce = lambda d: float(prompt_train.cross_entropy(readout.scores(loaded.params, prompts[0], view, text_delta=d)[0],
                                                    view["labels"], view["example_mask"]))
    assert ce(delta) > ce(jnp.zeros_like(delta))
    settings = AnchorSettings(perturbed_weight=1.0, epsilon=epsilon)
    _, aux = anchor.make_loss(readout, settings, fx.P)(loaded.params, prompts[0], batch, None)
    assert float(aux["perturbed_ce"]) == pytest.approx(ce(anchor.adversarial_delta(
        readout, loaded.params, prompts[0], view, epsilon)), rel=1e-5)


def test_settings_are_validated():
    assert not AnchorSettings().active and AnchorSettings(perturbed_weight=1).active
    assert anchor.arm_settings("plain", 1.0) == AnchorSettings()
    assert anchor.arm_settings("perturbed", 1.0, top_percent=5).strength == 0
    assert anchor.arm_settings("anchored", 0.3).strength == 0.3
    s = AnchorSettings.from_mapping({"strength": 0.5, "mode": "clean", "epsilon": 0.01})
    assert AnchorSettings.from_mapping(s.to_dict()) == s
    for bad, match in (({"strenght": 1}, "unknown"), ({"mode": "x"}, "mode"), ({"strength": -1}, ">= 0"),
                       ({"top_percent": 150}, "outside"), ({"epsilon": 0.1}, "no effect"),
                       ({"adversarial_steps": 0}, "adversarial_steps")):
        with pytest.raises(ValueError, match=match):
            AnchorSettings.from_mapping(bad)


def test_with_perturbed_attaches_the_same_rows(tiny):
    from skillneurons_jax.data import batches
    from skillneurons_jax.data.tasks import Example
    from skillneurons_jax.robust import perturb
    loaded, *_ = tiny
    examples = [Example(t, None, int(y)) for t, y in zip(fx.ORIGINAL, fx.LABELS)]
    noisy = perturb.perturb_examples(examples, 0, perturb.PerturbationSet.from_mapping({"word_swap": 0.5}))
    clean_enc = batches.encode(examples, loaded.tokenizer, "sst2", "bert", 32)
    noisy_enc = batches.encode(noisy, loaded.tokenizer, "sst2", "bert", 32)
    batch = next(batches.iterate(clean_enc, 6, seed=3))          # 4 examples + 2 filler rows, shuffled
    out = anchor.with_perturbed(batch, noisy_enc, length=32)
    assert out["perturbed_input_ids"].shape == (6, 32)
    for row, index in enumerate(batch["index"]):
        if index >= 0:
            n = len(noisy_enc.input_ids[index])
            assert out["perturbed_input_ids"][row, :n].tolist() == noisy_enc.input_ids[index]
            assert out["perturbed_attention_mask"][row].sum() == n
    shuffled = batches.encode(noisy[::-1], loaded.tokenizer, "sst2", "bert", 32)
    with pytest.raises(ValueError, match="other labels"):
        anchor.with_perturbed(batch, shuffled)


def test_prompt_train_with_the_robust_step(tiny):
    """train.train(step_factory=...): the plain arm reproduces train.train bit for bit; the anchored arm trains."""
    from skillneurons_jax.data import batches
    from skillneurons_jax.data.tasks import Example
    from skillneurons_jax.robust import perturb
    loaded, readout, _, prompts, stats = tiny
    examples = [Example(t, None, int(y)) for t, y in zip(fx.ORIGINAL + fx.ADVERSARIAL, np.tile(fx.LABELS, 2))]
    clean_enc = batches.encode(examples, loaded.tokenizer, "sst2", "bert", 32)
    settings_p = perturb.PerturbationSet.from_mapping({"word_swap": 0.3, "char_drop": 0.2})

    def train_batches(seed, epoch):
        noisy = batches.encode(perturb.perturb_examples(examples, seed, settings_p), loaded.tokenizer, "sst2",
                               "bert", 32)
        return [anchor.with_perturbed(b, noisy, length=32)
                for b in batches.iterate(clean_enc, 4, seed=prompt_train.epoch_seed(seed, epoch), buckets=(32,))]

    dev = list(batches.iterate(clean_enc, 4))
    cfg = prompt_train.TrainConfig(learning_rate=1e-2, batch_size=4, epochs=1, progress=False)
    common = dict(params=loaded.params, init_prompts=np.asarray(prompts), seeds=[0, 1], train_batches=train_batches,
                  dev_batches=dev, cfg=cfg)
    plain = prompt_train.train(readout.score_fn(), **common)
    factory = anchor.step_factory(anchor.make_loss(readout, AnchorSettings(), fx.P), None)
    same = prompt_train.train(readout.score_fn(), step_factory=factory, **common)
    assert same.prompts.tobytes() == plain.prompts.tobytes()
    settings = anchor.arm_settings("anchored", 1.0, top_percent=20, margin=0.1)
    targets = anchor.anchor_targets(*stats, settings)
    anchored = prompt_train.train(readout.score_fn(), step_factory=anchor.step_factory(
        anchor.make_loss(readout, settings, fx.P), targets), **common)
    assert anchored.steps == plain.steps == 2 and np.isfinite(anchored.prompts).all()
    assert not np.allclose(anchored.prompts, plain.prompts)
    # the manipulation check: each evaluation row logs the loss's terms (train_ce, train_perturbed_ce,
    # train_anchor) beside train_loss; the perturbed control measures the anchor term without training on it
    # (monitor): its prompts are the unmonitored control's, and its term is the anchored arm's at the start
    row = anchored.history[-1]
    assert row["train_loss"] == pytest.approx(row["train_ce"] + row["train_perturbed_ce"] + row["train_anchor"],
                                              rel=1e-5)
    assert "train_anchor" not in plain.history[-1]
    control = anchor.arm_settings("perturbed", 1.0, top_percent=20, margin=0.1)
    unmonitored = prompt_train.train(readout.score_fn(), step_factory=anchor.step_factory(
        anchor.make_loss(readout, control, fx.P), None), **common)
    monitored = prompt_train.train(readout.score_fn(), step_factory=anchor.step_factory(
        anchor.make_loss(readout, control, fx.P, monitor=True), targets), **common)
    np.testing.assert_allclose(monitored.prompts, unmonitored.prompts, rtol=1e-5, atol=1e-6)
    assert monitored.history[-1]["train_anchor"] > 0 and unmonitored.history[-1]["train_anchor"] == 0
    assert monitored.history[-1]["train_loss"] == pytest.approx(
        monitored.history[-1]["train_ce"] + monitored.history[-1]["train_perturbed_ce"], rel=1e-5)
