"""Our side of the benchmark: the Flax model, the streaming statistics and the jitted prompt-tuning step.

Same function as the reference (benchmarks/torch_reference.py): the prompt [P, H] with its row 0 replaced by
the <mask> embedding is the model's `prefix` (zero position embeddings, text positions after it); neurons are
the FFN post-activations at the P prompt positions (`Capture(0, P)`); the label is read at prompt position 0.

Predictivity pass: what `stages/predictivity.py` runs — its compiled capturing forward (`make_forward`, the
readout of prompt/readout.py, vmap over seeds, here S = 1) feeding `neurons.predictivity.compute_statistics`,
whose jitted updates reduce each activation block on the device: TRAIN blocks add to running sums (eq. 2),
DEV blocks to integer counts (eq. 3). Activations never go to NumPy and never accumulate, so memory is
O(L * P * N) whatever the number of examples. Training: `prompt.train.make_train_step` (vmap over seeds, S = 1)
with the same AdamW (optax, weight decay 0) and the verbalizer cross-entropy.
"""
from __future__ import annotations

import dataclasses
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

import benchmarks as B
from benchmarks.realdata import model_inputs
from skillneurons_jax import parallel
from skillneurons_jax.models import Capture, LoadedModel
from skillneurons_jax.neurons import predictivity as stats
from skillneurons_jax.stages.predictivity import make_forward
from skillneurons_jax.prompt import readout as readout_mod
from skillneurons_jax.prompt import train as prompt_train


