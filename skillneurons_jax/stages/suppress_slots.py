"""Stage kind suppress_slots: F5 with prompt slots left out of the skill-neuron selection (the work is
stages.suppress's, `exclude_slots`).

    suppress_slots/<m>/<task>__<task>  ->  WORKDIR/suppression_slots_excluded/<m>/<task>__<task>.json (+ .meta.json)
                                           (layout.suppression_slots_excluded_path; dev only)

Prompt slot 0 holds the readout ([MASK] / the tied readout's slot): the neurons most predictive there are partly the
readout itself, so a skill-neuron effect measured with them is partly built in. These stages select each clean
task's own skill neurons by Pred recomputed without `slots` (eqs. 4-5 over the remaining prompt slots, from the
predictivity npz's acc) and suppress them with the suppression block's settings (levels, scope, intervention,
random controls, dev cap), beside the default curves; analysis.verdicts adds the "F5 slot 0 excluded" rows.

Settings: config.suppress_slots (absent or empty: no stages), SlotSettings: `tasks` (None: every clean task of the
plan), `slots` (default 0).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from skillneurons_jax import fields, io, layout
from skillneurons_jax.data import tasks
from skillneurons_jax.stages import registry
from skillneurons_jax.stages import suppress as suppress_stage


@dataclasses.dataclass(frozen=True)
class SlotSettings:
    """config.suppress_slots: on unless enabled=False; the clean tasks (None: all) and the prompt slots left out."""
    enabled: bool = True
    tasks: Optional[tuple[str, ...]] = None
    slots: tuple[int, ...] = (0,)

    FIELDS = ("enabled", "tasks", "slots")

    @classmethod
    def from_config(cls, block, where: str = "--config.suppress_slots.") -> "SlotSettings":
        block = fields.block_dict(block)
        fields.refuse_unknown(block, cls.FIELDS, where)
        listed = [tasks.get_task(t) for t in fields.as_list(block.get("tasks"))]     # unknown name: ValueError
        for spec in listed:
            if spec.clean_task is not None:
                raise ValueError(f"{where}tasks: {spec.name!r} is an adversarial set; F5 is each clean task's own "
                                 f"skill neurons on its own dev split")
        raw = fields.as_list(block.get("slots", (0,)))
        try:
            slots = tuple(int(v) for v in raw)
        except (TypeError, ValueError):
            raise ValueError(f"{where}slots={block.get('slots')!r}: allowed: distinct integers >= 0, "
                             f"comma-separated") from None
        if not slots or min(slots) < 0 or len(set(slots)) != len(slots):
            raise ValueError(f"{where}slots={block.get('slots')!r}: allowed: distinct integers >= 0, "
                             f"comma-separated")
        return cls(enabled=bool(block.get("enabled", True)),
                   tasks=tuple(s.name for s in listed) if listed else None, slots=tuple(sorted(slots)))


def plan(ctx) -> None:
    s, m, settings = ctx.study, ctx.model.name, ctx.settings_of("suppress_slots")
    if settings is None or not settings.enabled:
        return
    prompt_len = int(s.tune.get("prompt_len", 100))
    if max(settings.slots) >= prompt_len:
        raise ValueError(f"--config.suppress_slots.slots={list(settings.slots)}: the prompts have {prompt_len} "
                         f"slots (0..{prompt_len - 1})")
    # the suppression block's fingerprint (the same curves as the default's) plus the slots left out
    fingerprint = {**s.suppression.fingerprint(s.max_examples), "excluded_prompt_slots": list(settings.slots)}
    for task in [t for t in ctx.tasks.clean if settings.tasks is None or t in settings.tasks]:
        out = layout.suppression_slots_excluded_path(ctx.workdir, m, task, task)
        ctx.add(f"suppress_slots/{m}/{task}__{task}", [out, io.sidecar_path(out)], args={"task": task},
                deps=[f"predictivity/{m}/{task}", f"tune/{m}/{task}"], group_task=task,
                settings=ctx.settings(task, suppression=fingerprint))


def cost(ctx, task: str) -> float:
    """As the default curves of the task (one pass per distinct mask)."""
    return suppress_stage.cost(ctx, source=task, target=task)


def run(ctx, task: str) -> dict:
    s, sp, path = ctx.study, ctx.study.suppression, ctx.model.path
    return suppress_stage.suppress(
        ctx.session.setup(path, task, s.tune), task, s.workdir, s.data_dir, list(s.seeds), model_path=path,
        max_text_tokens=int(s.tune["max_text_tokens"]), eval_batch_size=int(s.tune["eval_batch_size"]),
        max_examples=suppress_stage.smaller(sp.max_examples, s.max_examples), levels=list(sp.levels),
        scope=sp.scope, intervention=sp.intervention, noise_scale=sp.noise_scale,
        noise_relative_to=sp.noise_relative_to, random_draws=sp.random_draws, random_seed=sp.random_seed,
        random_from=sp.random_from, exclude_slots=ctx.settings_of("suppress_slots").slots)


KIND = registry.register("suppress_slots", SlotSettings, config_key="suppress_slots", plan=plan, cost=cost, run=run,
                         order=45)
