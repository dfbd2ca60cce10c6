"""Stage transfer: a source task's tuned prompts (every seed) evaluated on target tasks, each with the TARGET's
verbalizer, on the target's dev split (or, `split="test"`, its held-out test split: WORKDIR/test/transfer/).

    target = prepare_target(setup, data_dir, max_text_tokens=128, eval_batch_size=64, max_examples=None)
    paths = transfer([target, ...], "sst2", seeds, workdir, model_path=path, data_dir=data_dir)

Writes, atomically with a sidecar (io.write_sidecar), one file per pair in the analysis format
(docs/interfaces.md, "analysis"):

    WORKDIR/transfer/<model>/<source>__<target>.json
      {"model", "source", "target", "prompt_task": source, "seeds": [...], "accuracy": [per seed],
       "f1": [per seed], "n_dev": examples, "split": "dev"}

`<task>__<task>` is the task's own prompt; `<clean>__<adv>` an adversarial set with its clean prompt (Table 1).
A `TransferTarget` holds everything heavy of one (model, target): the target's readout, its encoded dev batches
and the compiled evaluation step (prompts of all seeds are one vmapped argument), so a caller that keeps it
(the pipeline's Session) evaluates S sources on a target with one compile per batch length, not one per source.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillneurons_jax import io, layout, parallel
from skillneurons_jax.analysis.report_context import Section
from skillneurons_jax.analysis.sections import transfer as transfer_section
from skillneurons_jax.data import batches as batching
from skillneurons_jax.prompt import files, scoring
from skillneurons_jax.stages import registry
from skillneurons_jax.stages.setup import TaskSetup, buckets_for, encode_split, hold, model_batches, round_up

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TransferTarget:
    """One target task of one model, ready to score any source's prompts."""
    setup: TaskSetup
    batches: list                 # the dev split's batches (dicts of numpy arrays)
    eval_step: Any                # scoring.make_eval_step of the target's readout
    params: Any                   # the model's parameters, replicated on the mesh
    mesh: Any
    n_dev: int                    # examples of the evaluated split
    max_text_tokens: int
    split: str = "dev"            # "test": the held-out split (results under WORKDIR/test/, layout.split_root)
    data: dict = dataclasses.field(default_factory=dict)    # batching.data_record of the split, for sidecars


def prepare_target(setup: TaskSetup, data_dir, *, max_text_tokens: int, eval_batch_size: int,
                   max_examples: Optional[int] = None, mesh=None, params=None, split: str = "dev"
                   ) -> TransferTarget:
    """Encodes the target's dev (or held-out test) split and compiles its evaluation step. `params`: the model's
    parameters already replicated on `mesh` (one device copy shared by every target), else replicated here."""
    mesh = parallel.make_mesh() if mesh is None else mesh
    encoded = encode_split(setup, split, data_dir, max_examples, int(max_text_tokens))
    batch_size = round_up(int(eval_batch_size), parallel.num_data_shards(mesh))
    batches = list(model_batches(encoded, batch_size, buckets=buckets_for([encoded]), sort_by_length=True))
    step = scoring.make_eval_step(setup.readout.score_fn(), mesh)
    params = parallel.replicate(setup.loaded.params, mesh) if params is None else params
    return TransferTarget(setup, batches, step, params, mesh, len(encoded), int(max_text_tokens), split,
                          batching.data_record({split: encoded}))


def transfer_pair(target: TransferTarget, source: str, seeds: Sequence[int], workdir, *,
                  outcomes: bool = False) -> dict:
    """Accuracy and F1 per seed of `source`'s prompts on the target's dev split (target verbalizer); with
    `outcomes`, also "correct" [S][E] (0/1 per seed and row, the split's row order) and "labels" [E]
    (scoring.example_outcomes: for paired per-example tests between prompts scored on the same rows)."""
    setup = target.setup
    # load_tuned_prompts checks each file against the model and the readout settings it was tuned with
    prompts_np, digests = files.load_tuned_prompts(workdir, setup.loaded, setup.readout, source,
                                                   [int(s) for s in seeds], target.max_text_tokens)
    prompts = parallel.replicate(jnp.asarray(prompts_np), target.mesh)
    extra = {}
    if outcomes:     # one pass gives the counts and the per-example outcomes (they agree by construction)
        step = scoring.make_outcome_step(setup.readout.score_fn(), target.mesh)
        confusion, correct, labels = scoring.example_outcomes(step, prompts, target.params, target.batches,
                                                              target.mesh)
        extra = {"correct": correct.astype(int).tolist(), "labels": labels.tolist()}
    else:
        confusion, _ = scoring.evaluate(target.eval_step, prompts, target.params, target.batches, target.mesh)
    return {"model": setup.loaded.name, "source": source, "target": setup.task.name, "prompt_task": source,
            "seeds": [int(s) for s in seeds], **scoring.per_seed(confusion),
            "n_dev": int(target.n_dev), "split": target.split, "prompt_sha256": digests, **extra}


