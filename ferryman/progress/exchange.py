"""mjg JSON in and out of a durable ledger (SQLite or PostgreSQL), in memory bounded by a chunk, not the progress;
``ferryman progress export`` and ``import`` as functions (:func:`export_progress`,
:func:`import_progress`), and what they moved (:class:`ProgressCounts`).

Export streams ids from the ledger into the Jackson layout piece by piece (atomic file replace);
import parses the file as a stream of JSON events (ijson's C backend, fed through
:class:`~ferryman.progress.jsonlimits.LimitedReader`) and writes ids in chunks inside one ledger
transaction, validating every value with the same rules, limits and JSON paths as
:meth:`MigrationProgress.from_json`. Memory stays bounded whatever the file holds: no value is
built whole unless the format makes it small (a failed record, an id, the metadata), and those
are held to :data:`~ferryman.progress.jsonlimits.MAX_VALUE_CHARS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import ijson  # type: ignore[import-untyped]

from ..errors import InputError
from ..types import RecordId
from .files import (
    checked_location,
    is_ledger_file,
    is_postgres_location,
    location_exists,
    open_durable,
    reading,
    remove_ledger,
)
from .jsonfmt import Reader, iter_json, key_path, member_path
from .jsonlimits import (
    MAX_DEPTH,
    MAX_STRING_CHARS,
    MAX_VALUE_CHARS,
    LimitedReader,
    LimitExceeded,
    too_deep,
)
from .model import FailedRecord, MigrationProgress, ProgressMetadata
from .reader import LedgerReader
from .sqlite import SqliteLedger
from .storage import checked_path, save_chunks_atomically

if TYPE_CHECKING:
    from .postgres import PostgresLedger

CHUNK = 10_000
"""Ids or failed records written to the ledger at a time (fewer when they hold much text)."""


@dataclass(frozen=True)
class ProgressCounts:
    """What an export or import moved."""

    migrations: int
    succeeded: int
    failed: int

    def __str__(self) -> str:
        return (f"{self.migrations} migration(s), {self.succeeded} succeeded and "
                f"{self.failed} failed record(s)")

    @classmethod
    def of(cls, progress: MigrationProgress | LedgerReader) -> ProgressCounts:
        if isinstance(progress, MigrationProgress):
            entries = progress.migrations.values()
            return cls(len(entries), sum(len(e.succeeded) for e in entries), sum(len(e.failed) for e in entries))
        identities = progress.identities()
        return cls(len(identities), sum(sum(1 for _ in progress.iter_succeeded(i)) for i in identities),
                   sum(sum(1 for _ in progress.iter_failed(i)) for i in identities))


def export_progress(progress: str | os.PathLike[str], out: str | os.PathLike[str]) -> ProgressCounts:
    """Write the progress at ``progress`` (SQLite ledger or mjg JSON) as mjg JSON to ``out``
    (atomically, streaming from a ledger in bounded memory). Refused while a live run holds
    the ledger."""
    progress, out = checked_path(progress), checked_path(out)
    if os.path.abspath(progress) == os.path.abspath(out):
        raise InputError("--out is the progress file itself; choose another file")
    checked_location(out)
    with reading(progress) as ledger:
        if not isinstance(ledger, LedgerReader):
            whole = ledger.progress()
            whole.save(out)
            return ProgressCounts.of(whole)
        ledger.refuse_if_live("export")
        export_json(ledger, out)
        return ProgressCounts.of(ledger)


def import_progress(progress: str | os.PathLike[str], source: str | os.PathLike[str]) -> ProgressCounts:
    """Replace the SQLite or PostgreSQL ledger at ``progress`` with the mjg JSON in ``source``,
    all or nothing.

    The ledger is created when missing (and removed again if the import fails). Refused while a
    live run holds it; a malformed file changes nothing.
    """
    path = checked_path(progress)
    database = is_postgres_location(path)
    if not database and (path.lower().endswith(".json") or (os.path.exists(path) and not is_ledger_file(path))):
        raise InputError(f"{path} is a JSON progress file; import goes into an SQLite ledger (e.g. "
                         "progress.db); a JSON file can simply be copied")
    if not os.path.isfile(source):
        raise FileNotFoundError(2, "no such file", os.fspath(source))
    checked_location(path)
    created = not location_exists(path)
    ledger = open_durable(path)
    try:
        ledger.refuse_if_live("import")
        import_json(source, ledger)
        return ProgressCounts.of(ledger)
    except BaseException:
        ledger.close()
        if created:
            remove_ledger(path)
        raise
    finally:
        ledger.close()


def export_json(ledger: LedgerReader, path: str | os.PathLike[str]) -> None:
    """Write the ledger's progress as mjg JSON at ``path`` (atomically)."""
    entries = (
        (identity, identity, ledger.iter_succeeded(identity), ledger.iter_failed(identity))
        for identity in ledger.identities()
    )
    save_chunks_atomically(path, iter_json(ledger.metadata(), entries, ledger.fatal_errors()))


