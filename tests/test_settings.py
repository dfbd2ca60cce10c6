"""pipeline/settings.py: every config field and flag checked once, before anything loads, by one validation that
names the field as the command spells it, its value and the allowed range; unknown keys refused; settings
frozen. And stages/registry.py: a new stage kind joins the plan and the config by registering."""
import dataclasses
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

import analysis_synthetic as synth
from configs import default
from skillneurons_jax.pipeline import build, settings as study_settings
from skillneurons_jax.pipeline.settings import StudySettings
from skillneurons_jax.analysis.report_context import Section
from skillneurons_jax.stages import registry
from skillneurons_jax.stages import report as report_stage

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(**fields):
    c = default.get_config()
    for dotted, value in fields.items():
        node, *path = dotted.split("__")
        target = c
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = value
    return c


@pytest.mark.parametrize("field, value, spelled", [
    ("max_examples", -1, "--config.max_examples=-1"),       # used to drop the last row of every split
    ("max_examples", 0, "--config.max_examples=0"),         # used to fail only after the model loaded
    ("suppression__max_examples", -1, "--config.suppression.max_examples=-1"),   # used to pass --dry_run
    ("suppression__random_draws", -2, "--config.suppression.random_draws=-2"),
    ("suppression__random_seed", -1, "--config.suppression.random_seed=-1"),
    ("suppression__noise_scale", -0.5, "--config.suppression.noise_scale=-0.5"),
    ("suppression__levels", "0,5,150", "--config.suppression.levels=150.0"),
    ("cost__stage_overhead_s", -1.0, "--config.cost.stage_overhead_s=-1.0"),
    ("analysis__n_permutations", 0, "--config.analysis.n_permutations=0"),
    ("analysis__alpha", 1.5, "--config.analysis.alpha=1.5"),
])
def test_each_numeric_field_is_checked_with_its_name_value_and_range(tmp_path, field, value, spelled):
    with pytest.raises(ValueError) as error:
        StudySettings.from_config(_config(**{field: value}), tmp_path)
    assert str(error.value).startswith(spelled + ": allowed: ")


def test_tune_block_and_stats_block_name_their_fields(tmp_path):
    with pytest.raises(ValueError, match=r"--config\.tune\.max_steps_by_task"):
        StudySettings.from_config(_config(tune__max_steps_by_task="tweetsairline:0"), tmp_path)
    with pytest.raises(ValueError, match=r"^--config\.tune\.batch_size=0: allowed: an integer >= 1"):
        StudySettings.from_config(_config(tune__batch_size=0), tmp_path)
    with pytest.raises(ValueError, match=r"--config\.stats\.median_bins"):
        StudySettings.from_config(_config(stats__median_bins=1), tmp_path)


def test_the_command_line_overrides_go_through_the_same_checks(tmp_path):
    for name, value in (("max_examples", -1), ("max_examples", 0), ("max_steps", 0), ("eval_every", -1)):
        with pytest.raises(ValueError) as error:
            StudySettings.from_config(default.get_config(), tmp_path, overrides={name: value})
        assert str(error.value).startswith(f"--{name}={value}: allowed: ")
    with pytest.raises(ValueError, match=r"--seeds='1,1'"):
        StudySettings.from_config(default.get_config(), tmp_path, overrides={"seeds": "1,1"})
    study = StudySettings.from_config(default.get_config(), tmp_path,
                                      overrides={"max_examples": 7, "max_steps": 3, "seeds": "4", "task": "sst2"})
    assert (study.max_examples, study.tune["max_steps"], study.seeds, study.tasks) == (7, 3, (4,), ("sst2",))
    assert study.optional_tasks == () and study.config["max_examples"] == 400   # the config as given, recorded


def test_unknown_keys_are_refused_at_every_level(tmp_path):
    c = default.get_config()
    c.suppresion = {"levels": "0,5"}                       # a typo of a block
    with pytest.raises(ValueError, match=r"--config\.suppresion: unknown key"):
        StudySettings.from_config(c, tmp_path)
    for field in ("suppression__levls", "tune__learning_rat", "analysis__n_permutation", "report__enable",
                  "cost__flops"):
        with pytest.raises(ValueError, match="unknown key"):
            StudySettings.from_config(_config(**{field: 1}), tmp_path)


