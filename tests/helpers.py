"""Reusable test helpers (not fixtures).

Importable from tests as ``import helpers`` (``pythonpath = ["tests"]`` in the
pytest options).  ``scripts/test.sh`` also runs this file as a small CLI to
probe database servers and pick free ports, so that the script and the
fixtures share one definition of "reachable":

    python3 tests/helpers.py probe URL [--create-db] [--wait SECONDS]
    python3 tests/helpers.py free-ports N
"""

from __future__ import annotations

import socket
import sys
import time

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"

CONNECT_TIMEOUT = 5  # seconds, per connection attempt


class ServerUnreachable(RuntimeError):
    """The database server named by a URL does not answer a real query."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free TCP ports (all sockets held open while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def redact(url: str | URL) -> str:
    """The URL as a string with any password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def backend(url: str | URL) -> str:
    """'postgresql', 'mysql', 'sqlite', ... for a SQLAlchemy URL."""
    name = make_url(url).get_backend_name()
    return "mysql" if name == "mariadb" else name


def admin_url(url: str | URL) -> URL:
    """A URL on the same server that works even if the URL's database is missing."""
    u = make_url(url)
    if backend(u) == "postgresql":
        return u.set(database="postgres")
    return u.set(database="information_schema")  # every MySQL user may use it


def admin_engine(url: str | URL, **kw):
    """An AUTOCOMMIT engine (CREATE/DROP DATABASE can't run in a transaction)."""
    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
        **kw,
    )


def _tcp_check(url: URL) -> None:
    host = url.host or "127.0.0.1"
    if host.startswith("/"):  # unix socket path; let the driver try
        return
    port = url.port or {"postgresql": 5432, "mysql": 3306}.get(backend(url))
    if port is None:
        return
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ServerUnreachable(f"nothing accepts TCP connections at {host}:{port} ({exc})") from exc


def probe(url: str | URL, create_db: bool = False) -> str:
    """Connect to ``url`` and run a real query; return the server version.

    With ``create_db``, a missing database is created first (connecting to the
    server's maintenance database).  Raises ServerUnreachable with the cause.
    """
    u = make_url(url)
    _tcp_check(u)
    try:
        if create_db and u.database:
            eng = admin_engine(admin_url(u), poolclass=NullPool)
            try:
                with eng.connect() as conn:
                    _create_database_if_missing(conn, u.database)
            finally:
                eng.dispose()
        eng = create_engine(u, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT})
        try:
            with eng.connect() as conn:
                return str(conn.execute(text("SELECT version()")).scalar_one())
        finally:
            eng.dispose()
    except Exception as exc:  # driver errors vary; the message is what matters
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServerUnreachable(msg) from exc


def wait_for(url: str | URL, timeout: float, create_db: bool = False) -> str:
    """Like probe(), retried until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe(url, create_db=create_db)
        except ServerUnreachable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


def quote_ident(conn, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def _create_database_if_missing(conn, name: str) -> None:
    if backend(conn.engine.url) == "postgresql":
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if not exists:
            conn.execute(text(f"CREATE DATABASE {quote_ident(conn, name)}"))
    else:
        conn.execute(text(f"CREATE DATABASE IF NOT EXISTS {quote_ident(conn, name)}"))


def create_database(conn, name: str) -> None:
    """CREATE DATABASE ``name`` on an AUTOCOMMIT connection (PG or MySQL)."""
    conn.execute(text(f"CREATE DATABASE {quote_ident(conn, name)}"))


def drop_database(conn, name: str) -> None:
    """Drop database ``name``, first ending any sessions still using it."""
    q = quote_ident(conn, name)
    if backend(conn.engine.url) == "postgresql":
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        force = " WITH (FORCE)" if conn.dialect.server_version_info >= (13,) else ""
        conn.execute(text(f"DROP DATABASE IF EXISTS {q}{force}"))
    else:
        ids = conn.execute(
            text(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = :n AND id <> CONNECTION_ID()"
            ),
            {"n": name},
        ).scalars().all()
        for pid in ids:
            try:
                conn.execute(text(f"KILL {int(pid)}"))
            except Exception:  # noqa: BLE001
                pass  # already gone
        conn.execute(text(f"DROP DATABASE IF EXISTS {q}"))


def _main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="helpers.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("probe", help="exit 0 and print the version if URL answers a query")
    pr.add_argument("url")
    pr.add_argument("--create-db", action="store_true", help="create the URL's database if missing")
    pr.add_argument("--wait", type=float, default=0.0, help="keep retrying this many seconds")
    fp = sub.add_parser("free-ports", help="print N free TCP ports on 127.0.0.1")
    fp.add_argument("n", type=int)
    args = p.parse_args(argv)

    if args.cmd == "free-ports":
        print(" ".join(map(str, free_ports(args.n))))
        return 0
    try:
        version = wait_for(args.url, args.wait, create_db=args.create_db)
    except ServerUnreachable as exc:
        print(f"{redact(args.url)}: unreachable: {exc}", file=sys.stderr)
        return 1
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))


def poll_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """The first truthy value of ``predicate()``, polled until ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def created_store(url: str, ddl: str, table: str, opened: list):
    """A SqlStore on ``table``, made by ``ddl`` in the database at ``url``; closed with ``opened``."""
    from ferryman.stores import SqlStore

    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(ddl))
    engine.dispose()
    store = SqlStore(table, url, table)
    opened.append(store)
    return store