def transfer(targets: Sequence[TransferTarget], source: str, seeds: Sequence[int], workdir, *, model_path,
             data_dir, max_examples: Optional[int] = None) -> list[pathlib.Path]:
    """Evaluates `source`'s prompts on every target and writes one file per pair; returns the paths.
    `model_path`, `data_dir` and `max_examples` are recorded in the sidecars."""
    out = []
    for target in targets:
        model, target_task = target.setup.loaded.name, target.setup.task.name
        path = layout.transfer_path(workdir, model, source, target_task, target.split)
        with hold(path, f"transfer {model}/{source}__{target_task}"):
            _transfer_one(target, source, seeds, workdir, path, model_path=model_path, data_dir=data_dir,
                          max_examples=max_examples)
        out.append(path)
    return out


def _transfer_one(target: TransferTarget, source: str, seeds: Sequence[int], workdir, path: pathlib.Path, *,
                  model_path, data_dir, max_examples: Optional[int]) -> None:
    """One pair, scored and written while its output is held."""
    t0 = time.time()
    result = transfer_pair(target, source, seeds, workdir)
    digests = result.pop("prompt_sha256")
    if jax.process_index() == 0:
        io.atomic_write_json(path, result)
        io.write_sidecar(path, stage="transfer", model_path=str(model_path), data_dir=str(data_dir),
                         max_examples=max_examples, prompt_sha256=digests,
                         readout={**target.setup.readout_settings.to_dict(), "max_text_tokens": target.max_text_tokens},
                         seconds=round(time.time() - t0, 3), **target.data)
    # the log, not the console: the run ends with Table 1 and the transfer matrix is in the report
    log.info("transfer %s: %s -> %s: accuracy %.4f (seeds %s)", result["model"], source, result["target"],
             np.mean(result["accuracy"]), result["seeds"])



# ---------------------------------------------------------------------------------------------------------------
# The stage kind (stages/registry.py): transfer/<m>/<source> for every clean source, on every target present
# (config transfer.enabled=False: only the source itself and its adversarial sets, which Table 1 needs)
# -> transfer/<m>/<source>__<target>.json; held out: transfer/<m>/<task>.test, the task's own prompt on its TEST
# split -> test/transfer/<m>/<task>__<task>.json
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TransferSettings:
    enabled: bool = True        # every source on every target; False: itself and its adversarial sets only

    @classmethod
    def from_config(cls, block, where: str = "--config.transfer.") -> "TransferSettings":
        block = dict(block.to_dict() if hasattr(block, "to_dict") else (block or {}))
        unknown = sorted(set(block) - {"enabled"})
        if unknown:
            raise ValueError(f"{where}{unknown[0]}: unknown key (known: enabled)")
        return cls(enabled=bool(block.get("enabled", True)))


def targets_of(ctx, source: str) -> list[str]:
    """The tasks `source`'s prompts are scored on (TransferSettings.enabled)."""
    tp = ctx.tasks
    if ctx.study.transfer.enabled:
        return list(tp.present)
    return [source] + [a for a in tp.adversarial if tp.prompt_task_of(a) == source]


def plan(ctx) -> None:
    m, w = ctx.model.name, ctx.workdir
    for source in ctx.tasks.clean:
        targets = targets_of(ctx, source)
        ctx.add(f"transfer/{m}/{source}", [layout.transfer_path(w, m, source, t) for t in targets],
                args={"source": source, "targets": targets}, deps=[f"tune/{m}/{source}"], group_task=source,
                settings=ctx.settings(source, targets=list(targets)))


def held_out(ctx, task: str) -> None:
    m = ctx.model.name
    ctx.add(f"transfer/{m}/{task}.test", [layout.transfer_path(ctx.workdir, m, task, task, "test")],
            args={"source": task, "targets": [task], "split": "test"}, deps=[f"tune/{m}/{task}"], group_task=task,
            settings=ctx.settings(task, targets=[task], split="test"))


def cost(ctx, source: str, targets: Sequence[str], split: str = "dev") -> float:
    """One evaluation pass over each target's rows; one compiled program per target."""
    cm = ctx.cost
    flops = sum(cm.forward(cm.sizes(t)[1], cm.sizes(t)[2]) for t in targets)
    return cm.seconds(flops, compiles=len(targets))


def run(ctx, source: str, targets: Sequence[str], split: str = "dev") -> list:
    s, path = ctx.study, ctx.model.path
    prepared = [ctx.session.transfer_target(path, t, s.data_dir, s.tune, s.max_examples, split) for t in targets]
    return transfer(prepared, source, list(s.seeds), s.workdir, model_path=path, data_dir=s.data_dir,
                    max_examples=s.max_examples)


KIND = registry.register("transfer", TransferSettings, config_key="transfer", plan=plan, cost=cost, run=run,
                         held_out=held_out, order=20, sections=[Section("transfer", transfer_section.build)])
