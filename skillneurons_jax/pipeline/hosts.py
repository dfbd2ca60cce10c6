"""Hosts that share one workdir without a JAX cluster (`launch.reproduce --process_index i --process_count n`):
each host runs whole stage groups and host 0 waits for the others before the report. Nothing but the workdir
connects them, so they talk through it: each host keeps a heartbeat record `WORKDIR/.hosts/host_<i>.json`
(layout.host_record_path) fresh while it works, with the process count it was started with and a fingerprint of
its plan (config and data), and marks it finished when its share is done.

From those records a host learns, within a bounded time, what would otherwise be a silent hang or a mixed run:
- another host started with another --process_count, or with another config or data: an error at once;
- a host that was alive during this run stopped refreshing its record (killed, machine lost) before finishing:
  host 0 stops waiting after `timeout_s` and says which host and how to resume (rerun it; finished stages stay).
Records of an earlier run are never mistaken for this one's: a record counts once it has been seen fresh (its
heartbeat younger than `timeout_s`) during this run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import threading
import time
from typing import Any, Mapping, Optional, Sequence

from skillneurons_jax import io, layout


class HostsDisagree(ValueError):
    """Hosts of one run were started with a different process count, config or data."""


class HostLost(RuntimeError):
    """A host that was working stopped sending heartbeats before it finished its share."""


def plan_fingerprint(config: Mapping, stage_keys: Sequence[str]) -> str:
    """sha256 of what must be equal on every host: the config (the workdir, which may be mounted at another
    path on each host, left out) and the plan's stage keys (they depend on which data files were found)."""
    plain = {k: v for k, v in dict(config).items() if k != "workdir"}
    text = json.dumps({"config": plain, "stages": sorted(stage_keys)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass
class Heartbeat:
    """Keeps this host's record fresh from a daemon thread every `interval_s` until `finish()` (or `stop()`)."""
    workdir: Any
    index: int
    count: int
    fingerprint: str
    interval_s: float = 10.0

    def __post_init__(self):
        self.path = layout.host_record_path(self.workdir, self.index)
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def record(self, finished: bool = False) -> dict:
        return {"index": self.index, "process_count": self.count, "fingerprint": self.fingerprint,
                "host": socket.gethostname(), "pid": os.getpid(), "started": self.started, "beat": time.time(),
                "finished": finished}

    def start(self) -> "Heartbeat":
        io.atomic_write_json(self.path, self.record())
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-host-{self.index}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                io.atomic_write_json(self.path, self.record())
            except OSError:        # a full or flaky disk must not kill the work; the others will time out
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def finish(self) -> None:
        self.stop()
        io.atomic_write_json(self.path, self.record(finished=True))


def read_record(workdir, index: int) -> Optional[dict]:
    path = layout.host_record_path(workdir, index)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):   # absent, or being replaced (writes are atomic, so a retry reads it whole)
        return None


@dataclasses.dataclass
class Watch:
    """What one host knows of the others during a run: which were seen alive, and the checks on their records."""
    workdir: Any
    index: int
    count: int
    fingerprint: str
    timeout_s: float
    seen_alive: set = dataclasses.field(default_factory=set)

    def check(self, now: Optional[float] = None) -> list[int]:
        """Checks every other host's record; returns the hosts that have finished their share. Raises
        HostsDisagree for a fresh record with another process count or plan, HostLost for a host seen alive
        during this run whose heartbeat is older than timeout_s and that did not finish."""
        now = time.time() if now is None else now
        finished = []
        for other in range(self.count):
            if other == self.index:
                continue
            record = read_record(self.workdir, other)
            if record is None:
                continue
            fresh = now - float(record.get("beat", 0.0)) <= self.timeout_s
            if fresh or other in self.seen_alive:
                if int(record.get("process_count", -1)) != self.count:
                    raise HostsDisagree(
                        f"host {other} ({record.get('host')}, pid {record.get('pid')}) was started with "
                        f"--process_count {record.get('process_count')}, host {self.index} with {self.count}: "
                        f"start every host with the same --process_count")
                if record.get("fingerprint") != self.fingerprint:
                    raise HostsDisagree(
                        f"host {other} ({record.get('host')}) plans another run than host {self.index}: their config "
                        f"or data differ (plan fingerprints {str(record.get('fingerprint'))[:12]} vs "
                        f"{self.fingerprint[:12]}); start every host with the same config and data")
            if record.get("finished") and (fresh or other in self.seen_alive):
                finished.append(other)
                continue
            if fresh:
                self.seen_alive.add(other)
            elif other in self.seen_alive:
                age = now - float(record.get("beat", 0.0))
                raise HostLost(
                    f"host {other} ({record.get('host')}, pid {record.get('pid')}) stopped sending heartbeats "
                    f"{age:.0f} s ago (timeout {self.timeout_s:.0f} s) before finishing its stages; rerun it with "
                    f"--process_index {other} (its finished stages are kept) and rerun host {self.index} for the "
                    f"report")
        return finished
