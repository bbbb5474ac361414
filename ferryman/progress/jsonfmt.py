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
from .jsonlimits import (
    MAX_DEPTH,
    MAX_STRING_CHARS,
    NUMBER_BOUND,
    number_too_long,
    string_too_long,
    too_deep,
    too_many_digits,
)
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
_METADATA_FIELDS = ("timestamp", "completedMigrationFQCNs", "inProgressMigrationFQCNs")
_RECORD_FIELDS = ("id", "description", "cause", "action", "timestamp")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "an integer", float: "a non-integer number", type(None): "null"}


class _Constant(ValueError):
    """NaN or Infinity, which JSON does not have."""


def _reject_constant(name: str) -> NoReturn:
    raise _Constant(f"{name} is not allowed")


def _show(value: Any) -> str:
    """A bad value as quoted in an error message, cut short to keep the message one line."""
    try:
        text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError):  # too deep, or an int too long for str()
        text = f"<{_JSON_TYPES.get(type(value), type(value).__name__)}>"
    return text if len(text) <= 80 else text[:77] + "..."


def loads(text: str, source: str | None = None) -> MigrationProgress:
    """Parse mjg progress JSON (pretty or compact); ``source`` names the file in errors."""
    text = text.removeprefix("\ufeff")
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise ProgressFormatError(message, "$", source) from None
    except _Constant as exc:
        raise ProgressFormatError(f"invalid JSON: {exc}", "$", source) from None
    except (RecursionError, ValueError) as exc:  # too deep, or an int with too many digits
        _raise_stream_error(text, source)  # names the path and the limit
        raise ProgressFormatError(f"invalid JSON: {exc or 'nested too deeply'}", "$", source) from None
    return Reader(source).progress(document)


def _raise_stream_error(text: str, source: str | None) -> None:
    """Read ``text`` as a stream, which raises the error with its JSON path (json.loads gives none)."""
    from io import BytesIO

    from .exchange import check_stream

    check_stream(BytesIO(text.encode("utf-8", "surrogatepass")), source)


def key_path(path: str, key: str) -> str:
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def member_path(path: str, key: str | int) -> str:
    """``$.a``, ``$["a.b"]`` or ``$[3]``: the path of an object member or an array item."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if key.isidentifier() and key.isascii() else key_path(path, key)


class Reader:
    """Walks a parsed document, building the model and naming the path of any problem."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(self, message: str, path: str) -> NoReturn:
        raise ProgressFormatError(message, path, self.source)

    def expect(self, value: Any, kind: type, path: str) -> Any:
        if type(value) is not kind:
            self.fail(f"expected {_JSON_TYPES[kind]}, got {_JSON_TYPES[type(value)]}", path)
        if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            self.fail(string_too_long(), path)
        return value

    def ignored(self, fields: dict[str, Any], known: tuple[str, ...], path: str, depth: int) -> None:
        """Check the unknown members of an object (at ``depth``) against the limits only."""
        for key, value in fields.items():
            if key not in known:
                self.within_limits(value, member_path(path, key), depth + 1)

    def within_limits(self, value: Any, path: str, depth: int) -> None:
        """Fail if ``value`` (nested ``depth`` deep) breaks a limit anywhere inside: an unknown
        field is ignored, but a file with a deep structure or a huge value anywhere is malformed."""
        stack = [(value, path, depth)]
        while stack:
            item, where, level = stack.pop()
            kind = type(item)
            if kind is str:
                self.expect(item, str, where)
            elif kind is int and too_many_digits(item):
                self.fail(number_too_long(), where)
            elif kind is list or kind is dict:
                if level > MAX_DEPTH:
                    self.fail(too_deep(), where)
                for key, child in (item.items() if kind is dict else enumerate(item)):
                    stack.append((child, member_path(where, key), level + 1))

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
        self.ignored(document, ("metadata", "migrationProgress", "fatalErrors", "fataLErrors"), "$", 1)
        fatal = self.strings(document.get("fatalErrors"), "$.fatalErrors")
        fatal += self.strings(document.get("fataLErrors"), "$.fataLErrors")
        migrations_path = "$.migrationProgress"
        migrations = {
            self.expect(key, str, migrations_path): self.entry(key, value, key_path(migrations_path, key))
            for key, value in self.as_object(document.get("migrationProgress"), migrations_path).items()
        }
        return MigrationProgress(self.metadata(document.get("metadata")), migrations, fatal)

    def metadata(self, value: Any) -> ProgressMetadata:
        fields = self.as_object(value, "$.metadata")
        self.ignored(fields, _METADATA_FIELDS, "$.metadata", 2)
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
        self.ignored(fields, ("fqcn", "succeededRecordIds", "failedRecords"), path, 3)
        fqcn = fields.get("fqcn")
        entry = MigrationEntry(key if fqcn is None else self.expect(fqcn, str, f"{path}.fqcn"))
        ids_path = f"{path}.succeededRecordIds"
        for index, raw in enumerate(self.as_array(fields.get("succeededRecordIds"), ids_path)):
            kind = type(raw)  # plain ints and strs within the limits, the usual case, skip the slower checks
            plain = ((kind is int and -NUMBER_BOUND < raw < NUMBER_BOUND)
                     or (kind is str and len(raw) <= MAX_STRING_CHARS))
            record_id = raw if plain else self.record_id(raw, f"{ids_path}[{index}]")
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
        self.ignored(fields, _RECORD_FIELDS, path, 5)
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
            self.id_part(value, path)
            return value
        if isinstance(value, (list, dict)):
            if not value:
                self.fail("invalid record id: an empty composite id", path)
            keys = list(value) if isinstance(value, dict) else None
            parts = list(value.values()) if isinstance(value, dict) else value
            for index, part in enumerate(parts):
                where = f"{path}[{index}]" if keys is None else key_path(path, keys[index])
                if not is_key_part(part):
                    self.fail(f"invalid part of a composite record id: {_show(part)}", where)
                self.id_part(part, where)
            return tuple(parts)
        self.fail(
            f"invalid record id {_show(value)}: expected an integer, a string, "
            "or an array of those for a composite id",
            path,
        )

    def id_part(self, value: int | str, path: str) -> None:
        if isinstance(value, str):
            self.expect(value, str, path)
        elif too_many_digits(value):
            self.fail(number_too_long(), path)

    def timestamp(self, value: Any, path: str) -> datetime:
        """A Java ``LocalDateTime``: ISO text with 0-9 fraction digits (cut to microseconds), or
        the array Jackson writes when ``WRITE_DATES_AS_TIMESTAMPS`` is left on."""
        if type(value) is list:
            fields = value
            if not 5 <= len(fields) <= 7 or any(type(f) is not int for f in fields):
                self.fail("invalid timestamp array: expected [year, month, day, hour, minute"
                          "(, second(, nanosecond))] of integers", path)
            fields = [*fields[:6], fields[6] // 1000] if len(fields) == 7 else fields
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
        except (ValueError, OverflowError) as exc:
            self.fail(f"invalid timestamp {_show(value)}: {exc}", path)
