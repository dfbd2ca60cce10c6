"""Prompt files: finding, reading, writing and checking them. The one home of a prompt on disk.

- `find_prompts(path)` / `read_prompt(path)`: what launch.evaluate takes (a .npy, a PyTorch tensor file such as the
  original release's `task_prompt`, a seed folder, or a folder of seed_<s>/ folders).
- `write_prompt(run_dir, prompt, meta)`: a tuned prompt (best by dev) and its sidecar, atomically.
- `load_tuned_prompts(workdir, loaded, readout, task, seeds, max_text_tokens)`: the tuned prompts of every seed,
  checked against the model and the readout settings they were tuned with (transfer, predictivity, suppression).
Files are never unpickled: .npy with allow_pickle=False, PyTorch files with weights_only=True.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import re
from typing import Sequence

import numpy as np

from skillneurons_jax import io, layout

PROMPT_FILE = layout.PROMPT_FILE
TORCH_PROMPT_KEYS = ("task_prompt", "prompt_emb", "prompt_embeddings.weight")


def find_prompts(path) -> list:
    """Prompt files named by `path`: a file (.npy, or a PyTorch tensor file such as the original release's
    `task_prompt`), a seed folder holding prompt.npy (or task_prompt), or a folder of seed_<s>/ folders.
    Returns the files, seeds in numeric order. Raises FileNotFoundError naming what was looked for; a file or
    seed folder inside the folder given that is a symbolic link leading out of it is refused (io.OutsideFolder)."""
    path = pathlib.Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"prompt path {path} does not exist")
    found = _prompt_files(path)
    for file in found:
        io.inside(path, file)
    return found


def _prompt_files(path: pathlib.Path) -> list:
    for name in (PROMPT_FILE, "task_prompt"):
        if (path / name).is_file():
            return [path / name]
    # seed_<s> only: a run set aside beside it (seed_<s>.superseded-<time>, stages.tune.set_aside) is not one
    seed_dir = re.compile(re.escape(layout.SEED_DIR_PREFIX) + r"\d+")
    seeds = sorted((p for p in path.glob(layout.SEED_DIR_PREFIX + "*")
                    if seed_dir.fullmatch(p.name) and (p / PROMPT_FILE).is_file()),
                   key=lambda p: (len(p.name), p.name))
    if seeds:
        return [p / PROMPT_FILE for p in seeds]
    raise FileNotFoundError(f"{path}: no {PROMPT_FILE}, task_prompt or seed_*/{PROMPT_FILE} inside")


def read_prompt(path) -> np.ndarray:
    """A prompt file -> float32 [P, H]. .npy via numpy (no pickles); anything else via
    `torch.load(weights_only=True)`: a tensor, or a dict holding one under `task_prompt` (or the only tensor)."""
    path = pathlib.Path(path)
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path}: not a plain numpy array file ({e})") from None
    else:
        array = _read_torch_prompt(path)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:  # [1, P, H] as some checkpoints keep it
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{path}: a prompt must be a matrix [prompt_len, hidden]; got shape {array.shape}")
    return array


class TorchMissing(ImportError):
    """A PyTorch prompt file and no torch installed (a user error: the launch scripts print it in one line)."""


def require_torch(path) -> None:
    """TorchMissing naming `path` and the install command when torch cannot be imported."""
    try:
        import torch  # noqa: F401, PLC0415 - optional dependency, only for PyTorch prompt files
    except ImportError:
        raise TorchMissing(f'{path} is a PyTorch prompt file and torch is not installed: pip install -e ".[torch]" '
                           "(or save the prompt as .npy)") from None


def read_prompts(paths: Sequence) -> list:
    """read_prompt of each file: the whole of every file checked (format, pickles refused, torch present for a
    PyTorch file, shape) before any model is loaded."""
    return [read_prompt(p) for p in paths]


def _read_torch_prompt(path):
    require_torch(path)
    import torch  # noqa: PLC0415 - optional dependency, only for PyTorch prompt files
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, ...: the file is not a weights-only tensor file
        raise ValueError(io.refused_torch_file(path, e)) from None
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        key = next((k for k in tensors for want in TORCH_PROMPT_KEYS if k == want or k.endswith("." + want)), None)
        if key is None and len(tensors) == 1:
            key = next(iter(tensors))
        if key is None:
            raise ValueError(f"{path}: a dict without a prompt tensor (looked for {TORCH_PROMPT_KEYS}); "
                             f"keys: {sorted(obj)[:10]}")
        obj = tensors[key]
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor or a dict of tensors, found {type(obj).__name__}")
    return obj.detach().float().numpy()


def write_prompt(run_dir: pathlib.Path, prompt: np.ndarray, meta: dict) -> pathlib.Path:
    """run_dir/prompt.npy (float32 [P, H]) and its sidecar, atomically."""
    path = pathlib.Path(run_dir) / PROMPT_FILE
    io.atomic_save_npy(path, np.asarray(prompt, np.float32))
    io.write_sidecar(path, **meta)
    return path


def readout_settings_of_run(readout, max_text_tokens: int) -> dict:
    """The prompt-sidecar fields (written by tuning) that this run's readout must repeat, as this run has them."""
    return {"readout": readout.kind.name, "mask_slot": readout.mask_slot,
            "prefix_positions": readout.prefix_positions, "tied_scale": float(readout.scale),
            "max_text_tokens": int(max_text_tokens)}


