"""Ledger <-> mjg JSON: same content both ways, in memory bounded by a chunk, errors with paths."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from ferryman import Action, FailedRecord, MigrationProgress, ProgressFormatError
from ferryman.progress.exchange import export_json, import_json
from ferryman.progress.sqlite import SqliteLedger
from tests.progress.test_jsonfmt import LIMIT_CASES

SCRIPT = """
import resource, sys
from ferryman.progress.exchange import export_json, import_json
from tests.progress.test_jsonfmt import LIMIT_CASES
from ferryman.progress.sqlite import SqliteLedger
verb, ledger_path, json_path = sys.argv[1:]
ledger = SqliteLedger(ledger_path)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
(export_json if verb == "export" else import_json)(*((ledger, json_path) if verb == "export" else (json_path, ledger)))
ledger.close()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def sample_progress() -> MigrationProgress:
    progress = MigrationProgress()
    progress.metadata.timestamp = datetime(2025, 8, 29, 0, 33, 51, 600238)
    entry = progress.entry("com.x.M1")
    entry.mark_succeeded([1, "abc", 2**70, ("a", 7)])
    entry.mark_failed([
        FailedRecord(3, "stations(id=3)", "Traceback\n  boom", Action.RETRY, datetime(2025, 8, 29, 0, 33, 52)),
        FailedRecord("k", "d", "c", Action.IGNORE, datetime(2025, 8, 29, 0, 33, 52, 123000)),
    ])
    progress.start_migration("com.x.M1")
    progress.finish_migration("com.x.M2")
    progress.entry("com.x.M2")
    progress.record_fatal("java.lang.Exception: fatal")
    return progress


def test_export_writes_what_to_json_writes(tmp_path):
    progress = sample_progress()
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.import_progress(progress)
    export_json(ledger, tmp_path / "out.json")
    text = (tmp_path / "out.json").read_text()
    assert MigrationProgress.from_json(text) == progress
    # the same Jackson layout, ids in the ledger's order instead of insertion order
    assert text == ledger.progress().to_json()


def test_import_reads_what_from_json_reads(tmp_path):
    progress = sample_progress()
    (tmp_path / "in.json").write_text(progress.to_json())
    ledger = SqliteLedger(tmp_path / "l.db")
    import_json(tmp_path / "in.json", ledger)
    assert ledger.progress() == progress


@pytest.mark.parametrize("text, path", [
    ('{"migrationProgress": {"m": {"succeededRecordIds": [1, 2.5]}}}', '$.migrationProgress["m"].succeededRecordIds[1]'),
    ('{"migrationProgress": {"m": {"failedRecords": [{"id": 1, "action": "SKIP"}]}}}', '$.migrationProgress["m"].failedRecords[0].action'),
    ('{"metadata": {"timestamp": "yesterday"}}', "$.metadata.timestamp"),
    ('{"migrationProgress": [1]}', "$.migrationProgress"),
    ('{"migrationProgress": {"m": {"succeededRecordIds": [1, ', '$.migrationProgress["m"].succeededRecordIds[1]'),
    ('{"migrationProgress": {}} {}', "$"),
    ('{"migrationProgress": {"m": {"x": [1, }}}', '$.migrationProgress["m"].x[1]'),
    ("[]", "$"),
    ("", "$"),
])
def test_malformed_import_names_the_path_and_changes_nothing(tmp_path, text, path):
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.import_progress(sample_progress())
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(ProgressFormatError) as info:
        import_json(tmp_path / "bad.json", ledger)
    assert info.value.path == path
    assert ledger.progress() == sample_progress()


@pytest.mark.parametrize("text, path, message", LIMIT_CASES)
def test_import_keeps_the_limits_of_from_json(tmp_path, text, path, message):
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.import_progress(sample_progress())
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(ProgressFormatError) as info:
        import_json(tmp_path / "bad.json", ledger)
    assert (info.value.path, message in str(info.value)) == (path, True)
    assert ledger.progress() == sample_progress()