class Ours:
    """Our pipeline on one loaded model. Batches: the data/batches.py format (numpy); keys beyond
    realdata.MODEL_KEYS (e.g. `index`) are never handed to the compiled functions."""

    def __init__(self, loaded: LoadedModel, prompt_len: int, specials: dict, label_ids: tuple):
        self.loaded = loaded
        self.module = loaded.module
        self.config = loaded.config
        self.P = prompt_len
        # The pipeline's readout (mlm for RoBERTa, tied for head-less MiniLM); the benchmark loads no tokenizer,
        # so the <mask> id comes from the model table.
        with_mask = dataclasses.replace(loaded, tokenizer=types.SimpleNamespace(mask_token_id=int(specials["mask"])))
        words = types.SimpleNamespace(ids=np.asarray(label_ids, np.int32)[:, None],
                                      lengths=np.ones(len(label_ids), np.int32))
        self.readout = readout_mod.make_readout(with_mask, words)
        self.readout_source = f"skillneurons_jax.prompt.readout ({self.readout.kind.name})"
        self.mesh = parallel.make_mesh()
        self.params = parallel.replicate(loaded.params, self.mesh)
        self.capture = Capture(start=0, length=prompt_len)
        # stages/predictivity.py's compiled forward: (params, prompts [S, P, H], batch) -> (scores [S, B, C],
        # {"encoder": activations [S, L, B, P, N]}), every seed in one call.
        self.capture_forward = make_forward(self.readout, self.capture, None)
        self._forward = jax.jit(self._hidden)

    def _hidden(self, params, prompt, input_ids, attention_mask):
        """Final hidden states [B, P+T, H] of the model with the prompt (no readout, no capture)."""
        return self.module.apply({"params": params}, input_ids, attention_mask,
                                 prefix=self.readout.model_prompt(params, prompt)[None],
                                 prefix_positions=self.readout.prefix_positions).hidden

    # ---------------------------------------------------------------- predictivity, streamed
    def _blocks(self, prompts, batches: list[dict]):
        """The pipeline's capturing forward over `batches`: ActivationBlocks with acts [1, L, B, P, N] that stay
        on the device and are dropped once the statistics have consumed them."""
        for b in batches:
            dev = parallel.shard_batch(model_inputs(b), self.mesh)
            _, streams = self.capture_forward(self.params, prompts, dev)
            yield stats.ActivationBlock(streams["encoder"], dev["example_mask"], dev["labels"], None)

    def _prompts(self, prompt: np.ndarray):
        return parallel.replicate(jnp.asarray(prompt, jnp.float32)[None], self.mesh)   # [S = 1, P, H]

    def predictivity(self, prompt: np.ndarray, train_batches: list[dict], dev_batches: list[dict]) -> dict:
        """Eqs. 2-5 for one seed, as stages/predictivity.py computes them; same keys as Reference.predictivity."""
        prompts = self._prompts(prompt)
        out = stats.compute_statistics(lambda: self._blocks(prompts, train_batches),
                                       self._blocks(prompts, dev_batches))
        return dict(baseline=out.baseline[0], correct=out.correct[0], n_dev=out.n_dev, accuracy=out.acc[0],
                    predictivity=out.pred)

    # ---------------------------------------------------------------- prompt tuning
    def make_train_step(self, prompt: np.ndarray, lr: float = 1e-3):
        """Returns (step(batch) -> loss float, get_prompt() -> [P, H]); one seed through train.py's step.
        `step.compiled_text(batch)` is the compiled step's HLO for that batch shape (benchmarks/profile.py)."""
        tx = optax.adamw(lr, weight_decay=0.0)
        step_fn = prompt_train.make_train_step(self.readout.score_fn(), tx, self.mesh)
        prompts = parallel.replicate(jnp.asarray(prompt, jnp.float32)[None], self.mesh)
        holder = {"prompts": prompts, "opt": parallel.replicate(jax.vmap(tx.init)(prompts), self.mesh)}

        def shard(batch: dict) -> dict:
            return parallel.shard_batch({k: np.asarray(v)[None] for k, v in model_inputs(batch).items()}, self.mesh,
                                        batch_axis=1)

        def step(batch: dict) -> float:
            holder["prompts"], holder["opt"], loss = step_fn(holder["prompts"], holder["opt"], self.params,
                                                             shard(batch))
            return float(loss[0])

        step.compiled_text = lambda batch: step_fn.lower(holder["prompts"], holder["opt"], self.params,
                                                         shard(batch)).compile().as_text()
        return step, lambda: np.asarray(holder["prompts"][0])

    def activations(self, prompt: np.ndarray, batches: list[dict]) -> np.ndarray:
        """[L, E, P, N] prompt-position activations of the real examples of `batches`, from the same compiled
        forward as the predictivity pass (for the agreement check only: the pass never gathers them), in the
        order of the batches' `index` (the split's row order) when they carry one."""
        prompts = self._prompts(prompt)
        out, rows = [], []
        for blk, b in zip(self._blocks(prompts, batches), batches):
            keep = np.asarray(b["example_mask"], bool)
            out.append(np.asarray(stats.to_host(blk.acts))[0][:, keep])
            rows.append(np.asarray(b["index"])[keep] if "index" in b else None)
        acts = np.concatenate(out, axis=1)
        if any(r is None for r in rows):
            return acts
        rows = np.concatenate(rows)
        if not np.array_equal(np.sort(rows), np.arange(len(rows))):
            raise ValueError("the batches' index is not a permutation of their examples")
        return acts[:, np.argsort(rows)]

    def recount(self, acts: np.ndarray, labels: np.ndarray, threshold: np.ndarray, batch_size: int) -> np.ndarray:
        """DEV counts [L, P, N] from given activations [L, E, P, N] through the streaming accuracy code
        (stats.update_accuracy, `batch_size` examples per block): the agreement check compares them with a
        NumPy count of the same activations, which must match exactly."""
        state = stats.init_accuracy(np.asarray(threshold, np.float32)[None])
        for i in range(0, acts.shape[1], batch_size):
            block = jnp.asarray(acts[None, :, i:i + batch_size])
            n = block.shape[2]
            state = stats.update_accuracy(state, block, jnp.asarray(labels[i:i + n]), jnp.ones(n, bool))
        return stats.to_host(state.correct)[0]

    def forward(self, prompt: np.ndarray, batch: dict) -> None:
        """A plain forward (hidden states only) for the MFU figure."""
        self._forward(self.params, jnp.asarray(prompt, jnp.float32), batch["input_ids"],
                      batch["attention_mask"]).block_until_ready()


def checkpoint_folder(name: str, tmodel, scratch) -> str:
    """The folder our loader reads for benchmark model `name` (benchmarks.MODELS): the offline MiniLM's own, or
    the random PyTorch model `tmodel` saved (safetensors) into the folder `scratch`: both sides hold the same
    weights."""
    if B.MODELS[name]["source"] == "minilm":
        return str(B.minilm_folder())
    return str(tmodel.save(pathlib.Path(scratch)))


def for_model(name: str, loaded: LoadedModel, prompt_len: int) -> Ours:
    """Ours on benchmark model `name`, with that model's special ids and label words (benchmarks.MODELS)."""
    return Ours(loaded, prompt_len, B.special_ids(name), B.MODELS[name]["label_ids"])


def load(folder, dtype=jnp.float32) -> LoadedModel:
    """Our loader on a checkpoint folder (the benchmark feeds token ids: no tokenizer needed)."""
    from skillneurons_jax.models import load_pretrained
    return load_pretrained(folder, dtype, tokenizer=False)


def word_embeddings(loaded: LoadedModel) -> np.ndarray:
    """[V, H] float32 word embeddings (for the prompt initialisation)."""
    return np.asarray(loaded.params["word_embeddings"], np.float32)