def load_tuned_prompts(workdir, loaded, readout, task: str, seeds: Sequence[int], max_text_tokens: int
                       ) -> tuple[np.ndarray, list[str]]:
    """The tuned prompts of `task` for `seeds` -> (float32 [S, P, H], sha256 of each file).

    Errors name the file: a missing prompt (tune first), a prompt whose width is not the model's hidden size or
    whose sidecar names another model (a prompt tuned for another model), a prompt tuned with other readout
    settings than `readout` / `max_text_tokens` (its activations would not be the ones it was tuned with), seeds
    with different prompt lengths."""
    hidden = int(loaded.config.hidden)
    now = readout_settings_of_run(readout, max_text_tokens)
    prompts, digests = [], []
    for seed in seeds:
        path = layout.prompt_path(workdir, loaded.name, task, seed)
        io.inside(workdir, path)            # never read through a link out of the workdir
        if not path.exists():
            raise FileNotFoundError(
                f"no tuned prompt for task {task!r}, seed {seed}, model {loaded.name!r}: {path} does not exist; "
                f"run `python -m launch.tune --task {task} --seeds {seed} ...` first")
        data = path.read_bytes()
        prompt = np.load(path, allow_pickle=False)
        if prompt.ndim != 2 or prompt.shape[1] != hidden:
            raise ValueError(f"{path}: prompt of shape {prompt.shape} does not fit model {loaded.name!r} "
                             f"(hidden size {hidden}); it was tuned for another model")
        side = io.sidecar_path(path)
        if side.exists():
            io.inside(workdir, side)
            meta = json.loads(side.read_text())
            model = meta.get("model")
            if model is not None and str(model) != loaded.name:
                raise ValueError(f"{path}: the prompt was tuned for model {model!r} (its sidecar {side} says so), "
                                 f"not for {loaded.name!r}")
            for key, value in now.items():
                if key in meta and meta[key] != value:
                    raise ValueError(f"{path}: the prompt was tuned with {key}={meta[key]!r} but this run uses "
                                     f"{value!r}; pass --config.{key}={meta[key]} (as in tuning)")
        prompts.append(prompt.astype(np.float32))
        digests.append(hashlib.sha256(data).hexdigest())
    lengths = {p.shape[0] for p in prompts}
    if len(lengths) != 1:
        raise ValueError(f"the prompts of task {task!r} for seeds {list(seeds)} have different lengths "
                         f"{sorted(lengths)}")
    return np.stack(prompts), digests
