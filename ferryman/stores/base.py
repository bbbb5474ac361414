"""The contract every store honours. Read it before writing your own store.

Rules:

* **Reading.** :meth:`Store.read_page` returns the records that match a filter and whose id is
  greater than ``after``, in ascending key order, at most ``limit`` of them. This is keyset
  (cursor) pagination: no OFFSET, so paging costs the same on the last page as on the first and
  never skips or repeats a row. Composite keys compare as tuples.
* **Filters** are plain dicts: ``{"code": "A1"}`` is equality, a list/tuple/set/frozenset value
  means "in", ``{}`` or ``None`` matches everything. A store may also accept its native filter.
* **Saving.** :meth:`Store.save_all` is all-or-nothing when ``atomic`` is true (the default): on
  any error nothing of the batch remains. A store that cannot promise this sets ``atomic = False``;
  ferryman then saves one input record's outputs at a time.
* **Duplicates.** A unique-key violation raises :class:`~ferryman.errors.DuplicateDataError` with
  the driver's error as ``__cause__`` (``raise DuplicateDataError(...) from exc``). Other integrity
  errors (NOT NULL, foreign keys) are not duplicates. A store that can name the records of a
  batch that clash on its key before saving it says so in :meth:`Store.key_clashes`; after a
  duplicate, the engine asks it before the next batches and saves those records alone.
* **Transient vs terminal.** Raise :class:`~ferryman.errors.TransientStoreError` for failures a
  retry can fix (lost connection), :class:`~ferryman.errors.TerminalStoreError` for the others.
* **Saving ahead.** :meth:`Store.begin_save_all` may send a batch and return before it is
  committed, so the engine reads and transforms the next page meanwhile; the
  :class:`PendingWrite` it returns tells the outcome. The engine waits for one before it begins
  the next on the same store. The default saves at once.
* **Threads.** A store may be called from several threads at once (the status server reads
  counts while a run saves); keep per-call state local.
* **Matching.** A ``Match`` reads through :meth:`Store.match_pages` (one filter) and
  :meth:`Store.match_pages_in` (many equality filters at once). Their defaults are built on
  :meth:`Store.read_page`; a store overrides them to answer many filters with one query, or to
  read only the columns a Match names. Either way filter ``i``'s pages must be exactly the
  pages ``match_pages`` gives for it alone.
* **Key ranges.** :meth:`Store.split` cuts the records into ranges of about equal size, named
  by boundary ids; ``read_pages(..., after=lo, upto=hi)`` reads one range ``(lo, hi]``, so that
  several readers can share a source. The defaults (one range; ``upto`` applied in Python to
  :meth:`Store.read_page`'s pages) work for any store; a store overrides them to cut and bound
  in its database (``docs/stores.md``, "Key ranges").
* **Journal.** A store with ``supports_journal = True`` writes the given journal entry in the
  same transaction as the batch, which is how ferryman records progress exactly once.
* **Fence.** A journal entry carries the epoch of the ledger's lease (``fence``). A lease is
  judged by time, so a run paused after its lease check (SIGSTOP, a frozen VM) may commit a
  batch after another run took its lease over: the destination must refuse it.
  :meth:`Store.raise_fence` ``(migration, epoch)``: once it returns, no batch whose entry names
  ``migration`` with a ``fence`` below ``epoch`` commits any more (it raises
  :class:`~ferryman.errors.FencedOffError` and commits nothing of the batch), and every batch of
  an older epoch that did commit is seen by the next :meth:`Store.read_journal`: it waits for a
  batch that checked the fence before it was raised. The fence only rises; an entry without
  ``fence`` is never refused. A journal store implements both sides.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise, takewhile
from operator import itemgetter
from typing import Any

from ..defaults import DEFAULT_BATCH_SIZE
from ..ids import normalize_id
from ..types import Filter, Record, RecordId

PLAIN_ID_TYPES = frozenset({int, str})
"""Key value types that are ids as they are (bool is not: it becomes an int)."""


@dataclass(frozen=True)
class JournalEntry:
    """A progress note committed together with a batch of outputs.

    ``migration`` is the migration identity, ``payload`` an opaque text owned by the ledger.
    ``seq`` is assigned by the store when the entry is written. ``fence`` is the epoch of the
    writer's lease (None: no lease, no check): the batch commits only while the migration's
    fence is not above it (:meth:`Store.raise_fence`). It is checked, not stored: entries read
    back have None.
    """

    migration: str
    payload: str
    seq: int | None = None
    fence: int | None = None


@dataclass(frozen=True)
class ServerConnections:
    """How many connections a database server takes and has open: what bounds the number of
    workers that may run against it at once (each opens connections of its own)."""

    server: str
    """The server as messages name it (scheme, host and port: no user, password or database)."""
    limit: int
    """The connections it takes from ordinary users (``max_connections`` less those reserved)."""
    in_use: int
    """The connections open now, every user's."""

    @property
    def free(self) -> int:
        return max(self.limit - self.in_use, 0)


