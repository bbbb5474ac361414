"""What one database does its own way, as one object (alembic's ``DefaultImpl`` habit).

:class:`SqlStore`, the engines and the error mapping ask the store's dialect object and never
test a dialect's name. :class:`SqlDialect` itself is the generic default: plain SQL that any
SQLAlchemy dialect runs (INSERT without upserts, the expanded keyset condition, no driver error
codes known, no bulk path). Each database ferryman knows better is one subclass in its own
module (``sqlite.py``, ``postgres.py``, ``mysql.py``) listed in ``dialects.py``: adding a
database means adding one class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import URL, ColumnElement, Connection, Engine, Table, and_, bindparam, insert, or_
from sqlalchemy.types import TypeEngine

from ...types import Record, RecordId
from ..base import JournalEntry
from ..common import OnConflict
from .batch import InsertBatch, WriteInFlight
from .clauses import BOUND_COMPARISONS, Bound
from .driver import DriverStatement
from .driver_errors import ConstraintDetails
from .journal import JournalTables, check_fence_row, journal_values, raise_fence_row

if TYPE_CHECKING:
    from .driver_errors import Kind


class SqlDialect:
    """A database as SqlStore sees it; every method has the behaviour of a database that ferryman
    knows nothing special about. Instances are stateless and shared (``dialects.dialect_for``)."""

    names: ClassVar[tuple[str, ...]] = ()
    """The SQLAlchemy dialect names (``URL.get_backend_name()``) that this class serves."""

    upserts: ClassVar[bool] = False
    """True when :meth:`insert` knows the database's upsert (``on_conflict`` other than "error")."""

    pings_pooled: ClassVar[bool] = True
    """A pooled connection may have died meanwhile (a server's): the engine checks it when in doubt."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # --- engines and sessions ---------------------------------------------------------------

    def engine_kwargs(self, url: URL, options: Mapping[str, Any]) -> dict[str, Any]:
        """``create_engine`` keyword arguments for an engine ferryman builds from ``url``: the
        caller's ``options`` with this database's defaults under them."""
        return dict(options)

    def connect_statements(self, url: URL) -> tuple[str, ...]:
        """Run on every new DBAPI connection of an engine ferryman builds."""
        return ()

    def connection_counts(self, conn: Connection) -> tuple[int, int] | None:
        """``(limit, in use)``: the connections the server takes from ordinary users, and those
        open now (every user's); None when the database has no such limit or cannot tell."""
        return None

    def write_statements(self, url: URL) -> tuple[str, ...]:
        """Run on a DBAPI connection before its first write, and never by one that only reads."""
        return ()

    def check_url(self, url: URL, label: str) -> None:
        """Refuse, before connecting, a URL that cannot hold the store's table."""

    def adapt_table(self, table: Table, conn: Connection) -> None:
        """Make a freshly reflected table's column types faithful (``types.py``)."""

    # --- reading ----------------------------------------------------------------------------

    def key_bound(self, columns: Sequence[ColumnElement[Any]], values: Sequence[ColumnElement[Any]],
                  bound: Bound) -> ColumnElement[bool]:
        """``columns > values`` (``bound`` "after") or ``columns <= values`` ("upto") in tuple
        order, for a key of two or more columns, in a form the database answers from the key's
        index (``clauses.bound_clause`` binds the values).

        Row values are not understood everywhere (SQLite before 3.15) nor used as an index range
        everywhere (MariaDB), so the comparison is expanded: ``a >= x AND (a > x OR (a = x AND
        b > y))``, ``a <= x AND (a < x OR (a = x AND b <= y))``; the leading ``a >= x`` (``a <=
        x``) keeps the index range on the first column.
        """
        compare = BOUND_COMPARISONS[bound]
        terms = [
            and_(*(columns[j] == values[j] for j in range(i)),
                 (compare.whole if i == len(columns) - 1 else compare.earlier)(columns[i], values[i]))
            for i in range(len(columns))
        ]
        return and_(compare.first(columns[0], values[0]), or_(*terms))

    def lone_statement(self, conn: Connection) -> AbstractContextManager[None]:
        """Around one statement read on ``conn``'s DBAPI connection with no transaction wanted."""
        return nullcontext()

    def stream_options(self, rows: int) -> dict[str, Any]:
        """Execution options that make a large result arrive ``rows`` at a time."""
        return {"stream_results": True, "max_row_buffer": rows}

    def compares_like_python(self, column_type: TypeEngine[Any]) -> bool:
        """True when the database's ``=`` on text values of ``column_type`` is Python's (no case
        folding, no blank padding), so a matched row can be handed to the value it equals."""
        return False

    def pipelines(self, engine: Engine) -> bool:
        """True when :meth:`pipelined_pages` can read an unfiltered scan on ``engine``."""
        return False

    def pipelined_pages(self, conn: Connection, statement: DriverStatement, keys: list[str],
                        params: Callable[[RecordId], Any], id_of: Callable[[Record], RecordId],
                        after: RecordId, limit: int) -> Iterator[list[Record]] | None:
        """Pages after ``after``, each page's query sent before the page before it is handed
        out; None when ``conn``'s session cannot (the caller reads page by page)."""
        return None

    # --- writing ----------------------------------------------------------------------------

    def insert(self, conn: Connection, batch: InsertBatch) -> None:
        """Write ``batch`` inside the caller's transaction; plain INSERT here (``upserts`` False)."""
        conn.execute(insert(batch.table), batch.rows)

    def unkept_value(self, rows: list[Record]) -> tuple[Record, str, str] | None:
        """The first record with a value the database would change without a word instead of
        keeping or refusing it, its field, and why."""
        return None

    def start_copy(self, engine: Engine, table: Table, groups: list[list[Record]], on_conflict: OnConflict,
                   journal_tables: JournalTables, journal: JournalEntry | None) -> WriteInFlight | None:
        """A bulk path that sends a batch (and commits it with its journal entry, checked against
        its fence) while the caller goes on; None (the default) when there is none for these rows."""
        return None

    def append_journal(self, conn: Connection, tables: JournalTables, entry: JournalEntry, *, commit: bool) -> None:
        """INSERT ``entry`` into the journal, inside the batch's transaction, after checking its
        fence there (:class:`~.journal.StaleFence`: refused); with ``commit``, the transaction's
        last statement (a database may send the COMMIT with it).

        The INSERT is compiled once per table and dialect; ``inline()``: no RETURNING of the new
        seq, which nobody reads here.
        """
        check_fence_row(conn, tables.fences, entry)
        table = tables.entries
        values = journal_values(entry)
        cache_key = f"ferryman_append_{conn.dialect.name}"
        statement = table.info.get(cache_key)
        if statement is None:
            plain = insert(table).inline().values(migration=bindparam("migration"), payload=bindparam("payload"))
            statement = table.info[cache_key] = DriverStatement.compile(plain, conn) or plain
        if isinstance(statement, DriverStatement):
            conn.exec_driver_sql(statement.sql, statement.params(values))
        else:
            conn.execute(statement, values)

    def raise_fence(self, conn: Connection, table: Table, migration: str, epoch: int) -> None:
        """Raise ``migration``'s fence row to ``epoch`` (never lower it) in ``conn``'s transaction,
        waiting for the batches that share-locked it (``journal.raise_fence_row``)."""
        raise_fence_row(conn, table, migration, epoch)

    # --- errors -----------------------------------------------------------------------------

    def driver_kind(self, orig: BaseException) -> Kind | None:
        """What kind of failure (``driver_errors``) the driver's own error ``orig`` is; None for
        one this database does not single out (a value's fault: terminal)."""
        return None

    def constraint_details(self, orig: BaseException) -> ConstraintDetails:
        """The constraint, columns and values that the driver's error ``orig`` names."""
        return ConstraintDetails()

    def why_dropped(self, conn: Connection, rows: list[Record]) -> str:
        """Asked on a new connection ``conn`` after a batch's connection was lost: what in
        ``rows`` may have made the database drop it, or "". Raises when the database does not
        answer (an outage)."""
        conn.exec_driver_sql("SELECT 1")
        return ""
