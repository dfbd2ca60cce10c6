"""A workdir nothing can corrupt: one writer per stage output (a lock with pid and host, stale locks of killed
runs taken over), a refused rerun leaves every file byte-identical, every flag is checked before the model loads
(exit 2, one line, nothing written), the offline task needs no --data_dir, pickled files are refused without
PyTorch's advice to unpickle them."""
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from skillneurons_jax import io, layout

REPO = pathlib.Path(__file__).resolve().parents[1]


def _snapshot(root: pathlib.Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path: pathlib.Path, pid: int, host: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host, "what": "tune x/y", "started": "earlier"}))


# ------------------------------------------------------------------------------------------------ the lock itself
def test_lock_is_held_and_released(tmp_path):
    out = tmp_path / "prompts" / "m" / "sst2"
    lock = layout.lock_path(out)
    with io.stage_lock(lock, out, "tune m/sst2") as held:
        assert held == lock == out / ".lock"
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(io.LockHeld, match=f"pid {os.getpid()} on host"):
            with io.stage_lock(lock, out, "a second run"):
                pass
    assert not lock.exists()
    assert layout.lock_path(tmp_path / "predictivity" / "m" / "sst2.npz").name == ".sst2.npz.lock"


def test_live_holder_refuses_and_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "out"
    lock = layout.lock_path(out)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(lock, sleeper.pid, socket.gethostname())
        before = lock.read_bytes()
        with pytest.raises(io.LockHeld, match=f"held by another run: pid {sleeper.pid} on host"):
            with io.stage_lock(lock, out, "second"):
                pass
        assert lock.read_bytes() == before
    finally:
        sleeper.kill()
        sleeper.wait()
    with io.stage_lock(lock, out, "after the holder died"):      # the same lock, its holder now dead: stale
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in out.iterdir()) == []
    _write_lock(lock, _dead_pid(), "another-host")                # another host: cannot be checked from here
    with pytest.raises(io.LockHeld, match=f"if that run is gone, delete {lock}"):
        with io.stage_lock(lock, out, "third"):
            pass


RACER = """
import pathlib, sys, time
from skillneurons_jax import io
lock, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
try:
    with io.stage_lock(lock, lock.parent, "racer"):
        print("acquired", flush=True)
        time.sleep(2.0)
except io.LockHeld as e:
    print("refused", e, flush=True)
"""


def test_of_racing_processes_exactly_one_holds_the_lock(tmp_path):
    lock, go = tmp_path / "out" / ".lock", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(lock), str(go)], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(4)]
    time.sleep(1.0)
    go.write_text("")
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert sum(o.startswith("acquired") for o in outs) == 1, outs
    assert sum(o.startswith("refused") for o in outs) == 3, outs
    assert not lock.exists()


