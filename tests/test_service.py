"""The service: hold back only dependants, run subsets, call and report persistence callbacks."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ferryman import (
    InputError,
    LedgerMismatchError,
    MemoryStore,
    MigrationProgress,
    MigrationService,
    MigrationState,
    PlanError,
    Retry,
    RunObserver,
    SqlDatabase,
    migration,
)

NO_RETRY = Retry(times=0, delay=0)


def copy(name, source, dest, fail=False):
    def transform(self, aggregates, record):
        if fail:
            raise RuntimeError(f"{name} is broken")
        return [dict(record)]

    cls = type(name, (), {"transform": transform, "__module__": __name__})
    return migration(source=source, dest=dest, save_retry=NO_RETRY)(cls)


def stores(*names):
    return [MemoryStore(n, records=[{"id": i} for i in range(5)] if n in "acf" else ()) for n in names]


def test_a_failure_holds_back_only_what_depends_on_it():
    """mjg's own example: A->B->E, C->D->E, F->G; B fails: C, D, F, G still run."""
    migrations = [copy("AB", "a", "b"), copy("BE", "b", "e", fail=True), copy("CD", "c", "d"),
                  copy("DE", "d", "e2"), copy("EX", "e", "x"), copy("FG", "f", "g")]
    service = MigrationService(stores(*"abcdefgx", "e2"), migrations, checkpoint_interval=0)
    result = service.run()
    states = {r.name: r.state for r in result.reports}
    assert states == {
        "AB": MigrationState.COMPLETED, "BE": MigrationState.FAILED, "CD": MigrationState.COMPLETED,
        "DE": MigrationState.COMPLETED, "EX": MigrationState.HELD_BACK, "FG": MigrationState.COMPLETED,
    }
    assert result.report("EX").held_back_by == ["BE"]
    assert result.exit_code == 1
    assert "EX: held back" in result.summary() and "(held back: BE failed)" in result.summary()


def test_only_runs_a_subset_by_name_or_identity():
    migrations = [copy("AB", "a", "b"), copy("CD", "c", "d")]
    service = MigrationService(stores(*"abcd"), migrations, checkpoint_interval=0)
    result = service.run(only=[f"{__name__}.CD"])
    assert [r.name for r in result.reports] == ["CD"]
    assert service.stores["b"].count() == 0 and service.stores["d"].count() == 5
    with pytest.raises(PlanError, match="unknown migration"):
        service.run(only=["nope"])


def test_callbacks_run_at_checkpoints_and_a_failing_one_is_reported():
    seen = []
    service = MigrationService(stores("a", "b"), [copy("AB", "a", "b")], checkpoint_interval=0)
    service.add_progress_persistence_callback(lambda p: seen.append(len(p.migrations)))

    def broken(progress):
        raise OSError("disk full")

    service.add_progress_persistence_callback(broken)
    progress = MigrationProgress()
    result = service.run(progress)
    assert len(seen) >= 3  # a page, the end of the migration, the end of the run
    assert not result.ok and result.exit_code == 1
    assert any("disk full" in e for e in result.callback_errors)
    assert "progress persistence failed" in result.summary()
    service.remove_all_progress_persistence_callbacks()
    seen.clear()
    assert service.run(progress).ok and seen == []


def test_a_broken_migration_class_is_a_definition_error():
    from ferryman import MigrationDefinitionError

    @migration(source="a", dest="b")
    class NeedsArgs:
        def __init__(self, url):
            self.url = url

        def transform(self, aggregates, record):
            return []

    with pytest.raises(MigrationDefinitionError, match=r"could not be created with NeedsArgs\(\)"):
        MigrationService(stores("a", "b"), [NeedsArgs])


JOB = textwrap.dedent("""
    import sys, time
    from ferryman import MemoryStore, MigrationService, RunObserver, migration

    class Ready(RunObserver):
        def page_done(self, report):
            print("page", flush=True)
            time.sleep(0.3)  # the test's signals land here, while the run is still going

    @migration(source="src", dest="dst", batch_size=10)
    class Slow:
        def transform(self, aggregates, record):
            time.sleep(0.01)
            return [dict(record)]

    service = MigrationService(
        [MemoryStore("src", records=[{"id": i} for i in range(2000)]), MemoryStore("dst")],
        [Slow], ledger=sys.argv[1], observers=[Ready()], checkpoint_interval=0)
    result = service.run()
    print(result.summary(), flush=True)
    sys.exit(result.exit_code)
""")


def _lines_until(stream, text: str) -> str:
    """The lines read from ``stream`` up to and including the first one containing ``text``."""
    lines = []
    while not lines or text not in lines[-1]:
        line = stream.readline()
        assert line, f"the stream ended before {text!r}: {''.join(lines)}"
        lines.append(line)
    return "".join(lines)


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_stops_at_a_record_boundary_and_saves(tmp_path, signals):
    job = subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path / "run.db")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert job.stdout.readline() == "page\n"
    said = []
    for i in range(signals):
        job.send_signal(signal.SIGTERM)
        if i + 1 < signals:  # the next signal only once this one was handled: pending ones merge
            said.append(_lines_until(job.stderr, "received: stopping"))
    out, err = job.communicate(timeout=60)
    err = "".join(said) + err
    assert job.returncode == 130, err
    assert "interrupted by SIGTERM; progress saved, run again to resume" in out
    assert "SIGTERM received: stopping at the next record boundary" in err
    if signals == 2:
        assert "SIGTERM again: stopping now" in err
    from ferryman.progress.sqlite import SqliteLedger
    ledger = SqliteLedger(tmp_path / "run.db", read_only=True)
    (identity,) = ledger.identities()
    done = len(list(ledger.iter_succeeded(identity)))
    assert 10 <= done < 2000
    assert [run.outcome for run in ledger.runs()] == ["interrupted"]


