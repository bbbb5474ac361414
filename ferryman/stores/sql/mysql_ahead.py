"""MariaDB/MySQL's saving ahead: a batch's transaction run on a thread of its own while the caller
goes on with the next page.

PyMySQL waits for every answer, and a batch waits three times (its INSERTs, the journal row, the
COMMIT) while the server parses, inserts and flushes. :func:`start_inserts` takes statements that
are already complete text (``mysql_values.py`` builds them on the caller's thread), so the thread
does nothing but send them and wait: it holds the GIL only to hand a statement over and read an
answer, and does not compete with the caller's reading and transforming. The batch is still one
transaction with its journal row; :meth:`InsertsInFlight.finish` waits for it and raises what it
raised, as a ``save_all`` would have.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import Connection

_UNFORMATTED = {"no_parameters": True}
"""``cursor.execute(statement)`` with no parameters: PyMySQL then leaves ``%`` as it is."""


def execute_text(conn: Connection, statement: str) -> None:
    """Run ``statement``, complete SQL text, on ``conn`` (through SQLAlchemy: its events see it)."""
    conn.exec_driver_sql(statement, execution_options=_UNFORMATTED)


class InsertsInFlight:
    """A batch's transaction running on its own thread; :meth:`finish` waits for it (once)."""

    def __init__(self, conn: Connection, statements: list[str], journal: Callable[[Connection], None] | None) -> None:
        self._conn = conn
        self._statements = statements
        self._journal = journal
        self._error: BaseException | None = None
        # A daemon: a process that ends meanwhile leaves the batch uncommitted or committed with
        # its journal row, never half-done, so it need not wait for the server.
        self._thread = threading.Thread(target=self._run, name="ferryman-mysql-batch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = self._conn
        try:
            with conn.begin() as transaction:
                for statement in self._statements:
                    execute_text(conn, statement)
                if self._journal is not None:
                    self._journal(conn)
                transaction.commit()
        except BaseException as exc:  # noqa: BLE001 - raised by finish(), on the caller's thread
            self._error = exc
        finally:
            conn.close()

    def finish(self) -> None:
        """Wait for the batch; raise what writing it raised (``sqlalchemy.exc.DBAPIError``: nothing
        was committed unless the connection was lost while committing, which the journal tells)."""
        self._thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error
