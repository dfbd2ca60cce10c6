"""The PyTorch reference: the approach of the original code, written by us, run on the same work as ours.

Faithful to Prompt-Transferability / robust-neurons:
  * a `transformers` PyTorch model (BertModel for MiniLM; RobertaForMaskedLM for RoBERTa), float32, eval mode;
  * the soft prompt [P, H] prepended in embedding space through `inputs_embeds`, prompt token 0 replaced by
    the <mask> embedding (the label is read there), prompt positions with zero position embeddings and text
    positions continuing after the prompt (a forward hook on the position-embedding table zeroes the prompt
    rows: the original patched the model's embedding code to the same effect);
  * forward hooks on every layer's intermediate (FFN) module; the post-activation values at the prompt
    positions are copied to host memory (`.cpu().numpy()`) batch by batch and ALL of them are kept;
  * baseline (eq. 2), accuracy (eq. 3) and predictivity (eqs. 4-5, one seed) computed in NumPy from the
    stacked activations — which is why its memory grows with the number of examples;
  * a prompt-tuning step: torch AdamW (weight decay 0) on the prompt only, model frozen
    (requires_grad False), cross-entropy on the verbalizer scores at the <mask> slot.

One deliberate kindness to the reference: the MLM head is applied at the <mask> slot only, not at all
P + T positions as the original did (that would add ~40% to a RoBERTa-base step and inflate our speedup).
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from typing import Optional

import numpy as np
import torch
import transformers

from benchmarks import MODELS, minilm_folder, special_ids


@dataclasses.dataclass
class TorchModel:
    """A benchmark model on the PyTorch side.

    backbone: BertModel / RobertaModel (returns last_hidden_state [B, P+T, H]);
    lm_head:  RobertaLMHead or None (MiniLM has none: tied-embedding readout instead);
    full:     the module that `save_pretrained` writes (what our loader reads).
    """

    name: str
    family: str
    backbone: torch.nn.Module
    lm_head: Optional[torch.nn.Module]
    full: torch.nn.Module
    config: transformers.PretrainedConfig
    specials: dict
    label_ids: tuple

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def hidden(self) -> int:
        return self.config.hidden_size

    @property
    def intermediate(self) -> int:
        return self.config.intermediate_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def word_embeddings(self) -> torch.nn.Embedding:
        return self.backbone.embeddings.word_embeddings

    def layers(self):
        return self.backbone.encoder.layer

    def save(self, folder: pathlib.Path) -> pathlib.Path:
        """Writes config.json + model.safetensors (the exact weights) for our loader."""
        folder = pathlib.Path(folder)
        self.full.save_pretrained(str(folder))
        return folder


def build_model(name: str, seed: int = 0, attention: Optional[str] = None) -> TorchModel:
    """The benchmark model `name` (a key of benchmarks.MODELS); random ones are seeded by `seed`.

    attention: the transformers attention implementation ("sdpa", "eager"); None = the library's default
    (sdpa in transformers 5; the original code ran the eager matmul-softmax-matmul of transformers 4.x)."""
    spec = MODELS[name]
    kw = {} if attention is None else {"attn_implementation": attention}
    if spec["source"] == "minilm":
        full = transformers.BertModel.from_pretrained(str(minilm_folder()), **kw)
        backbone, head = full, None
    elif spec["family"] == "roberta":
        torch.manual_seed(seed)
        full = transformers.RobertaForMaskedLM(transformers.RobertaConfig(**spec["config"], **kw))
        backbone, head = full.roberta, full.lm_head
    elif spec["family"] == "bert":
        torch.manual_seed(seed)
        full = transformers.BertModel(transformers.BertConfig(**spec["config"], **kw), add_pooling_layer=False)
        backbone, head = full, None
    else:
        raise ValueError(f"benchmark model {name!r}: no reference for family {spec['family']!r}")
    full.eval()
    for p in full.parameters():
        p.requires_grad_(False)
    return TorchModel(name=name, family=spec["family"], backbone=backbone, lm_head=head, full=full,
                      config=full.config, specials=special_ids(name), label_ids=tuple(spec["label_ids"]))


class Reference:
    """The original pipeline on one model and one prompt length. All methods take numpy batches in the
    benchmarks.synthetic_batches format."""

    def __init__(self, model: TorchModel, prompt_len: int, dtype: str = "float32"):
        """dtype: the compute dtype, float32 or bfloat16; bfloat16 runs the model under torch.autocast (matmuls
        in bfloat16, LayerNorm and softmax in float32, weights float32: what ours does with a bfloat16 compute
        dtype); activations and scores are handed on as float32."""
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute dtype must be float32 or bfloat16, got {dtype!r}")
        self.model = model
        self.P = prompt_len
        self.dtype = dtype
        cfg = model.config
        # Text positions continue after the prompt; RoBERTa's position ids start after its padding index.
        self.position_offset = cfg.pad_token_id + 1 if model.family == "roberta" else 0
        # The prompt rows of the position embeddings are zeroed by this hook (permanently installed: every
        # forward of the reference uses the prompt layout).
        model.backbone.embeddings.position_embeddings.register_forward_hook(self._zero_prompt_positions)
        self._label_ids = torch.tensor(model.label_ids, dtype=torch.long)

    def _zero_prompt_positions(self, module, inputs, output):
        keep = torch.ones(output.shape[-2], 1, dtype=output.dtype)
        keep[: self.P] = 0
        return output * keep

    def _inputs(self, prompt: torch.Tensor, batch: dict) -> dict:
        """inputs_embeds [B, P+T, H], attention_mask [B, P+T], position_ids [1, P+T]."""
        ids = torch.from_numpy(np.asarray(batch["input_ids"], np.int64))
        B, T = ids.shape
        emb = self.model.word_embeddings
        # Prompt token 0 is the <mask> slot: its embedding replaces the prompt's first vector.
        mask_vec = emb.weight[self.model.specials["mask"]][None]
        full_prompt = torch.cat([mask_vec, prompt[1:]], 0)
        embeds = torch.cat([full_prompt[None].expand(B, -1, -1), emb(ids)], 1)
        text_mask = torch.from_numpy(np.asarray(batch["attention_mask"], np.int64))
        attention = torch.cat([torch.ones(B, self.P, dtype=torch.long), text_mask], 1)
        positions = torch.cat([torch.zeros(self.P, dtype=torch.long),
                               self.position_offset + self.P + torch.arange(T)])[None]
        return dict(inputs_embeds=embeds, attention_mask=attention, position_ids=positions)

    def autocast(self):
        """The compute-dtype context of every forward (a no-op in float32)."""
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def hidden(self, prompt: torch.Tensor, batch: dict) -> torch.Tensor:
        """Final hidden states [B, P+T, H] (float32)."""
        with self.autocast():
            return self.model.backbone(**self._inputs(prompt, batch)).last_hidden_state.float()

    def scores(self, prompt: torch.Tensor, batch: dict) -> torch.Tensor:
        """Verbalizer scores [B, num_labels] at the <mask> slot (prompt position 0)."""
        h0 = self.hidden(prompt, batch)[:, 0]
        if self.model.lm_head is not None:
            with self.autocast():
                return self.model.lm_head(h0)[:, self._label_ids].float()
        # No MLM head (sentence-transformers MiniLM): score against the tied word embeddings (float32, as ours).
        return h0 @ self.model.word_embeddings.weight[self._label_ids].T

    # ---------------------------------------------------------------- predictivity (the original way)
    @contextlib.contextmanager
    def _capturing(self, store: list[list[np.ndarray]]):
        """Forward hooks on each layer's intermediate module: prompt-position activations -> host lists."""
        P = self.P

        def hook_for(layer):
            def hook(module, inputs, output):
                # [B, P, N] post-activation, copied out of the torch tensor into host memory.
                store[layer].append(output[:, :P].detach().float().cpu().numpy().copy())
            return hook

        handles = [layer.intermediate.register_forward_hook(hook_for(i))
                   for i, layer in enumerate(self.model.layers())]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def collect(self, prompt: np.ndarray, batches: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Runs the batches with the hooks on; returns activations [L, E, P, N] and labels [E]."""
        store: list[list[np.ndarray]] = [[] for _ in range(self.model.num_layers)]
        labels = []
        p = torch.from_numpy(np.asarray(prompt, np.float32))
        with torch.inference_mode(), self._capturing(store):
            for batch in batches:
                self.hidden(p, batch)
                keep = np.asarray(batch["example_mask"], bool)
                for layer in store:
                    layer[-1] = layer[-1][keep]
                labels.append(np.asarray(batch["labels"])[keep])
        acts = np.stack([np.concatenate(layer, 0) for layer in store])
        return acts, np.concatenate(labels)

    def predictivity(self, prompt: np.ndarray, train_batches: list[dict], dev_batches: list[dict], *,
                     return_dev_activations: bool = False) -> dict:
        """Eqs. 2-5 for one seed, from all activations held in host memory.

        Returns baseline [L, P, N] float32, correct [L, P, N] int64 (DEV examples where 1[a > b] == y),
        n_dev, accuracy [L, P, N], predictivity [L, N] (max over prompt tokens of max(acc, 1 - acc)), and
        with return_dev_activations also dev_activations [L, E_dev, P, N].
        """
        train_acts, _ = self.collect(prompt, train_batches)
        baseline = train_acts.mean(axis=1)                                  # eq. 2
        del train_acts
        dev_acts, labels = self.collect(prompt, dev_batches)
        above = dev_acts > baseline[:, None]
        correct = (above == labels.astype(bool)[None, :, None, None]).sum(axis=1)
        accuracy = correct / labels.shape[0]                                # eq. 3
        per_token = np.maximum(accuracy, 1.0 - accuracy)                    # eq. 4
        out = dict(baseline=baseline, correct=correct, n_dev=int(labels.shape[0]), accuracy=accuracy,
                   predictivity=per_token.max(axis=1))                      # eq. 5, one seed
        if return_dev_activations:
            out["dev_activations"] = dev_acts
        return out

    # ---------------------------------------------------------------- prompt tuning
    def make_train_step(self, prompt: np.ndarray, lr: float = 1e-3):
        """Returns (step(batch) -> loss float, the trained prompt parameter [P, H])."""
        param = torch.nn.Parameter(torch.from_numpy(np.asarray(prompt, np.float32).copy()))
        opt = torch.optim.AdamW([param], lr=lr, weight_decay=0.0)

        def step(batch: dict) -> float:
            opt.zero_grad(set_to_none=True)
            labels = torch.from_numpy(np.asarray(batch["labels"], np.int64))
            loss = torch.nn.functional.cross_entropy(self.scores(param, batch), labels)
            loss.backward()
            opt.step()
            return float(loss.detach())

        return step, param

    def forward(self, prompt: np.ndarray, batch: dict) -> None:
        """A plain forward (no hooks) for the MFU figure."""
        with torch.inference_mode():
            self.hidden(torch.from_numpy(np.asarray(prompt, np.float32)), batch)


class BestPractice:
    """PyTorch done the way we would write it today, on the SAME work as ours (the speed-up at equal work).

    It shares the reference's model and input layout (`Reference._inputs`: <mask> slot, zero prompt positions)
    but is fed our batches (the pipeline's length buckets, so no padding to the original fixed length), and its
    forward hooks reduce on the device in torch instead of copying activations to host memory:
      TRAIN: running float32 sums [L, P, N] of the prompt-position activations of real rows (eq. 2);
      DEV:   int64 counts [L, P, N] of 1[a > b] == y (eq. 3);
    only the final [L, P, N] arrays go to NumPy. Memory is O(L * P * N), like ours. The training step is the
    reference's (AdamW on the prompt, frozen model) on our bucketed batches, the loss averaged over real rows.
    """

    def __init__(self, reference: Reference):
        self.reference = reference
        self.P = reference.P

    @contextlib.contextmanager
    def _reducing(self, reduce):
        """reduce(layer, activations [B, P, N]) called by a hook on each layer's intermediate module."""
        P = self.P

        def hook_for(layer):
            def hook(module, inputs, output):
                reduce(layer, output[:, :P].float())
            return hook

        handles = [layer.intermediate.register_forward_hook(hook_for(i))
                   for i, layer in enumerate(self.reference.model.layers())]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def predictivity(self, prompt: np.ndarray, train_batches: list[dict], dev_batches: list[dict]) -> dict:
        """Eqs. 2-5 for one seed, streamed in torch; the same keys as Reference.predictivity."""
        m = self.reference.model
        shape = (m.num_layers, self.P, m.intermediate)
        p = torch.from_numpy(np.asarray(prompt, np.float32))
        sums = torch.zeros(shape)
        state = {"keep": None, "labels": None}

        def add(layer, acts):
            sums[layer] += acts[state["keep"]].sum(0)

        n_train = 0
        with torch.inference_mode(), self._reducing(add):
            for batch in train_batches:
                state["keep"] = torch.from_numpy(np.asarray(batch["example_mask"], bool))
                n_train += int(state["keep"].sum())
                self.reference.hidden(p, batch)
        baseline = sums / n_train
        correct = torch.zeros(shape, dtype=torch.int64)

        def count(layer, acts):
            keep, y = state["keep"], state["labels"]
            correct[layer] += ((acts[keep] > baseline[layer]) == y[:, None, None]).sum(0)

        n_dev = 0
        with torch.inference_mode(), self._reducing(count):
            for batch in dev_batches:
                state["keep"] = torch.from_numpy(np.asarray(batch["example_mask"], bool))
                state["labels"] = torch.from_numpy(np.asarray(batch["labels"])[np.asarray(batch["example_mask"],
                                                                                          bool)].astype(bool))
                n_dev += int(state["keep"].sum())
                self.reference.hidden(p, batch)
        accuracy = correct.double() / n_dev
        per_token = torch.maximum(accuracy, 1.0 - accuracy)
        return dict(baseline=baseline.numpy(), correct=correct.numpy(), n_dev=n_dev, accuracy=accuracy.numpy(),
                    predictivity=per_token.max(dim=1).values.numpy())

    def make_train_step(self, prompt: np.ndarray, lr: float = 1e-3):
        """(step(batch) -> loss float, the prompt parameter); the loss is the mean over the batch's real rows."""
        param = torch.nn.Parameter(torch.from_numpy(np.asarray(prompt, np.float32).copy()))
        opt = torch.optim.AdamW([param], lr=lr, weight_decay=0.0)

        def step(batch: dict) -> float:
            opt.zero_grad(set_to_none=True)
            keep = torch.from_numpy(np.asarray(batch["example_mask"], bool))
            labels = torch.from_numpy(np.asarray(batch["labels"], np.int64))
            loss = torch.nn.functional.cross_entropy(self.reference.scores(param, batch)[keep], labels[keep])
            loss.backward()
            opt.step()
            return float(loss.detach())

        return step, param
