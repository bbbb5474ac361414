"""MemoryStore: records in a Python structure, for tests and examples.

It keeps the promises a real database store keeps (key order, atomic batches, unique keys,
duplicate errors with a cause, a journal), so a migration tested against it behaves the same on
SQL. Records are copied on the way in and out: a caller mutating a dict it passed or got back
cannot change the store behind its back, just as with a database.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, NoReturn

from ..errors import DuplicateDataError, TerminalStoreError
from ..ids import normalize_id
from ..types import Filter, Record, RecordId
from .base import JournalEntry, Store, match_fields, project, split_positions
from .common import IN_TYPES, OnConflict, check_fence, check_on_conflict, describe_values

UniqueFields = tuple[str, ...]


class MemoryStore(Store):
    """A thread-safe, in-process store.

    Args:
        name: the registry name.
        key: the key field, or a tuple of fields for a composite key.
        records: initial records, saved as one batch (so duplicates among them raise).
        unique: extra unique constraints, each a field name or a tuple of field names. As in
            SQL, a record with ``None`` (or no value) in a constrained field never clashes.
        on_conflict: what to do with a record whose key is already stored; see
            :data:`~ferryman.stores.common.OnConflict`. ``"update"`` merges the given fields
            into the stored record, like SqlStore's upsert.

    A native filter is a callable ``record -> bool``.

    Keys are kept in Python's order, so ``read_pages(..., upto=...)`` is
    :meth:`Store.read_pages`'s own, and :meth:`split` cuts that order exactly.
    """

    supports_journal = True

    def __init__(
        self,
        name: str,
        key: str | Sequence[str] = "id",
        records: Iterable[Record] = (),
        unique: Sequence[str | Sequence[str]] = (),
        *,
        on_conflict: OnConflict = "error",
    ) -> None:
        super().__init__(name, key)
        self.on_conflict = check_on_conflict(on_conflict)
        self.unique: tuple[UniqueFields, ...] = tuple((u,) if isinstance(u, str) else tuple(u) for u in unique)
        self._label = f"store {name!r} (memory)"
        self._lock = threading.Lock()
        self._ids: list[RecordId] = []  # sorted, for bisect
        self._rows: dict[RecordId, Record] = {}
        self._owners: list[dict[tuple[Any, ...], RecordId]] = [{} for _ in self.unique]
        self._journal: list[JournalEntry] = []
        self._last_seq = 0
        self._fences: dict[str, int] = {}
        initial = list(records)
        if initial:
            self.save_all(initial)

    # --- reading ------------------------------------------------------------------------

    def read_page(self, filter: Filter | Callable[[Record], bool] | None, after: RecordId | None,
                  limit: int) -> list[Record]:
        if limit < 1:
            raise ValueError(f"{self._label}: limit must be at least 1, not {limit}")
        matches = _matcher(filter)
        page: list[Record] = []
        with self._lock:
            start = 0 if after is None else bisect.bisect_right(self._ids, normalize_id(after))
            for index in range(start, len(self._ids)):
                record = self._rows[self._ids[index]]
                if matches(record):
                    page.append(copy.deepcopy(record))
                    if len(page) == limit:
                        break
        return page

    def split(self, parts: int) -> list[RecordId]:
        """The ids at :func:`~ferryman.stores.base.split_positions`: ranges whose sizes differ by
        one record at most."""
        with self._lock:
            ids = self._ids  # replaced by a save, never changed in place
        return [ids[at] for at in split_positions(len(ids), parts)]

    def get_many(self, ids: Sequence[RecordId]) -> list[Record]:
        wanted = {normalize_id(i) for i in ids}
        with self._lock:
            found = sorted(i for i in wanted if i in self._rows)
            return [copy.deepcopy(self._rows[i]) for i in found]

    def can_match_in(self, field: str, values: Sequence[Any]) -> bool:
        return True  # "in" here is Python's own ==

    def match_pages_in(self, fields: Sequence[str], values: Sequence[tuple[Any, ...]], batch_size: int,
                       columns: Sequence[str] | None = None) -> Iterator[tuple[int, list[Record]]]:
        """One pass over the records for all the filters (a dict lookup per record), a page
        handed out as soon as it is full."""
        wanted = {tuple(row): i for i, row in enumerate(values)}
        keep = None if columns is None else match_fields(self.key_fields, columns)
        with self._lock:
            rows = [self._rows[i] for i in self._ids]  # stored dicts are replaced, never changed
        pending: dict[int, list[Record]] = {}
        for record in rows:
            try:
                i = wanted.get(tuple([record.get(f) for f in fields]))
            except TypeError:  # an unhashable value equals none of the filters' values
                continue
            if i is None:
                continue
            page = pending.setdefault(i, [])
            page.append(copy.deepcopy(record))
            if len(page) == batch_size:
                yield i, page if keep is None else project(page, keep)
                pending[i] = []
        for i, page in pending.items():
            if page:
                yield i, page if keep is None else project(page, keep)

    def count(self, filter: Filter | Callable[[Record], bool] | None = None) -> int:
        matches = _matcher(filter)
        with self._lock:
            return sum(1 for record in self._rows.values() if matches(record))

    def records(self) -> list[Record]:
        """Every record, in key order (copies), for assertions in tests."""
        with self._lock:
            return [copy.deepcopy(self._rows[i]) for i in self._ids]

    # --- writing ------------------------------------------------------------------------

    def save_all(self, records: list[Record], *, journal: JournalEntry | None = None) -> None:
        """Validate the whole batch, then apply it; on any error nothing is saved."""
        incoming = [(self._id_for_save(r), copy.deepcopy(dict(r))) for r in records]
        with self._lock:
            if journal is not None:
                check_fence(self._label, journal, self._fences.get(journal.migration))
            changes = self._resolve_keys(incoming)
            self._check_unique(changes)
            ids = self._sorted_ids_with(changes)
            self._apply(changes, ids)
            if journal is not None:
                self._last_seq += 1
                self._journal.append(replace(journal, seq=self._last_seq, fence=None))

    def _id_for_save(self, record: Record) -> RecordId:
        try:
            return self.id_of(record)
        except (KeyError, ValueError) as exc:
            raise TerminalStoreError(f"{self._label}: cannot save {self.describe(record)}: {exc}") from exc

    def _resolve_keys(self, incoming: list[tuple[RecordId, Record]]) -> dict[RecordId, Record]:
        """The final record for every key the batch touches, after the on_conflict rule."""
        changes: dict[RecordId, Record] = {}
        for record_id, record in incoming:
            current = changes.get(record_id, self._rows.get(record_id))
            if current is None:
                changes[record_id] = record
            elif self.on_conflict == "error":
                self._raise_duplicate(self.key_fields, self.key_filter_value(record_id), record)
            elif self.on_conflict == "update":
                changes[record_id] = {**current, **record}
        return changes

    def _check_unique(self, changes: dict[RecordId, Record]) -> None:
        for fields, owners in zip(self.unique, self._owners):
            claimed: dict[tuple[Any, ...], RecordId] = {}
            for record_id, record in changes.items():
                values = _unique_values(record, fields)
                if values is None:
                    continue
                first = claimed.setdefault(values, record_id)
                owner = owners.get(values)
                # A stored owner that the batch also changes is checked through `claimed` instead.
                if first != record_id or (owner is not None and owner != record_id and owner not in changes):
                    self._raise_duplicate(fields, values, record)

    def _sorted_ids_with(self, changes: dict[RecordId, Record]) -> list[RecordId]:
        added = [i for i in changes if i not in self._rows]
        if not added:
            return self._ids
        try:
            return sorted(self._ids + added)  # a sorted run plus a short tail: close to linear
        except TypeError as exc:
            raise TerminalStoreError(f"{self._label}: keys of different types cannot be ordered: {exc}") from exc

    def _apply(self, changes: dict[RecordId, Record], ids: list[RecordId]) -> None:
        for record_id in changes:
            old = self._rows.get(record_id)
            for fields, owners in zip(self.unique, self._owners):
                values = None if old is None else _unique_values(old, fields)
                if values is not None and owners.get(values) == record_id:
                    del owners[values]
        for record_id, record in changes.items():
            self._rows[record_id] = record
            for fields, owners in zip(self.unique, self._owners):
                values = _unique_values(record, fields)
                if values is not None:
                    owners[values] = record_id
        self._ids = ids

    def unique_keys(self) -> list[tuple[str | None, tuple[str, ...]]]:
        return [(None, tuple(fields)) for fields in self.unique]

    def _raise_duplicate(self, fields: Sequence[str], values: Sequence[Any], record: Record) -> NoReturn:
        what = describe_values(fields, values)
        # A KeyError plays the driver error's part, so __cause__ is set as with a database.
        raise DuplicateDataError(f"{self._label}: duplicate key {what}", [record], columns=fields,
                                 values=tuple(map(str, values))) from KeyError(what)

    # --- journal ------------------------------------------------------------------------

    def read_journal(self, migration: str | None = None) -> list[JournalEntry]:
        with self._lock:
            return [e for e in self._journal if migration is None or e.migration == migration]

    def raise_fence(self, migration: str, epoch: int) -> None:
        """A batch holds the store's lock from its fence check to its commit: taking the lock
        waits for it."""
        with self._lock:
            self._fences[migration] = max(epoch, self._fences.get(migration, epoch))

    def delete_journal(self, migration: str | None = None, *, up_to_seq: int | None = None,
                       keep_last: bool = False) -> None:
        with self._lock:
            kept = [e for e in self._journal if e.migration == migration][-1:] if keep_last else []
            self._journal = [e for e in self._journal
                             if e in kept or not _journal_selects(e, migration, up_to_seq)]

def _journal_selects(entry: JournalEntry, migration: str | None, up_to_seq: int | None) -> bool:
    in_migration = migration is None or entry.migration == migration
    return in_migration and (up_to_seq is None or (entry.seq is not None and entry.seq <= up_to_seq))


def _unique_values(record: Record, fields: UniqueFields) -> tuple[Any, ...] | None:
    values = tuple(record.get(f) for f in fields)
    return None if any(v is None for v in values) else values


def _matcher(filter: Filter | Callable[[Record], bool] | None) -> Callable[[Record], bool]:
    if filter is None:
        return lambda record: True
    if isinstance(filter, Mapping):
        terms = list(filter.items())
        return lambda record: all(
            record.get(field) in value if isinstance(value, IN_TYPES) else record.get(field) == value
            for field, value in terms
        )
    if callable(filter):
        return filter
    raise TypeError(f"a filter is a dict or a callable, not {type(filter).__name__}")