def test_settings_are_frozen(tmp_path):
    study = StudySettings.from_config(default.get_config(), tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.max_examples = 3
    with pytest.raises(TypeError):
        study.tune["max_steps"] = 3
    assert isinstance(study.workdir, pathlib.Path)


def test_dry_run_refuses_a_bad_cap_before_anything_loads(tmp_path):
    """As a user types it (this one used to pass --dry_run): one line on stderr naming the field, exit 2, nothing
    written; the other caps fail the same way in-process (test above)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    flag = "--config.suppression.max_examples=-1"
    work = tmp_path / "w"
    proc = subprocess.run([sys.executable, "-m", "launch.reproduce", "--config=configs/default.py", flag,
                           "--dry_run", f"--workdir={work}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: ValueError: {flag}: allowed: an integer >= 1, or None (no cap)" in proc.stderr
    assert not work.exists()


@dataclasses.dataclass(frozen=True)
class _EchoSettings:
    words: int = 1

    @classmethod
    def from_config(cls, block, where="--config.echo."):
        block = dict(block or {})
        return cls(words=int(block.get("words", 1)))


def test_a_new_kind_joins_the_config_and_the_plan_by_registering(tmp_path, monkeypatch):
    """One module's register call: its config block is parsed into its settings type, its stages join the plan
    (with their cost, run and settings fingerprint) before the report, which depends on them."""
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    ran = []

    def plan(ctx):
        for task in ctx.tasks.clean:
            ctx.add(f"echo/{ctx.model.name}/{task}", [tmp_path / f"{task}.txt"], args={"task": task},
                    deps=[f"tune/{ctx.model.name}/{task}"], group_task=task,
                    settings=ctx.settings(task, echo=ctx.study.kind("echo")))

    registry.register("echo", _EchoSettings, config_key="echo", plan=plan, cost=lambda ctx, task: 1.5,
                      run=lambda ctx, task: ran.append(task), order=50)
    c = default.get_config()
    c.echo = {"words": 3}
    study = StudySettings.from_config(c, tmp_path / "w")
    assert study.kind("echo") == _EchoSettings(words=3)
    stages = build.build_plan(study)
    echo = [s for s in stages if s.kind == "echo"]
    assert [s.key.split("/")[-1] for s in echo] == ["tweetsairline", "tweetsother", "tweetstopic"]
    assert all(s.cost_s == 1.5 and s.settings["echo"] == _EchoSettings(words=3) for s in echo)
    echo[0].run()
    assert ran == ["tweetsairline"]
    keys = [s.key for s in stages]
    assert keys.index(echo[-1].key) < keys.index("report")
    assert echo[0].key in next(s for s in stages if s.key == "report").deps
    # without the block the kind is off only if its plan says so; the block of an unregistered kind is a typo
    monkeypatch.setattr(registry, "_KINDS", {k: v for k, v in registry._KINDS.items() if k != "echo"})
    with pytest.raises(ValueError, match=r"--config\.echo: unknown key"):
        StudySettings.from_config(c, tmp_path / "w")


def test_a_new_kinds_report_section_joins_the_report_by_registering(tmp_path, monkeypatch):
    """A kind's `sections` are drawn in every model's block of the report the report stage builds, after the core
    kinds' sections in the registry's order (transfer 20, predictivity 30, suppress 40, prune 50, then echo 60)."""
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    assert [s.title for s in registry.sections()] == ["transfer", "predictivity", "task specificity",
                                                      "suppression", "pruning"]

    def echo_section(context, model):
        context.document.h(3, "Echo")
        context.document.p(f"echo of {model}")

    registry.register("echo", None, plan=lambda ctx: None, cost=lambda ctx: 0.0, run=lambda ctx: None, order=60,
                      sections=[Section("echo", echo_section)])
    assert [s.title for s in registry.sections()][-2:] == ["pruning", "echo"]
    work = tmp_path / "w"
    synth.write_predictivity(work, "m", "sst2", np.full((2, 4), 0.6))
    ctx = types.SimpleNamespace(study=types.SimpleNamespace(workdir=work, data_dir=None),
                                tasks=types.SimpleNamespace(clean=()))
    markdown = report_stage.run(ctx, cfg={"analysis": {"n_permutations": 0}}).index_md.read_text()
    assert markdown.index("## Model m") < markdown.index("Predictivity") < markdown.index("echo of m")
    with pytest.raises(TypeError, match="not Section"):
        registry.register("echo2", None, plan=lambda ctx: None, cost=lambda ctx: 0.0, run=lambda ctx: None,
                          sections=[echo_section])


def test_check_field_table_covers_the_flags_of_the_launch_scripts():
    for name in ("max_examples", "max_steps", "eval_every"):
        assert name in study_settings.RANGES
    assert study_settings.check_field("max_examples", None) is None
    assert study_settings.check_field("max_examples", 5.0) == 5
    with pytest.raises(ValueError, match=r"^--config\.max_examples=2\.5: allowed"):
        study_settings.check_field("max_examples", 2.5)
