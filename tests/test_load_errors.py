"""load_pretrained: one clear error per broken checkpoint folder."""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from skillneurons_jax.models import CheckpointError, load_pretrained, resolve_path  # noqa: E402
from tiny_encoders import make_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good_roberta")
    make_checkpoint(folder, "roberta")
    return folder


@pytest.fixture
def copy(good, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(good, folder)
    return folder


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_good_folder_loads(good):
    loaded = load_pretrained(good)
    assert loaded.family == "roberta" and loaded.config.has_lm_head
    assert loaded.name == good.name.lower()


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "no_such_model")


def test_path_is_a_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file"):
        load_pretrained(tmp_path / "model.safetensors")


def test_missing_config(copy):
    (copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(copy)


def test_missing_weight_file(copy):
    (copy / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weight file"):
        load_pretrained(copy)


def test_unknown_model_type(copy):
    _edit_config(copy, model_type="gpt2")
    with pytest.raises(ValueError, match="unknown model_type 'gpt2'"):
        load_pretrained(copy)


def test_shape_mismatch_names_the_tensor(copy):
    _edit_config(copy, intermediate_size=40)  # the weights have 48 FFN neurons
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight.*shape"):
        load_pretrained(copy)


def test_missing_tensor_names_the_tensor(copy):
    from safetensors.numpy import load_file, save_file
    state = load_file(str(copy / "model.safetensors"))
    del state["roberta.encoder.layer.1.attention.self.key.bias"]
    save_file(state, str(copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.1\.attention\.self\.key\.bias.*missing"):
        load_pretrained(copy)


def test_more_layers_in_config_than_in_weights(copy):
    _edit_config(copy, num_hidden_layers=3)
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.2\..*missing"):
        load_pretrained(copy)


def test_missing_tokenizer_files(copy):
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        (copy / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_pretrained(copy)
    assert load_pretrained(copy, tokenizer=False).tokenizer is None  # the weights alone still load


def test_unsupported_position_embedding_type(copy):
    _edit_config(copy, position_embedding_type="relative_key")
    with pytest.raises(ValueError, match="position_embedding_type"):
        load_pretrained(copy)


def test_unknown_offline_alias():
    with pytest.raises(ValueError, match="unknown offline model"):
        resolve_path("offline:no-such-model")


def test_unknown_dtype(good):
    with pytest.raises(ValueError, match="dtype"):
        load_pretrained(good, dtype=np.float16)


def test_corrupt_bin_is_not_unpickled(copy):
    (copy / "model.safetensors").unlink()
    (copy / "pytorch_model.bin").write_bytes(b"not a zip or pickle")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_pretrained(copy)
