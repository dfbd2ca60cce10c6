"""Skill-neuron pruning (Wang et al. 2022, section 6.1): a smaller encoder that keeps chosen FFN neurons per layer.

    keep = ...                                   # bool [L, N]: True = neuron kept (all True in unpruned layers)
    params2, config2 = prune_params(params, config, keep, means)
    save_checkpoint(folder, params2, config2, source_folder=loaded.path, tokenizer=loaded.tokenizer)
    load_pretrained(folder)                      # a genuinely smaller model, loaded like any other

A removed neuron is replaced by a constant c (`means`): the FFN output W_o · h + b_o then equals
W_o[:, kept] · h[kept] + (b_o + W_o[:, removed] · c[removed]), so folding W_o[:, removed] · c[removed] into the
output bias gives exactly the unpruned model with the removed neurons' activations set to c at EVERY position
(`Intervention.mean(~keep, means)`; tested). Only the REMOVED neurons' constants are folded: the kept neurons
still contribute their own activations, so adding W_o · c over all neurons (THU-KEG Skill-Neuron `prune.py`
does so before slicing) would add W_o[:, kept] · c[kept] on top of them, a bias the unpruned model never had.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
from safetensors.numpy import save as safetensors_bytes

from skillneurons_jax import io
from skillneurons_jax.models import convert
from skillneurons_jax.models.config import INTERMEDIATE_SIZES_KEY, ModelConfig
from skillneurons_jax.models.roberta import encoder_state_from_params

ENCODER_FAMILIES = ("roberta", "bert")


def _check(config: ModelConfig, keep: np.ndarray, means: np.ndarray) -> None:
    if config.family not in ENCODER_FAMILIES:
        raise ValueError(f"pruning supports the encoder families {ENCODER_FAMILIES}, not {config.family!r}")
    if not config.uniform_width:
        raise ValueError(f"the model is already pruned (FFN widths {config.intermediate_sizes}); prune the "
                         "unpruned model")
    shape = (config.num_layers, config.intermediate)
    if keep.shape != shape or keep.dtype != bool:
        raise ValueError(f"keep must be bool [layers, neurons] = {list(shape)}; got {keep.dtype} {list(keep.shape)}")
    if means.shape != shape:
        raise ValueError(f"means must be [layers, neurons] = {list(shape)}; got {list(means.shape)}")
    empty = [i for i in range(shape[0]) if not keep[i].any()]
    if empty:
        raise ValueError(f"keep selects no neuron in layer(s) {empty}: every layer keeps at least one")
    if not np.isfinite(means[~keep]).all():
        raise ValueError("means of removed neurons must be finite (a NaN baseline cannot be folded)")


def prune_params(params, config: ModelConfig, keep, means) -> tuple[dict, ModelConfig]:
    """Keeps the neurons `keep` bool [L, N] of every FFN and folds the removed ones' constants `means` float [L, N]
    into the output bias: b_o += W_o[removed, :]ᵀ · means[removed] (Flax kernels are [in, out]).

    Returns (params with wi kernel [H, N_l], wi bias [N_l], wo kernel [N_l, H] per layer; the config with
    intermediate_sizes = (N_l, ...)). Pure: the inputs are not modified. Neurons keep their original order."""
    keep = np.asarray(keep)
    means = np.asarray(means, np.float64)
    _check(config, keep, means)
    out = dict(params)
    for i in range(config.num_layers):
        name = f"layers_{i}"
        ffn = params[name]["ffn"]
        kept, removed = np.flatnonzero(keep[i]), np.flatnonzero(~keep[i])
        wi_k, wi_b = np.asarray(ffn["wi"]["kernel"]), np.asarray(ffn["wi"]["bias"])
        wo_k, wo_b = np.asarray(ffn["wo"]["kernel"]), np.asarray(ffn["wo"]["bias"])
        # float64 sum so the folded bias is as close to the unpruned computation as float32 allows
        folded = wo_b.astype(np.float64) + wo_k[removed].astype(np.float64).T @ means[i, removed]
        layer = dict(params[name])
        layer["ffn"] = {"wi": {"kernel": np.ascontiguousarray(wi_k[:, kept]), "bias": wi_b[kept].copy()},
                        "wo": {"kernel": np.ascontiguousarray(wo_k[kept]), "bias": folded.astype(np.float32)}}
        out[name] = layer
    sizes = tuple(int(n) for n in keep.sum(axis=1))
    return out, config.replace(intermediate_sizes=sizes)


def save_checkpoint(folder, params, config: ModelConfig, *, source_folder, tokenizer=None) -> pathlib.Path:
    """Writes an encoder as a Hugging Face-style folder that `load_pretrained` reads: model.safetensors (HF tensor
    names), the tokenizer's files, and config.json last (source_folder's, with `intermediate_sizes` when the widths
    differ): a folder cut short has no config.json and is refused by the loader instead of read half-written."""
    if config.family not in ENCODER_FAMILIES:
        raise ValueError(f"save_checkpoint supports the encoder families {ENCODER_FAMILIES}, not {config.family!r}")
    folder = pathlib.Path(folder)
    raw = convert.read_config(pathlib.Path(source_folder))
    if config.intermediate_sizes is None or config.uniform_width:
        raw.pop(INTERMEDIATE_SIZES_KEY, None)
    else:
        raw[INTERMEDIATE_SIZES_KEY] = list(config.intermediate_sizes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").unlink(missing_ok=True)
    state = encoder_state_from_params(params, config)
    io.atomic_write_bytes(folder / "model.safetensors", safetensors_bytes(state, metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    io.atomic_write_text(folder / "config.json", json.dumps(raw, indent=2, sort_keys=True) + "\n")
    return folder
