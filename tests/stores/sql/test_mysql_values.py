"""MariaDB/MySQL batches escaped by column (``mysql_values.py``) against the path they replace:
the bytes are those PyMySQL's ``executemany`` sends, split alike; on the server, a batch saved
through the store reads back as SQLAlchemy's own INSERT stores it."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysql.constants import SERVER_STATUS
from sqlalchemy import create_engine, insert, text
from sqlalchemy.pool import NullPool

from ferryman.stores import SqlStore
from ferryman.stores.sql.mysql_values import InsertText

NAMES = ("a", "b", "c")
SQL = "INSERT INTO t (a, b, c) VALUES (%(a)s, %(b)s, %(c)s)"
UPSERT_TAILS = ("", " ON DUPLICATE KEY UPDATE b = VALUES(b), c = VALUES(c)", " AS new ON DUPLICATE KEY UPDATE b = new.b")

# Text with every character either escaping touches: quotes, backslash, NUL, CR, LF, ^Z.
TEXT = st.text(alphabet=st.sampled_from("ab ' \" \\ \0 \r \n \x1a é 字 😀"), max_size=12) | st.text(max_size=8)
FLOATS = st.floats(width=64) | st.sampled_from([1e16, 1e-5, -0.0, 0.1, 123456789.0])
NATIVE = TEXT | st.integers(-(2**70), 2**70) | FLOATS | st.booleans() | st.none() | st.binary(max_size=8)
COLUMN_VALUES = st.sampled_from([TEXT, st.integers(-(2**63), 2**63 - 1), FLOATS, NATIVE])
"""One kind per column (the fast paths) or any mix of native values (value by value)."""


@st.composite
def batches(draw: st.DrawFn) -> list[dict[str, Any]]:
    size = draw(st.integers(1, 30))
    columns = {name: draw(st.lists(draw(COLUMN_VALUES), min_size=size, max_size=size)) for name in NAMES}
    return [{name: columns[name][i] for name in NAMES} for i in range(size)]


def deferred(no_backslash_escapes: bool) -> Any:
    """A PyMySQL connection that never connects: its escaping, as a server's session would set it."""
    conn = pymysql.connect(defer_connect=True, charset="utf8mb4")
    conn.server_status = SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES if no_backslash_escapes else 0
    return conn


def pymysql_statements(conn: Any, sql: str, rows: list[dict[str, Any]], limit: int) -> list[bytes]:
    """What ``executemany`` sends for ``rows``, caught on its way to the server."""
    cursor = conn.cursor()
    cursor.max_stmt_length = limit
    sent: list[bytes] = []
    cursor.execute = lambda statement: sent.append(bytes(statement)) or 0
    cursor.executemany(sql, rows)
    return sent


def outcome(make: Any) -> tuple[str, Any]:
    try:
        return "sent", make()
    except (pymysql.Error, UnicodeError) as error:
        return "refused", (type(error), str(error))


@settings(max_examples=200, deadline=None)
@given(rows=batches(), tail=st.sampled_from(UPSERT_TAILS), limit=st.integers(60, 3000),
       no_backslash_escapes=st.booleans())
def test_the_statements_are_the_bytes_pymysql_sends(rows: list[dict[str, Any]], tail: str, limit: int,
                                                     no_backslash_escapes: bool) -> None:
    conn = deferred(no_backslash_escapes)
    insert_text = InsertText.of(SQL + tail)
    assert insert_text is not None and insert_text.names == NAMES
    columns = insert_text.columns(rows)
    assert columns is not None

    def ours() -> list[bytes]:
        return [s.encode(conn.encoding) for s in insert_text.statements(
            columns, conn.escape, not no_backslash_escapes, conn.encoding, limit)]

    assert outcome(ours) == outcome(lambda: pymysql_statements(conn, SQL + tail, rows, limit))


def test_statements_pymysql_would_not_fold_or_would_format_are_left_to_it() -> None:
    assert InsertText.of("UPDATE t SET a = %(a)s") is None
    assert InsertText.of("INSERT INTO t (a, b) VALUES (%(a)s, 1)") is None  # not one placeholder per value
    assert InsertText.of("INSERT INTO `t%%` (a) VALUES (%(a)s)") is None  # PyMySQL would format the %%
    assert InsertText.of("INSERT INTO t (a) VALUES (%(a)s)") == InsertText("INSERT INTO t (a) VALUES ", ("a",), "")


def test_a_value_the_driver_does_not_take_as_it_is_leaves_the_batch_to_sqlalchemy() -> None:
    from decimal import Decimal

    insert_text = InsertText.of(SQL)
    assert insert_text is not None
    columns = insert_text.columns([{"a": 1, "b": "x", "c": 1.5}, {"a": 2, "b": "y", "c": 2}])
    assert columns == [([1, 2], {int}), (["x", "y"], {str}), ([1.5, 2], {float, int})]
    assert insert_text.columns([{"a": 1, "b": "x", "c": Decimal("1.5")}]) is None


# --- on the server ------------------------------------------------------------------------------

SERVER_COLUMNS = {
    "s": st.text(max_size=10),
    "n": st.integers(-(2**63), 2**63 - 1),
    "x": st.floats(allow_nan=False, allow_infinity=False),
    "raw": st.binary(max_size=6),
}


@st.composite
def server_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows whose columns are each of one type (the fast paths) or with NULLs (value by value)."""
    fields = {name: draw(st.sampled_from([values, st.none() | values])) for name, values in SERVER_COLUMNS.items()}
    return draw(st.lists(st.fixed_dictionaries(fields), min_size=1, max_size=40))


@pytest.mark.parametrize("sql_mode", ["", "NO_BACKSLASH_ESCAPES"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=server_rows())
def test_a_batch_reads_back_as_sqlalchemys_insert_stores_it(mysql_url: str, stores: list[SqlStore], sql_mode: str,
                                                            rows: list[dict[str, Any]]) -> None:
    engine = create_engine(mysql_url, poolclass=NullPool)
    ddl = "(id bigint PRIMARY KEY, s text, n bigint, x double, raw varbinary(10)) CHARSET utf8mb4 COLLATE utf8mb4_bin"
    with engine.begin() as conn:
        for table in ("fast", "plain"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(text(f"CREATE TABLE {table} {ddl}"))
    records = [{"id": i, **row} for i, row in enumerate(rows)]
    options = {"connect_args": {"init_command": f"SET sql_mode = '{sql_mode}'"}}
    store = SqlStore("fast", mysql_url, "fast", create_engine_kwargs=options)
    stores.append(store)
    store.save_all(records)
    with engine.begin() as conn:
        conn.execute(insert(SqlStore("plain", engine, "plain").table), records)
        read = [[tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY id"))] for t in ("fast", "plain")]
    engine.dispose()
    assert read[0] == read[1] == [tuple(r[c] for c in ("id", *SERVER_COLUMNS)) for r in records]