class PendingWrite:
    """A batch begun by :meth:`Store.begin_save_all`; :meth:`wait` ends it."""

    def wait(self) -> None:
        """Return once the batch is committed; raise what ``save_all`` would have raised.

        Call it exactly once; a write that is never waited for may or may not be committed
        (the journal entry tells which)."""


SAVED = PendingWrite()
"""A write already committed: waiting for it returns at once."""


class Store(ABC):
    """A collection of records of one kind: a table, a collection, a file, a list."""

    atomic: bool = True
    """True when :meth:`save_all` saves all records or none."""

    supports_journal: bool = False
    """True when :meth:`save_all` can commit a :class:`JournalEntry` with the batch."""

    shared: bool = False
    """True when another process that builds this store the same way (a worker importing the
    same TARGET) reads and writes the same records: a database server or file. Only then can
    a migration over it run in partitions on several workers."""

    concurrent_writes: bool = False
    """True when several processes may write the store at once (a database server; not an
    SQLite file, which takes one writer at a time)."""

    key_given: bool = True
    """False when the store finds its key in its database (``ferryman plan`` shows it)."""

    key_note: str = ""
    """How it found that key, when that needs saying (``ferryman plan`` shows it too)."""

    def __init__(self, name: str, key: str | Sequence[str] | None = "id") -> None:
        """``key=None``: the subclass learns its key later and provides ``key`` and
        ``key_fields`` itself (SqlStore reflects the table's primary key)."""
        if not isinstance(name, str) or not name:
            raise ValueError("a store needs a non-empty string name")
        self.name = name
        if key is None:
            return
        if isinstance(key, str):
            self.key: str | tuple[str, ...] = key
            self.key_fields: tuple[str, ...] = (key,)
        else:
            fields = tuple(key)
            if not fields or not all(isinstance(f, str) for f in fields):
                raise ValueError(f"store {name!r}: key must be a field name or a tuple of names")
            self.key = fields if len(fields) > 1 else fields[0]
            self.key_fields = fields

    @property
    def dataset(self) -> str:
        """What the store points at, for planning: two stores with the same dataset are the
        same data (a migration reading one runs after the migration writing the other).

        The default is the store's own name: a store of its own. Stores over shared systems
        say where their data lives (SqlStore: the database and table, without credentials).
        """
        return f"{type(self).__name__}:{self.name}"

    # --- ids and descriptions -------------------------------------------------------------

    @property
    def composite(self) -> bool:
        return len(self.key_fields) > 1

    def id_of(self, record: Record) -> RecordId:
        """The record's id in canonical form (int, str, or a tuple for a composite key)."""
        try:
            if self.composite:
                return normalize_id(tuple(record[f] for f in self.key_fields))
            value = record[self.key_fields[0]]
            kind = type(value)
            return value if kind is int or kind is str else normalize_id(value)  # hot path first
        except KeyError as exc:
            raise KeyError(f"record of store {self.name!r} has no key field {exc.args[0]!r}") from None

    def ids_of(self, records: Sequence[Record]) -> list[RecordId]:
        """The ids of many records, as :meth:`id_of` gives them; one pass in C for the usual
        int or str single-field keys."""
        if not self.composite:
            try:
                ids = list(map(itemgetter(self.key_fields[0]), records))
            except KeyError:
                ids = None  # id_of names the field
            if ids is not None and set(map(type, ids)) <= PLAIN_ID_TYPES:
                return ids
        return [self.id_of(r) for r in records]

    def describe(self, record: Record) -> str:
        """A short human description for failure reports, e.g. ``areas(id=3)``."""
        parts = ", ".join(f"{f}={record.get(f)!r}" for f in self.key_fields)
        return f"{self.name}({parts})"

    def key_filter_value(self, record_id: RecordId) -> tuple[Any, ...]:
        """The id as a tuple of key field values, in ``key_fields`` order."""
        return record_id if isinstance(record_id, tuple) else (record_id,)

    # --- the part a store implements --------------------------------------------------------

    @abstractmethod
    def read_page(self, filter: Filter | None, after: RecordId | None, limit: int) -> list[Record]:
        """Up to ``limit`` records matching ``filter`` with id > ``after``, in key order."""

    @abstractmethod
    def get_many(self, ids: Sequence[RecordId]) -> list[Record]:
        """The records with these ids, in key order; missing ids are left out."""

    @abstractmethod
    def save_all(self, records: list[Record], *, journal: JournalEntry | None = None) -> None:
        """Save the records (and the journal entry, if supported) in one transaction."""

    def begin_save_all(self, records: list[Record], *, journal: JournalEntry | None = None) -> PendingWrite:
        """Begin :meth:`save_all`; the returned write's :meth:`~PendingWrite.wait` ends it.

        A store whose database works on its own once it has the batch (PostgreSQL's COPY) sends
        it and returns, and the engine's next page is read and transformed meanwhile. Errors are
        raised here or by ``wait``, whichever first knows. This default saves at once."""
        if journal is None:
            self.save_all(records)  # stores without a journal need not take the keyword
        else:
            self.save_all(records, journal=journal)
        return SAVED

    def key_clashes(self, records: list[Record]) -> list[Record] | None:
        """Of a batch about to be saved, the records whose key is stored already or repeated
        among them (the very objects given, in their order): those the save would fail on as
        duplicates of the key. None when the store cannot tell (this default).

        It only saves work: the engine saves the records named alone, so a record named wrongly
        (its stored row deleted meanwhile, say) is saved all the same, and one left out fails
        its batch as it would have anyway."""
        return None

    def can_match_in(self, field: str, values: Sequence[Any]) -> bool:
        """True when ``read_page({field: values}, ...)`` returns exactly the records whose
        ``field`` equals one of ``values`` by Python ``==``.

        Then ferryman answers many records' equality filters on ``field`` with one query and
        hands each record its share (a page of 512 orders needs one product query, not 512).
        Say False where the store compares otherwise (case-insensitive collations, type
        coercion), and ferryman runs one query per distinct filter.
        """
        return False

    def count(self, filter: Filter | None = None) -> int | None:
        """How many records match, or None where counting is not cheap."""
        return None

    def unique_keys(self) -> list[tuple[str | None, tuple[str, ...]]]:
        """The store's unique constraints besides its key, as (name or None, fields): what a
        record may clash on when its key does not. A verification replays ``handle_duplicate``
        with them. Default: none known."""
        return []

    def read_journal(self, migration: str | None = None) -> list[JournalEntry]:
        """Journal entries committed with earlier batches, oldest first; only ``migration``'s if given."""
        return []

    def server_connections(self) -> ServerConnections | None:
        """The connections of the server this store is on, asked now; None when there is no
        server whose connections workers share (a file, memory) or it cannot tell. This default
        returns None."""
        return None

    def raise_fence(self, migration: str, epoch: int) -> None:
        """Refuse from now on the batches of ``migration`` whose journal entry's ``fence`` is
        below ``epoch`` (see the module's rules); a fence never goes down. Returns once every
        batch that checked the fence before is committed or rolled back.

        A run that took a lease over calls it before it reads the journal, so what the old
        holder committed is in the journal and nothing more of its can land. This default does
        nothing: a store without a journal has nothing to fence."""

    def delete_journal(self, migration: str | None = None, *, up_to_seq: int | None = None,
                       keep_last: bool = False) -> None:
        """Forget journal entries the ledger now holds.

        Only ``migration``'s entries (None: every migration's), and only those with
        ``seq <= up_to_seq`` (None: any seq). Stores on one database may share one journal
        table, so a ledger names its own migration. ``keep_last`` keeps ``migration``'s newest
        entry: a ledger's mark on the destination, which tells a later run with another ledger
        that this destination holds what a migration wrote.
        """

    def close(self) -> None:
        """Release connections; the store may be used again afterwards."""

    # --- built on the part above ------------------------------------------------------------

    def scan(self, filter: Filter | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[list[Record]]:
        """Pages of matching records in key order until the end."""
        return self.read_pages(filter, None, batch_size)

    def read_pages(self, filter: Filter | None, after: RecordId | None, limit: int,
                   upto: RecordId | None = None) -> Generator[list[Record], None, None]:
        """:meth:`read_page` after ``after``, then after each page's last key, until the end, or,
        with ``upto``, until the last record whose id is ``<= upto`` (the range ``(after, upto]``).

        A store may ask for the next page before this one is consumed (PostgreSQL does), so the
        database works while the caller does; an error ends the iteration.

        This default bounds the pages in Python (:func:`pages_upto`), which is exact when the
        store's key order is Python's order of ids; a store whose database orders keys its own
        way (a collation) applies ``upto`` in its query instead."""
        pages = keyset_pages(lambda last: self.read_page(filter, last, limit), self.id_of, after, limit)
        return pages if upto is None else pages_upto(pages, self.id_of, upto)

    def split(self, parts: int) -> list[RecordId]:
        """Up to ``parts - 1`` ids, ascending in key order, that cut all the store's records into
        ranges of about equal size: ``(None, b[0]]``, ``(b[0], b[1]]``, ..., ``(b[-1], None)``
        (:func:`key_ranges`); each range is read by ``read_pages(None, lo, limit, upto=hi)``.

        Fewer boundaries when there are fewer records than ``parts``. This default returns none:
        the whole store is one range, which every store can read.

        Raises:
            ValueError: ``parts`` is less than 1.
        """
        check_parts(parts)
        return []

    def match_pages(self, filter: Filter | None, batch_size: int,
                    columns: Sequence[str] | None = None) -> Iterator[list[Record]]:
        """The records matching ``filter`` in key order, in pages of ``batch_size`` (the last
        one shorter): what ``reduce_from_*`` receives for one filter.

        With ``columns``, each record holds only the key and those columns
        (:func:`match_fields`). This default reads :meth:`scan` and projects in Python."""
        pages = self.scan(filter, batch_size)
        if columns is None:
            return pages
        keep = match_fields(self.key_fields, columns)
        return (project(page, keep) for page in pages)

    def match_pages_in(self, fields: Sequence[str], values: Sequence[tuple[Any, ...]], batch_size: int,
                       columns: Sequence[str] | None = None) -> Iterator[tuple[int, list[Record]]]:
        """The matches of many equality filters at once; filter ``i`` is
        ``dict(zip(fields, values[i]))``, the ``values`` distinct and never None.

        Yields ``(i, page)``: filter ``i``'s pages exactly as :meth:`match_pages` gives them
        (key order, ``batch_size`` records but the last); pages of different filters may
        interleave, a filter with no match yields nothing. This default asks
        :meth:`match_pages` filter by filter; a store that can answer them all with a few
        queries overrides it, and falls back to this where its comparison differs from what
        one query per filter would find."""
        for i, row in enumerate(values):
            for page in self.match_pages(dict(zip(fields, row)), batch_size, columns):
                yield i, page

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, key={self.key!r})"


