"""One psycopg connection as the fast paths see it: may SQL go to it as it is, is its session plain,
and non-blocking libpq calls for a query whose results are read later.

psycopg's own calls wait for each result; a batch sent by COPY (``postgres_copy.py``) must not. So
this drives libpq through psycopg's documented low-level API (``psycopg.pq``): send, flush,
consume, wait on the socket with ``poll`` only when libpq says it would block.
"""

from __future__ import annotations

import select
from functools import cache
from typing import Any

from sqlalchemy import Connection

COPY_IN = 4  # psycopg.pq.ExecStatus.COPY_IN
FATAL_ERROR = 7  # psycopg.pq.ExecStatus.FATAL_ERROR
IDLE = 0  # psycopg.pq.TransactionStatus.IDLE


def sends_sql_as_is(conn: Connection) -> bool:
    """True when SQL written here can go to ``conn``'s driver as it is: psycopg, and no schema
    translation (SQLAlchemy applies that when it executes, not to raw SQL)."""
    return conn.dialect.driver == "psycopg" and not conn.get_execution_options().get("schema_translate_map")


def plain_session(raw: Any) -> bool:
    """True when the psycopg connection is idle and asks nothing of a BEGIN (an isolation level,
    read only, deferrable): then a statement's implicit transaction is what BEGIN would open."""
    return bool(
        raw.isolation_level is None and raw.read_only is None and raw.deferrable is None
        and raw.info.transaction_status.name == "IDLE"
    )


class Link:
    """Non-blocking libpq calls on one connection, waiting on its socket when libpq says so."""

    def __init__(self, pgconn: Any) -> None:
        self.pgconn = pgconn
        self.lost: Exception | None = None
        """The error that cut a COPY's end off: the server may have had all of it and committed,
        so it is raised when the outcome is asked for, where the journal is asked."""

    @property
    def idle(self) -> bool:
        """True when the server waits for the next query (every result read, none pending)."""
        return bool(self.pgconn.transaction_status == IDLE)

    def send(self, query: bytes) -> None:
        self.pgconn.send_query(query)
        self.flush()

    def flush(self) -> None:
        """Hand everything queued to the socket; read meanwhile, so the server never blocks
        on a full socket of its own."""
        pgconn = self.pgconn
        while pgconn.flush():
            if self.wait(write=True):
                pgconn.consume_input()

    def results(self, until_copy: bool = False) -> list[Any]:
        """Every result of the query (or those up to the next COPY's go-ahead)."""
        pgconn = self.pgconn
        out: list[Any] = []
        while True:
            pgconn.consume_input()
            while pgconn.is_busy():
                self.wait(write=False)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                return out
            out.append(result)
            if until_copy and result.status == COPY_IN:
                return out

    def copy_writer(self) -> Any:
        return _copy_writer_class()(self)

    def wait(self, write: bool) -> bool:
        """Wait until the socket is readable (or writable, with ``write``); True if readable."""
        fd = self.pgconn.socket
        if _poll is None:  # Windows
            readable, _, _ = select.select([fd], [fd] if write else [], [])
            return bool(readable)
        poller = _poll()
        poller.register(fd, select.POLLIN | (select.POLLOUT if write else 0))
        return any(events & select.POLLIN for _, events in poller.poll())


_poll = getattr(select, "poll", None)


@cache
def _copy_writer_class() -> type:
    """psycopg's ``Writer`` base, imported when first needed (psycopg is an optional dependency)."""
    from psycopg.copy import Writer

    class LinkWriter(Writer):
        """Hands COPY data to libpq on a :class:`Link`."""

        def __init__(self, link: Link) -> None:
            self.link = link

        def write(self, data: Any) -> None:
            link = self.link
            while link.pgconn.put_copy_data(data) == 0:
                link.wait(write=True)
            link.flush()

        def finish(self, exc: BaseException | None = None) -> None:
            link = self.link
            message = f"ferryman: {type(exc).__name__}: {exc}".encode() if exc else None
            try:
                while link.pgconn.put_copy_end(message) == 0:
                    link.wait(write=True)
                link.flush()
            except Exception as lost:  # noqa: BLE001 - see below
                # Kept for the outcome, not raised: the next read fails too, unless this was the
                # last COPY. When the COPY was being cancelled (``exc``), nothing can commit and
                # ``exc`` is what the caller sees; psycopg would only log this one.
                link.lost = lost

    return LinkWriter
