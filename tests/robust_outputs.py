"""Writers of synthetic robustness-study outputs in the exact formats analysis.robust_tables reads (shared by
test_robust_summary.py and test_report_robustness.py):
  robust/<arm>/eval/<model>/<task>.json                  (robust.tuning.evaluate_arm)
  robust/<arm>/predictivity/<model>/<set>.npz (+ sidecar) (the robust_predictivity stages: stages.predictivity)
  robust/<arm>/predictivity_perturbed_dev/<model>/<task>.npz (+ sidecar) (robust_perturbed_predictivity)
  predictivity/<model>/<task>.npz                         (the main study's, whose pred picks the skill neurons)
  patching/<model>/<clean>__<adversarial>.<source>.json  (robust.stage.run_patching)"""
import numpy as np

from skillneurons_jax import io, layout


def write_arm_eval(workdir, arm, clean, adversarial, seeds=(0, 1, 2), model="m", task="sst2",
                   adversarial_task="advsst2", n_clean=100, n_adversarial=40, top_percent=50.0, scope="layer",
                   clean_label_counts=None, clean_correct=None, adversarial_correct=None):
    """One arm's evaluation: `clean` and `adversarial` are accuracies [S], one per seed in `seeds`.
    clean_label_counts ([C]): the clean row also records a confusion per seed whose rows (gold labels) sum to
    them (only the label counts are read from it: its cells are not the accuracies').
    clean_correct / adversarial_correct ([S, E] 0/1): per-example outcomes (their means replace the accuracies,
    their E the n; labels all 0)."""
    path = layout.robust_eval_path(workdir, model, task, arm)

    def outcomes(row, correct):
        if correct is not None:
            correct = np.asarray(correct, int)
            row.update(accuracy=correct.mean(axis=1).tolist(), f1=correct.mean(axis=1).tolist(),
                       n_dev=int(correct.shape[1]), correct=correct.tolist(), labels=[0] * correct.shape[1])
        return row

    clean_row = outcomes({"target": task, "accuracy": clean, "f1": clean, "n_dev": n_clean}, clean_correct)
    if clean_label_counts is not None:
        # rows (gold labels) sum to the counts, columns do not: [[c0 - 5, 5], [0, c1]]
        counts = [int(c) for c in clean_label_counts]
        clean_row["confusion"] = [[[counts[0] - 5, 5], [0, counts[1]]] for _ in seeds]
    doc = {"model": model, "task": task, "arm": arm, "seeds": list(seeds),
           "clean": clean_row,
           "adversarial": {adversarial_task: outcomes({"target": adversarial_task, "accuracy": adversarial,
                                                       "f1": adversarial, "n_dev": n_adversarial},
                                                      adversarial_correct)},
           "anchor": {"strength": 1.0 if arm == "anchored" else 0.0},
           "skill_neurons": {"top_percent": top_percent, "scope": scope}}
    io.atomic_write_json(path, doc)
    io.write_sidecar(path, stage="robust_tune")     # the sidecar (.meta.json) is not read as a result
    return path


# What robust_perturbed_predictivity records as its sidecar's dev_transform (robust.perturbed_predictivity_stage).
PERTURBED_DEV = {"kind": "perturbed", "rows": "dev (measure)", "seed": 100003,
                 "perturbations": {"char_swap": 0.1, "word_drop": 0.05}, "mode": "all", "neighbour_k": 8,
                 "protected_words": []}


def write_predictivity(root, task, pred_per_seed, seeds=(0, 1, 2), model="m", prompt_task="sst2", n_dev=None,
                       dev_transform=None, **extra):
    """A predictivity npz (pred [L, N] = the seed mean, pred_per_seed [S, L, N], and any `extra` arrays such as
    the stage's null_pred_layer_mean or matched_n / matched_pred_per_seed) and its sidecar under `root` (a workdir,
    or layout.robust_arm_dir of one); n_dev recorded when given. dev_transform (e.g. PERTURBED_DEV): the
    perturbed dev's result instead (layout.perturbed_predictivity_path, the record in its sidecar)."""
    pred_per_seed = np.asarray(pred_per_seed, np.float32)
    path = (layout.predictivity_path(root, model, task) if dev_transform is None
            else layout.perturbed_predictivity_path(root, model, task))
    io.atomic_save_npz(path, pred=pred_per_seed.mean(axis=0), pred_per_seed=pred_per_seed,
                       **{k: np.asarray(v) for k, v in extra.items()})
    io.write_sidecar(path, stage="predictivity", task=task, prompt_task=prompt_task, baseline_task=prompt_task,
                     seeds=list(seeds), **({} if n_dev is None else {"n_dev": int(n_dev)}),
                     **({} if dev_transform is None else {"dev_transform": dev_transform}))
    return path


def patching_doc(model="m", clean="sst2", adversarial="advsst2", source="original", n_examples=30):
    """A patching result over 2 seeds and 2 random draws at k = 0 and 5 (%): skill [S] and random [D, S] per k."""
    return {"model": model, "source": clean, "target": adversarial, "seeds": [0, 1], "ks": [0, 5],
            "skill": {"0": [0.4, 0.5], "5": [0.7, 0.7]},
            "random": {"0": [[0.4, 0.5]] * 2, "5": [[0.4, 0.6], [0.5, 0.5]]},
            "adversarial_accuracy": [0.4, 0.5],
            "original_accuracy": [0.9, 0.8] if source == "original" else [None, None],
            "patch_source": source, "n_examples": n_examples}


def write_patching(workdir, doc):
    """Writes `doc` (patching_doc's format) where the patching stage would; returns the path."""
    path = layout.patching_path(workdir, doc["model"], doc["source"], doc["target"], doc["patch_source"])
    io.atomic_write_json(path, doc)
    return path
