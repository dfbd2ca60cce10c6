"""What a study reads and copies can be trusted: a copy from another workdir (reuse_from) writes only bytes its
source's own records vouch for and nothing reached through a symbolic link out of the source; every folder a user
hands us (--prompt_dir, a workdir resumed, the report's workdir) is read only inside; one study per workdir; a cut
metrics.jsonl line; a PyTorch prompt file without torch. Each case leaves what the user made as it was."""
import json
import os
import pathlib
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from skillneurons_jax import io, layout
from skillneurons_jax.pipeline import plan, runner
from skillneurons_jax.prompt import files, train
from skillneurons_jax.stages import predictivity as predictivity_stage
from skillneurons_jax.stages import tune as tune_stage

REPO = pathlib.Path(__file__).resolve().parents[1]
M, T, SEEDS, PLANNED = "tiny", "sst2", (0, 1), 4
FINGERPRINT = {"learning_rate": 0.1, "batch_size": 8, "model": M, "prompt_shape": [4, 6]}
RUN_INFO = {"model": M, "task": T, "readout": "tied"}
SIDECAR = {"config": {"learning_rate": 0.1, "batch_size": 8}, "data_dir": "data", "seeds": list(SEEDS),
           "devices": 1, "processes": 1, "truncation": {}, "excluded_adversarial_originals": 0}


