"""ferryman against a hand-written PyMySQL ``executemany`` loop, writing to MariaDB (see README.md).

``python -m bench.mariadb [--rows N] [--reps R]`` copies W1's ``stations`` (``data.py``, SQLite)
into a MariaDB table with W1's transform, two ways:

* ``ferryman``: ``MigrationService`` with the durable SQLite ledger, ``SqlStore`` on both sides;
* ``executemany-loop``: ``fetchmany`` from ``sqlite3``, the transform, one ``cursor.executemany``
  of a multi-row INSERT and one commit per batch.

It runs on :mod:`bench.harness` (a fresh child per measurement, alternated repetitions, medians)
as workload ``MDB``, registered here rather than in ``bench.workloads`` so that ``python -m bench``
never needs a MariaDB server. Every output is checked in SQL on the server against a copy of the
source held there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .. import data
from ..workloads import WORKLOADS, Check, Job, Output, Variant, Workload

URL_VARIABLE = "FERRYMAN_BENCH_MARIADB_URL"
"""The database the children write to; ``main`` sets it to the database it creates."""
DEFAULT_SERVER = "mysql+pymysql://root@127.0.0.1:3306/test"

DEST_TABLE = "stations_copy"
SOURCE_TABLE = "stations_source"
"""The source rows again, on the server: what the check compares the copy with."""
TABLE_DDL = """CREATE TABLE IF NOT EXISTS {name} (id BIGINT PRIMARY KEY, code VARCHAR(32) NOT NULL UNIQUE,
    name VARCHAR(100) NOT NULL, type VARCHAR(16) NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
    created_at VARCHAR(32) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""
# utf8mb4_bin: '=' compares exactly, so a name left in its source case does not pass the check.

# Every column of every row equal to its transformed source row (floats exactly).
MATCHED_SQL = f"""SELECT count(*) FROM {DEST_TABLE} d JOIN {SOURCE_TABLE} s ON s.id = d.id
WHERE d.code = s.code AND d.name = upper(s.name) AND d.type = s.type AND d.lat = s.lat AND d.lon = s.lon
  AND d.created_at = s.created_at"""
CHECKSUM_SQL = f"""SELECT count(*), coalesce(sum(id), 0),
    bit_xor(crc32(concat_ws('|', id, code, name, type, lat, lon, created_at))) FROM {DEST_TABLE}"""


def bench_url() -> str:
    """The SQLAlchemy URL of the database the benchmark writes to."""
    return os.environ.get(URL_VARIABLE) or os.environ.get("FERRYMAN_TEST_MYSQL_URL") or DEFAULT_SERVER


def connect(url: str, database: str | None = None, **options: Any) -> Any:
    """A PyMySQL connection to a SQLAlchemy-style ``mysql+pymysql://`` URL (to ``database``, if
    given, instead of the URL's). Parsed without SQLAlchemy: the hand-written loop never imports it."""
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1", port=parts.port or 3306, user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""), database=database or parts.path.lstrip("/") or None,
        charset="utf8mb4", **options,
    )


def _fill_source(conn: Any, size: int, path: str) -> None:
    """``SOURCE_TABLE`` holding the ``size`` rows of the SQLite source at ``path`` (rebuilt when
    its count differs)."""
    with conn.cursor() as cur:
        cur.execute(TABLE_DDL.format(name=SOURCE_TABLE))
        cur.execute(f"SELECT count(*) FROM {SOURCE_TABLE}")
        if cur.fetchone()[0] == size:
            return
        cur.execute(f"TRUNCATE TABLE {SOURCE_TABLE}")
        source = data.connect(path)
        try:
            rows = source.execute(f"SELECT {', '.join(data.STATION_COLUMNS)} FROM stations ORDER BY id")
            marks = ", ".join(["%s"] * len(data.STATION_COLUMNS))
            while chunk := rows.fetchmany(data.CHUNK):
                cur.executemany(f"INSERT INTO {SOURCE_TABLE} VALUES ({marks})", chunk)
        finally:
            source.close()
    conn.commit()


SETTLE_TIMEOUT = 300.0
"""Seconds :func:`settle` waits for InnoDB to write its dirty pages before giving up."""


def settle(conn: Any) -> None:
    """Let InnoDB write every dirty page and move its checkpoint up before a measurement, as
    ``bench.postgres`` runs ``CHECKPOINT``: a run that starts with the last one's dirty pages and a
    half-full redo log pays for its predecessor's flushing (InnoDB writes them when the log fills,
    stalling the writer). Lowers ``innodb_max_dirty_pages_pct`` to 0 until then, and puts it back."""
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
        (kept,) = cur.fetchone()
        cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
        try:
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while time.monotonic() < deadline:
                cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN"
                            " ('Innodb_buffer_pool_pages_dirty', 'Innodb_checkpoint_age')")
                status = {name: int(value) for name, value in cur.fetchall()}
                if status.get("Innodb_buffer_pool_pages_dirty", 0) == 0 and \
                        status.get("Innodb_checkpoint_age", 0) < 1 << 20:
                    return
                time.sleep(0.2)
        finally:
            cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = %s", (kept,))


class MariaDbCopyWorkload(Workload):
    key = "MDB"
    title = "copy stations SQLite -> MariaDB, per-row upper(name)"
    variants = (
        Variant("ferryman", "ferryman (durable ledger)", "bench.mariadb.ferryman_run:copy_ferryman", "ferryman"),
        Variant("executemany-loop", "hand-written PyMySQL executemany loop",
                "bench.mariadb.handwritten:copy_executemany_loop", "hand-written"),
    )

    def source(self, size: int, cache_dir: Path) -> Path:
        return data.stations_db(size, cache_dir)

    def prepare(self, job: Job) -> None:
        """A fresh, empty destination and no journal; the server's copy of the source filled; the
        server settled (:func:`settle`)."""
        conn = connect(bench_url(), autocommit=True)
        try:
            _fill_source(conn, job.size, job.source)
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {DEST_TABLE}, ferryman_journal")
                cur.execute(TABLE_DDL.format(name=DEST_TABLE))
            settle(conn)
        finally:
            conn.close()

    def verify(self, job: Job, output: Output) -> Check:
        conn = connect(bench_url())
        try:
            with conn.cursor() as cur:
                cur.execute(CHECKSUM_SQL)
                rows, id_sum, crc = cur.fetchone()
                cur.execute(MATCHED_SQL)
                matched = cur.fetchone()[0]
        finally:
            conn.close()
        expected_sum = job.size * (job.size + 1) // 2
        ok = rows == matched == job.size and id_sum == expected_sum
        detail = "" if ok else f"{rows} rows, {matched} equal to the source, want {job.size}"
        return Check(ok, rows, f"crc={crc} sum(id)={id_sum}", detail)


WORKLOAD = WORKLOADS.setdefault(MariaDbCopyWorkload.key, MariaDbCopyWorkload())
