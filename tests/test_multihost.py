"""A pod on one machine: 2 processes x 2 CPU devices on loopback (jax.distributed + gloo) against 1 process x 4.

- The same work on one 4-device mesh, whether it spans one process or two: `launch.tune --distributed` (2 seeds,
  the batch sharded over the 4 devices) writes the same prompts, and `launch.predictivity --distributed` (the
  streamed sums reduced across the hosts) the same arrays. Integer statistics (counts -> acc, pred) are bitwise
  equal; float32 sums (the prompts' gradients, the baselines) agree within 1e-6 but not bitwise, because the
  cross-process all-reduce runs through gloo, which adds the 4 devices' partial sums in another order than XLA's
  in-process CPU all-reduce (measured: at most 5.3e-7 on the prompts after 4 steps, 6.9e-7 on the baselines).
- `launch.reproduce --process_count 2` (independent hosts sharing one workdir) writes the same report data as one
  host.
- Failures end every process within a bounded time with a clear message: a host killed mid-run (and a rerun
  resumes from the last checkpoint), a mismatched --num_processes, a coordinator port in use, and hosts whose
  config or data differ.
Every process is started with a deadline and killed (by its own pid) if it outlives it.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import prompt_fixtures as fx
import reproduce_fixtures as rf

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
HEARTBEAT_S = 5
pytestmark = pytest.mark.slow


def free_port() -> int:
    """A port nothing listens on now (the kernel picks it); the tiny race with other programs is acceptable."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1"}


class Processes:
    """Starts commands (one per host) with their output in files; `wait` gives each a deadline; leaving the
    `with` block kills whatever still runs (by pid) and reaps it, so no test leaves a process behind."""

    def __init__(self, folder: pathlib.Path, devices: int):
        self.folder, self.devices, self.procs, self.logs = folder, devices, [], []
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, argv: list[str]) -> subprocess.Popen:
        i = len(self.procs)
        out, err = open(self.folder / f"out{i}.txt", "w"), open(self.folder / f"err{i}.txt", "w")
        self.logs.append((out, err))
        proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=_env(self.devices), stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def wait(self, timeout_s: float) -> list[tuple[int, str, str]]:
        deadline = time.time() + timeout_s
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        hung = [p.pid for p in self.procs if p.poll() is None]
        self.close()
        results = self.results()
        assert not hung, f"processes {hung} still ran after {timeout_s} s: " + "\n".join(
            e[-2000:] for _, _, e in results)
        return results

    def results(self) -> list[tuple[int, str, str]]:
        return [(p.returncode, (self.folder / f"out{i}.txt").read_text(), (self.folder / f"err{i}.txt").read_text())
                for i, p in enumerate(self.procs)]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for out, err in self.logs:
            out.close()
            err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pod")
    return {"model": fx.make_bert(root / "bert"), "data": fx.write_sst2(root / "data", n_train=32, n_dev=16),
            "root": root}


def _tune_argv(world, workdir, *extra, max_steps=4, epochs=10) -> list[str]:
    return ["-m", "launch.tune", f"--model_path={world['model']}", "--task=sst2", f"--data_dir={world['data']}",
            "--seeds=0,1", f"--workdir={workdir}", f"--max_steps={max_steps}", "--eval_every=2",
            "--config.prompt_len=4", "--config.batch_size=8", "--config.eval_batch_size=8",
            "--config.max_text_tokens=12", "--config.progress=False", "--config.learning_rate=0.05",
            f"--config.epochs={epochs}", *extra]


def _predictivity_argv(world, workdir, *extra) -> list[str]:
    return ["-m", "launch.predictivity", f"--model_path={world['model']}", "--task=sst2",
            f"--data_dir={world['data']}", "--seeds=0,1", f"--workdir={workdir}", "--batch_size=8",
            "--config.prompt_len=4", "--config.max_text_tokens=12", *extra]


def _distributed(port: int, host: int, processes: int = 2) -> list[str]:
    return ["--distributed", f"--coordinator=127.0.0.1:{port}", f"--num_processes={processes}",
            f"--process_id={host}", f"--heartbeat_timeout_s={HEARTBEAT_S}", "--distributed_timeout_s=120"]


