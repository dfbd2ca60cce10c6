"""Linear probes on a frozen model's features: `python -m launch.probe --model_path offline:all-minilm-l6-v2
--task sst2 --data_dir ../shared/data --workdir W` (several tasks: --task sst2,mrpc).

Writes WORKDIR/probe/<model>/<task>.json (atomically, with a sidecar) and prints one JSON line per task with the
reference probe's dev / test balanced accuracy, interval, majority rate and n (stages.probe has the method).
"""
from __future__ import annotations

import json

from absl import flags

from launch import common
from skillneurons_jax import io, models
from skillneurons_jax.analysis import learnability
from skillneurons_jax.data import tasks
from skillneurons_jax.stages import probe

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_cap", probe.ProbeSettings.train_cap, "Train rows fitted on (a seeded random subset).")
flags.DEFINE_integer("eval_cap", None, "Rows per dev / test split (default: all).")
flags.DEFINE_integer("probe_seed", 0, "Seed of the train subset, the strength carve and the bootstrap.")
flags.DEFINE_enum("encodings", "auto", list(probe.ENCODING_CHOICES),
                  "Pair tasks: joint only, both (joint and each text alone), auto (both for a checkpoint without an "
                  "LM head, i.e. a sentence encoder).")
flags.DEFINE_integer("batch_size", 64, "Rows per forward pass.")
flags.DEFINE_integer("max_text_tokens", 128, "Text tokens kept per row (longest-first truncation).")
flags.DEFINE_string("document", None, "Also write this markdown (e.g. docs/LEARNABILITY.md) from every probe result "
                    "of the model under --workdir; with --task unset, only the document is written.")
flags.DEFINE_multi_string("document_note", [], "A line the document prints under its provenance (repeatable).")


def main(argv):
    del argv
    common.require("model_path")
    if not FLAGS.task and not FLAGS.document:
        raise ValueError("missing required flag(s): --task (or --document alone to write the document)")
    names = [t.strip() for t in (FLAGS.task or "").split(",") if t.strip()]
    for name in names:
        tasks.get_task(name)
    common.check_flags(tasks_read=names)
    # the one parsing of the probe's settings (config.probe's too), its errors named as the flags spell them
    settings = probe.ProbeSettings.from_config(
        {"train_cap": FLAGS.train_cap, "eval_cap": FLAGS.eval_cap, "seed": FLAGS.probe_seed,
         "encodings": FLAGS.encodings, "batch_size": FLAGS.batch_size, "max_text_tokens": FLAGS.max_text_tokens},
        where="--", spelled={"seed": "probe_seed"})
    if not names:   # the document alone: no model to load, its name is the folder's (models.load_pretrained's rule)
        _write_document(models.resolve_path(FLAGS.model_path)[1])
        return
    loaded = models.load_pretrained(FLAGS.model_path)
    for name in names:
        result = probe.probe(loaded, name, FLAGS.data_dir, FLAGS.workdir, settings,
                             config={"model_path": FLAGS.model_path})
        ref = result["probes"][result["reference"]]
        line = {"task": name, "model": loaded.name, "reference": result["reference"],
                "train_rows": result["train"]["rows_fitted"],
                **{s: {k: ref[s][k] for k in ("balanced_accuracy", "interval", "majority_rate", "n")}
                   for s in result["sources"]},
                "all": {k: {s: round(v[s]["balanced_accuracy"], 4) for s in result["sources"]}
                        for k, v in result["probes"].items()}}
        print(json.dumps(line, default=io.as_written), flush=True)
    if FLAGS.document:
        _write_document(loaded.name)


def _write_document(model: str) -> None:
    command = "python -m launch.probe " + " ".join(
        f"--{n}={FLAGS[n].value}" for n in ("model_path", "task", "data_dir", "train_cap", "probe_seed", "encodings")
        if FLAGS[n].value not in (None, ""))
    learnability.write_document(FLAGS.document, FLAGS.workdir, model, command=command,
                                notes=list(FLAGS.document_note))
    print(f"wrote {FLAGS.document}", flush=True)


if __name__ == "__main__":
    common.run(main)
