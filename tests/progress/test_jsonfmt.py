"""mjg progress JSON: Jackson's exact output, every variant Java writes, errors with JSON paths."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferryman.errors import ProgressFormatError
from ferryman.progress import Action, FailedRecord, MigrationProgress, ProgressMetadata
from ferryman.progress.jsonfmt import format_timestamp

DATA = Path(__file__).parent / "data"
STAMP = datetime(2025, 8, 29, 0, 33, 51, 600238)


def fresh(stamp: datetime = STAMP) -> MigrationProgress:
    return MigrationProgress(ProgressMetadata(stamp))


# --- writing: byte-identical to Jackson ---------------------------------------------------


def test_spec_example_is_written_back_byte_for_byte():
    text = (DATA / "mjg_example.json").read_text("utf-8").rstrip("\n")
    progress = MigrationProgress.from_json(text)
    # Python keeps microseconds: the only difference is the cut nanoseconds.
    assert progress.to_json() == text.replace("51.600238326", "51.600238")


def test_spec_example_content():
    progress = MigrationProgress.from_json((DATA / "mjg_example.json").read_text("utf-8"))
    assert progress.metadata == ProgressMetadata(STAMP, ["com.x.M2"], ["com.x.M1"])
    entry = progress.migrations["com.x.M1"]
    assert list(entry.succeeded) == [1, "abc", 5, 9999999999, "123e4567-e89b-12d3-a456-426614174000"]
    first, second = entry.failed.values()
    assert first == FailedRecord(3, "StationEntity(id=3)", "java.lang.RuntimeException: boom\n\tat ...",
                                 Action.RETRY, datetime(2025, 8, 29, 0, 33, 52))
    assert (second.id, second.action, second.timestamp) == (7, Action.IGNORE,
                                                           datetime(2025, 8, 29, 0, 33, 52, 123000))
    assert progress.fatal_errors == ["java.lang.Exception: fatal\n\tat ..."]


def test_fresh_progress_layout():
    assert fresh().to_json() == (
        "{\n"
        '  "metadata" : {\n'
        '    "timestamp" : "2025-08-29T00:33:51.600238",\n'
        '    "completedMigrationFQCNs" : [ ],\n'
        '    "inProgressMigrationFQCNs" : [ ]\n'
        "  },\n"
        '  "migrationProgress" : { },\n'
        '  "fatalErrors" : [ ]\n'
        "}"
    )


def test_entry_without_ids_and_composite_ids_layout():
    progress = fresh()
    progress.entry("a.Empty")
    entry = progress.entry("a.Composite")
    entry.mark_succeeded([(1, "x"), (2, "y")])
    entry.mark_failed([FailedRecord((3, "z"), "d", "c", timestamp=datetime(2025, 1, 1))])
    assert progress.to_json().split('"migrationProgress" : ')[1] == (
        "{\n"
        '    "a.Empty" : {\n'
        '      "fqcn" : "a.Empty",\n'
        '      "succeededRecordIds" : [ ],\n'
        '      "failedRecords" : [ ]\n'
        "    },\n"
        '    "a.Composite" : {\n'
        '      "fqcn" : "a.Composite",\n'
        '      "succeededRecordIds" : [ [ 1, "x" ], [ 2, "y" ] ],\n'
        '      "failedRecords" : [ {\n'
        '        "id" : [ 3, "z" ],\n'
        '        "description" : "d",\n'
        '        "cause" : "c",\n'
        '        "action" : "RETRY",\n'
        '        "timestamp" : "2025-01-01T00:00:00"\n'
        "      } ]\n"
        "    }\n"
        "  },\n"
        '  "fatalErrors" : [ ]\n'
        "}"
    )


@pytest.mark.parametrize(
    "text, written",
    [
        ('say "hi"\\', r'"say \"hi\"\\"'),
        ("\n\t\r\b\f", r'"\n\t\r\b\f"'),
        ("\x00\x1b\x1f", r'"\u0000\u001B\u001F"'),  # Jackson: upper-case hex
        ("\x7f/é漢😀\u2028", '"\x7f/é漢😀\u2028"'),  # not escaped: raw UTF-8
        ("C:\\users\\u00ff", r'"C:\\users\\u00ff"'),  # a literal backslash-u stays as written
        ("lone \ud800", r'"lone \uD800"'),  # kept valid UTF-8, read back unchanged
    ],
)
def test_strings_are_escaped_like_jackson(text, written):
    progress = fresh()
    progress.record_fatal(text)
    assert f'"fatalErrors" : [ {written} ]' in progress.to_json()
    assert MigrationProgress.from_json(progress.to_json()).fatal_errors == [text]


@pytest.mark.parametrize(
    "stamp, written",
    [
        (datetime(2025, 1, 1), "2025-01-01T00:00:00"),
        (datetime(2025, 1, 1, 10, 5, 3, 100000), "2025-01-01T10:05:03.1"),
        (datetime(2025, 8, 29, 0, 33, 52, 123000), "2025-08-29T00:33:52.123"),
        (datetime(2025, 8, 29, 0, 33, 51, 600238), "2025-08-29T00:33:51.600238"),
        (datetime(1, 1, 1, 0, 0, 0, 1), "0001-01-01T00:00:00.000001"),
    ],
)
def test_timestamps_are_written_like_java_local_date_time(stamp, written):
    assert format_timestamp(stamp) == written


# --- ids keep their type ----------------------------------------------------------------

ODD_IDS = [
    0, -1, 2**31, -(2**63) - 1, 2**64 + 1, 9999999999999999999999, 10**300,
    "", "1", "-5", "3.0", "true", "null", "é漢😀", "  spaced ", 'q"uote\\',
    (1, "a"), ("1", 1), (2**70, "x", -3), ("only",),
]


@pytest.mark.parametrize("record_id", ODD_IDS, ids=repr)
def test_every_id_kind_round_trips_with_its_type(record_id):
    progress = fresh()
    progress.entry("ok").mark_succeeded([record_id])
    progress.entry("ko").mark_failed([FailedRecord(record_id, "d", "c")])
    back = MigrationProgress.from_json(progress.to_json())
    assert back == progress
    for read in (*back.migrations["ok"].succeeded, back.migrations["ko"].failed[record_id].id):
        assert read == record_id and type(read) is type(record_id)
        if isinstance(read, tuple):
            assert [type(part) for part in read] == [type(part) for part in record_id]


def test_big_ints_stay_exact_numbers():
    progress = MigrationProgress.from_json(
        '{"migrationProgress": {"m": {"succeededRecordIds": [9999999999999999999999, -18446744073709551617]}}}'
    )
    assert list(progress.migrations["m"].succeeded) == [9999999999999999999999, -18446744073709551617]
    assert "[ 9999999999999999999999, -18446744073709551617 ]" in progress.to_json()


key_parts = st.one_of(st.integers(), st.integers(min_value=-(2**100), max_value=2**100), st.text())
record_ids = st.one_of(key_parts, st.tuples(key_parts), st.tuples(key_parts, key_parts, key_parts))
stamps = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
failed_records = st.builds(
    FailedRecord, record_ids, st.text(), st.text(), st.sampled_from(Action), stamps
)
identities = st.text(min_size=1, max_size=20)


@st.composite
def progresses(draw) -> MigrationProgress:
    progress = MigrationProgress(ProgressMetadata(
        draw(stamps),
        draw(st.lists(identities, unique=True, max_size=3)),
        draw(st.lists(identities, unique=True, max_size=3)),
    ))
    for identity in draw(st.lists(identities, unique=True, max_size=3)):
        entry = progress.entry(identity)
        entry.mark_succeeded(draw(st.lists(record_ids, max_size=10)))
        entry.mark_failed(draw(st.lists(failed_records, max_size=4)))
        entry.fqcn = draw(st.sampled_from([identity, "informational only"]))
    for text in draw(st.lists(st.text(), max_size=2)):
        progress.record_fatal(text)
    return progress


@given(progresses())
def test_json_round_trip_is_exact(progress):
    text = progress.to_json()
    back = MigrationProgress.from_json(text)
    assert back == progress
    for identity, entry in progress.migrations.items():  # == ignores dict order; check it too
        assert list(back.migrations[identity].succeeded) == list(entry.succeeded)
        assert list(back.migrations[identity].failed) == list(entry.failed)
    assert json.loads(text) is not None  # valid for any JSON reader
    assert back.to_json() == text


def test_a_million_ids_round_trip():
    progress = fresh()
    progress.entry("m").mark_succeeded(range(-500_000, 500_000))
    back = MigrationProgress.from_json(progress.to_json())
    assert back == progress
    assert list(back.migrations["m"].succeeded)[:3] == [-500_000, -499_999, -499_998]


# --- reading what Java mjg (and its docs) write -------------------------------------------


def test_seed_schema_with_misspelt_fatal_errors():
    progress = MigrationProgress.from_json((DATA / "seed_schema.json").read_text("utf-8"))
    entry = progress.migrations["com.example.PopulateStationIndicators"]
    assert list(entry.succeeded) == [1, 2, "S-0003", 2147483648]
    assert entry.failed["S-0004"].action is Action.IGNORE
    assert entry.failed[5].action is Action.RETRY  # "action" missing
    assert entry.failed["S-0004"].timestamp == datetime(2025, 8, 29, 0, 34, 2, 500000)
    assert progress.fatal_errors == ["java.lang.OutOfMemoryError: Java heap space"]
    assert progress.metadata.completed == ["com.example.PopulateStations"]
    assert '"fatalErrors" : [ "java.lang.OutOfMemoryError: Java heap space" ]' in progress.to_json()


def test_both_spellings_of_fatal_errors_are_kept():
    progress = MigrationProgress.from_json('{"fatalErrors": ["a"], "fataLErrors": ["b"]}')
    assert progress.fatal_errors == ["a", "b"]


def test_compact_fresh_object_from_the_spec():
    progress = MigrationProgress.from_json(
        '{"metadata":{"timestamp":"2025-08-29T00:33:51.600238326","completedMigrationFQCNs":[],'
        '"inProgressMigrationFQCNs":[]},"migrationProgress":{},"fatalErrors":[]}'
    )
    assert progress == fresh()


@pytest.mark.parametrize("text", ["{}", '{"metadata": {}}', '{"metadata": null, "migrationProgress": null}'])
def test_missing_parts_default_to_empty_and_now(text):
    before = datetime.now()
    progress = MigrationProgress.from_json(text)
    assert before <= progress.metadata.timestamp <= datetime.now()
    assert progress.migrations == {} and progress.fatal_errors == []
    assert progress.metadata.completed == [] and progress.metadata.in_progress == []


def test_missing_fields_of_an_entry_and_a_record():
    progress = MigrationProgress.from_json(
        '{"migrationProgress": {"a.M": {"failedRecords": [{"id": 4, "description": null}]}}}'
    )
    entry = progress.migrations["a.M"]
    assert entry.fqcn == "a.M" and entry.succeeded == {}
    record = entry.failed[4]
    assert (record.description, record.cause, record.action) == ("", "", Action.RETRY)
    assert abs(record.timestamp - datetime.now()) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "stamp, expected",
    [
        ("2025-01-01T10:05", datetime(2025, 1, 1, 10, 5)),
        ("2025-01-01T10:05:03", datetime(2025, 1, 1, 10, 5, 3)),
        ("2025-01-01T10:05:03.1", datetime(2025, 1, 1, 10, 5, 3, 100000)),
        ("2025-08-29T00:33:51.600238326", datetime(2025, 8, 29, 0, 33, 51, 600238)),
        ("2025-08-29T00:33:51.999999999", datetime(2025, 8, 29, 0, 33, 51, 999999)),  # cut, not rounded
        ([2026, 11, 27, 13, 25, 55, 312160623], datetime(2026, 11, 27, 13, 25, 55, 312160)),
        ([2026, 11, 27, 13, 25], datetime(2026, 11, 27, 13, 25)),  # WRITE_DATES_AS_TIMESTAMPS form
    ],
)
def test_timestamps_java_writes(stamp, expected):
    text = json.dumps({"metadata": {"timestamp": stamp}})
    assert MigrationProgress.from_json(text).metadata.timestamp == expected


def test_composite_ids_written_as_objects_become_tuples_in_field_order():
    progress = MigrationProgress.from_json(
        '{"migrationProgress": {"m": {"succeededRecordIds": [{"b": 2, "a": "x"}],'
        ' "failedRecords": [{"id": {"k": 1}}]}}}'
    )
    assert list(progress.migrations["m"].succeeded) == [(2, "x")]
    assert list(progress.migrations["m"].failed) == [(1,)]


def test_unknown_fields_are_ignored_and_duplicates_collapse():
    progress = MigrationProgress.from_json(
        '{"extra": 1, "metadata": {"completedMigrationFQCNs": ["a", "a"], "x": null},'
        ' "migrationProgress": {"m": {"succeededRecordIds": [1, 1, "1"], "y": [1.5],'
        ' "failedRecords": [{"id": 2, "z": {}}]}}}'
    )
    assert progress.metadata.completed == ["a"]
    assert list(progress.migrations["m"].succeeded) == [1, "1"]
    assert list(progress.migrations["m"].failed) == [2]


def test_an_id_listed_as_both_is_kept_as_succeeded():
    progress = MigrationProgress.from_json(
        '{"migrationProgress": {"m": {"succeededRecordIds": [1], "failedRecords": [{"id": 1}, {"id": 2}]}}}'
    )
    assert list(progress.migrations["m"].succeeded) == [1]
    assert list(progress.migrations["m"].failed) == [2]


def test_utf8_bom_and_crlf_are_accepted():
    text = "\ufeff" + fresh().to_json().replace("\n", "\r\n")
    assert MigrationProgress.from_json(text) == fresh()


# --- malformed input names the JSON path ---------------------------------------------------

M = '$.migrationProgress["com.x.M1"]'


def with_entry(entry: str) -> str:
    return '{"migrationProgress": {"com.x.M1": ' + entry + "}}"


def with_record(record: str) -> str:
    return with_entry('{"failedRecords": [{"id": 1}, {"id": 2}, ' + record + "]}")


@pytest.mark.parametrize(
    "text, path, message",
    [
        ('{"metadata": ', "$", "invalid JSON: Expecting value (line 1, column 14)"),
        ('{\n  "a" : 1,\n}', "$", "line 3, column 1"),
        ('{"a": NaN}', "$", "NaN is not allowed"),
        ("{} {}", "$", "Extra data"),
        ("[]", "$", "expected an object, got an array"),
        ("null", "$", "expected an object, got null"),
        ('{"metadata": []}', "$.metadata", "expected an object, got an array"),
        ('{"metadata": {"timestamp": "yesterday"}}', "$.metadata.timestamp", "invalid timestamp 'yesterday'"),
        ('{"metadata": {"timestamp": "2025-13-01T00:00"}}', "$.metadata.timestamp", "month must be in 1..12"),
        ('{"metadata": {"timestamp": "2025-01-01T00:00:00Z"}}', "$.metadata.timestamp", "invalid timestamp"),
        ('{"metadata": {"timestamp": "2025-01-01T00:00:00.1234567890"}}', "$.metadata.timestamp", "invalid"),
        ('{"metadata": {"timestamp": 1756427631}}', "$.metadata.timestamp", "expected a string, got an integer"),
        ('{"metadata": {"timestamp": [2025, 1]}}', "$.metadata.timestamp", "invalid timestamp array"),
        ('{"metadata": {"completedMigrationFQCNs": "a"}}', "$.metadata.completedMigrationFQCNs",
         "expected an array, got a string"),
        ('{"metadata": {"inProgressMigrationFQCNs": ["a", 1]}}', "$.metadata.inProgressMigrationFQCNs[1]",
         "expected a string, got an integer"),
        ('{"migrationProgress": []}', "$.migrationProgress", "expected an object, got an array"),
        (with_entry("[]"), M, "expected an object, got an array"),
        (with_entry('{"fqcn": 5}'), M + ".fqcn", "expected a string, got an integer"),
        (with_entry('{"succeededRecordIds": {}}'), M + ".succeededRecordIds", "expected an array, got an object"),
        (with_entry('{"succeededRecordIds": [1, 2, 3, 4, 5, 3.0]}'), M + ".succeededRecordIds[5]",
         "invalid record id 3.0"),
        (with_entry('{"succeededRecordIds": [true]}'), M + ".succeededRecordIds[0]", "invalid record id true"),
        (with_entry('{"succeededRecordIds": [null]}'), M + ".succeededRecordIds[0]", "invalid record id null"),
        (with_entry('{"succeededRecordIds": [1e3]}'), M + ".succeededRecordIds[0]", "invalid record id 1000.0"),
        (with_entry('{"succeededRecordIds": [[]]}'), M + ".succeededRecordIds[0]", "empty composite id"),
        (with_entry('{"succeededRecordIds": [{}]}'), M + ".succeededRecordIds[0]", "empty composite id"),
        (with_entry('{"succeededRecordIds": [[1, [2]]]}'), M + ".succeededRecordIds[0][1]",
         "invalid part of a composite record id: [2]"),
        (with_entry('{"succeededRecordIds": [{"a": 1, "b": null}]}'), M + '.succeededRecordIds[0]["b"]',
         "invalid part of a composite record id: null"),
        (with_entry('{"failedRecords": {}}'), M + ".failedRecords", "expected an array, got an object"),
        (with_record("7"), M + ".failedRecords[2]", "expected an object, got an integer"),
        (with_record('{"action": "RETRY"}'), M + ".failedRecords[2].id", "missing record id"),
        (with_record('{"id": 2.5}'), M + ".failedRecords[2].id", "invalid record id 2.5"),
        (with_record('{"id": 3, "action": "SKIP"}'), M + ".failedRecords[2].action",
         "invalid action 'SKIP', expected 'RETRY' or 'IGNORE'"),
        (with_record('{"id": 3, "action": "retry"}'), M + ".failedRecords[2].action", "invalid action 'retry'"),
        (with_record('{"id": 3, "action": 1}'), M + ".failedRecords[2].action", "invalid action 1"),
        (with_record('{"id": 3, "description": 1}'), M + ".failedRecords[2].description",
         "expected a string, got an integer"),
        (with_record('{"id": 3, "cause": []}'), M + ".failedRecords[2].cause", "expected a string, got an array"),
        (with_record('{"id": 3, "timestamp": "2025-02-30T00:00"}'), M + ".failedRecords[2].timestamp",
         "day is out of range"),
        ('{"fatalErrors": [1]}', "$.fatalErrors[0]", "expected a string, got an integer"),
        ('{"fataLErrors": "x"}', "$.fataLErrors", "expected an array, got a string"),
        ('{"migrationProgress": {"a\\"b": 1}}', '$.migrationProgress["a\\"b"]', "expected an object"),
    ],
)
def test_malformed_input_names_the_path(text, path, message):
    with pytest.raises(ProgressFormatError) as caught:
        MigrationProgress.from_json(text, source="progress.json")
    error = caught.value
    assert error.path == path
    assert error.source == "progress.json"
    assert message in str(error)
    assert "\n" not in str(error)


def test_integers_beyond_the_digit_limit_are_a_format_error():
    with pytest.raises(ProgressFormatError, match="a number longer than 1,000 digits") as caught:
        MigrationProgress.from_json('{"a": ' + "9" * 5000 + "}")
    assert caught.value.path == "$.a"


def test_deep_nesting_is_a_format_error():
    with pytest.raises(ProgressFormatError, match="nested more than 64 deep") as caught:
        MigrationProgress.from_json('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert caught.value.path == "$.x" + "[0]" * 63


LIMIT_CASES = [  # (document, JSON path, message): each breaks one limit, from_json and import alike
    (with_entry('{"succeededRecordIds": [1, ' + "7" * 1001 + "]}"), M + ".succeededRecordIds[1]",
     "a number longer than 1,000 digits"),
    (with_entry('{"succeededRecordIds": [1, -' + "7" * 5000 + "]}"), M + ".succeededRecordIds[1]",
     "a number longer than 1,000 digits"),
    (with_entry('{"succeededRecordIds": [[1, ' + "7" * 1001 + "]]}"), M + ".succeededRecordIds[0][1]",
     "a number longer than 1,000 digits"),
    ('{"metadata": {"x": ' + "[" * 80 + "]" * 80 + "}}", "$.metadata.x" + "[0]" * 62, "nested more than 64 deep"),
    (with_entry('{"extra": ' + "{\"a\": " * 70 + "1" + "}" * 70 + "}"), M + ".extra" + ".a" * 61,
     "nested more than 64 deep"),
    (with_record('{"id": 3, "cause": "' + "x" * 1_000_001 + '"}'), M + ".failedRecords[2].cause",
     "a string longer than 1,000,000 characters"),
    (with_entry('{"succeededRecordIds": ["' + "k" * 1_000_001 + '"]}'), M + ".succeededRecordIds[0]",
     "a string longer than 1,000,000 characters"),
    ('{"other": {"a": ' + "1" * 1001 + "}}", "$.other.a", "a number longer than 1,000 digits"),
    (with_record('{"id": 3, "timestamp": [' + "9" * 30 + ", 1, 1, 0, 0]}"), M + ".failedRecords[2].timestamp",
     "invalid timestamp"),
]


@pytest.mark.parametrize("text, path, message", LIMIT_CASES)
def test_limits_name_the_path_and_the_limit(text, path, message):
    with pytest.raises(ProgressFormatError) as caught:
        MigrationProgress.from_json(text, source="p.json")
    assert caught.value.path == path
    assert message in str(caught.value)
    assert len(str(caught.value)) < 300


def test_values_within_the_limits_are_read():
    big = int("9" * 1000)
    text = with_entry('{"succeededRecordIds": [' + str(big) + ', "' + "k" * 1_000_000 + '", ['
                      + str(-big) + ', "a"]], "extra": ' + "[" * 60 + "]" * 60 + "}")
    entry = MigrationProgress.from_json(text).migrations["com.x.M1"]
    assert list(entry.succeeded) == [big, "k" * 1_000_000, (-big, "a")]
