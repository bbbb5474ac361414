"""The service: hold back only dependants, run subsets, call and report persistence callbacks."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ferryman import (
    MemoryStore, MigrationProgress, MigrationService, MigrationState, PlanError, Retry, migration,
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
    assert "EX: held_back" in result.summary() and "(held back: BE failed)" in result.summary()


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


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_stops_at_a_record_boundary_and_saves(tmp_path, signals):
    job = subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path / "run.db")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert job.stdout.readline() == "page\n"
    for _ in range(signals):
        job.send_signal(signal.SIGTERM)
        time.sleep(0.05)  # a signal still pending when the next arrives would merge with it
    out, err = job.communicate(timeout=60)
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