def import_json(path: str | os.PathLike[str], ledger: SqliteLedger | PostgresLedger) -> None:
    """Replace the ledger's content with the mjg JSON file at ``path``; all or nothing."""
    source = os.fspath(path)
    with open(source, "rb") as fh, ledger.replacing() as load:
        _Importer(Reader(source), fh, load).document()


def check_stream(fh: BinaryIO, source: str | None) -> None:
    """Read mjg JSON from ``fh`` only to raise its first :class:`ProgressFormatError`, if any."""
    _Importer(Reader(source), fh, _Discard()).document()


class Sink(Protocol):
    """Where the importer sends what it read (:class:`~ferryman.progress.sqlite.importer.LedgerImport`)."""

    def metadata(self, metadata: ProgressMetadata) -> None: ...

    def migration(self, identity: str) -> None: ...

    def succeeded(self, identity: str, ids: list[RecordId]) -> None: ...

    def failed(self, identity: str, records: list[FailedRecord]) -> None: ...

    def fatal_errors(self, texts: list[str]) -> None: ...


class _Discard:
    def metadata(self, metadata: ProgressMetadata) -> None:
        pass

    def migration(self, identity: str) -> None:
        pass

    def succeeded(self, identity: str, ids: list[RecordId]) -> None:
        pass

    def failed(self, identity: str, records: list[FailedRecord]) -> None:
        pass

    def fatal_errors(self, texts: list[str]) -> None:
        pass