def _run_pod(folder, argv_of, timeout_s: float, distributed_args=_distributed) -> list[tuple[int, str, str]]:
    """argv_of(host) for 2 hosts x 2 devices, one job; the results of both."""
    port = free_port()
    with Processes(folder, devices=2) as procs:
        for host in range(2):
            procs.start(argv_of(host) + distributed_args(port, host))
        return procs.wait(timeout_s)


def _run_one(folder, argv, timeout_s: float, devices: int = 4) -> tuple[int, str, str]:
    with Processes(folder, devices=devices) as procs:
        procs.start(argv)
        return procs.wait(timeout_s)[0]


def _ok(results):
    for rc, out, err in results:
        assert rc == 0, err[-3000:]


def test_two_hosts_tune_and_predictivity_like_one_host_with_four_devices(world, tmp_path):
    one, pod = tmp_path / "one", tmp_path / "pod"
    _ok([_run_one(tmp_path / "log1", _tune_argv(world, one), 300)])
    _ok([_run_one(tmp_path / "log2", _predictivity_argv(world, one), 300)])
    results = _run_pod(tmp_path / "log3", lambda h: _tune_argv(world, pod), 400)
    _ok(results)
    for host, (_, _, err) in enumerate(results):
        assert f"process {host} of 2: 2 local of 4 devices" in err, err[-2000:]
    for seed in (0, 1):     # the run trained over all 4 devices of the pod (its sidecar records them)
        meta = json.loads((pod / "prompts" / "bert" / "sst2" / f"seed_{seed}" / "metrics.jsonl.json").read_text())
        assert (meta["devices"], meta["processes"]) == (4, 2)
    _ok(_run_pod(tmp_path / "log4", lambda h: _predictivity_argv(world, pod), 400))

    for seed in (0, 1):
        rel = pathlib.Path("prompts", "bert", "sst2", f"seed_{seed}", "prompt.npy")
        a, b = np.load(one / rel), np.load(pod / rel)
        assert a.shape == b.shape == (4, 16)
        # float32 gradient sums: gloo's cross-process all-reduce adds in another order (module docstring)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        metrics = [json.loads(line) for line in (pod / rel.parent / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics] == [2, 4], "process 1 must not write (only process 0 does)"
    with np.load(one / "predictivity" / "bert" / "sst2.npz") as za, \
            np.load(pod / "predictivity" / "bert" / "sst2.npz") as zb:
        assert sorted(za.files) == sorted(zb.files)
        for name in za.files:
            if "baseline" in name or "threshold" in name:
                # float32 sums in another reduction order: a few ulps (E[a^2] reaches ~4 here, so relative too)
                np.testing.assert_allclose(zb[name], za[name], rtol=2e-6, atol=1e-6, err_msg=name)
            else:  # derived from integer counts: the same bits whatever the reduction order
                np.testing.assert_array_equal(zb[name], za[name], err_msg=name)


