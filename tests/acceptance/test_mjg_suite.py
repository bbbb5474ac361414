"""mjg's four suite1 scenarios plus a real IGNORE scenario, on MemoryStore and on SQLite."""

from __future__ import annotations

import mjg_suite as suite
import pytest
from mjg_suite import M1_PopulatePivotTable as M1

from ferryman import Action, MigrationProgress, MigrationService, MigrationState

M1_ID = f"{M1.__module__}.{M1.__qualname__}"


@pytest.fixture(params=["memory", "sqlite"])
def stores(request, sqlite_url):
    M1.fail_in = None
    M1.fail_station = None
    M1.duplicate_calls = 0
    return {s.name: s for s in suite.make_stores(request.param, sqlite_url)}


def service(stores) -> MigrationService:
    return MigrationService(list(stores.values()), suite.MIGRATIONS, checkpoint_interval=0)


def assert_fully_migrated(stores) -> None:
    assert suite.rows(stores["station_indicators"]) == suite.expected_pivot()
    assert suite.rows(stores["stations2"]) == [
        {"id": i, "code": f"new code STATION_{i}"} for i in (1, 2, 3)
    ]
    out = suite.rows(stores["station_indicators2"])
    assert len(out) == 15
    assert len({(r["station_code"], r["indicator_code"]) for r in out}) == 15
    averages = {r["id"]: r["average_value"] for r in out}
    assert averages["STATION_1,INDICATOR_1"] == 14
    assert averages["STATION_1,INDICATOR_2"] == 255
    assert averages["STATION_1,INDICATOR_3"] == 411
    assert averages["STATION_1,INDICATOR_4"] == -52.25
    assert averages["STATION_2,INDICATOR_4"] == pytest.approx(12686.505)
    assert averages["STATION_3,INDICATOR_5"] is None
    assert {r["station_code"] for r in out} == {f"new code STATION_{i}" for i in (1, 2, 3)}


def test_data_migrated_properly_in_one_run(stores):
    sources_before = {n: suite.rows(stores[n]) for n in suite.SEED}
    result = service(stores).run()
    assert result.ok, result.summary()
    assert {n: suite.rows(stores[n]) for n in suite.SEED} == sources_before
    assert_fully_migrated(stores)
    assert [r.state for r in result.reports] == [MigrationState.COMPLETED] * 3


def test_plan_puts_m1_and_m2_before_m3(stores):
    plan = service(stores).plan()
    assert plan[-1].endswith("M3_AverageMeasurements")
    assert set(plan[:2]) == {M1_ID, M1_ID.replace("M1_PopulatePivotTable", "M2_CopyStations")}


def test_handle_duplicates(stores):
    svc = service(stores)
    progress = MigrationProgress()
    assert svc.run(progress).ok
    second = svc.run(progress)  # everything already succeeded: skipped
    assert second.ok
    assert [r.skipped for r in second.reports] == [3, 3, 15]
    assert [r.written for r in second.reports] == [0, 0, 0]

    third = svc.run(None)  # progress forgotten: M1 meets its own rows again
    assert M1.duplicate_calls == 3
    m1 = third.report("M1_PopulatePivotTable")
    assert m1.state is MigrationState.FAILED and m1.failed == 3
    assert third.report("M3_AverageMeasurements").state is MigrationState.HELD_BACK
    assert "M1_PopulatePivotTable" in third.report("M3_AverageMeasurements").held_back_by
    assert_fully_migrated(stores)  # nothing written twice, nothing lost


def test_progress_persistence_and_continuation(stores, tmp_path):
    """Each run fails in another method; the JSON saved by the callback feeds the next run."""
    methods = ["match_with_indicators", "start_reduction", "reduce_from_indicators", "transform",
               "handle_duplicate", None]
    progress = MigrationProgress()
    runs = 0
    for i, method in enumerate(methods):
        M1.fail_in = method
        path = tmp_path / f"progress-{i}.json"
        svc = service(stores)
        svc.add_progress_persistence_callback(lambda p, path=path: p.save(path))
        result = svc.run(progress)
        runs += 1
        progress = MigrationProgress.load(path)
        failed = progress.failed_records(M1_ID)
        if method in (None, "handle_duplicate"):
            assert result.ok, result.summary()
            assert failed == []
            break
        assert len(failed) == 3
        assert all(f"Fake error while {method}" in rec.cause for _, rec in failed)
        assert all(rec.action is Action.RETRY for _, rec in failed)
        assert result.report("M3_AverageMeasurements").state is MigrationState.HELD_BACK
        assert result.report("M2_CopyStations").state is MigrationState.COMPLETED
    assert runs == 5  # 4 failing runs, then handle_duplicate is never needed
    assert_fully_migrated(stores)


def test_ignored_record_is_never_migrated_and_stays_ignored(stores, tmp_path):
    path = tmp_path / "progress.json"
    M1.fail_in, M1.fail_station = "transform", 1
    svc = service(stores)
    svc.add_progress_persistence_callback(lambda p: p.save(path))
    first = svc.run(MigrationProgress())
    assert first.report("M1_PopulatePivotTable").failed == 1
    progress = MigrationProgress.load(path)
    assert progress.set_action(M1_ID, [1], Action.IGNORE) == 1
    progress.save(path)

    M1.fail_in = None  # fixed or not, station 1 is ignored from now on
    for _ in range(2):
        result = svc.run(MigrationProgress.load(path))
        assert result.ok, result.summary()
        assert result.report("M1_PopulatePivotTable").ignored == 1
        entry = MigrationProgress.load(path).migrations[M1_ID]
        assert entry.failed[1].action is Action.IGNORE
        assert 1 not in entry.succeeded
    assert suite.rows(stores["station_indicators"]) == suite.expected_pivot((2, 3))
    assert len(suite.rows(stores["station_indicators2"])) == 10