# ------------------------------------------------------------------------------------------------ launch.tune
def run_cli(module, *args, timeout=600):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("flags,message", [
    (["--max_examples", "-8"], "--max_examples=-8: allowed: an integer >= 1, or None (no cap)"),
    (["--max_examples", "0"], "--max_examples=0: allowed: an integer >= 1"),
    (["--max_steps", "-1"], "--max_steps=-1: allowed: an integer >= 1"),
    (["--eval_every", "-2"], "--eval_every=-2: allowed: an integer >= 0"),
    (["--config.batch_size=-4"], "--config.batch_size=-4: allowed: an integer >= 1"),
    (["--config.learning_rate=-1.0"], "--config.learning_rate=-1.0: allowed: a number > 0"),
])
def test_bad_flags_exit_2_before_the_model_loads_and_write_nothing(tmp_path, flags, message):
    work = tmp_path / "work"
    # a model path that does not exist: had the model been loaded first, the error would name it instead
    proc = run_cli("launch.tune", "--model_path", tmp_path / "no_model", "--task", "tweets", "--workdir", work,
                   *flags, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not work.exists()


def test_a_workdir_that_is_a_file_and_the_data_dir_rule(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("launch.tune", "--model_path", tmp_path / "no_model", "--task", "tweets", "--workdir", blocker,
                   timeout=120)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr and blocker.read_text() == "x"
    proc = run_cli("launch.tune", "--model_path", tmp_path / "no_model", "--task", "tweets", "--workdir",
                   tmp_path / "w", timeout=120)      # tweets: no --data_dir needed; the model is what is missing
    assert proc.returncode == 2 and "--data_dir" not in proc.stderr and "no_model" in proc.stderr, proc.stderr
    proc = run_cli("launch.tune", "--model_path", tmp_path / "no_model", "--task", "sst2", "--workdir",
                   tmp_path / "w", timeout=120)
    assert proc.returncode == 2 and "missing required flag(s): --data_dir" in proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    sys.path.insert(0, str(REPO / "tests"))
    import prompt_fixtures as fx
    root = tmp_path_factory.mktemp("safety")
    return {"model": fx.make_bert(root / "minilm_like", lm_head=False), "data": fx.write_sst2(root / "data"),
            "root": root}


def _tune(tiny, work, *extra, steps=4):
    return ["launch.tune", "--model_path", tiny["model"], "--task", "sst2", "--data_dir", tiny["data"], "--seeds",
            "0,1", "--workdir", work, "--max_steps", steps, "--eval_every", 2, "--config.prompt_len=4",
            "--config.batch_size=8", "--config.eval_batch_size=8", "--config.progress=False", *extra]


@pytest.mark.slow
def test_refused_rerun_and_held_folder_leave_every_byte(tiny):
    work = tiny["root"] / "work"
    first = run_cli(*_tune(tiny, work))
    assert first.returncode == 0, first.stderr[-3000:]
    before = _snapshot(work)
    rerun = run_cli(*_tune(tiny, work, "--config.learning_rate=0.5"))
    assert rerun.returncode == 2 and "different configuration" in rerun.stderr, rerun.stderr[-2000:]
    assert _snapshot(work) == before                        # metrics.jsonl.json too: nothing rewritten
    # a live run holds the task folder: the second run is refused, naming it, and writes nothing
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = layout.lock_path(layout.task_prompts_dir(work, "minilm_like", "sst2"))
        _write_lock(lock, sleeper.pid, socket.gethostname())
        before = _snapshot(work)
        held = run_cli(*_tune(tiny, work, steps=6))
        assert held.returncode == 2 and f"pid {sleeper.pid} on host" in held.stderr, held.stderr[-2000:]
        assert _snapshot(work) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    resumed = run_cli(*_tune(tiny, work, steps=6))           # its holder died: the stale lock is taken over
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads([ln for ln in resumed.stdout.splitlines() if ln.startswith("{")][-1])["resumed_from"] == 4
    assert not lock.exists()


@pytest.mark.slow
def test_two_tune_runs_on_one_folder_exactly_one_writes(tiny):
    work = tiny["root"] / "race"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", *map(str, _tune(tiny, work, f"--config.learning_rate={lr}",
                                                                       "--config.epochs=100", steps=60))],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for lr in (0.01, 0.02)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is held by another run: pid" in refused
    rows = [json.loads(line) for line in (work / "prompts" / "minilm_like" / "sst2" / "seed_0" /
                                          "metrics.jsonl").read_text().splitlines()]
    # one run's rows, none interleaved (epochs=100 so that max_steps, not the epoch count, ends the run)
    assert [r["step"] for r in rows] == [2 * i for i in range(1, 31)]


# ------------------------------------------------------------------------------------------------ pickles
def test_a_pickled_prompt_is_refused_without_the_advice_to_unpickle(tmp_path):
    torch = pytest.importorskip("torch")
    from skillneurons_jax.prompt import files
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"task_prompt": torch.zeros(2, 3), "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError) as info:
        files.read_prompt(tmp_path / "evil.pt")
    message = str(info.value)
    assert "refused" in message and "can run code" in message
    assert "weights_only" not in message and "safe_globals" not in message
    assert not marker.exists()
