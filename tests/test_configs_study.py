"""The configs' study design: the paper config trains the original budget (trap 9), read from the original
configs with their source; the default study compares tasks of one type across a domain shift with a task of
another type, on balanced dev sets large enough for suppression curves."""
import re
import types

import pytest

from configs import default, hparams, paper
from skillneurons_jax.data import tasks
from skillneurons_jax.pipeline import build, presence
from skillneurons_jax.pipeline import cost as cost_model
from skillneurons_jax.pipeline.settings import StudySettings
from skillneurons_jax.stages import tune as tune_stage
from skillneurons_jax.stages.tune import resolve_tune_config

PAPER_TASKS = ("sst2", "imdb", "movierationales", "qqp", "mrpc", "qnli", "mnli", "ethicsdeontology", "ethicsjustice")


@pytest.mark.parametrize("model,family,task,epochs,lr,batch", [
    ("roberta-base", "roberta", "sst2", 76, 1e-3, 16), ("roberta-base", "roberta", "imdb", 72, 1e-3, 16),
    ("roberta-base", "roberta", "mrpc", 72, 1e-3, 8), ("roberta-base", "roberta", "qqp", 96, 1e-3, 16),
    ("roberta-base", "roberta", "qnli", 128, 1e-3, 16), ("roberta-base", "roberta", "ethicsjustice", 128, 1e-3, 16),
    ("t5-base", "t5", "qnli", 100, 1e-2, 16), ("t5-base", "t5", "sst2", 200, 5e-3, 16),
    ("t5-base", "t5", "mnli", 200, 5e-3, 16), ("my-t5", "t5", "mrpc", 200, 5e-3, 16),
])
def test_paper_config_trains_the_original_budget(model, family, task, epochs, lr, batch):
    cfg = resolve_tune_config(paper.get_config().tune, model, family, task)
    assert (cfg["epochs"], cfg["learning_rate"], cfg["batch_size"]) == (epochs, lr, batch)
    assert cfg["prompt_len"] == 100 and cfg["max_text_tokens"] == 128
    assert cfg["patience"] is None                       # early stopping present but off, as the original


def test_every_original_number_names_its_file_and_commit():
    for row in ("roberta-base", "t5-base"):
        for task in PAPER_TASKS:
            entry = hparams.lookup(row, "x", task)
            assert 72 <= entry["epochs"] <= 200, (row, task)
            assert re.fullmatch(r"github\.com/\S+, path \S+\.config, commit [0-9a-f]{40}", entry["hparams_source"])
    # MiniLM has no original: its rows say they are ours, and it gets an epoch budget on every paper task
    for task in PAPER_TASKS:
        entry = hparams.lookup("all-minilm-l6-v2", "bert", task)
        assert entry["hparams_source"].startswith("ours") and entry["epochs"] > 10


def test_default_config_keeps_its_fixed_budget_and_patience_off():
    c = default.get_config()
    for task in default.OFFLINE_TASKS.split(","):
        cfg = resolve_tune_config(c.tune, "all-minilm-l6-v2", "bert", task)
        assert cfg["patience"] is None and cfg["batch_size"] == 8
        assert (cfg["max_steps"], cfg["learning_rate"]) == {"tweetsairline": (300, 3e-3), "tweetsother": (300, 1e-2),
                                                           "tweetstopic": (75, 3e-3)}[task]


def test_default_study_design():
    c = default.get_config()
    names = c.tasks.split(",")
    types = [tasks.get_task(t).task_type for t in names]
    assert len(names) == 3 and types.count(tasks.SENTIMENT) == 2 and tasks.TOPIC in types
    assert not {"tweetsneg", "tweetsubj"} & set(names)
    pairs = [p.split(":") for p in default.CROSS_PAIRS.split(",")]          # offered, not run by default
    pair_types = {(tasks.get_task(s).task_type == tasks.get_task(t).task_type) for s, t in pairs}
    assert pair_types == {True, False}                   # one same-type and one other-type cross pair
    assert c.suppression.max_examples >= 400 and c.max_examples >= 400
    # one dev evaluation at the end (no selection among evaluations): the tune stage reads the statistics' subset
    assert c.tune.eval_every >= max(resolve_tune_config(c.tune, "all-minilm-l6-v2", "bert", t)["max_steps"]
                                    for t in names)
    assert c.tune.dev_max_examples is None and c.tune.patience is None


def test_default_plan_spends_suppression_on_the_main_task_and_paper_configs_on_every_task(tmp_path):
    keys = {s.key for s in build.build_plan(StudySettings.from_config(default.get_config(), tmp_path), session=None)}
    suppress = sorted(k.split("/")[-1] for k in keys if k.startswith("suppress/"))
    assert suppress == ["tweetsairline__tweetsairline", "tweetsairline__tweetsairline.test"]
    assert sum(k.startswith("tune/") for k in keys) == 3 and sum(k.startswith("predictivity/") for k in keys) == 3
    settings = StudySettings.from_config(paper.get_config(), tmp_path)
    assert settings.suppression.tasks is None            # "": every task's own curves
    with pytest.raises(ValueError, match="nosuchtask"):
        c = default.get_config()
        c.suppression.tasks = "tweetsairline,nosuchtask"
        StudySettings.from_config(c, tmp_path)


def test_the_plan_cost_uses_the_budget_the_tune_stage_will_resolve(tmp_path):
    """config epochs None: the original epochs come from the hyperparameter table, and so must the estimate."""
    config = paper.get_config()
    config.max_examples = 1000
    settings = StudySettings.from_config(config, tmp_path)
    info = presence.ModelInfo(path="roberta-base", name="roberta-base", family="roberta")
    cost = cost_model.CostModel(settings, info, rate=1e12)
    assert cost.tune_settings("sst2")["epochs"] == 76 and cost.tune_settings("sst2")["batch_size"] == 16
    config.tune.epochs = 1
    one_epoch = cost_model.CostModel(StudySettings.from_config(config, tmp_path), info, rate=1e12)
    overhead = 3 * settings.cost.stage_overhead_s
    seconds = lambda model: tune_stage.cost(types.SimpleNamespace(cost=model), "sst2")
    assert seconds(cost) - overhead == pytest.approx(76 * (seconds(one_epoch) - overhead), rel=0.05)


def test_power_configs_score_full_sets_with_five_seeds_and_draws_from_the_rest():
    """Issue #29: >= 5 seeds, >= 5 random draws drawn outside the skill neurons, and no row cap that reaches an
    AdvGLUE set or a clean task's dev split (the arms on all 148 AdvSST-2 records, patching on all 130 pairs)."""
    from configs import robust, validation
    from skillneurons_jax.data import tasks as task_table
    for config in (validation.get_config(), robust.get_config()):
        assert len(config.seeds.split(",")) >= 5
        assert config.suppression.random_draws >= 5 and config.suppression.random_from == "rest"
        for task in config.tasks.split(","):
            if task != "ethicsdeontology":      # 1200 of its 3596 dev rows (configs/validation.py)
                assert config.max_examples >= task_table.size_hint(task)[1] or task == "qnli", task
    assert robust.get_config().patching.random_draws >= 5
    assert robust.get_config().patching.random_from == "rest"
    assert validation.get_config().tune.select_metric == "balanced_accuracy"
