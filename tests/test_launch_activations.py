"""launch/activations.py and stages/activations.py: the activation dump on tiny checkpoints, checked against
transformers PyTorch."""
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skillneurons_jax.stages import activations  # noqa: E402
from skillneurons_jax.models import load_pretrained  # noqa: E402
from tiny_encoders import hf_forward, make_checkpoint, make_t5_checkpoint  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TEXTS = ["the movie was good !", "bad", "this film is not very fun , and the plot is boring . the actor is bad",
         "", "a great film"]
MAX_TOKENS = 12


def _cli(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "launch.activations", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert_nohead")
    hf = make_checkpoint(folder, "bert", lm_head=False, seed=4)
    return folder, hf


def test_cli_dump_matches_transformers(bert, tmp_path):
    folder, hf = bert
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    config = tmp_path / "dump_config.py"
    config.write_text("import ml_collections\n\ndef get_config():\n"
                      "    return ml_collections.ConfigDict({'batch_size': 2, 'max_tokens': 99})\n")
    out = tmp_path / "out" / "acts.npz"
    res = _cli("--model_path", str(folder), "--input_file", str(texts), "--output", str(out),
               "--max_tokens", str(MAX_TOKENS), "--config", str(config))
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["examples"] == len(TEXTS)

    data = np.load(out)
    acts, tokens, lengths = data["activations"], data["tokens"], data["lengths"]
    tok = load_pretrained(folder).tokenizer
    expected = [tok(t, truncation=True, max_length=MAX_TOKENS)["input_ids"] for t in TEXTS]
    longest = max(len(e) for e in expected)
    assert longest == MAX_TOKENS  # the long text was truncated by the flag, not the config's 99
    assert acts.dtype == np.float32 and tokens.dtype == np.int32
    assert acts.shape == (2, len(TEXTS), longest, 48)
    assert tokens.shape == (len(TEXTS), longest)
    for i, ids in enumerate(expected):
        n = len(ids)
        assert lengths[i] == n
        np.testing.assert_array_equal(tokens[i, :n], ids)
        assert (tokens[i, n:] == tok.pad_token_id).all()
        assert (acts[:, i, n:] == 0).all()  # padding positions are zero
        _, ref = hf_forward(hf, input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, n, dtype=torch.long))
        np.testing.assert_allclose(acts[:, i, :n], ref[:, 0], atol=1e-4, rtol=0)

    meta = json.loads(pathlib.Path(str(out) + ".json").read_text())
    assert meta["batch_size"] == 2 and meta["max_tokens"] == MAX_TOKENS and meta["family"] == "bert"
    assert meta["shapes"]["activations"] == list(acts.shape)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers


def test_cli_empty_input_file_is_a_clear_error(bert, tmp_path):
    folder, _ = bert
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    res = _cli("--model_path", str(folder), "--input_file", str(empty), "--output", str(tmp_path / "o.npz"))
    assert res.returncode != 0
    assert "no texts" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o.npz").exists()


def test_batch_plan_groups_by_length():
    lengths = np.array([3, 30, 7, 12, 5])
    plan = activations.plan_batches(lengths, 2, cap=30)
    assert sorted(np.concatenate([rows for rows, _ in plan]).tolist()) == list(range(5))
    for rows, padded in plan:
        assert lengths[rows].max() <= padded <= 30
    assert [p for _, p in plan] == [30, 8, 8]   # longest first; a few bucket lengths only


# ---- T5: decoder activations for the decoder start token (and an optional decoder text) ---------------------

@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("t5_tiny")
    rng = random.Random(0)
    words = "the movie was great bad good film is it not true false a plot".split()
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(200)]
    hf = make_t5_checkpoint(folder, sentences, vocab_size=32, num_decoder_layers=1)
    return folder, hf


def _t5_ref(hf, ids, decoder_ids):
    acts = {"encoder": [], "decoder": []}
    hooks = []
    for stack in ("encoder", "decoder"):
        for block in getattr(hf, stack).block:
            hooks.append(block.layer[-1].DenseReluDense.wo.register_forward_pre_hook(
                lambda mod, inp, s=stack: acts[s].append(inp[0].detach().numpy())))
    with torch.no_grad():
        hf(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([decoder_ids]))
    for h in hooks:
        h.remove()
    return np.stack(acts["encoder"])[:, 0], np.stack(acts["decoder"])[:, 0]


@pytest.mark.parametrize("decoder_input", [None, "true"])
def test_t5_dump_has_decoder_activations(t5, decoder_input):
    folder, hf = t5
    loaded = load_pretrained(folder)
    texts = ["the movie was great", "bad", "is it not a good film"]
    arrays = activations.activations(loaded, texts, batch_size=2, max_tokens=16, decoder_input=decoder_input)
    dec_ids = [loaded.config.decoder_start_token_id] + (
        loaded.tokenizer(decoder_input, add_special_tokens=False)["input_ids"] if decoder_input else [])
    np.testing.assert_array_equal(arrays["decoder_tokens"], dec_ids)
    assert arrays["decoder_activations"].shape == (1, len(texts), len(dec_ids), 24)
    assert arrays["activations"].shape[:2] == (2, len(texts))
    for i in range(len(texts)):
        n = int(arrays["lengths"][i])
        enc, dec = _t5_ref(hf, arrays["tokens"][i, :n].tolist(), dec_ids)
        np.testing.assert_allclose(arrays["activations"][:, i, :n], enc, atol=1e-4, rtol=0)
        assert (arrays["activations"][:, i, n:] == 0).all()
        np.testing.assert_allclose(arrays["decoder_activations"][:, i], dec, atol=1e-4, rtol=0)


def test_decoder_input_rejected_for_encoders(bert):
    folder, _ = bert
    with pytest.raises(ValueError, match="T5 models only"):
        activations.activations(load_pretrained(folder), ["a"], batch_size=1, max_tokens=8, decoder_input="x")