def _report_data(workdir: pathlib.Path) -> dict:
    """summary.json without what depends on the run's timing or host."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items()
                    if not any(t in k for t in ("seconds", "elapsed", "wall", "time", "created", "date", "host"))}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj
    return strip(json.loads((workdir / "report" / "summary.json").read_text()))


def test_reproduce_on_two_hosts_writes_the_report_data_of_one_host(tmp_path):
    model = rf.make_model(tmp_path)
    data = rf.write_data(tmp_path / "data")
    config = tmp_path / "tiny_config.py"
    config.write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nimport reproduce_fixtures\n\n"
                      f"def get_config():\n    return reproduce_fixtures.config({str(model)!r}, {str(data)!r}, "
                      f"tasks='sst2,mrpc')\n")
    base = ["-m", "launch.reproduce", f"--config={config}"]
    one, pod = tmp_path / "one", tmp_path / "pod"
    _ok([_run_one(tmp_path / "log1", base + [f"--workdir={one}"], 600, devices=1)])
    with Processes(tmp_path / "log2", devices=1) as procs:
        for host in (0, 1):
            procs.start(base + [f"--workdir={pod}", f"--process_index={host}", "--process_count=2",
                                "--poll_s=1", "--wait_s=500"])
        results = procs.wait(600)
    _ok(results)
    # host 0 alone builds the report and ends with its path (runner.closing_lines: "Report: .../index.html")
    assert "this host (1 of 2)" in results[1][1] and "index.html" not in results[1][1]
    assert f"Report: {pod / 'report' / 'index.html'}" in results[0][1]
    assert _report_data(pod) == _report_data(one)


def test_a_killed_host_stops_the_other_and_a_rerun_resumes(world, tmp_path):
    pod = tmp_path / "pod"
    port = free_port()
    metrics = pod / "prompts" / "bert" / "sst2" / "seed_1" / "metrics.jsonl"
    with Processes(tmp_path / "log1", devices=2) as procs:
        hosts = [procs.start(_tune_argv(world, pod, max_steps=100000, epochs=100000) + _distributed(port, h))
                 for h in range(2)]
        deadline = time.time() + 300
        while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert all(p.poll() is None for p in hosts), procs.results()
            time.sleep(0.2)
        assert metrics.exists(), "no checkpoint within 300 s"
        os.kill(hosts[1].pid, signal.SIGKILL)
        killed_at = time.time()
        try:
            hosts[0].wait(timeout=HEARTBEAT_S + 60)
        except subprocess.TimeoutExpired:
            pass
        stopped_after = time.time() - killed_at
        still_running = hosts[0].poll() is None
        procs.close()
        rc, _, err = procs.results()[0]
    assert not still_running, "the surviving host hung after its peer was killed"
    assert rc != 0 and stopped_after < HEARTBEAT_S + 60
    assert "unhealthy" in err and "JAX distributed service detected fatal errors" in err, err[-3000:]

    done = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    results = _run_pod(tmp_path / "log2", lambda h: _tune_argv(world, pod, max_steps=max(done) + 2,
                                                                    epochs=100000), 400)
    _ok(results)
    summary = json.loads(results[0][1].strip().splitlines()[-1])
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 2, summary
    assert summary["steps"] == max(done) + 2


def _pod_errors(world, tmp_path, argv_of, distributed_args=_distributed, timeout_s=240):
    results = _run_pod(tmp_path, argv_of, timeout_s, distributed_args)
    return [(rc, err) for rc, _, err in results]


def test_a_mismatched_process_count_is_a_clear_error_on_every_host(world, tmp_path):
    results = _pod_errors(world, tmp_path, lambda h: _tune_argv(world, tmp_path / "w"),
                          lambda port, h: _distributed(port, h, processes=2 if h == 0 else 3))
    for rc, err in results:
        assert rc == 2 and "hosts disagree on the run" not in err, err[-2000:]
        assert "num_processes differ between hosts" in err, err[-2000:]


def test_hosts_with_different_config_or_data_fail_at_start_up(world, tmp_path):
    other_data = tmp_path / "other_data"
    shutil.copytree(world["data"], other_data)
    dev = other_data / "glue" / "SST-2" / "dev.tsv"
    dev.write_text(dev.read_text().replace("good", "fine", 1))
    for name, changed, field in (("config", ["--config.learning_rate=0.06"], "config"),
                                 ("data", [f"--data_dir={other_data}"], "data")):
        results = _pod_errors(world, tmp_path / name,
                              lambda h: _tune_argv(world, tmp_path / name / "w", *(changed if h == 1 else [])))
        for rc, err in results:
            assert rc == 2, err[-2000:]
            assert f"hosts disagree on the run: {field} differ between hosts" in err, err[-2000:]
        assert not (tmp_path / name / "w" / "prompts").exists(), "work started although the hosts disagree"


def test_a_coordinator_port_in_use_is_a_clear_error(world, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, out, err = _run_one(tmp_path, _tune_argv(world, tmp_path / "w") + _distributed(port, 0), 120,
                                devices=2)
    assert rc == 2 and f"coordinator port {port} is already in use" in err, err[-2000:]
    assert "Traceback" not in err
