"""The patching stage body: a loaded model, an adversarial task, the clean prompts and predictivity in; one JSON out.

No flags and no configs: the plan (pipeline/) loads the model and calls `patching_stage`, which reads the clean
task's prompts (`prompt.npy` per seed, with the readout their sidecar records) and predictivity npz and calls
`run_patching`.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from skillneurons_jax import io, layout
from skillneurons_jax.data import batches
from skillneurons_jax.prompt import files
from skillneurons_jax.data import tasks as task_table
from skillneurons_jax.robust import advglue, patching
from skillneurons_jax.stages import registry
from skillneurons_jax.stages import suppress as suppress_stage
from skillneurons_jax.stages.setup import hold


# The path is the workdir layout's (one home for every output name).
patching_path = layout.patching_path


def run_patching(loaded, readout, clean_task: str, adversarial_task: str, prompts, pred, data_dir,
                 settings: patching.PatchingSettings, out_path, *, seeds: Sequence[int], baseline=None,
                 batch_size: int = 32, max_text_tokens: int = 128, max_examples: Optional[int] = None,
                 sidecar: Optional[dict] = None) -> dict:
    """Patching curves of `adversarial_task`'s AdvGLUE pairs with `clean_task`'s prompts; writes `out_path`
    (atomically) and its sidecar; returns the JSON written.

    loaded: models.LoadedModel; readout: prompt.readout.Readout for the adversarial task's label words (the
    settings the prompts were trained with); prompts float [S, P, H] in the order of `seeds`; pred [L, N] and
    baseline [S, L, P, N] from the clean task's predictivity npz (baseline only for source "mean").
    Raises FileNotFoundError when the annotated AdvGLUE file is absent (advglue.skip_reason says so up front)."""
    start = time.time()
    prompts = np.asarray(prompts, np.float32)
    if prompts.ndim != 3 or prompts.shape[0] != len(seeds):
        raise ValueError(f"prompts have shape {prompts.shape}; expected [{len(seeds)} seeds, P, H]")
    pairs = advglue.load_pairs(adversarial_task, data_dir)
    adversarial, original = list(pairs.adversarial), list(pairs.original)
    if max_examples is not None:
        adversarial, original = adversarial[:max_examples], original[:max_examples]
    if not adversarial:
        raise ValueError(f"{pairs.source}: no adversarial/original pairs for {adversarial_task} "
                         f"(skipped: {pairs.summary()['skipped']})")
    encode = lambda examples: batches.encode(examples, loaded.tokenizer, adversarial_task, loaded.family,
                                             max_text_tokens)
    adv_batches = list(batches.iterate(encode(adversarial), batch_size))
    orig_batches = list(batches.iterate(encode(original), batch_size))
    run = patching.make_patch_run(readout, prompts.shape[1])
    result = patching.patching_curves(run, loaded.params, prompts,
                                      patching.pair_batches(adv_batches, orig_batches), pred, settings,
                                      baseline=baseline)
    doc = result.to_json(model=loaded.name, source=clean_task, target=adversarial_task, prompt_task=clean_task,
                         seeds=[int(s) for s in seeds], pairs=pairs.summary(), n_pairs_used=len(adversarial))
    io.atomic_write_json(out_path, doc)
    io.write_sidecar(out_path, stage="patching", settings=settings.to_dict(), wall_s=time.time() - start,
                     **(sidecar or {}))
    return doc


def patching_stage(setup, clean_task: str, seeds: Sequence[int], workdir, data_dir,
                   settings: patching.PatchingSettings, *, model_path, max_text_tokens: int, batch_size: int,
                   max_examples: Optional[int] = None) -> dict:
    """The plan's patching stage: `setup` is the ADVERSARIAL task's (stages.setup.TaskSetup: its label words and
    readout), `clean_task` the task whose prompts (checked against that readout by prompt.files) and predictivity
    npz (pred, and the TRAIN baseline for source "mean") are used. Holds and writes
    layout.patching_path(workdir, model, clean, adversarial, settings.source); returns the JSON written."""
    loaded, adversarial_task = setup.loaded, setup.task.name
    prompts, digests = files.load_tuned_prompts(workdir, loaded, setup.readout, clean_task, seeds,
                                                int(max_text_tokens))
    pred, baseline, _ = suppress_stage.load_source(workdir, loaded, clean_task, "encoder",
                                                need_baseline=settings.source == "mean")
    out = layout.patching_path(workdir, loaded.name, clean_task, adversarial_task, settings.source)
    with hold(out, f"patching {loaded.name}/{clean_task}__{adversarial_task}.{settings.source}"):
        return run_patching(loaded, setup.readout, clean_task, adversarial_task, prompts, pred, data_dir, settings,
                            out, seeds=[int(s) for s in seeds], baseline=baseline, batch_size=int(batch_size),
                            max_text_tokens=int(max_text_tokens), max_examples=max_examples,
                            sidecar={"model_path": str(model_path), "data_dir": str(data_dir),
                                     "max_examples": max_examples, "prompt_sha256": digests})


# ---------------------------------------------------------------------------------------------------------------
# The stage kind (stages/registry.py; config.patching): patching/<m>/<clean>__<adv>.<source> for each adversarial
# task present with its clean task's own prompts and skill neurons -> patching/<m>/<clean>__<adv>.<source>.json;
# a skip when advglue/dev_ann.json is absent
# ---------------------------------------------------------------------------------------------------------------
def plan(ctx) -> None:
    s, tp, m = ctx.study, ctx.tasks, ctx.model.name
    settings = s.kind("patching")
    if settings is None:
        return
    source = settings.source
    # patching reads the clean task's own prompts and skill neurons: an adversarial set evaluated with another
    # task's prompts (config adversarial_prompts, e.g. AdvQQP with MRPC's) has none to patch with
    for adversarial in [a for a in tp.adversarial if s.prompt_task_of(a) == task_table.clean_task_of(a)]:
        clean = task_table.clean_task_of(adversarial)
        ctx.add(f"patching/{m}/{clean}__{adversarial}.{source}",
                [layout.patching_path(ctx.workdir, m, clean, adversarial, source)],
                args={"clean": clean, "adversarial": adversarial},
                deps=[f"tune/{m}/{clean}", f"predictivity/{m}/{clean}"], group_task=clean,
                settings=ctx.settings(clean, patching=settings),
                skip_reason=advglue.skip_reason(adversarial, s.data_dir) if s.data_dir else
                "no data_dir: the AdvGLUE dev set with original_* texts is read from <data_dir>/advglue/dev_ann.json")


def cost(ctx, clean: str, adversarial: str) -> float:
    """Per level: the skill patch and `random_draws` random ones; plus the unpatched and the source runs."""
    settings = ctx.study.kind("patching")
    _, dev, seq = ctx.cost.sizes(adversarial)
    runs = len(settings.percents) * (1 + int(settings.random_draws)) + 2
    return ctx.cost.seconds(runs * ctx.cost.forward(dev, seq))


def run(ctx, clean: str, adversarial: str) -> dict:
    s, path = ctx.study, ctx.model.path
    return patching_stage(ctx.session.setup(path, adversarial, s.tune), clean, list(s.seeds), s.workdir, s.data_dir,
                          s.kind("patching"), model_path=path, max_text_tokens=int(s.tune["max_text_tokens"]),
                          batch_size=int(s.tune["eval_batch_size"]), max_examples=s.max_examples)


KIND = registry.register("patching", patching.PatchingSettings, config_key="patching", plan=plan, cost=cost, run=run,
                         order=130)
