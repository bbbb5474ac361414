"""Proof that the shared test fixtures (tests/conftest.py) work."""

from __future__ import annotations

import socket
import subprocess

import helpers
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, inspect, select, text
from sqlalchemy.engine import make_url

# Database names handed out so far in this session, per backend.
_seen: dict[str, list[str]] = {"postgresql": [], "mysql": []}


def _roundtrip(url: str) -> None:
    """The database is empty and writable: create a table, insert, read back."""
    engine = create_engine(url)
    try:
        assert inspect(engine).get_table_names() == []
        md = MetaData()
        items = Table("items", md, Column("id", Integer, primary_key=True), Column("name", String(50)))
        md.create_all(engine)
        with engine.begin() as conn:
            conn.execute(items.insert(), [{"id": 1, "name": "ferry"}, {"id": 2, "name": "man"}])
        with engine.connect() as conn:
            rows = conn.execute(select(items.c.id, items.c.name).order_by(items.c.id)).all()
        assert [tuple(r) for r in rows] == [(1, "ferry"), (2, "man")]
    finally:
        engine.dispose()


def _check_fresh(url: str, server_url: str, kind: str) -> None:
    name = make_url(url).database
    assert name.startswith("ft_")
    assert name != make_url(server_url).database
    assert name not in _seen[kind], "each test must get its own database"
    _seen[kind].append(name)


@pytest.mark.parametrize("run", [1, 2])
def test_postgres_url_is_fresh_empty_writable(postgres_url, postgres_server_url, run):
    _check_fresh(postgres_url, postgres_server_url, "postgresql")
    _roundtrip(postgres_url)
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar_one() == make_url(postgres_url).database
    # Left open on purpose: the fixture must still drop the database.


@pytest.mark.parametrize("run", [1, 2])
def test_mysql_url_is_fresh_empty_writable(mysql_url, mysql_server_url, run):
    _check_fresh(mysql_url, mysql_server_url, "mysql")
    _roundtrip(mysql_url)
    engine = create_engine(mysql_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT DATABASE()")).scalar_one() == make_url(mysql_url).database
    # Left open on purpose: the fixture must still drop the database.


def test_databases_are_dropped(_postgres_admin, _mysql_admin):
    """Databases of the earlier tests are gone (runs after them in file order)."""
    with _postgres_admin.connect() as conn:
        pg = set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
    with _mysql_admin.connect() as conn:
        my = set(conn.execute(text("SHOW DATABASES")).scalars())
    assert not pg & set(_seen["postgresql"])
    assert not my & set(_seen["mysql"])


def test_sqlite_url(sqlite_url, tmp_path):
    assert make_url(sqlite_url).database == str(tmp_path / "db.sqlite")
    _roundtrip(sqlite_url)
    assert (tmp_path / "db.sqlite").exists()


def test_free_port_is_bindable(free_port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port))
    ports = helpers.free_ports(3)
    assert len(set(ports)) == 3


def test_unreachable_server_is_reported():
    port = helpers.free_port()
    with pytest.raises(helpers.ServerUnreachable, match=str(port)):
        helpers.probe(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")


def test_chromium_headless_dump_dom(chromium_path, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><body><p id='x'>static</p>"
        "<script>document.getElementById('x').textContent = 'made by ' + 'js';</script>"
        "</body></html>"
    )
    proc = subprocess.run(
        [
            chromium_path,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "made by js" in proc.stdout, (proc.stdout[-2000:], proc.stderr[-2000:])
