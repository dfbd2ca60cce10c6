"""Every output path and file name under --workdir: the one place that knows the workdir's layout.

    WORKDIR/
      prompts/<model>/<task>/seed_<s>/   prompt.npy (+ prompt.npy.json), metrics.jsonl (+ .json), state/,
                                         run_config.json                              (stage tune)
      transfer/<model>/<source>__<target>.json (+ .meta.json)                         (stage transfer)
      predictivity/<model>/<task>.npz (+ <task>.npz.json)                             (stage predictivity)
      suppression/<model>/<source>__<target>.json (+ .meta.json)                      (stage suppress)
      prune/<model>/<task>.json (+ .meta.json), prune/<model>/<task>/seed_<s>/  the pruned model's accuracies
                                         and the pruned checkpoint folders (config.json, model.safetensors,
                                         tokenizer files; read by load_pretrained)        (stage prune)
      test/transfer/<model>/<task>__<task>.json, test/suppression/<model>/<task>__<task>.json
                                         the same files on the HELD-OUT test split (own prompt, own neurons)
      robust/<arm>/prompts/<model>/<task>/seed_<s>/  as prompts/ above, one tree per arm (stage robust_tune)
      robust/<arm>/eval/<model>/<task>.json (+ .meta.json)  the arm's prompts on the clean dev and its AdvGLUE sets
      patching/<model>/<clean>__<adversarial>.<source>.json (+ .meta.json)            (stage patching)
      explorer/<model>/<clean task>.npz (+ .npz.json)   the top neurons' dev activations (stage explorer)
      report/index.html, index.md, summary.json, figures/, explorer.html             (the report)
      probe/<model>/<task>.json (+ .meta.json)    linear probes on the frozen model's features  (stage probe)
      .stages/<key with / as __>.json                                                  (the plan's records)
      .hosts/host_<i>.json                  heartbeats of the hosts of a --process_count run (pipeline/hosts.py)
      .jax_cache/                                                                      (XLA's compilation cache)
      .study.lock                           held by the launch.reproduce run that works in this workdir
    A run writing a stage holds its lock: prompts/<model>/<task>/.lock, or .<file>.lock beside a result file.

`<model>` is `LoadedModel.name` (the checkpoint folder's basename, lower case). These names are contracts
(../shared/ARCHITECTURE.md, docs/interfaces.md): change them here and there together.
"""
from __future__ import annotations

import pathlib

PROMPTS_DIR = "prompts"
TRANSFER_DIR = "transfer"
PREDICTIVITY_DIR = "predictivity"
CONTROL_DIR = "predictivity_controls"
PERTURBED_PREDICTIVITY_DIR = "predictivity_perturbed_dev"
SUPPRESSION_SLOTS_DIR = "suppression_slot0_excluded"
SUPPRESSION_DIR = "suppression"
REPORT_DIR = "report"
SPLIT_DIRS = {"dev": "", "test": "test"}   # results on another split mirror the dev layout under this folder
ROBUST_DIR = "robust"
ROBUST_EVAL_DIR = "eval"
PATCHING_DIR = "patching"
PRUNE_DIR = "prune"
EXPLORER_DIR = "explorer"
EXPLORER_PAGE = "explorer.html"        # the neuron explorer, in the report folder
LOGS_DIR = "logs"                      # absl's log files of launch.reproduce (INFO and routine warnings)
PROBE_DIR = "probe"
STAGE_RECORDS_DIR = ".stages"
HOSTS_DIR = ".hosts"                   # launch.reproduce --process_count: one heartbeat record per host
JAX_CACHE_DIR = ".jax_cache"

PROMPT_FILE = "prompt.npy"             # [P, H] float32, best by dev accuracy
METRICS_FILE = "metrics.jsonl"         # one JSON object per evaluation and seed
RUN_CONFIG_FILE = "run_config.json"    # what a rerun must share to resume
STATE_DIR = "state"                    # orbax checkpoints of the training state
SEED_DIR_PREFIX = "seed_"
PAIR_SEPARATOR = "__"                  # <source>__<target>
REPORT_FILES = ("index.html", "index.md", "summary.json")
LOCK_FILE = ".lock"                    # held while a run writes a stage's outputs (io.stage_lock)
STUDY_LOCK_FILE = ".study.lock"        # held by the one study (launch.reproduce) working in a workdir


def task_prompts_dir(workdir, model: str, task: str) -> pathlib.Path:
    """WORKDIR/prompts/<model>/<task>/: the seed folders of one task."""
    return pathlib.Path(workdir) / PROMPTS_DIR / model / task


