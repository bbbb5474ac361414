"""MariaDB/MySQL's saving ahead: a batch's transaction sent as one query whose outcome is read
later, while the caller goes on with the next page (as PostgreSQL's COPY, ``postgres_copy.py``).

:func:`start_inserts` sends ``START TRANSACTION; INSERT ...; INSERT INTO ferryman_journal ...;
COMMIT`` as one query (a fenced entry's check, ``IF ... SIGNAL``, right before its journal row)
and returns without waiting: the server parses, inserts and commits while
the caller reads and transforms the next page, on the same thread (a thread waiting on the
server would have to win the GIL back from the caller at every answer).
:meth:`QueryInFlight.finish` then reads the statements' results. The server stops at the first
statement that fails, so the COMMIT only runs when every row and the journal row were written:
the batch is one transaction with its journal row, as ever; the pool rolls back what a failed
batch began when the connection goes back.

Statements in one query need the session's ``CLIENT.MULTI_STATEMENTS``, which the engines that
ferryman builds ask for (``MySQLDialect.engine_kwargs``); on a connection without it, or a driver
other than PyMySQL, batches are saved at once. Sending without waiting is PyMySQL's
``Connection._execute_command`` (what its ``query`` does before reading the result); the results
are read with its ``next_result``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert

from ..base import JournalEntry
from .driver_errors import driver_error
from .journal import FENCE_MESSAGE, JournalTables, fence_query

AHEAD_MIN_ROWS = 8
"""Smaller batches are saved at once: the parts of a failed batch are saved one by one, and
waited for, anyway."""

SIGNALLED = "45000"
"""The SQLSTATE of an error a statement signals (errno 1644)."""

_UNFORMATTED = {"no_parameters": True}
"""``cursor.execute(statement)`` with no parameters: PyMySQL then leaves ``%`` as it is."""


def execute_text(conn: Connection, statement: str) -> None:
    """Run ``statement``, complete SQL text, on ``conn`` (through SQLAlchemy: its events see it)."""
    conn.exec_driver_sql(statement, execution_options=_UNFORMATTED)


def can_send_ahead(conn: Connection) -> bool:
    """True when ``conn``'s session takes several statements in one query (PyMySQL's)."""
    if conn.dialect.driver != "pymysql":
        return False  # another driver: PyMySQL may not even be installed
    from pymysql.constants import CLIENT  # type: ignore[import-untyped]

    raw: Any = conn.connection.driver_connection
    return bool(getattr(raw, "client_flag", 0) & CLIENT.MULTI_STATEMENTS)


class QueryInFlight:
    """A batch's query, sent; :meth:`finish` reads its outcome (once) and releases the connection."""

    def __init__(self, conn: Connection, query: str) -> None:
        from pymysql.constants import COMMAND

        raw: Any = conn.connection.driver_connection
        self._conn, self._raw = conn, raw
        self._head = query.split(" VALUES ", 1)[0][:300]  # for error reports: no values
        try:
            raw._execute_command(COMMAND.COM_QUERY, query)
        except conn.dialect.loaded_dbapi.Error as exc:
            error = driver_error(conn, exc, self._head)
            conn.close()
            raise error from exc
        except BaseException:
            conn.close()
            raise

    def finish(self) -> None:
        """Read every statement's result; the connection goes back to the pool.

        Raises:
            sqlalchemy.exc.DBAPIError: what the server or the connection said; nothing was
                committed unless the connection was lost (then the journal knows).
        """
        from pymysql.constants import SERVER_STATUS

        raw = self._raw
        try:
            raw.next_result()
            while raw.server_status & SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS:
                raw.next_result()
        except self._conn.dialect.loaded_dbapi.Error as exc:
            raise driver_error(self._conn, exc, self._head) from exc
        finally:
            self._conn.close()


def start_inserts(conn: Connection, statements: list[str], journal_tables: JournalTables,
                  journal: JournalEntry | None) -> QueryInFlight:
    """Send ``statements`` and the ``journal`` row (after its fence check, if it has a fence) as
    one transaction in one query, on ``conn`` (the batch's own: :meth:`QueryInFlight.finish`
    closes it, or this when it raises)."""
    parts = ["START TRANSACTION", *statements]
    if journal is not None and journal.fence is not None:
        parts.append(_fence_check(conn, journal_tables.fences, journal.migration, journal.fence))
    if journal is not None:
        parts.append(_journal_insert(conn, journal_tables.entries, journal))
    parts.append("COMMIT")
    return QueryInFlight(conn, ";".join(parts))


def _journal_insert(conn: Connection, table: Table, entry: JournalEntry) -> str:
    """The journal row's INSERT as complete text, escaped by PyMySQL."""
    sql = table.info.get("ferryman_mysql_journal")
    if sql is None:
        statement = insert(table).inline().values(migration=bindparam("migration"), payload=bindparam("payload"))
        sql = table.info["ferryman_mysql_journal"] = str(statement.compile(dialect=conn.dialect))
    return _mogrify(conn, sql, {"migration": entry.migration, "payload": entry.payload})


def _fence_check(conn: Connection, table: Table, migration: str, fence: int) -> str:
    """MariaDB's ``IF`` (a statement of its own outside stored programs, which MySQL lacks) that
    signals :data:`~.journal.FENCE_MESSAGE` when the migration's fence row, read ``LOCK IN SHARE
    MODE`` (held until the transaction ends; without a row, the gap's lock under REPEATABLE READ),
    is above ``fence``."""
    sql = table.info.get("ferryman_mysql_fence")
    if sql is None:
        sql = table.info["ferryman_mysql_fence"] = str(fence_query(table).compile(dialect=conn.dialect))
    found = _mogrify(conn, sql, {"migration": migration})
    signal = f"SIGNAL SQLSTATE '{SIGNALLED}' SET MESSAGE_TEXT = '{FENCE_MESSAGE}'"
    return f"IF ({found}) > {int(fence)} THEN {signal}; END IF"


def _mogrify(conn: Connection, sql: str, values: dict[str, str]) -> str:
    """``sql`` with ``values`` in it, escaped by PyMySQL."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return str(cursor.mogrify(sql, values))
    finally:
        cursor.close()