def _snapshot(root: pathlib.Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_run(folder: pathlib.Path, seed: int) -> pathlib.Path:
    """One seed's finished tuning run as stages.tune writes it (run_config, metrics and their sidecars, prompt)."""
    folder.mkdir(parents=True)
    io.atomic_write_json(folder / layout.RUN_CONFIG_FILE, FINGERPRINT)
    rows = [{"seed": seed, "step": s, "dev_accuracy": 0.5 + s / 100} for s in (2, PLANNED)]
    io.atomic_write_text(folder / layout.METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    io.write_sidecar(folder / layout.METRICS_FILE, **RUN_INFO, **SIDECAR)
    prompt = np.random.default_rng(seed).normal(size=(4, 6)).astype(np.float32)
    files.write_prompt(folder, prompt, {**RUN_INFO, **SIDECAR, "seed": seed, "best_step": PLANNED,
                                        "dev_accuracy": 0.54, "dev_f1": 0.5})
    return folder


def _source(tmp_path) -> pathlib.Path:
    root = tmp_path / "source"
    for seed in SEEDS:
        _write_run(layout.run_dir(root, M, T, seed), seed)
    return root


def _copy(source, target):
    return tune_stage.copy_finished_run(source, target, M, T, SEEDS, FINGERPRINT, RUN_INFO, SIDECAR, own_keys=(),
                                        planned=PLANNED)


# ------------------------------------------------------------------------------------------------ verified copies
def test_an_intact_finished_run_is_copied_byte_for_byte(tmp_path):
    source = _source(tmp_path)
    summary = _copy(source, tmp_path / "w")
    assert summary is not None and summary["steps"] == PLANNED
    for seed in SEEDS:
        assert (layout.prompt_path(tmp_path / "w", M, T, seed).read_bytes()
                == layout.prompt_path(source, M, T, seed).read_bytes())
        # the copy's sidecars record the sha256 of the copy's own bytes: a copy of the copy verifies in turn
        for path in (layout.prompt_path(tmp_path / "w", M, T, seed), layout.metrics_path(tmp_path / "w", M, T, seed)):
            assert json.loads(io.sidecar_path(path).read_text())["sha256"] == io.sha256_of(path)
    assert _copy(tmp_path / "w", tmp_path / "again") is not None


@pytest.mark.parametrize("tampered", [layout.PROMPT_FILE, layout.METRICS_FILE])
def test_a_file_changed_after_the_source_finished_is_not_copied(tmp_path, capsys, tampered):
    source = _source(tmp_path)
    path = layout.run_dir(source, M, T, 1) / tampered
    if tampered == layout.PROMPT_FILE:     # still a valid prompt, only other numbers
        np.save(path, np.ones((4, 6), np.float32))
    else:
        path.write_text(path.read_text().replace('"dev_accuracy": 0.54', '"dev_accuracy": 0.99'))
    before = _snapshot(source)
    assert _copy(source, tmp_path / "w") is None
    err = capsys.readouterr().err
    assert f"{path} changed after it was written" in err and "training" in err
    assert _snapshot(source) == before and not (tmp_path / "w").exists()


def test_a_source_without_recorded_hashes_is_not_copied_and_stage_records_vouch(tmp_path, capsys):
    source = _source(tmp_path)
    for seed in SEEDS:                     # sidecars of code that recorded no sha256
        for name in (layout.PROMPT_FILE, layout.METRICS_FILE):
            side = io.sidecar_path(layout.run_dir(source, M, T, seed) / name)
            side.write_text(json.dumps({k: v for k, v in json.loads(side.read_text()).items() if k != "sha256"}))
    assert _copy(source, tmp_path / "w") is None
    assert "no record under" in capsys.readouterr().err
    # the plan's completion record of the tune stage vouches for the same bytes
    outputs = [layout.prompt_path(source, M, T, s) for s in SEEDS] + [layout.metrics_path(source, M, T, s)
                                                                     for s in SEEDS]
    plan.mark_done(plan.Stage(f"tune/{M}/{T}", "tune", outputs, run=lambda: None), source, 1.0)
    assert _copy(source, tmp_path / "w") is not None
    np.save(layout.prompt_path(source, M, T, 0), np.zeros((4, 6), np.float32))
    assert _copy(source, tmp_path / "w2") is None
    assert "tune__tiny__sst2.json records" in capsys.readouterr().err


def test_a_prompt_that_links_out_of_the_source_is_not_copied(tmp_path, capsys):
    source = _source(tmp_path)
    outside = tmp_path / "elsewhere.npy"
    np.save(outside, np.full((4, 6), 7.0, np.float32))
    link = layout.prompt_path(source, M, T, 0)
    link.unlink()
    link.symlink_to(outside)
    io.write_sidecar(link, **RUN_INFO, **SIDECAR, seed=0, best_step=PLANNED, dev_accuracy=0.5, dev_f1=0.5)
    assert json.loads(io.sidecar_path(link).read_text())["sha256"] == io.sha256_of(outside)  # even so, refused
    before = _snapshot(source)
    assert _copy(source, tmp_path / "w") is None
    err = capsys.readouterr().err
    assert f"{link} leads outside {source}" in err and "refused" in err
    assert _snapshot(source) == before and not (tmp_path / "w").exists()
    if pathlib.Path("/etc/hostname").exists():          # the case as a user met it
        link.unlink()
        link.symlink_to("/etc/hostname")
        assert _copy(source, tmp_path / "w") is None and "leads outside" in capsys.readouterr().err


def test_a_seed_folder_that_links_out_of_the_source_is_not_copied(tmp_path, capsys):
    source = _source(tmp_path)
    elsewhere = _write_run(tmp_path / "elsewhere" / "seed_1", 1)      # a complete, self-consistent run
    seed_dir = layout.run_dir(source, M, T, 1)
    for p in sorted(seed_dir.iterdir()):
        p.unlink()
    seed_dir.rmdir()
    seed_dir.symlink_to(elsewhere, target_is_directory=True)
    assert _copy(source, tmp_path / "w") is None
    assert f"{seed_dir} leads outside {source}" in capsys.readouterr().err
    assert not (tmp_path / "w").exists() and (elsewhere / layout.PROMPT_FILE).exists()


def _predictivity_source(root: pathlib.Path, fingerprint: dict) -> pathlib.Path:
    out = layout.predictivity_path(root, M, T)
    io.atomic_save_npz(out, pred=np.full((2, 3), 0.6, np.float32))
    io.write_sidecar(out, train_fingerprint=fingerprint, n_dev=16, model_path="model", baseline_task=T,
                     model_accuracy=[0.5])
    return out


def test_a_predictivity_result_is_copied_only_as_recorded(tmp_path, caplog):
    fingerprint = {"model": M, "baseline_task": T, "seeds": [0]}
    source = tmp_path / "source"
    out = _predictivity_source(source, fingerprint)

    def copy(target):
        return predictivity_stage._copy_same_result(source, tmp_path / target, M, T, fingerprint, 16, "model")

    assert copy("intact") is not None
    assert layout.predictivity_path(tmp_path / "intact", M, T).read_bytes() == out.read_bytes()
    io.atomic_save_npz(out, pred=np.full((2, 3), 0.9, np.float32))      # changed after it was written
    assert copy("tampered") is None and "changed after it was written" in caplog.text
    assert not layout.predictivity_path(tmp_path / "tampered", M, T).exists()
    outside = _predictivity_source(tmp_path / "elsewhere", fingerprint)
    out.unlink()
    out.symlink_to(outside)
    caplog.clear()
    assert copy("linked") is None and "leads outside" in caplog.text
    assert not layout.predictivity_path(tmp_path / "linked", M, T).exists()


# ------------------------------------------------------------------------------------------------ folders a user gives
def test_prompt_dir_refuses_links_out_of_it(tmp_path):
    given = tmp_path / "prompts"
    seed_dir = given / "seed_0"
    seed_dir.mkdir(parents=True)
    if pathlib.Path("/etc/hostname").exists():
        (seed_dir / "prompt.npy").symlink_to("/etc/hostname")
        with pytest.raises(io.OutsideFolder, match="prompt.npy leads outside"):
            files.find_prompts(seed_dir)
        with pytest.raises(io.OutsideFolder, match="leads outside"):
            files.find_prompts(given)
        (seed_dir / "prompt.npy").unlink()
    np.save(seed_dir / "prompt.npy", np.zeros((4, 6), np.float32))
    elsewhere = tmp_path / "elsewhere" / "seed_1"
    elsewhere.mkdir(parents=True)
    np.save(elsewhere / "prompt.npy", np.ones((4, 6), np.float32))
    (given / "seed_1").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(io.OutsideFolder, match="seed_1/prompt.npy leads outside"):
        files.find_prompts(given)
    (given / "seed_1").unlink()
    (given / "seed_1").symlink_to(seed_dir, target_is_directory=True)     # a link that stays inside is fine
    assert [p.parent.name for p in files.find_prompts(given)] == ["seed_0", "seed_1"]


def test_a_resumed_run_reads_nothing_through_a_link_out_of_the_workdir(tmp_path):
    work = tmp_path / "work"
    run = layout.run_dir(work, M, T, 0)
    run.mkdir(parents=True)
    (tmp_path / "elsewhere" / "4").mkdir(parents=True)
    (run / "state").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    setup = types.SimpleNamespace(loaded=types.SimpleNamespace(name=M), task=types.SimpleNamespace(name=T))
    with pytest.raises(io.OutsideFolder, match="state leads outside"):
        tune_stage.tune(setup, [0], work, None, None, model_path="model")
    assert not layout.lock_path(layout.task_prompts_dir(work, M, T)).exists()


def test_the_report_reads_nothing_through_a_link_out_of_the_workdir(tmp_path):
    from skillneurons_jax.analysis import report
    work = tmp_path / "work"
    outside = _predictivity_source(tmp_path / "elsewhere", {})
    link = layout.predictivity_path(work, M, T)
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    with pytest.raises(io.OutsideFolder, match=f"{T}.npz leads outside"):
        report.build_report(work, work / "report", {})
    assert not (work / "report").exists()


# ------------------------------------------------------------------------------------------------ one study per workdir
def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _hold(workdir: pathlib.Path, pid: int) -> pathlib.Path:
    lock = layout.study_lock_path(workdir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2026-01-02T03:04:05+00:00",
                                "what": "a study"}))
    return lock


