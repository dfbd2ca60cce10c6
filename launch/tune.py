"""Prompt tuning: `python -m launch.tune --model_path DIR --task sst2 --data_dir DATA --seeds 0,1,2 --workdir W`.

Writes W/prompts/<model>/<task>/seed_<s>/{prompt.npy (+ .json sidecar), metrics.jsonl, state/, run_config.json}
and prints one JSON line with each seed's best dev accuracy. Rerunning the same command after a crash or a
kill resumes from the last checkpoint. Hyperparameters: configs/tune.py, with per-model/per-task values from
configs/hparams.py; `--config.FIELD=value` overrides either.
"""
from __future__ import annotations

import json
import sys
import time

from absl import flags

from launch import common

FLAGS = flags.FLAGS
common.define_config("tune.py")


def resolve_config(config, model_name: str, family: str, task: str) -> dict:
    """ConfigDict + hparams table + flags -> one plain dict of every setting used."""
    from configs import hparams
    cfg = config.to_dict()
    table = hparams.lookup(model_name, family, task)
    for key, value in table.items():
        if cfg.get(key) is None:
            cfg[key] = value
    if cfg.get("init") is None:
        cfg["init"] = "normal"
    if FLAGS.max_steps is not None:
        cfg["max_steps"] = FLAGS.max_steps
    if FLAGS.eval_every is not None:
        cfg["eval_every"] = FLAGS.eval_every
    for key in ("learning_rate", "batch_size"):
        if cfg.get(key) is None:
            raise ValueError(f"{key} is set neither in the config nor in configs/hparams.py for {model_name!r}")
    return cfg


def init_vocab_range(cfg: dict, vocab_size: int):
    """Vocabulary ids that 'vocab' init samples: the config's, else the frequent part of the vocabulary
    (ids 1000..6000 for real vocabularies: past BERT's [unused] slots, within the frequent words of BPE and
    SentencePiece vocabularies), clipped to small test vocabularies."""
    if cfg.get("init_vocab_range"):
        low, high = cfg["init_vocab_range"]
        return int(low), int(high)
    return min(1000, vocab_size // 10), min(6000, vocab_size)


def main(argv):
    del argv
    t_start = time.time()
    common.require("model_path", "task", "data_dir")
    common.start_distributed()
    import jax
    import numpy as np
    from skillneurons_jax import io as sio
    from skillneurons_jax import parallel
    from skillneurons_jax.data import tasks
    from skillneurons_jax.prompt import soft_prompt, train

    seeds = common.parse_seeds(FLAGS.seeds)
    tasks.get_task(FLAGS.task)  # an unknown task fails before the model loads
    setup = common.setup_model_and_task(FLAGS.model_path, FLAGS.task, FLAGS.config)
    loaded, readout = setup.loaded, setup.readout
    cfg = resolve_config(FLAGS.config, loaded.name, loaded.family, setup.task.name)
    soft_prompt.check_prompt_len(cfg["prompt_len"])
    mesh = parallel.make_mesh()
    parallel.check_divisible(cfg["batch_size"], mesh, what="global batch (config batch_size)")

    train_enc = common.encode_split(setup, "train", FLAGS.data_dir, FLAGS.max_examples, cfg["max_text_tokens"])
    dev_cap = cfg.get("dev_max_examples") or FLAGS.max_examples
    dev_enc = common.encode_split(setup, "dev", FLAGS.data_dir, dev_cap, cfg["max_text_tokens"])
    buckets = common.buckets_for([train_enc, dev_enc])
    eval_bs = common.round_up(cfg["eval_batch_size"], parallel.num_data_shards(mesh))
    dev_batches = list(common.model_batches(dev_enc, eval_bs, buckets=buckets, sort_by_length=True))
    bs = cfg["batch_size"]

    def train_batches(seed, epoch):
        order_seed = train.epoch_seed(seed, epoch)
        out = list(common.model_batches(train_enc, bs, seed=order_seed, drop_last=True, buckets=buckets,
                                        sort_by_length=bool(cfg["group_by_length"])))
        if cfg["group_by_length"]:  # rows of similar length share a batch; the batch order is shuffled again
            out = [out[i] for i in np.random.default_rng(order_seed).permutation(len(out))]
        return out

    embed = jax.jit(lambda ids: loaded.module.apply({"params": loaded.params}, ids, method="embed_tokens"))
    init = soft_prompt.init_prompts(
        seeds, cfg["prompt_len"], loaded.config.hidden, cfg["init"], embed_fn=embed,
        vocab_size=loaded.config.vocab_size, label_ids=setup.label_words.ids,
        label_lengths=setup.label_words.lengths, std=cfg["init_std"],
        vocab_range=init_vocab_range(cfg, loaded.config.vocab_size))

    tcfg = train.TrainConfig(
        learning_rate=float(cfg["learning_rate"]), batch_size=int(bs), epochs=int(cfg["epochs"]),
        max_steps=cfg.get("max_steps"), eval_every=int(cfg["eval_every"]), eval_at_start=bool(cfg["eval_at_start"]),
        warmup_steps=int(cfg["warmup_steps"]), clip_norm=float(cfg["clip_norm"]),
        weight_decay=float(cfg["weight_decay"]), keep_checkpoints=int(cfg["keep_checkpoints"]),
        progress=bool(cfg["progress"]), time_limit_s=float(cfg["time_limit_s"]))
    # What a resumed run must share with the interrupted one (besides the optimiser settings).
    run_info = {"model": loaded.name, "family": loaded.family, "task": setup.task.name,
                "readout": readout.kind.name, "mask_slot": readout.mask_slot,
                "prefix_positions": readout.prefix_positions, "tied_scale": cfg["tied_scale"],
                "label_words": list(setup.label_words.words), "prompt_init": cfg["init"],
                "init_std": cfg["init_std"], "max_text_tokens": cfg["max_text_tokens"],
                "group_by_length": bool(cfg["group_by_length"]),
                "train_examples": len(train_enc), "dev_examples": len(dev_enc)}
    sidecar = {"config": cfg, "model_path": str(FLAGS.model_path), "data_dir": str(FLAGS.data_dir),
               "seeds": seeds, "devices": jax.device_count(), "processes": jax.process_count()}
    run_dirs = [common.run_dir(FLAGS.workdir, loaded.name, setup.task.name, s) for s in seeds]
    if jax.process_index() == 0:
        for d in run_dirs:
            d.mkdir(parents=True, exist_ok=True)
            sio.write_sidecar(d / train.METRICS_FILE, **run_info, **sidecar)
    print(f"prompt tuning {loaded.name} on {setup.task.name}: {len(train_enc)} train / {len(dev_enc)} dev examples, "
          f"seeds {seeds}, {jax.device_count()} device(s), {tcfg}", file=sys.stderr, flush=True)
    try:
        result = train.train(readout.score_fn(), loaded.params, init, seeds, train_batches, dev_batches, tcfg,
                             run_dirs=run_dirs, pad_id=train_enc.pad_id, mesh=mesh, run_info=run_info,
                             sidecar=sidecar, description=f"{loaded.name}/{setup.task.name}")
    except train.TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    summary = {"model": loaded.name, "task": setup.task.name, "seeds": seeds, "steps": result.steps,
               "resumed_from": result.resumed_from,
               "best_dev_accuracy": [float(a) for a in result.best_accuracy],
               "best_dev_f1": [float(f) for f in result.best_f1],
               "best_step": [int(s) for s in result.best_step],
               "prompts": [str(d / train.PROMPT_FILE) for d in run_dirs],
               "wall_s": round(time.time() - t_start, 1)}
    if jax.process_index() == 0:
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    common.run(main)
