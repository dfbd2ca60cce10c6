"""Skill-neuron pruning (models.prune): a genuinely smaller encoder whose output equals the unpruned model's with
the removed neurons set to their constants at every position (Intervention.mean), saved and loaded like any other."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillneurons_jax.models import load_pretrained
from skillneurons_jax.models.config import ModelConfig, config_from_hf
from skillneurons_jax.models.ffn import Intervention
from skillneurons_jax.models.prune import prune_params, save_checkpoint
from skillneurons_jax.models.roberta import EncoderModel

from tests.tiny_encoders import make_checkpoint

CFG = ModelConfig(family="roberta", vocab_size=50, hidden=16, intermediate=24, num_layers=3, num_heads=2,
                  activation="gelu", has_lm_head=True, pad_token_id=1, max_positions=40, type_vocab_size=1)
B, T, P = 2, 6, 3


@pytest.fixture(scope="module")
def setup():
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    ids = jax.random.randint(k1, (B, T), 3, CFG.vocab_size)
    mask = jnp.array([[1] * T, [1] * (T - 2) + [0] * 2], jnp.int32)
    prefix = 0.1 * jax.random.normal(k2, (1, P, CFG.hidden))
    params = EncoderModel(CFG).init(k3, ids, mask, prefix=prefix)["params"]
    # FFN output biases are zero at init: make them nonzero so that a lost or doubled bias shows
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a + 0.3 * jax.random.normal(k4, a.shape) if "wo" in str(path) and "bias" in str(path)
        else a, params)
    rng = np.random.default_rng(0)
    keep = np.ones((CFG.num_layers, CFG.intermediate), bool)
    keep[1:] = False                               # layer 0 unpruned, layers 1-2 keep 3 and 5 neurons
    keep[1, rng.choice(CFG.intermediate, 3, replace=False)] = True
    keep[2, rng.choice(CFG.intermediate, 5, replace=False)] = True
    means = rng.normal(0.2, 0.5, (CFG.num_layers, CFG.intermediate)).astype(np.float32)
    return params, ids, mask, prefix, keep, means


def _apply(config, params, ids, mask, prefix, intervention=None):
    model = EncoderModel(config)
    out = model.apply({"params": params}, ids, mask, prefix=prefix, intervention=intervention)
    logits = model.apply({"params": params}, out.hidden, method="lm_logits")
    return np.asarray(out.hidden), np.asarray(logits)


def test_pruned_equals_unpruned_with_removed_neurons_at_their_constants(setup):
    params, ids, mask, prefix, keep, means = setup
    pruned, config = prune_params(params, CFG, keep, means)
    assert config.intermediate_sizes == (24, 3, 5)
    for i, n in enumerate((24, 3, 5)):
        ffn = pruned[f"layers_{i}"]["ffn"]
        assert ffn["wi"]["kernel"].shape == (CFG.hidden, n) and ffn["wi"]["bias"].shape == (n,)
        assert ffn["wo"]["kernel"].shape == (n, CFG.hidden)
    assert params["layers_1"]["ffn"]["wi"]["kernel"].shape == (CFG.hidden, CFG.intermediate)  # input untouched
    want = _apply(CFG, params, ids, mask, prefix, Intervention.mean(~keep, means))
    got = _apply(config, pruned, ids, mask, prefix)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    # folding the means of ALL neurons (the kept ones too, as Skill-Neuron's script does) is another model
    all_folded, _ = prune_params(params, CFG, keep, np.where(keep, 0.0, means))
    for i in (1, 2):
        wo = np.asarray(params[f"layers_{i}"]["ffn"]["wo"]["kernel"])
        all_folded[f"layers_{i}"]["ffn"]["wo"]["bias"] = np.asarray(params[f"layers_{i}"]["ffn"]["wo"]["bias"]) \
            + wo.T @ means[i]
    wrong = _apply(config, all_folded, ids, mask, prefix)
    assert not np.allclose(wrong[0], want[0], atol=1e-3)
    # and leaving the means out (plain removal) is the zero intervention, not this one
    zero_folded, _ = prune_params(params, CFG, keep, np.zeros_like(means))
    zero = _apply(config, zero_folded, ids, mask, prefix)
    np.testing.assert_allclose(zero[0], _apply(CFG, params, ids, mask, prefix, Intervention.zero(~keep))[0],
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(zero[0], want[0], atol=1e-3)


def test_pruned_model_refuses_captures_and_bad_inputs(setup):
    params, ids, mask, prefix, keep, means = setup
    pruned, config = prune_params(params, CFG, keep, means)
    with pytest.raises(ValueError, match="different FFN widths"):
        EncoderModel(config).apply({"params": pruned}, ids, mask, intervention=Intervention.zero(~keep))
    with pytest.raises(ValueError, match="already pruned"):
        prune_params(pruned, config, keep, means)
    empty = keep.copy()
    empty[2] = False
    with pytest.raises(ValueError, match=r"no neuron in layer\(s\) \[2\]"):
        prune_params(params, CFG, empty, means)
    with pytest.raises(ValueError, match="keep must be bool"):
        prune_params(params, CFG, keep[:, :5], means)
    with pytest.raises(ValueError, match="t5"):
        ModelConfig(family="t5", vocab_size=5, hidden=4, intermediate=8, num_layers=2, num_heads=1,
                    activation="relu", intermediate_sizes=(8, 2))


@pytest.mark.parametrize("family,lm_head", [("roberta", True), ("bert", False)])
def test_saved_pruned_checkpoint_loads_smaller_and_computes_the_same(tmp_path, family, lm_head):
    source = tmp_path / "source"
    make_checkpoint(source, family, lm_head=lm_head)
    loaded = load_pretrained(source)
    cfg = loaded.config
    rng = np.random.default_rng(1)
    keep = np.zeros((cfg.num_layers, cfg.intermediate), bool)
    for i in range(cfg.num_layers):
        keep[i, rng.choice(cfg.intermediate, 4 + i, replace=False)] = True
    means = rng.normal(0.0, 0.5, keep.shape).astype(np.float32)
    pruned, config = prune_params(loaded.params, cfg, keep, means)
    folder = save_checkpoint(tmp_path / "pruned", pruned, config, source_folder=source, tokenizer=loaded.tokenizer)
    again = load_pretrained(folder)
    assert again.config.intermediate_sizes == (4, 5)
    assert again.config.has_lm_head == lm_head and again.tokenizer is not None
    assert again.params["layers_1"]["ffn"]["wo"]["kernel"].shape == (5, cfg.hidden)
    enc = again.tokenizer(["the movie was good", "bad"], padding=True, return_tensors="np")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    want = loaded.module.apply({"params": loaded.params}, ids, mask, intervention=Intervention.mean(~keep, means))
    got = again.module.apply({"params": again.params}, ids, mask)
    np.testing.assert_allclose(np.asarray(got.hidden), np.asarray(want.hidden), rtol=1e-5, atol=1e-5)


def test_config_intermediate_sizes_checked_with_file_and_field():
    raw = {"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
           "num_hidden_layers": 2, "num_attention_heads": 2}
    assert config_from_hf({**raw, "intermediate_sizes": [3, 16]}).intermediate_sizes == (3, 16)
    assert config_from_hf(raw).intermediate_sizes is None
    for bad in ([3], [3, 17], [0, 3], "3,3", [3.0, 2]):
        with pytest.raises(ValueError, match=r"cfg\.json: field 'intermediate_sizes'"):
            config_from_hf({**raw, "intermediate_sizes": bad}, source="cfg.json")
    t5 = {"model_type": "t5", "vocab_size": 10, "d_model": 8, "d_ff": 16, "num_layers": 2, "num_heads": 2,
          "intermediate_sizes": [3, 3]}
    with pytest.raises(ValueError, match="not t5"):
        config_from_hf(t5, source=json.dumps("x"))
