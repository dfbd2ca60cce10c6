"""Hugging Face checkpoint folder -> Flax params. Generic reading and checking; name maps live per family.

A checkpoint is data, not code: safetensors first, `torch.load(weights_only=True)` for .bin.
"""
from __future__ import annotations

import json
import pathlib
from typing import Mapping

import numpy as np

from skillneurons_jax import io

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint folder or its tensors do not match what the config says."""


def read_config(folder: pathlib.Path) -> dict:
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    path = folder / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no config.json (is this a Hugging Face checkpoint folder?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def weight_file(folder: pathlib.Path) -> pathlib.Path:
    folder = pathlib.Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).exists():
            return folder / name
    if (folder / "model.safetensors.index.json").exists() or (folder / "pytorch_model.bin.index.json").exists():
        return folder  # sharded checkpoint: read_state_dict handles the index
    raise FileNotFoundError(f"{folder}: no weight file (looked for {', '.join(WEIGHT_FILES)} and sharded indexes)")


def read_state_dict(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint in `folder` as float32/int numpy arrays, keyed by Hugging Face names."""
    folder = pathlib.Path(folder)
    path = weight_file(folder)
    if path == folder:
        return _read_sharded(folder)
    return _read_file(path)


def _read_file(path: pathlib.Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            return {k: _to_float32(v) for k, v in load_file(str(path)).items()}
        except Exception as e:  # bfloat16 tensors cannot be read by the numpy backend: go through torch
            if "bf16" not in str(e).lower() and "bfloat16" not in str(e).lower():
                raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from None
            from safetensors.torch import load_file as load_torch
            return {k: _to_float32(v.float().numpy()) for k, v in load_torch(str(path)).items()}
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: reading a .bin checkpoint needs torch (pip install torch); "
                          "safetensors checkpoints do not") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # never pass on PyTorch's advice to unpickle (io.refused_torch_file)
        raise CheckpointError(io.refused_torch_file(path, e)) from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return {k: _to_float32(v.float().numpy() if v.is_floating_point() else v.numpy()) for k, v in state.items()}


def _read_sharded(folder: pathlib.Path) -> dict[str, np.ndarray]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: dict[str, np.ndarray] = {}
            for f in files:
                out.update(_read_file(folder / f))
            return out
    raise FileNotFoundError(f"{folder}: no weight file")


def _to_float32(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v


def strip_prefix(state: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Drops the first of `prefixes` that every backbone tensor carries (e.g. 'roberta.', 'bert.')."""
    for p in prefixes:
        if any(k.startswith(p) for k in state):
            return {(k[len(p):] if k.startswith(p) else k): v for k, v in state.items()}
    return dict(state)


def take(state: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...], *, source: str = "checkpoint",
         transpose: bool = False) -> np.ndarray:
    """One tensor by Hugging Face name, checked against the shape the config implies.

    `transpose=True` turns a torch Linear weight [out, in] into a Flax Dense kernel [in, out] (the shape given
    is the Flax one). Raises CheckpointError naming the tensor.
    """
    if name not in state:
        raise CheckpointError(f"{source}: tensor {name!r} is missing (the config implies it)")
    v = state[name]
    if transpose:
        if v.ndim != 2:
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(v.shape)}, expected a matrix")
        v = v.T
    if tuple(v.shape) != tuple(shape):
        raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(v.shape)} but the config implies "
                              f"{tuple(shape)}")
    return np.ascontiguousarray(v)


def dense(state, prefix: str, d_in: int, d_out: int, *, bias: bool = True, source: str = "checkpoint") -> dict:
    """A torch Linear `prefix.weight` (+ `prefix.bias`) -> Flax Dense params {'kernel', 'bias'}."""
    p = {"kernel": take(state, f"{prefix}.weight", (d_in, d_out), source=source, transpose=True)}
    if bias:
        p["bias"] = take(state, f"{prefix}.bias", (d_out,), source=source)
    return p


def layer_norm(state, prefix: str, d: int, *, bias: bool = True, source: str = "checkpoint") -> dict:
    p = {"scale": take(state, f"{prefix}.weight", (d,), source=source)}
    if bias:
        p["bias"] = take(state, f"{prefix}.bias", (d,), source=source)
    return p