def test_a_study_holds_its_workdir_for_its_whole_run(tmp_path, monkeypatch):
    seen = []

    def body(settings, workdir, **kw):
        seen.append(json.loads(layout.study_lock_path(workdir).read_text()))
        return {"ran": 0}

    monkeypatch.setattr(runner, "_run_plan", body)
    work = tmp_path / "work"
    runner.run_plan(types.SimpleNamespace(workdir=work))
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname() and seen[0]["started"]
    assert not layout.study_lock_path(work).exists()                 # released at the end
    with pytest.raises(RuntimeError):                                 # and however the run ends
        monkeypatch.setattr(runner, "_run_plan", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        runner.run_plan(types.SimpleNamespace(workdir=work))
    assert not layout.study_lock_path(work).exists()


def test_a_second_study_on_a_busy_workdir_is_refused_at_its_start(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_run_plan", lambda *a, **k: {"ran": 0})
    work = tmp_path / "work"
    sleeper = _sleeper()
    try:
        lock = _hold(work, sleeper.pid)
        before = _snapshot(work)
        with pytest.raises(io.LockHeld) as info:
            runner.run_plan(types.SimpleNamespace(workdir=work))
        message = str(info.value)
        assert f"pid {sleeper.pid} on host {socket.gethostname()!r}" in message
        assert "since 2026-01-02T03:04:05+00:00" in message
        assert _snapshot(work) == before
        # the hosts of one --process_count run share the workdir: host 1 runs while host 0 holds it
        assert runner.run_plan(types.SimpleNamespace(workdir=work), process_index=1, process_count=2) == {"ran": 0}
        assert lock.read_bytes() == before[layout.STUDY_LOCK_FILE]
    finally:
        sleeper.kill()
        sleeper.wait()
    # its holder died (killed): the stale lock is taken over
    assert runner.run_plan(types.SimpleNamespace(workdir=work)) == {"ran": 0}
    assert not layout.study_lock_path(work).exists()


def test_launch_reproduce_on_a_busy_workdir_exits_2_naming_the_holder(tmp_path):
    work = tmp_path / "work"
    sleeper = _sleeper()
    try:
        _hold(work, sleeper.pid)
        before = _snapshot(work)
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
        res = subprocess.run([sys.executable, "-m", "launch.reproduce", "--config=configs/default.py",
                              f"--workdir={work}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 2, res.stderr[-3000:]
        assert f"pid {sleeper.pid} on host" in res.stderr and "since 2026-01-02" in res.stderr
        assert "Traceback" not in res.stderr and _snapshot(work) == before
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------------------------------------ metrics.jsonl
def test_a_cut_last_metrics_line_is_skipped_and_any_other_bad_line_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2, "dev_accuracy": 0.5}\n{"step": 4, "dev_accuracy": 0.6}\n{"step": 6, "dev_acc')
    train._truncate_metrics(path, 4)                 # what resuming from the checkpoint of step 4 does
    assert [r["step"] for r in json.loads("[" + ",".join(path.read_text().splitlines()) + "]")] == [2, 4]
    path.write_text('{"step": 2}\n{"step": 4, "dev_acc\n{"step": 6}\n')
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not JSON"):
        train._truncate_metrics(path, 6)
    path.write_text('{"step": 2}\n{"dev_accuracy": 0.5}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: lacks \['step'\]"):
        train._truncate_metrics(path, 6)
    path.write_bytes(before)
    with pytest.raises(ValueError, match="line 2"):   # the stage's reader is the same one
        tune_stage.budget_extension(tmp_path, 10, 2)
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------------------ torch-less prompts
def test_a_pytorch_prompt_file_without_torch_says_how_to_install_it(tmp_path, monkeypatch):
    prompt = tmp_path / "task_prompt"
    prompt.write_bytes(b"PK\x03\x04 a PyTorch zip file")
    monkeypatch.setitem(sys.modules, "torch", None)      # what `import torch` meets without torch installed
    with pytest.raises(ImportError) as info:
        files.read_prompts(files.find_prompts(tmp_path))
    message = str(info.value)
    assert str(prompt) in message and 'pip install -e ".[torch]"' in message and "\n" not in message


def test_launch_evaluate_checks_a_pytorch_prompt_before_the_model_loads(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "task_prompt").write_bytes(b"PK\x03\x04")
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_module('launch.evaluate', run_name='__main__')")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code, "launch.evaluate", "--model_path", str(tmp_path / "no_model"),
                          "--task", "tweets", "--prompt_dir", str(tmp_path / "prompts")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and 'pip install -e ".[torch]"' in lines[0] and "no_model" not in lines[0], res.stderr
