"""Tiny random BERT / RoBERTa checkpoints built with transformers (PyTorch), saved like real ones.

Used by the encoder, loader, intervention and launch tests. Every parameter is randomised (LayerNorm scales
and biases too), so a swapped or transposed tensor cannot hide behind an identity initialisation.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

# Small but not square: hidden != intermediate != vocab, heads > 1, so shape mix-ups fail loudly.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
BERT_WORDS = ("the a movie was good bad great terrible not very film plot actor is this it and "
              "! . , ? fun boring").split()


def write_bert_vocab(folder: pathlib.Path) -> int:
    """A WordPiece vocab.txt; returns its size."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + BERT_WORDS + ["##s", "##ly", "##ing"]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    return len(tokens)


def write_roberta_vocab(folder: pathlib.Path) -> int:
    """A byte-level BPE vocab.json (specials + the 256 byte symbols, no merges) and merges.txt; returns size."""
    from tokenizers.pre_tokenizers import ByteLevel
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


def _randomise(model, seed: int) -> None:
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "LayerNorm" in name or "layer_norm" in name:
                p.copy_((1.0 + 0.2 * noise) if name.endswith("weight") else 0.1 * noise)
            else:
                p.copy_(0.15 * noise)


def make_checkpoint(folder, family: str = "roberta", *, lm_head: bool = True, fmt: str = "safetensors",
                    seed: int = 0, **overrides):
    """Writes a tiny random checkpoint (config.json, weights, tokenizer files) to `folder`.

    family: "roberta" (RobertaForMaskedLM) or "bert" (BertForMaskedLM, or BertModel without prefix and head
    when lm_head=False, like sentence-transformers MiniLM). fmt: "safetensors" (save_pretrained) or "bin"
    (torch.save of the state dict). Returns the torch model in eval mode.
    """
    import torch
    import transformers as tf

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family == "roberta":
        vocab = write_roberta_vocab(folder)
        cfg = tf.RobertaConfig(vocab_size=vocab, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2, **{**TINY, **overrides})
        model = tf.RobertaForMaskedLM(cfg) if lm_head else tf.RobertaModel(cfg, add_pooling_layer=False)
    elif family == "bert":
        vocab = write_bert_vocab(folder)
        cfg = tf.BertConfig(vocab_size=vocab, max_position_embeddings=64, pad_token_id=0, **{**TINY, **overrides})
        model = tf.BertForMaskedLM(cfg) if lm_head else tf.BertModel(cfg)
    else:
        raise ValueError(f"no tiny checkpoint for family {family!r}")
    _randomise(model, seed)
    model.eval()
    if fmt == "safetensors":
        model.save_pretrained(folder)
    elif fmt == "bin":
        cfg.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        raise ValueError(f"unknown checkpoint format {fmt!r}")
    return model


def backbone(model):
    """The encoder stack of a HF model (RobertaForMaskedLM.roberta, BertForMaskedLM.bert, or the model itself)."""
    for attr in ("roberta", "bert"):
        if hasattr(model, attr):
            return getattr(model, attr)
    return model


def hf_forward(model, **inputs):
    """Runs a HF model; returns (output, neurons [L, B, T, N] numpy) where neurons are the inputs of each
    layer's `output.dense` (exactly the post-activation FFN neurons)."""
    import torch
    acts = []
    layers = backbone(model).encoder.layer
    hooks = [layer.output.dense.register_forward_pre_hook(lambda mod, inp: acts.append(inp[0].detach().numpy()))
             for layer in layers]
    try:
        with torch.no_grad():
            out = model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return out, np.stack(acts)


def padded_batch(tokenizer, texts):
    """Right-padded numpy batch (input_ids int32 [B, T], attention_mask int32 [B, T])."""
    enc = tokenizer(list(texts), padding=True)
    return (np.asarray(enc["input_ids"], np.int32), np.asarray(enc["attention_mask"], np.int32))


def make_t5_checkpoint(folder, sentences, *, vocab_size: int, num_decoder_layers: int, seed: int = 0,
                       hard_vocab_limit: bool = True):
    """A tiny T5 v1.0 (ReLU; d_model 16, d_ff 24, 2 encoder layers, 4 heads) in `folder`, with a SentencePiece
    vocabulary trained on `sentences` (the real t5-base spiece.model is not available offline). Returns the
    PyTorch model (eval mode) that was saved."""
    import io

    import sentencepiece as spm
    import torch
    import transformers
    folder = pathlib.Path(folder)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
                                   hard_vocab_limit=hard_vocab_limit, model_type="unigram", pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2)
    (folder / "spiece.model").write_bytes(model.getvalue())
    tok = transformers.T5Tokenizer.from_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = transformers.T5Config(vocab_size=len(tok), d_model=16, d_kv=4, d_ff=24, num_layers=2,
                                   num_decoder_layers=num_decoder_layers, num_heads=4, dropout_rate=0.0,
                                   feed_forward_proj="relu")
    hf = transformers.T5ForConditionalGeneration(config).eval()
    hf.save_pretrained(str(folder))
    return hf
