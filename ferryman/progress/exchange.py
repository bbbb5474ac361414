"""mjg JSON in and out of the SQLite ledger, in memory bounded by a chunk, not the progress.

Export streams ids from the ledger into the Jackson layout piece by piece (atomic file replace);
import parses the file as a stream of JSON events (ijson) and writes ids in chunks inside one
ledger transaction, validating every value with the same rules and JSON paths as
:meth:`MigrationProgress.from_json`.
"""

from __future__ import annotations

import os
from itertools import islice
from typing import Any, Callable, Iterator

import ijson

from ..errors import ProgressFormatError
from .jsonfmt import Reader, iter_json, key_path
from .sqlite_ledger import LedgerImport, SqliteLedger
from .storage import save_chunks_atomically

CHUNK = 10_000


def export_json(ledger: SqliteLedger, path: str | os.PathLike[str]) -> None:
    """Write the ledger's progress as mjg JSON at ``path`` (atomically)."""
    entries = (
        (identity, identity, ledger.iter_succeeded(identity), ledger.iter_failed(identity))
        for identity in ledger.identities()
    )
    save_chunks_atomically(path, iter_json(ledger.metadata(), entries, ledger.fatal_errors()))


def import_json(path: str | os.PathLike[str], ledger: SqliteLedger) -> None:
    """Replace the ledger's content with the mjg JSON file at ``path``; all or nothing."""
    source = os.fspath(path)
    with open(source, "rb") as fh, ledger.replacing() as load:
        try:
            _Importer(Reader(source), ijson.parse(fh, use_float=False), load).document()
        except ijson.JSONError as exc:
            raise ProgressFormatError(f"invalid JSON: {exc}", "$", source) from None


class _Importer:
    """A small recursive descent over ijson's events; big arrays never become lists."""

    def __init__(self, reader: Reader, events: Iterator[tuple[str, str, Any]], load: LedgerImport) -> None:
        self.reader = reader
        self.events = events
        self.load = load

    def next(self) -> tuple[str, Any]:
        _, event, value = next(self.events)
        return event, value

    def value(self, event: str, value: Any) -> Any:
        """The whole (small) value starting with this event."""
        if event == "start_map":
            result = {}
            while (item := self.next())[0] != "end_map":
                result[item[1]] = self.value(*self.next())
            return result
        if event == "start_array":
            items = []
            while (item := self.next())[0] != "end_array":
                items.append(self.value(*item))
            return items
        return float(value) if event == "number" and not isinstance(value, int) else value

    def members(self, path: str) -> Iterator[str]:
        """The keys of the object that starts now, leaving each value to the caller."""
        event, _ = self.next()
        if event == "null":
            return
        if event != "start_map":
            self.reader.fail("expected an object", path)
        while (item := self.next())[0] != "end_map":
            yield item[1]

    def items(self, path: str) -> Iterator[tuple[int, str, Any]]:
        """``(index, event, value)`` for each item of the array that starts now."""
        event, _ = self.next()
        if event == "null":
            return
        if event != "start_array":
            self.reader.fail("expected an array", path)
        index = 0
        while (item := self.next())[0] != "end_array":
            yield index, *item
            index += 1

    def document(self) -> None:
        event, _ = self.next()
        if event != "start_map":
            self.reader.fail("expected an object", "$")
        while (item := self.next())[0] != "end_map":
            key = item[1]
            if key == "migrationProgress":
                self.migrations()
            elif key == "metadata":
                self.load.metadata(self.reader.metadata(self.value(*self.next())))
            elif key in ("fatalErrors", "fataLErrors"):
                self.load.fatal_errors(self.reader.strings(self.value(*self.next()), f"$.{key}"))
            else:
                self.value(*self.next())  # unknown fields are ignored

    def migrations(self) -> None:
        for identity in self.members("$.migrationProgress"):
            path = key_path("$.migrationProgress", identity)
            for field in self.members(path):
                if field == "succeededRecordIds":
                    self.chunked(identity, f"{path}.succeededRecordIds", self.reader.record_id,
                                 self.load.succeeded)
                elif field == "failedRecords":
                    self.chunked(identity, f"{path}.failedRecords", self.reader.failed_record,
                                 self.load.failed)
                else:
                    self.value(*self.next())

    def chunked(self, identity: str, path: str, check: Callable[[Any, str], Any],
                sink: Callable[[str, list[Any]], None]) -> None:
        values = (check(self.value(event, value), f"{path}[{i}]") for i, event, value in self.items(path))
        while chunk := list(islice(values, CHUNK)):
            sink(identity, chunk)


__all__ = ["export_json", "import_json"]