# --- runs with retries --------------------------------------------------------------------------------


class Attempts(RunObserver):
    """The attempt and retry events, in order; ``on_retry`` runs at each retry."""

    def __init__(self, on_retry=lambda: None) -> None:
        self.events: list[tuple] = []
        self.on_retry = on_retry

    def attempt_started(self, attempt: int) -> None:
        self.events.append(("attempt", attempt))

    def retrying(self, result, max_tries: int, delay: float) -> None:
        self.events.append(("retrying", result.attempts, max_tries, delay))
        self.on_retry()


def flaky_service(failures: int) -> MigrationService:
    """A copy whose record 2 fails in the first ``failures`` attempts."""
    seen: list[int] = []

    @migration(source="a", dest="b", save_retry=NO_RETRY)
    class Flaky:
        def transform(self, aggregates, record):
            if record["id"] == 2:
                seen.append(1)
                if len(seen) <= failures:
                    raise ConnectionError(f"try {len(seen)}")
            return [dict(record)]

    return MigrationService(stores("a", "b"), [Flaky], checkpoint_interval=0)


def test_a_run_with_retries_starts_again_until_it_completes_and_says_so():
    service = flaky_service(failures=2)
    watch = Attempts()
    service.add_observer(watch)
    result = service.run(max_tries=3, retry_delay=0)
    assert result.ok and result.attempts == 3
    assert len(service.stores["b"].records()) == 5
    assert watch.events == [("attempt", 1), ("retrying", 1, 3, 0), ("attempt", 2), ("retrying", 2, 3, 0),
                            ("attempt", 3)]
    given_up = flaky_service(failures=5).run(max_tries=2, retry_delay=0)
    assert not given_up.ok and given_up.attempts == 2 and given_up.exit_code == 1


def test_a_stop_during_the_pause_ends_the_run_interrupted():
    def stop_soon() -> None:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()

    service = flaky_service(failures=5)
    watch = Attempts(on_retry=stop_soon)
    service.add_observer(watch)
    started = time.monotonic()
    result = service.run(max_tries=3, retry_delay=60)
    assert result.interrupted == "SIGINT" and result.attempts == 1 and result.exit_code == 130
    assert time.monotonic() - started < 30
    assert watch.events == [("attempt", 1), ("retrying", 1, 3, 60)]


@pytest.mark.parametrize("max_tries, retry_delay", [(0, 1.0), (1, -1.0), (2, float("nan"))])
def test_bad_retry_settings_are_refused_before_anything(max_tries, retry_delay):
    service = flaky_service(failures=0)
    with pytest.raises(InputError):
        service.run(max_tries=max_tries, retry_delay=retry_delay)
    assert service.stores["b"].records() == []


def test_two_stores_of_one_name_are_refused_with_where_each_is_and_how_to_rename_one(tmp_path):
    old, new = SqlDatabase(f"sqlite:///{tmp_path / 'old.db'}"), SqlDatabase(f"sqlite:///{tmp_path / 'new.db'}")
    with pytest.raises(PlanError) as caught:
        MigrationService([old["artists"], new["artists"]], [])
    assert str(caught.value) == (
        f"two stores are named 'artists' ({old['artists'].dataset} and {new['artists'].dataset}); store names "
        "must be unique: name one otherwise, e.g. db.table('artists', 'new_artists') or "
        "SqlStore('new_artists', url, 'artists')")
    assert "old.db" in str(caught.value) and "new.db" in str(caught.value)


def test_another_ledger_on_several_written_destinations_is_refused_once_for_them_all(tmp_path):
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        for table in ("a", "b", "c", "d"):
            db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
        db.executemany("INSERT INTO a VALUES (?)", [(i,) for i in range(5)])
        db.executemany("INSERT INTO c VALUES (?)", [(i,) for i in range(5)])
    database = SqlDatabase(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrations = [copy("CopyAB", "a", "b"), copy("CopyCD", "c", "d")]
    first = MigrationService([database[t] for t in "abcd"], migrations, ledger=str(tmp_path / "first.db"))
    assert first.run().ok
    second = MigrationService([database[t] for t in "abcd"], migrations, ledger=str(tmp_path / "second.db"))
    second.target = "job.py"
    with pytest.raises(LedgerMismatchError) as caught:
        second.run()
    message = str(caught.value)
    assert message.startswith("destination 'b' holds what migration CopyAB wrote under another progress ledger")
    assert message.endswith("So do the destinations of CopyCD; to start all 2 over with this ledger: `ferryman reset "
                            "job.py --migration CopyAB --migration CopyCD --forget-other-ledgers` (after emptying "
                            "their destinations)")  # the service's own ledger: no --progress
