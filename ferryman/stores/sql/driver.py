"""Hot statements compiled once and sent to the driver as SQL: page reads, the journal insert.

A migration repeats a few statements hundreds of times with new values. Through SQLAlchemy each
call pays for a compiled-cache lookup, parameter processing, a Result and Row objects, often more
than the database takes to answer a page. So a statement whose parameters and result columns need
no SQLAlchemy processing is compiled once (:class:`DriverStatement`); pages are then read on the
DBAPI cursor, the journal row inserted with ``exec_driver_sql``. One that needs processing
(MySQL's adapted types, JSON, custom types) keeps going through SQLAlchemy, so what is read and
written never depends on the path taken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.engine import CursorResult
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter

from ...types import Record
from .driver_errors import driver_error

if TYPE_CHECKING:
    from .dialect import SqlDialect


@dataclass(frozen=True)
class DriverStatement:
    """SQL in the driver's paramstyle, and how to lay out values for it."""

    sql: str
    compiled: SQLCompiler
    extracted: Sequence[BindParameter[Any]] | None = None
    """The literal values of the statement that ``compiled`` (maybe cached) was used for."""

    @classmethod
    def of(cls, compiled: SQLCompiler, sql: str | None = None,
           extracted: Sequence[BindParameter[Any]] | None = None) -> DriverStatement | None:
        """``compiled`` (sent as ``sql`` when given) if its parameters go to the driver as they are."""
        if compiled._bind_processors or compiled.literal_execute_params or compiled.post_compile_params:
            return None  # values need processing, or the SQL depends on them (IN lists)
        if compiled.escaped_bind_names:
            return None
        return cls(compiled.string if sql is None else sql, compiled, extracted)

    @classmethod
    def compile(cls, statement: Executable, conn: Connection) -> DriverStatement | None:
        """``statement`` compiled for ``conn``'s dialect, unless it needs SQLAlchemy at each run."""
        if conn.get_execution_options().get("schema_translate_map"):
            return None  # applied by SQLAlchemy when it executes, not when it compiles
        return cls.of(statement.compile(dialect=conn.dialect))  # type: ignore[attr-defined]

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        compiled, names = self.compiled, self._names
        positional = compiled.positiontup if compiled.positional else None
        if names is not None and names <= values.keys():  # every parameter given: nothing to add
            return tuple(values[name] for name in positional) if positional else {n: values[n] for n in names}
        # Adds the statement's own literals (e.g. SQLite's OFFSET 0).
        merged = compiled.construct_params(dict(values), extracted_parameters=self.extracted)
        return tuple(merged[name] for name in positional) if positional else merged

    @cached_property
    def _names(self) -> frozenset[str] | None:
        """The statement's parameter names, if each is its bind's key: values given for all of
        them are then the parameters as they are, what SQLAlchemy's ``construct_params`` gives
        after a walk over every bind (the bulk of the cost of a lookup of a batch's ids)."""
        compiled = self.compiled
        if getattr(compiled, "_collect_params", False):
            return None
        names = compiled.bind_names
        if any(bind.key != name for bind, name in names.items()):
            return None
        return frozenset(names.values())


class PageQuery:
    """One page SELECT of a store, reused for every page.

    The first run goes through SQLAlchemy; if neither its parameters nor its result columns need
    processing, later runs send the same SQL to the driver and zip its tuples into dicts.
    """

    def __init__(self, statement: Executable, dialect: SqlDialect) -> None:
        self.statement = statement
        self._dialect = dialect
        self._keys: list[str] = []
        self._records = records_maker(())
        self._driver: DriverStatement | None = None

    @property
    def driver(self) -> tuple[DriverStatement, list[str]] | None:
        """The SQL the driver runs and the result's column names, once a first run showed that
        the statement needs no SQLAlchemy processing."""
        return None if self._driver is None else (self._driver, self._keys)

    def read(self, conn: Connection, values: Mapping[str, Any]) -> list[Record]:
        driver = self._driver
        if driver is not None:
            return self._records(fetch_all(conn, driver, values, self._dialect))
        result = conn.execute(self.statement, dict(values))
        if unprocessed(result):
            context = result.context
            self._keys = list(result.keys())
            self._records = records_maker(tuple(self._keys))
            self._driver = DriverStatement.of(
                context.compiled, context.statement, context.extracted_parameters  # type: ignore[arg-type]
            )
        return as_dicts(result)


def fetch_all(conn: Connection, statement: DriverStatement, values: Mapping[str, Any],
              dialect: SqlDialect) -> list[Any]:
    """The rows of a lone SELECT, as the driver's tuples, from ``conn``'s DBAPI cursor (inside
    ``dialect``'s :meth:`~.dialect.SqlDialect.lone_statement`).

    SQLAlchemy's execution events do not see it; driver errors are raised as SQLAlchemy raises them.
    """
    raw: Any = conn.connection.driver_connection
    params = statement.params(values)
    try:
        with dialect.lone_statement(conn):
            cursor = raw.cursor()
            try:
                cursor.execute(statement.sql, params)
                return cursor.fetchall()  # type: ignore[no-any-return]
            finally:
                cursor.close()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, statement.sql) from exc


def unprocessed(result: CursorResult[Any]) -> bool:
    """True when no column of ``result`` needs SQLAlchemy's result processing."""
    from sqlalchemy.engine.cursor import _DEFAULT_FETCH

    processors = getattr(getattr(result, "_metadata", None), "_processors", None)
    return (
        processors is not None
        and getattr(result, "cursor", None) is not None
        and not any(processors)
        and getattr(result, "cursor_strategy", None) is _DEFAULT_FETCH
    )


def as_dicts(result: CursorResult[Any]) -> list[Record]:
    """The result's rows as dicts, in one fetch.

    When no column needs SQLAlchemy's result processing (PostgreSQL and SQLite tables of plain
    types), the driver's tuples are read directly: SQLAlchemy's Row objects would double the cost
    per row of a page. Otherwise (MySQL's adapted types, JSON on SQLite, custom types) the rows go
    through SQLAlchemy as usual.
    """
    records = records_maker(tuple(result.keys()))
    if unprocessed(result):
        rows = result.cursor.fetchall()
        result.close()
        return records(rows)
    return records(result.all())


@lru_cache(maxsize=256)
def records_maker(fields: tuple[str, ...], at: tuple[int, ...] | None = None,
                  ) -> Callable[[Iterable[Sequence[Any]]], list[Record]]:
    """A function turning rows into records: ``{fields[j]: row[at[j]], ...}`` for each row
    (``at`` None: the row's first values, in order), as ``dict(zip(fields, row))`` would.

    Made once per shape as one list comprehension over a dict display, so that each record is
    built by the interpreter's own dict-building instruction, without the zip object and tuple
    iterator ``dict(zip(...))`` makes per row. The field names reach the code as the values of
    its closure, never as source text; only the positions, ints, are written into it."""
    positions = range(len(fields)) if at is None else [int(i) for i in at]
    names = [f"f{j}" for j in range(len(fields))]
    display = ", ".join(f"{name}: row[{i}]" for name, i in zip(names, positions))
    source = f"def make({', '.join(names)}):\n    return lambda rows: [{{{display}}} for row in rows]\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # the source is made above from positions only
    made: Callable[[Iterable[Sequence[Any]]], list[Record]] = namespace["make"](*fields)
    return made