def run_dir(workdir, model: str, task: str, seed: int) -> pathlib.Path:
    """WORKDIR/prompts/<model>/<task>/seed_<s>/: one seed's tuning run."""
    return task_prompts_dir(workdir, model, task) / f"{SEED_DIR_PREFIX}{int(seed)}"


def prompt_path(workdir, model: str, task: str, seed: int) -> pathlib.Path:
    return run_dir(workdir, model, task, seed) / PROMPT_FILE


def metrics_path(workdir, model: str, task: str, seed: int) -> pathlib.Path:
    return run_dir(workdir, model, task, seed) / METRICS_FILE


def pair_name(source: str, target: str) -> str:
    return f"{source}{PAIR_SEPARATOR}{target}"


def split_root(workdir, split: str = "dev") -> pathlib.Path:
    """The folder whose transfer/ and suppression/ hold results on `split`: the workdir for dev (selection and
    eq. 3), WORKDIR/test for the held-out test split; the analysis reads either with the same functions."""
    if split not in SPLIT_DIRS:
        raise ValueError(f"results are kept for the splits {sorted(SPLIT_DIRS)}, not {split!r}")
    return pathlib.Path(workdir) / SPLIT_DIRS[split]


def transfer_path(workdir, model: str, source: str, target: str, split: str = "dev") -> pathlib.Path:
    return split_root(workdir, split) / TRANSFER_DIR / model / f"{pair_name(source, target)}.json"


def model_dir(workdir, stage_dir: str, model: str, split: str = "dev") -> pathlib.Path:
    """<workdir>[/test]/<stage_dir>/<model>: where a stage (PROMPTS_DIR, TRANSFER_DIR, PREDICTIVITY_DIR,
    SUPPRESSION_DIR) keeps one model's outputs."""
    return split_root(workdir, split) / stage_dir / model


def stage_root(workdir, stage_dir: str, split: str = "dev") -> pathlib.Path:
    """<workdir>[/test]/<stage_dir>: one folder per model below it."""
    return split_root(workdir, split) / stage_dir


def parse_seed_dir(name: str):
    """'seed_3' -> 3; None for any other folder name."""
    rest = name[len(SEED_DIR_PREFIX):] if name.startswith(SEED_DIR_PREFIX) else ""
    return int(rest) if rest.isdigit() else None


def predictivity_path(workdir, model: str, task: str) -> pathlib.Path:
    return pathlib.Path(workdir) / PREDICTIVITY_DIR / model / f"{task}.npz"


def suppression_slots_excluded_path(workdir, model: str, source: str, target: str) -> pathlib.Path:
    """Suppression whose skill neurons were selected with prompt slot 0 (the readout slot) left out of Pred
    (stages.suppress exclude_slots); a folder of its own, so no inventory mistakes it for the default."""
    return pathlib.Path(workdir) / SUPPRESSION_SLOTS_DIR / model / f"{pair_name(source, target)}.json"


def control_predictivity_path(workdir, model: str, adversarial: str) -> pathlib.Path:
    """F6a's control pair of an adversarial set: an unrelated set of its size scored with the same prompts and
    baseline (stages.predictivity control_for); a folder of its own, so no task inventory mistakes it for a task."""
    return pathlib.Path(workdir) / CONTROL_DIR / model / f"{adversarial}.npz"


def perturbed_predictivity_path(workdir, model: str, task: str) -> pathlib.Path:
    """The predictivity of a perturbed copy of `task`'s dev rows (robust_perturbed_predictivity, under a
    robustness arm's root); a folder of its own, so no task inventory mistakes it for a task."""
    return pathlib.Path(workdir) / PERTURBED_PREDICTIVITY_DIR / model / f"{task}.npz"


def suppression_path(workdir, model: str, source: str, target: str, split: str = "dev") -> pathlib.Path:
    return split_root(workdir, split) / SUPPRESSION_DIR / model / f"{pair_name(source, target)}.json"


def prune_path(workdir, model: str, task: str) -> pathlib.Path:
    return pathlib.Path(workdir) / PRUNE_DIR / model / f"{task}.json"


def pruned_model_dir(workdir, model: str, task: str, seed: int) -> pathlib.Path:
    """The pruned checkpoint folder of one seed (its prompt's means are folded into it)."""
    return pathlib.Path(workdir) / PRUNE_DIR / model / task / f"{SEED_DIR_PREFIX}{int(seed)}"