def test_a_value_read_whole_is_held_to_a_budget_of_text(tmp_path):
    """Each string is within the limit, but the metadata as a whole holds more than it may."""
    names = ", ".join(['"' + "n" * 1_000_000 + '"'] * 17)
    (tmp_path / "big.json").write_text('{"metadata": {"completedMigrationFQCNs": [' + names + "]}}")
    ledger = SqliteLedger(tmp_path / "l.db")
    with pytest.raises(ProgressFormatError, match="a value holding more than 16,000,000 characters") as info:
        import_json(tmp_path / "big.json", ledger)
    assert info.value.path == "$.metadata.completedMigrationFQCNs[15]"


@pytest.mark.parametrize("split", [1, 2, 3, 7, 64, 4096])
def test_tokens_split_across_reads_are_read_whole(tmp_path, split, monkeypatch):
    """The limits hold back an open string or number between reads, never cut one."""
    import ferryman.progress.jsonlimits as limits

    reads: list[int] = []
    read = limits.LimitedReader.read
    monkeypatch.setattr(limits.LimitedReader, "read", lambda self, size: reads.append(1) or read(self, size and split))
    progress = sample_progress()
    progress.entry("com.x.M1").mark_succeeded([int("7" * 1000), "x" * 5000, 'q"\\\"uote', -12345])
    (tmp_path / "in.json").write_text(progress.to_json())
    ledger = SqliteLedger(tmp_path / "l.db")
    import_json(tmp_path / "in.json", ledger)
    assert ledger.progress() == progress
    assert len(reads) > 1


@pytest.mark.slow
def test_a_million_ids_round_trip_in_bounded_memory(tmp_path):
    n = 1_000_000
    ids = [*range(n // 2), *(f"key-{i}" for i in range(n // 2))]
    document = {"metadata": {"timestamp": "2025-01-01T00:00:00", "completedMigrationFQCNs": ["m.Big"],
                             "inProgressMigrationFQCNs": []},
                "migrationProgress": {"m.Big": {"fqcn": "m.Big", "succeededRecordIds": ids,
                                                "failedRecords": []}},
                "fatalErrors": []}
    source = tmp_path / "big.json"
    source.write_text(json.dumps(document))
    del document, ids

    def peak_kib(verb: str, json_path: Path) -> int:
        out = subprocess.run([sys.executable, "-c", SCRIPT, verb, str(tmp_path / "big.db"), str(json_path)],
                             capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    grew_import = peak_kib("import", source)
    grew_export = peak_kib("export", tmp_path / "back.json")
    # a MigrationProgress of 1M ids alone takes > 150 MB; the stream stays far below
    assert grew_import < 60_000, f"import grew RSS by {grew_import} KiB"
    assert grew_export < 60_000, f"export grew RSS by {grew_export} KiB"
    back = MigrationProgress.load(tmp_path / "back.json")
    assert len(back.migrations["m.Big"].succeeded) == n
    assert set(back.migrations["m.Big"].succeeded) == {*range(n // 2), *(f"key-{i}" for i in range(n // 2))}
    assert back.metadata.completed == ["m.Big"]


def test_a_migration_with_no_ids_yet_is_imported_and_counted_as_export_counts_it(tmp_path):
    from ferryman.progress.exchange import export_progress, import_progress

    progress = sample_progress()
    progress.entry("com.x.M3")  # listed, nothing migrated nor failed, neither started nor completed
    (tmp_path / "in.json").write_text(progress.to_json())
    imported = import_progress(tmp_path / "l.db", tmp_path / "in.json")
    exported = export_progress(tmp_path / "l.db", tmp_path / "out.json")
    assert imported == exported and imported.migrations == 3
    out = json.loads((tmp_path / "out.json").read_text())
    assert list(out["migrationProgress"]) == ["com.x.M1", "com.x.M2", "com.x.M3"]
    assert MigrationProgress.from_json((tmp_path / "out.json").read_text()) == progress
