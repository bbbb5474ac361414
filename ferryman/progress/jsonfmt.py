"""Java mjg's progress JSON: writing it byte for byte as Jackson does, reading all of its variants.

Writing follows Jackson's ``INDENT_OUTPUT`` (``DefaultPrettyPrinter``): two-space indent,
``"key" : value``, arrays inline as ``[ 1, "a" ]``, empty containers as ``[ ]`` and ``{ }``,
arrays of objects as ``[ {`` ... ``}, {`` ... ``} ]``, ``\\n`` line ends, no final newline. Strings
use Jackson's escapes (short forms, otherwise ``\\u00XX`` with upper-case hex) and raw UTF-8.

Reading is more lenient than Java mjg: unknown fields are ignored, ``null`` counts as missing,
and the documentation's misspelt ``fataLErrors`` is accepted. Everything malformed raises
:class:`~ferryman.errors.ProgressFormatError` with the JSON path of the problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from json.encoder import encode_basestring  # json.dumps's C escaper, without its per-call setup
from typing import Any, NoReturn

from ..errors import ProgressFormatError
from ..types import RecordId
from .model import (
    Action,
    FailedRecord,
    MigrationEntry,
    MigrationProgress,
    ProgressMetadata,
    is_key_part,
)

# --- writing ------------------------------------------------------------------------------

# json writes lower-case hex in \u escapes and passes lone surrogates through; Jackson writes
# upper-case hex, and an escaped surrogate keeps the output valid UTF-8.
_JACKSON_FIXUPS = re.compile(r"\\\\|\\u00([0-9a-f]{2})|[\ud800-\udfff]")


def _jackson_fixup(match: re.Match[str]) -> str:
    text = match.group(0)
    if text == "\\\\":
        return text
    if match.group(1):
        return "\\u00" + match.group(1).upper()
    return f"\\u{ord(text):04X}"


def _string(value: str) -> str:
    out: str = encode_basestring(value)
    if "\\u" in out or not out.isascii():
        out = _JACKSON_FIXUPS.sub(_jackson_fixup, out)
    return out


def _id(value: RecordId) -> str:
    if isinstance(value, tuple) and value:
        return "[ " + ", ".join(map(_id_part, value)) + " ]"
    return _id_part(value)


def _id_part(value: object) -> str:
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)  # an IntEnum's str() would be its name
    raise TypeError(f"cannot write record id {value!r}: expected an int, a str or a tuple of those")


def _array(items: Iterable[str]) -> str:
    body = ", ".join(items)
    return f"[ {body} ]" if body else "[ ]"


def format_timestamp(value: datetime) -> str:
    """Java ``LocalDateTime`` ISO text: seconds always, fraction without trailing zeros."""
    if value.tzinfo is not None:
        value = value.astimezone().replace(tzinfo=None)
    text = value.isoformat(timespec="seconds")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text


def _failed_record(record: FailedRecord) -> str:
    return (
        "{\n"
        f'        "id" : {_id(record.id)},\n'
        f'        "description" : {_string(record.description)},\n'
        f'        "cause" : {_string(record.cause)},\n'
        f'        "action" : {_string(Action(record.action).value)},\n'
        f'        "timestamp" : {_string(format_timestamp(record.timestamp))}\n'
        "      }"
    )


def _array_chunks(items: Iterable[str], chunk: int = 10_000) -> Iterator[str]:
    """``_array`` as pieces, so a million ids never sit in one string."""
    iterator = iter(items)
    first = list(islice(iterator, chunk))
    if not first:
        yield "[ ]"
        return
    yield "[ " + ", ".join(first)
    while batch := list(islice(iterator, chunk)):
        yield ", " + ", ".join(batch)
    yield " ]"


EntryParts = tuple[str, str, Iterable[RecordId], Iterable[FailedRecord]]
"""One migration to write: its key, ``fqcn``, succeeded ids and failed records."""


def iter_json(
    metadata: ProgressMetadata, entries: Iterable[EntryParts], fatal_errors: Iterable[str]
) -> Iterator[str]:
    """The mjg JSON text in pieces: lets a large ledger be exported in bounded memory."""
    yield (
        "{\n"
        '  "metadata" : {\n'
        f'    "timestamp" : {_string(format_timestamp(metadata.timestamp))},\n'
        f'    "completedMigrationFQCNs" : {_array(map(_string, metadata.completed))},\n'
        f'    "inProgressMigrationFQCNs" : {_array(map(_string, metadata.in_progress))}\n'
        "  },\n"
        '  "migrationProgress" : '
    )
    opened = False
    for key, fqcn, ids, failed in entries:
        yield ",\n" if opened else "{\n"
        opened = True
        yield f'    {_string(key)} : {{\n      "fqcn" : {_string(fqcn)},\n      "succeededRecordIds" : '
        yield from _array_chunks(map(_id, ids))
        yield ',\n      "failedRecords" : '
        yield from _array_chunks(map(_failed_record, failed), chunk=1000)
        yield "\n    }"
    yield "\n  },\n" if opened else "{ },\n"
    yield f'  "fatalErrors" : {_array(map(_string, fatal_errors))}\n}}'


def dumps(progress: MigrationProgress) -> str:
    """The mjg JSON text of ``progress``, as Jackson's pretty printer lays it out."""
    entries = ((k, e.fqcn, e.succeeded, e.failed.values()) for k, e in progress.migrations.items())
    return "".join(iter_json(progress.metadata, entries, progress.fatal_errors))