def keyset_pages(read: Callable[[RecordId | None], list[Record]], id_of: Callable[[Record], RecordId],
                 after: RecordId | None, limit: int) -> Generator[list[Record], None, None]:
    """``read(after)``, then ``read`` after each page's last key, until a short page."""
    while True:
        page = read(after)
        if not page:
            return
        yield page
        if len(page) < limit:
            return
        after = id_of(page[-1])


def pages_upto(pages: Generator[list[Record], None, None], id_of: Callable[[Record], RecordId],
               upto: RecordId) -> Generator[list[Record], None, None]:
    """``pages`` (in key order) up to the last record whose id is ``<= upto``, compared in Python.

    The page holding the first record past ``upto`` is cut before it and ends the pages; the
    pages behind it are never asked for (``pages`` is closed, which ends a read-ahead)."""
    bound = normalize_id(upto)
    try:
        for page in pages:
            if id_of(page[-1]) <= bound:  # type: ignore[operator]  # ids of one key compare
                yield page
                continue
            kept = list(takewhile(lambda record: id_of(record) <= bound, page))  # type: ignore[operator]
            if kept:
                yield kept
            return
    finally:
        pages.close()


def check_parts(parts: int) -> None:
    """Refuse a number of key ranges below one (:meth:`Store.split`)."""
    if parts < 1:
        raise ValueError(f"a store is split into at least 1 part, not {parts}")


