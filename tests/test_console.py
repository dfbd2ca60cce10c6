"""The console of launch.reproduce: it ends with the results read from the report's summary.json (Table 1 rows and
every verdict sentence, then the report's path), the report opens with the same findings linked to their sections,
and routine data-reading notes go to the log file, not to the console."""
import json
import logging

import numpy as np
import pytest

import analysis_synthetic as synth  # noqa: E402  (tests/ is on sys.path under pytest)
from skillneurons_jax.analysis import headline
from skillneurons_jax.pipeline import runner

MODEL = "tiny"
KS = (0, 5, 15)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("console") / "work"
    rng = np.random.default_rng(0)
    for task, acc in (("sst2", [0.81, 0.85]), ("imdb", [0.75, 0.78]), ("mrpc", [0.66, 0.70]),
                      ("qqp", [0.70, 0.74]), ("advsst2", [0.55, 0.61])):
        synth.write_predictivity(workdir, MODEL, task, rng.uniform(0.5, 0.9, size=(2, 12)).astype(np.float32),
                                 rng=rng)
        source = "sst2" if task == "advsst2" else task
        synth.write_transfer(workdir, MODEL, source, task, acc, seeds=[0, 1])
    skill, random = synth.suppression_arrays(KS, 2, 1, rng)
    synth.write_suppression(workdir, MODEL, "sst2", "sst2", KS, skill, random)
    out = synth.build_report(workdir, workdir / "report", {
        "analysis": {"n_permutations": 10, "type_permutations": 10},
        "report": {"results_doc": str(workdir.parent / "docs" / "RESULTS.md"), "results_command": "python -m x"}})
    return workdir, out, json.loads(out.summary.read_text())


def test_the_console_ends_with_table_1_the_verdicts_and_the_report(built):
    workdir, out, summary = built
    lines = runner.closing_lines(workdir)
    text = "\n".join(lines)
    rows = summary["accuracy"]
    assert len(rows) == 5
    for row in rows:       # every Table 1 row with its accuracy, balanced accuracy, majority rate and seeds
        line = next(line for line in lines if f" {row['task']}" in line and "accuracy" in line)
        assert f"{100 * row['accuracy']['mean']:.1f} ± {100 * row['accuracy']['std']:.1f} %" in line
        assert "balanced" in line and "majority" in line and line.endswith(", 2 seed(s)")
    verdicts = [e["verdict"] for e in summary["suppression"][MODEL].values()]
    verdicts.append(summary["specificity"][MODEL]["type_test"]["verdict"])
    assert len(verdicts) == 2 and all(v in text for v in verdicts)
    assert lines[-2] == f"Report: {workdir / 'report' / 'index.html'}"
    assert lines[-1] == f"Neuron explorer: {workdir / 'report' / 'explorer.html'}"
    # a workdir without a report: nothing to print (the caller prints the plan's own last line)
    assert runner.closing_lines(workdir / "nowhere") == []


def test_the_report_opens_with_the_findings_linked_to_their_sections(built):
    _, out, summary = built
    page = out.index_html.read_text()
    found = headline.findings(summary)
    assert len(found) == 2
    first_table = page.index("<table")
    for f in found:
        link = page.index(f'<a href="#{f.anchor}">')
        assert link < first_table                      # the answers come before any table
        assert page.index(f'id="{f.anchor}"') > first_table
    markdown = out.index_md.read_text()
    assert markdown.index("## Findings") < markdown.index("## Accuracy (Table 1)")


def test_routine_data_notes_are_not_warnings(caplog):
    """Carving the offline tasks' splits out of one file is how the data comes: INFO (the log file), not ~58
    warning lines on the console."""
    from skillneurons_jax.data import readers
    with caplog.at_level(logging.INFO, logger="skillneurons_jax.data.readers"):
        readers.read_split("tweetsairline", "dev", None)
    assert any("carved from" in r.getMessage() for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_select_part_and_annotated_originals_are_not_warnings(tmp_path, caplog):
    """A dev split's select/measure carve and the AdvGLUE originals matched through dev_ann.json are recorded in the
    data record: INFO, not console warnings at every stage of a study."""
    from skillneurons_jax.data import readers
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    rows = [f"a film number {i} that is {'good' if i % 2 else 'bad'} .\t{i % 2}" for i in range(40)]
    (glue / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (glue / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:10]) + "\n")
    adv = tmp_path / "advglue"
    adv.mkdir()
    record = {"idx": 0, "sentence": "a film nmber 3 that is good .", "original_sentence": rows[3].split("\t")[0],
              "label": 1}
    (adv / "dev.json").write_text(json.dumps({"sst2": [{k: record[k] for k in ("idx", "sentence", "label")}]}))
    (adv / "dev_ann.json").write_text(json.dumps({"sst2": [record]}))
    with caplog.at_level(logging.INFO, logger="skillneurons_jax.data.readers"):
        split = readers.read_split("sst2", "dev", tmp_path, part=readers.Part("measure", 30), exclude_originals=True)
    assert split.excluded_adversarial_originals == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("left out 1 examples that are originals" in m for m in messages)
    assert any("the measure part" in m for m in messages)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_results_document_holds_the_measured_figures_with_their_provenance(built):
    workdir, out, summary = built
    doc = (workdir.parent / "docs" / "RESULTS.md").read_text()
    assert summary["results_doc"] == str(workdir.parent / "docs" / "RESULTS.md")
    assert "Command: `python -m x`" in doc and "Machines recorded" in doc
    for f in headline.findings(summary):
        assert f.sentence in doc
    for row in summary["accuracy"]:
        assert f"{100 * row['accuracy']['mean']:.1f}" in doc
    assert "Prompt transfer" in doc and "Task specificity" in doc


def test_the_log_file_takes_info_and_the_console_keeps_warnings(tmp_path):
    """launch.reproduce's logging (log_to_workdir after launch.common.run's console default): an INFO line of the
    library goes to WORKDIR/logs/, a warning to both, and the console shows no INFO."""
    import os
    import pathlib
    import subprocess
    import sys
    code = ("import logging, os\n"
            "from launch import common, reproduce\n"
            "def main(argv):\n"
            "    reproduce.log_to_workdir(os.environ['W'])\n"
            "    logging.getLogger('skillneurons_jax.data.readers').info('carved a split')\n"
            "    logging.getLogger('skillneurons_jax.data.readers').warning('a real problem')\n"
            "common.run(main)\n")
    repo = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "W": str(tmp_path / "w")})
    assert out.returncode == 0, out.stderr
    assert "a real problem" in out.stderr and "carved a split" not in out.stderr + out.stdout
    (log,) = [p for p in (tmp_path / "w" / "logs").iterdir() if ".INFO." in p.name]
    assert "carved a split" in log.read_text() and "a real problem" in log.read_text()