# --- reading ------------------------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?", re.ASCII
)
_ACTIONS = {action.value: action for action in Action}
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "an integer", float: "a non-integer number", type(None): "null"}


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


def _show(value: Any) -> str:
    """A bad value as quoted in an error message, cut short to keep the message one line."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def loads(text: str, source: str | None = None) -> MigrationProgress:
    """Parse mjg progress JSON (pretty or compact); ``source`` names the file in errors."""
    try:
        document = json.loads(text.removeprefix("\ufeff"), parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise ProgressFormatError(message, "$", source) from None
    except RecursionError:
        raise ProgressFormatError("invalid JSON: nested too deeply", "$", source) from None
    except ValueError as exc:  # NaN/Infinity, or an integer beyond Python's digit limit
        raise ProgressFormatError(f"invalid JSON: {exc}", "$", source) from None
    return Reader(source).progress(document)


def key_path(path: str, key: str) -> str:
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


class Reader:
    """Walks a parsed document, building the model and naming the path of any problem."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(self, message: str, path: str) -> NoReturn:
        raise ProgressFormatError(message, path, self.source)

    def expect(self, value: Any, kind: type, path: str) -> Any:
        if type(value) is not kind:
            self.fail(f"expected {_JSON_TYPES[kind]}, got {_JSON_TYPES[type(value)]}", path)
        return value

    def as_object(self, value: Any, path: str) -> dict[str, Any]:
        return {} if value is None else self.expect(value, dict, path)

    def as_array(self, value: Any, path: str) -> list[Any]:
        return [] if value is None else self.expect(value, list, path)

    def strings(self, value: Any, path: str) -> list[str]:
        items = self.as_array(value, path)
        for index, item in enumerate(items):
            self.expect(item, str, f"{path}[{index}]")
        return items

    def progress(self, document: Any) -> MigrationProgress:
        document = self.expect(document, dict, "$")
        fatal = self.strings(document.get("fatalErrors"), "$.fatalErrors")
        fatal += self.strings(document.get("fataLErrors"), "$.fataLErrors")
        migrations_path = "$.migrationProgress"
        migrations = {
            key: self.entry(key, value, key_path(migrations_path, key))
            for key, value in self.as_object(document.get("migrationProgress"), migrations_path).items()
        }
        return MigrationProgress(self.metadata(document.get("metadata")), migrations, fatal)

    def metadata(self, value: Any) -> ProgressMetadata:
        fields = self.as_object(value, "$.metadata")
        raw_time = fields.get("timestamp")
        return ProgressMetadata(
            datetime.now() if raw_time is None else self.timestamp(raw_time, "$.metadata.timestamp"),
            list(dict.fromkeys(self.strings(fields.get("completedMigrationFQCNs"),
                                            "$.metadata.completedMigrationFQCNs"))),
            list(dict.fromkeys(self.strings(fields.get("inProgressMigrationFQCNs"),
                                            "$.metadata.inProgressMigrationFQCNs"))),
        )

    def entry(self, key: str, value: Any, path: str) -> MigrationEntry:
        fields = self.as_object(value, path)
        fqcn = fields.get("fqcn")
        entry = MigrationEntry(key if fqcn is None else self.expect(fqcn, str, f"{path}.fqcn"))
        ids_path = f"{path}.succeededRecordIds"
        for index, raw in enumerate(self.as_array(fields.get("succeededRecordIds"), ids_path)):
            kind = type(raw)  # plain ints and strs, the usual case, skip the slower checks
            record_id = raw if kind is int or kind is str else self.record_id(raw, f"{ids_path}[{index}]")
            entry.succeeded[record_id] = None
        failed_path = f"{path}.failedRecords"
        for index, raw in enumerate(self.as_array(fields.get("failedRecords"), failed_path)):
            record = self.failed_record(raw, f"{failed_path}[{index}]")
            # A hand-edited file may list an id as both; succeeded wins, as when a run saves it.
            if record.id not in entry.succeeded:
                entry.failed[record.id] = record
        return entry

    def failed_record(self, value: Any, path: str) -> FailedRecord:
        fields = self.expect(value, dict, path)
        if "id" not in fields:
            self.fail("missing record id", f"{path}.id")
        action = fields.get("action")
        if action is not None and action not in _ACTIONS:
            self.fail(f"invalid action {_show(action)}, expected 'RETRY' or 'IGNORE'", f"{path}.action")
        raw_time = fields.get("timestamp")
        return FailedRecord(
            id=self.record_id(fields["id"], f"{path}.id"),
            description=self.optional_string(fields.get("description"), f"{path}.description"),
            cause=self.optional_string(fields.get("cause"), f"{path}.cause"),
            action=Action.RETRY if action is None else _ACTIONS[action],
            timestamp=datetime.now() if raw_time is None else self.timestamp(raw_time, f"{path}.timestamp"),
        )

    def optional_string(self, value: Any, path: str) -> str:
        return "" if value is None else self.expect(value, str, path)

    def record_id(self, value: object, path: str) -> RecordId:
        """An id: int, str, or a composite written as an array or (by Jackson) an object."""
        if is_key_part(value):
            return value
        if isinstance(value, (list, dict)):
            if not value:
                self.fail("invalid record id: an empty composite id", path)
            keys = list(value) if isinstance(value, dict) else None
            parts = list(value.values()) if isinstance(value, dict) else value
            for index, part in enumerate(parts):
                if not is_key_part(part):
                    where = f"{path}[{index}]" if keys is None else key_path(path, keys[index])
                    self.fail(f"invalid part of a composite record id: {_show(part)}", where)
            return tuple(parts)
        self.fail(
            f"invalid record id {_show(value)}: expected an integer, a string, "
            "or an array of those for a composite id",
            path,
        )

    def timestamp(self, value: Any, path: str) -> datetime:
        """A Java ``LocalDateTime``: ISO text with 0-9 fraction digits (cut to microseconds), or
        the array Jackson writes when ``WRITE_DATES_AS_TIMESTAMPS`` is left on."""
        if type(value) is list:
            fields = value
            if not 5 <= len(fields) <= 7 or any(type(f) is not int for f in fields):
                self.fail("invalid timestamp array: expected [year, month, day, hour, minute"
                          "(, second(, nanosecond))] of integers", path)
            fields = fields[:6] + [fields[6] // 1000] if len(fields) == 7 else fields
        else:
            match = _TIMESTAMP.fullmatch(self.expect(value, str, path))
            if match is None:
                self.fail(f"invalid timestamp {_show(value)}: expected an ISO-8601 local date-time "
                          "such as 2025-08-29T00:33:51.600238", path)
            *date_time, fraction = match.groups()
            fields = [int(part or 0) for part in date_time]
            fields.append(int((fraction or "")[:6].ljust(6, "0")))
        try:
            return datetime(*fields)
        except ValueError as exc:
            self.fail(f"invalid timestamp {_show(value)}: {exc}", path)