def split_positions(total: int, parts: int) -> list[int]:
    """Where :meth:`Store.split` cuts ``total`` records in key order into ``parts`` ranges: the
    0-based positions of each range's last record but the last range's, ascending.

    The ranges hold ``total // parts`` or one more records (one record each when ``total`` is
    less than ``parts``); a store that can reach its n-th key cheaply splits with these."""
    check_parts(parts)
    ends = {-(-i * total // parts) for i in range(1, parts)}  # ceil(i * total / parts), counted from 1
    return sorted(end - 1 for end in ends if 0 < end < total)


def key_ranges(boundaries: Sequence[RecordId]) -> list[tuple[RecordId | None, RecordId | None]]:
    """The ranges ``(after, upto)`` that :meth:`Store.split`'s boundaries cut, in key order,
    None meaning unbounded: ``[b1, b2]`` gives ``[(None, b1), (b1, b2), (b2, None)]``; ``[]``
    one range of everything."""
    edges: list[RecordId | None] = [None, *boundaries, None]
    return list(pairwise(edges))


def match_fields(key_fields: Sequence[str], columns: Sequence[str]) -> tuple[str, ...]:
    """The fields of the records a Match with ``columns`` receives: the key (which ferryman
    pages by) and the columns."""
    return tuple(dict.fromkeys([*key_fields, *columns]))


def project(records: Sequence[Record], fields: Sequence[str]) -> list[Record]:
    """The records with only ``fields`` (those they have), as new dicts."""
    return [{f: r[f] for f in fields if f in r} for r in records]
