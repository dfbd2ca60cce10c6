"""Hosts of a --process_count run talk through heartbeat records in the workdir (pipeline/hosts.py): another
process count, config or data is an error; a host seen alive that stops beating is reported lost within the
timeout; records of an earlier run are not mistaken for this one's."""
from __future__ import annotations

import json
import time

import pytest

from skillneurons_jax import io, layout
from skillneurons_jax.pipeline import hosts, plan, runner

FINGERPRINT = hosts.plan_fingerprint({"tasks": "sst2", "seeds": "0,1"}, ["tune/m/sst2", "report"])


def _record(workdir, index, *, count=2, fingerprint=FINGERPRINT, beat=None, finished=False):
    io.atomic_write_json(layout.host_record_path(workdir, index),
                         {"index": index, "process_count": count, "fingerprint": fingerprint, "host": "h",
                          "pid": 1, "started": 0.0, "beat": time.time() if beat is None else beat,
                          "finished": finished})


def test_fingerprint_ignores_the_workdir_and_sees_config_and_plan():
    base = hosts.plan_fingerprint({"tasks": "sst2", "workdir": "/a"}, ["tune/m/sst2"])
    assert base == hosts.plan_fingerprint({"tasks": "sst2", "workdir": "/b"}, ["tune/m/sst2"])
    assert base != hosts.plan_fingerprint({"tasks": "mrpc", "workdir": "/a"}, ["tune/m/sst2"])
    assert base != hosts.plan_fingerprint({"tasks": "sst2", "workdir": "/a"}, ["tune/m/sst2", "tune/m/mrpc"])


def test_another_process_count_or_plan_is_an_error(tmp_path):
    watch = hosts.Watch(tmp_path, 0, 2, FINGERPRINT, timeout_s=30)
    _record(tmp_path, 1, count=3)
    with pytest.raises(hosts.HostsDisagree, match="--process_count 3, host 0 with 2"):
        watch.check()
    _record(tmp_path, 1, fingerprint="0" * 64)
    with pytest.raises(hosts.HostsDisagree, match="config or data differ"):
        watch.check()


def test_a_host_seen_alive_that_stops_beating_is_lost(tmp_path):
    watch = hosts.Watch(tmp_path, 0, 2, FINGERPRINT, timeout_s=5)
    _record(tmp_path, 1)
    assert watch.check() == [] and watch.seen_alive == {1}
    with pytest.raises(hosts.HostLost, match="host 1 .* stopped sending heartbeats .* --process_index 1"):
        watch.check(now=time.time() + 6)


def test_an_earlier_runs_records_are_ignored_and_finished_hosts_are_reported(tmp_path):
    watch = hosts.Watch(tmp_path, 0, 3, FINGERPRINT, timeout_s=5)
    _record(tmp_path, 1, count=2, beat=time.time() - 3600)       # a killed run of last week, another count
    _record(tmp_path, 2, count=2, beat=time.time() - 3600, finished=True)
    assert watch.check() == [] and not watch.seen_alive
    _record(tmp_path, 1, count=3)
    _record(tmp_path, 2, count=3, finished=True)
    assert watch.check() == [2]


def test_heartbeat_keeps_the_record_fresh_then_marks_it_finished(tmp_path):
    beat = hosts.Heartbeat(tmp_path, 1, 2, FINGERPRINT, interval_s=0.05).start()
    first = hosts.read_record(tmp_path, 1)["beat"]
    time.sleep(0.3)
    assert hosts.read_record(tmp_path, 1)["beat"] > first and not hosts.read_record(tmp_path, 1)["finished"]
    beat.finish()
    record = json.loads(layout.host_record_path(tmp_path, 1).read_text())
    assert record["finished"] and record["process_count"] == 2 and record["fingerprint"] == FINGERPRINT


def test_host_0_stops_waiting_for_a_lost_host_within_the_timeout(tmp_path):
    """wait_for_others with a watch: a host that beat once and went silent ends the wait with HostLost well before
    --wait_s (here 60 s) runs out."""
    stage = plan.Stage("tune/m/sst2", "tune", [tmp_path / "never.npy"], lambda: None, group="m/sst2")
    watch = hosts.Watch(tmp_path, 0, 2, FINGERPRINT, timeout_s=0.5)
    _record(tmp_path, 1)
    t0 = time.time()
    with pytest.raises(hosts.HostLost):
        runner.wait_for_others([stage], tmp_path, wait_s=60, poll_s=0.1, printer=lambda _: None, watch=watch)
    assert time.time() - t0 < 10


def test_a_stage_waiting_for_a_finished_host_that_lacks_its_dependency_is_told_why(tmp_path):
    """runner.wait_for_stages: the owner of the awaited stage finished its share without it (it failed there):
    the wait ends with the reason instead of running to --wait_s; a done stage ends it at once."""
    need = plan.Stage("predictivity/m/sst2", "predictivity", [tmp_path / "pred.npz"], lambda: None, group="m/sst2")
    watch = hosts.Watch(tmp_path, 0, 2, FINGERPRINT, timeout_s=30)
    _record(tmp_path, 1, finished=True)
    t0 = time.time()
    reason = runner.wait_for_stages([need], [need], tmp_path, {"m/sst2": 1}, wait_s=60, poll_s=0.1,
                                    printer=lambda _: None, watch=watch)
    assert reason == "dependency predictivity/m/sst2 (host 1) finished its share without it"
    assert time.time() - t0 < 10
    assert "not done after 0 s" in runner.wait_for_stages([need], [need], tmp_path, {"m/sst2": 1}, wait_s=0,
                                                            poll_s=0.1, printer=lambda _: None)
    (tmp_path / "pred.npz").write_bytes(b"x")
    plan.mark_done(need, tmp_path, 1.0)
    assert runner.wait_for_stages([need], [need], tmp_path, {"m/sst2": 1}, wait_s=60, poll_s=0.1,
                                  printer=lambda _: None, watch=watch) is None