def robust_arm_dir(workdir, arm: str) -> pathlib.Path:
    """WORKDIR/robust/<arm>/: a workdir-shaped tree of one arm of the robustness study (issue 17), so the arm's
    prompts sit at prompt_path(robust_arm_dir(workdir, arm), model, task, seed) and every reader of tuned prompts
    (prompt.files.load_tuned_prompts, the transfer stage) reads them unchanged."""
    return pathlib.Path(workdir) / ROBUST_DIR / arm


def robust_prompt_path(workdir, model: str, task: str, arm: str, seed: int) -> pathlib.Path:
    return prompt_path(robust_arm_dir(workdir, arm), model, task, seed)


def robust_metrics_path(workdir, model: str, task: str, arm: str, seed: int) -> pathlib.Path:
    return metrics_path(robust_arm_dir(workdir, arm), model, task, seed)


def robust_eval_path(workdir, model: str, task: str, arm: str) -> pathlib.Path:
    """WORKDIR/robust/<arm>/eval/<model>/<task>.json: the arm's prompts of `task` on its clean dev and AdvGLUE sets."""
    return robust_arm_dir(workdir, arm) / ROBUST_EVAL_DIR / model / f"{task}.json"


def patching_path(workdir, model: str, clean_task: str, adversarial_task: str, source: str) -> pathlib.Path:
    """WORKDIR/patching/<model>/<clean>__<adversarial>.<source>.json (source: "original" | "mean")."""
    return pathlib.Path(workdir) / PATCHING_DIR / model / f"{pair_name(clean_task, adversarial_task)}.{source}.json"


def explorer_path(workdir, model: str, clean_task: str) -> pathlib.Path:
    """WORKDIR/explorer/<model>/<clean task>.npz: the explorer stage's record of a clean task and its sets."""
    return pathlib.Path(workdir) / EXPLORER_DIR / model / f"{clean_task}.npz"


def explorer_page(workdir) -> pathlib.Path:
    return report_dir(workdir) / EXPLORER_PAGE


def logs_dir(workdir) -> pathlib.Path:
    """WORKDIR/logs/: absl's log files of a launch.reproduce run (everything the console leaves out)."""
    return pathlib.Path(workdir) / LOGS_DIR


def probe_path(workdir, model: str, task: str) -> pathlib.Path:
    """WORKDIR/probe/<model>/<task>.json: the frozen-feature probes of one task (stages.probe)."""
    return pathlib.Path(workdir) / PROBE_DIR / model / f"{task}.json"


def report_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / REPORT_DIR


def report_outputs(workdir) -> list[pathlib.Path]:
    """The report files whose presence marks the report stage done."""
    return [report_dir(workdir) / name for name in REPORT_FILES]


def host_record_path(workdir, index: int) -> pathlib.Path:
    """WORKDIR/.hosts/host_<i>.json: host i's heartbeat while it runs its share of a --process_count plan."""
    return pathlib.Path(workdir) / HOSTS_DIR / f"host_{int(index)}.json"


def stage_record_path(workdir, key: str) -> pathlib.Path:
    """WORKDIR/.stages/<key>.json, '/' in the key written as '__'."""
    return pathlib.Path(workdir) / STAGE_RECORDS_DIR / (key.replace("/", "__") + ".json")


def stage_failure_path(workdir, key: str) -> pathlib.Path:
    """WORKDIR/.stages/<key>.failed: the reason a stage failed or could not run in its host's last run (removed
    when it starts again): the hosts waiting for it stop waiting."""
    return pathlib.Path(workdir) / STAGE_RECORDS_DIR / (key.replace("/", "__") + ".failed")


def lock_path(output) -> pathlib.Path:
    """The lock file that gives one run at a time an output (io.stage_lock): `<folder>/.lock` for a stage's output
    folder (tune: prompts/<model>/<task>/), `<folder>/.<name>.lock` beside an output file (one per result file, so
    hosts of a pod that own different stages of one model never wait for each other)."""
    output = pathlib.Path(output)
    if output.suffix == "":
        return output / LOCK_FILE
    return output.with_name(f".{output.name}.lock")


def study_lock_path(workdir) -> pathlib.Path:
    """WORKDIR/.study.lock: held (io.stage_lock) by the study that runs its plan in the workdir, so that a second
    study is refused at its start; the hosts of one --process_count run share it (host 0 holds it)."""
    return pathlib.Path(workdir) / STUDY_LOCK_FILE


def jax_cache_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / JAX_CACHE_DIR
