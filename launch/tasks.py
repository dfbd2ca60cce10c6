"""List what the data dir holds: one JSON line per task and split, and one per task whose files are absent.

    python -m launch.tasks --data_dir DIR [--only sst2,qnli] [--max_examples N]

Present split: {"task", "split", "examples", "label_counts": {"0": n0, "1": n1}, "source": PATH} plus
"carved" (the rule, when the split was carved from one file), "dropped" (rows left out by the label convention
or a row filter), "malformed" (QQP lines skipped), "balance_dropped" (rows per label left out to balance a carved
split) and, for a train split checked against its adversarial sets, "excluded_adversarial_originals" (examples
left out because they are originals of adversarial records) with "adversarial_match" (how they were matched)
when they apply. Every split role is listed, the held-out "test" split included where the task has one. Absent: {"task", "missing": [paths looked for],
"splits": [roles missing]}. Missing tasks are not an error; a broken file is (exit status 2, the file and line on
stderr).
"""
from __future__ import annotations

import json

from absl import flags

from launch import common
from skillneurons_jax.data import readers, tasks

_ONLY = flags.DEFINE_list("only", None, "Tasks to list (default: all tasks of the table).")


def task_lines(data_dir, names=None, max_examples=None) -> list[dict]:
    """The JSON objects that main prints, in table order."""
    lines = []
    for name in names or list(tasks.TASKS):
        spec = tasks.get_task(name)
        missing_paths, missing_splits = [], []
        for split, res in readers.available_splits(spec, data_dir).items():
            if res.kind == "missing":
                missing_splits.append(split)
                missing_paths += [p for p in res.looked_for if p not in missing_paths]
                continue
            data = readers.read_split(spec, split, data_dir, max_examples=max_examples)
            line = {"task": spec.name, "split": split, "examples": len(data.examples),
                    "label_counts": data.label_counts(spec.num_labels), "source": data.source}
            if data.carved:
                line["carved"] = data.carved
            if data.dropped:
                line["dropped"] = data.dropped
            if data.malformed:
                line["malformed"] = data.malformed
            if data.balance_dropped:
                line["balance_dropped"] = data.balance_dropped
            if data.adversarial_match is not None:
                line["excluded_adversarial_originals"] = data.excluded_adversarial_originals
                line["adversarial_match"] = data.adversarial_match
            lines.append(line)
        if missing_splits:
            lines.append({"task": spec.name, "missing": missing_paths, "splits": missing_splits})
    return lines


def main(argv):
    del argv
    for line in task_lines(common.FLAGS.data_dir, _ONLY.value, common.FLAGS.max_examples):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    common.run(main)
