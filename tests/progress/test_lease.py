"""The lease's rules: who is alive, judged by process on its own host and by heartbeat elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from helpers import poll_until
from hypothesis import given
from hypothesis import strategies as st

from ferryman import FerrymanError
from ferryman.progress.lease import Holder, holder_alive, process_start
from ferryman.progress.sqlite import Lease

HERE = "db1"
NOW = 1_000_000.0
STALE = 20.0
MIGRATION = "m.Copy"


def holder(host: str, heartbeat_age: float, started: str | None = "boot:100", pid: int = 77) -> Holder:
    return Holder("owner", pid, host, NOW - 3600, NOW - heartbeat_age, 1, started)


def probe(answer: str | None) -> Callable[[int], str | None]:
    """A stand-in for :func:`process_start` that gives this answer for any pid."""
    return lambda pid: answer


# --- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("case, lease, process, alive", [
    ("same host, running, beating", holder(HERE, 1), "boot:100", True),
    ("same host, running, stopped for an hour", holder(HERE, 3600), "boot:100", True),
    ("same host, gone", holder(HERE, 1), None, False),
    ("same host, pid reused by another process", holder(HERE, 1), "boot:999", False),
    ("same host, pid reused after a reboot", holder(HERE, 1), "boot2:100", False),
    ("same host, start unknown to the lease (older ferryman)", holder(HERE, 3600, None), "boot:5", True),
    ("same host, start unknown here (no /proc)", holder(HERE, 3600), "", True),
    ("other host, fresh heartbeat", holder("db2", 5), None, True),
    ("other host, heartbeat at the limit", holder("db2", STALE), None, True),
    ("other host, stale heartbeat", holder("db2", STALE + 0.1), "boot:100", False),
])
def test_who_is_alive(case, lease, process, alive):
    assert holder_alive(lease, here=HERE, now=NOW, stale_after=STALE, start_of=probe(process)) is alive, case


@given(st.floats(0, 10**7), st.sampled_from([None, "", "boot:100", "boot:101"]))
def test_on_its_own_host_a_holder_is_judged_by_its_process_never_its_heartbeat(age, process):
    alive = holder_alive(holder(HERE, age), here=HERE, now=NOW, stale_after=STALE, start_of=probe(process))
    assert alive is (process in ("", "boot:100"))


@given(st.floats(0, 10**7), st.sampled_from([None, "", "boot:100", "boot:101"]))
def test_on_another_host_a_holder_is_judged_by_its_heartbeat_never_a_local_pid(age, process):
    alive = holder_alive(holder("db2", age), here=HERE, now=NOW, stale_after=STALE, start_of=probe(process))
    assert alive is (age <= STALE)


def test_process_start_tells_a_live_process_from_a_dead_one_or_a_zombie():
    me = process_start(os.getpid())
    assert me and me == process_start(os.getpid()) and me.count(":") == 1
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    poll_until(lambda: process_start(child.pid) is None, what="the child to end (a zombie)")
    child.wait()
    assert process_start(child.pid) is None
    assert process_start(0) is None and process_start(-1) is None


def test_the_stale_limit_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", "2.5")
    assert Lease(str(tmp_path / "l.db")).stale_after == 2.5
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", "soon")
    with pytest.raises(FerrymanError, match="FERRYMAN_LEASE_STALE_AFTER='soon' is not a number of seconds"):
        Lease(str(tmp_path / "l.db"))