class _Importer:
    """A small recursive descent over ijson's events; big arrays never become lists.

    Each read of an event names the JSON path of what it expects, so that a syntax error or a
    broken limit (raised by the reader below the parser) is reported where it is.
    """

    def __init__(self, reader: Reader, fh: BinaryIO, load: Sink) -> None:
        self.reader = reader
        self.events = ijson.basic_parse(LimitedReader(fh), use_float=False)
        self.load = load

    def next(self, path: str, index: int | None = None) -> tuple[str, Any]:
        try:
            return next(self.events)  # type: ignore[no-any-return]
        except LimitExceeded as exc:
            self.reader.fail(str(exc), path if index is None else f"{path}[{index}]")
        except ijson.JSONError as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.reader.fail(f"invalid JSON: {detail}", path if index is None else f"{path}[{index}]")
        except StopIteration:
            self.reader.fail("invalid JSON: the document ends early", path)

    def value(self, event: str, value: Any, path: str, depth: int, budget: list[int] | None) -> Any:
        """The whole (small) value starting with this event, at most ``budget[0]`` characters;
        with no budget, the value is read past and not kept (an unknown field)."""
        if event == "start_map" or event == "start_array":
            if depth > MAX_DEPTH:
                self.reader.fail(too_deep(), path)
            if event == "start_map":
                members = {}
                while (item := self.next(path))[0] != "end_map":
                    key = item[1]
                    self.spend(budget, len(key), path)
                    where = member_path(path, key)
                    members[key] = self.value(*self.next(where), where, depth + 1, budget)
                return members if budget is not None else None
            items: list[Any] = []
            while (item := self.next(path, len(items)))[0] != "end_array":
                items.append(self.value(*item, f"{path}[{len(items)}]", depth + 1, budget))
            return items if budget is not None else None
        if event == "string":
            self.spend(budget, len(value), path)
        elif event == "number":
            self.spend(budget, 8, path)
            return value if type(value) is int else float(value)
        return value

    def spend(self, budget: list[int] | None, size: int, path: str) -> None:
        if budget is None:
            return
        budget[0] -= size
        if budget[0] < 0:
            self.reader.fail(f"a value holding more than {MAX_VALUE_CHARS:,} characters", path)

    def whole(self, path: str, depth: int) -> Any:
        """The next value, read whole (held to :data:`MAX_VALUE_CHARS`)."""
        return self.value(*self.next(path), path, depth, [MAX_VALUE_CHARS])

    def skip(self, path: str, depth: int) -> None:
        """Read past the next value without keeping it (an unknown field)."""
        self.value(*self.next(path), path, depth, None)

    def members(self, path: str) -> Iterator[str]:
        """The keys of the object that starts now, leaving each value to the caller."""
        event, _ = self.next(path)
        if event == "null":
            return
        if event != "start_map":
            self.reader.fail("expected an object", path)
        while (item := self.next(path))[0] != "end_map":
            yield item[1]

    def document(self) -> None:
        event, _ = self.next("$")
        if event != "start_map":
            self.reader.fail("expected an object", "$")
        while (item := self.next("$"))[0] != "end_map":
            key = item[1]
            where = member_path("$", key)
            if key == "migrationProgress":
                self.migrations()
            elif key == "metadata":
                self.load.metadata(self.reader.metadata(self.whole(where, 2)))
            elif key in ("fatalErrors", "fataLErrors"):
                self.chunked("", where, 2, lambda text, path: self.reader.expect(text, str, path),
                             lambda _identity, texts: self.load.fatal_errors(texts))
            else:
                self.skip(where, 2)  # unknown fields are ignored
        try:
            extra = next(self.events, None)
        except ijson.JSONError:
            extra = True
        if extra is not None:
            self.reader.fail("invalid JSON: more text after the document", "$")

    def migrations(self) -> None:
        for identity in self.members("$.migrationProgress"):
            path = key_path("$.migrationProgress", self.reader.expect(identity, str, "$.migrationProgress"))
            self.load.migration(identity)
            for field in self.members(path):
                if field == "succeededRecordIds":
                    self.chunked(identity, f"{path}.succeededRecordIds", 4, self.reader.record_id,
                                 self.load.succeeded, ids=True)
                elif field == "failedRecords":
                    self.chunked(identity, f"{path}.failedRecords", 4, self.reader.failed_record,
                                 self.load.failed)
                else:
                    self.skip(member_path(path, field), 4)

    def chunked(self, identity: str, path: str, depth: int, check: Callable[[Any, str], Any],
                sink: Callable[[str, list[Any]], None], ids: bool = False) -> None:
        """Each item of the array at ``path``, checked, sent to ``sink`` in bounded chunks.

        ``ids``: the items are record ids, and a plain int or str is one as it is (the reader
        below the parser already held ints to the digit limit); the usual case, kept fast.
        """
        event, _ = self.next(path)
        if event == "null":
            return
        if event != "start_array":
            self.reader.fail("expected an array", path)
        chunk: list[Any] = []
        room = MAX_VALUE_CHARS
        index = 0
        while (item := self.next(path, index))[0] != "end_array":
            event, value = item
            kind = type(value)
            if ids and (kind is int or (kind is str and len(value) <= MAX_STRING_CHARS)):
                room -= 8 if kind is int else len(value)
            elif event == "start_map" or event == "start_array":
                where = f"{path}[{index}]"
                budget = [MAX_VALUE_CHARS]
                value = check(self.value(event, value, where, depth + 1, budget), where)
                room -= MAX_VALUE_CHARS - budget[0]
            else:
                room -= len(value) if kind is str else 8
                value = check(value if event != "number" or kind is int else float(value), f"{path}[{index}]")
            chunk.append(value)
            index += 1
            if len(chunk) >= CHUNK or room <= 0:
                sink(identity, chunk)
                chunk, room = [], MAX_VALUE_CHARS
        if chunk:
            sink(identity, chunk)


__all__ = ["ProgressCounts", "check_stream", "export_json", "export_progress", "import_json", "import_progress"]
