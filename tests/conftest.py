"""Shared fixtures.

Database servers come from the environment (``bash scripts/test.sh`` sets both
to servers it found or started itself):

    FERRYMAN_TEST_PG_URL     default postgresql+psycopg://postgres@127.0.0.1:5432/test
    FERRYMAN_TEST_MYSQL_URL  default mysql+pymysql://root@127.0.0.1:3306/test

An unreachable server makes the tests that need it fail (never skip).
Every test that asks for ``postgres_url`` / ``mysql_url`` gets a brand-new
empty database (``ft_<hex>``) on that server, dropped after the test.

Tests that need a server or a browser carry the marker ``postgres``, ``mysql``
or ``browser``, set at collection (:func:`pytest_collection_modifyitems`) from
the fixtures they use, so that this runs anywhere, with no server and no
Chromium:

    pytest -m "not postgres and not mysql and not browser"
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import weakref
from collections import defaultdict

import helpers
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

# --- engines opened by tests, per database name ---------------------------
# Tests create their own engines on the URL they are given; to drop the
# database cleanly afterwards we dispose those engines' pools first.  Every
# Engine that opens a connection is recorded here by database name.
_engines_by_db: dict[str, weakref.WeakSet] = defaultdict(weakref.WeakSet)
_engines_lock = threading.Lock()


@event.listens_for(Engine, "engine_connect")
def _track_engine(conn) -> None:
    name = conn.engine.url.database
    if name and name.startswith("ft_"):
        with _engines_lock:
            _engines_by_db[name].add(conn.engine)


def _dispose_engines_for(name: str) -> None:
    with _engines_lock:
        engines = list(_engines_by_db.pop(name, ()))
    for eng in engines:
        eng.dispose()


# --- markers: what a test needs besides Python ----------------------------

NEEDS_BY_FIXTURE = {
    "postgres_server_url": "postgres", "mysql_server_url": "mysql", "chromium_path": "browser",
    "private_pg": "postgres",  # tests/stores/sql/test_failures.py runs PostgreSQL's own binaries
}
"""A test using one of these fixtures, directly or through another fixture, needs that."""

NEEDS_BY_PARAM = {
    "postgres": "postgres", "postgresql": "postgres", "postgres_url": "postgres",
    "mysql": "mysql", "mariadb": "mysql", "mysql_url": "mysql",
}
"""A parametrized test (or fixture) that asks ``request.getfixturevalue`` for a server's URL
names the database in its parameter: ``"postgresql"``, ``("postgresql", "mariadb")``,
``"mysql_url"``. Only counted for tests that use ``request``; a parameter that merely names a
dialect elsewhere (an error to classify) needs no server."""


def _needs(item: pytest.Item) -> set[str]:
    fixtures = set(getattr(item, "fixturenames", ()))
    needs = {NEEDS_BY_FIXTURE[name] for name in fixtures & NEEDS_BY_FIXTURE.keys()}
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "request" in fixtures:
        for value in callspec.params.values():
            for part in value if isinstance(value, tuple) else (value,):
                if isinstance(part, str) and part in NEEDS_BY_PARAM:
                    needs.add(NEEDS_BY_PARAM[part])
    return needs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for need in sorted(_needs(item)):
            item.add_marker(need)


# --- simple fixtures ------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/db.sqlite"


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 free at the time of the call.

    For several ports at once use ``helpers.free_ports(n)``.
    """
    return helpers.free_port()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else shutil.which("chromium")
    if not path:
        pytest.fail(
            "Chromium not found (/usr/bin/chromium or `chromium` on PATH). "
            "Install Debian's package `chromium`, or run the tests via `bash scripts/test.sh`, "
            "which installs it.",
            pytrace=False,
        )
    return path


# --- database servers -----------------------------------------------------


def _server_url(env_var: str, default: str, what: str) -> str:
    url = os.environ.get(env_var) or default
    try:
        helpers.probe(url)
        return url
    except helpers.ServerUnreachable as exc:
        problem = str(exc)
    # outside the except block, so the report shows only this message
    pytest.fail(
        f"{what} server not reachable at {helpers.redact(url)} ({env_var}): {problem}\n"
        f"Run the tests via `bash scripts/test.sh` (it starts its own servers when needed), "
        f"or point {env_var} at a running server.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    return _server_url("FERRYMAN_TEST_PG_URL", helpers.DEFAULT_PG_URL, "PostgreSQL")


@pytest.fixture(scope="session")
def mysql_server_url() -> str:
    return _server_url("FERRYMAN_TEST_MYSQL_URL", helpers.DEFAULT_MYSQL_URL, "MySQL/MariaDB")


@pytest.fixture(scope="session")
def _postgres_admin(postgres_server_url):
    eng = helpers.admin_engine(postgres_server_url, pool_size=1, max_overflow=2)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def _mysql_admin(mysql_server_url):
    eng = helpers.admin_engine(mysql_server_url, pool_size=1, max_overflow=2, pool_pre_ping=True)
    yield eng
    eng.dispose()


def _fresh_database(admin, server_url: str):
    name = f"ft_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        helpers.create_database(conn, name)
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _dispose_engines_for(name)
        with admin.connect() as conn:
            helpers.drop_database(conn, name)


def _check_marked(request, need: str) -> None:
    """A test that reaches a server without its marker (by ``request.getfixturevalue``, with a
    parameter :data:`NEEDS_BY_PARAM` does not know) would break the selection that runs without
    servers: it fails here, naming what to do."""
    if request.node.get_closest_marker(need) is None:
        pytest.fail(f"{request.node.nodeid} uses a {need} server but is not marked {need}: mark it "
                    f"@pytest.mark.{need}, or name the database in a parameter NEEDS_BY_PARAM knows",
                    pytrace=False)


@pytest.fixture
def postgres_url(request, _postgres_admin, postgres_server_url):
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    _check_marked(request, "postgres")
    yield from _fresh_database(_postgres_admin, postgres_server_url)


@pytest.fixture
def mysql_url(request, _mysql_admin, mysql_server_url):
    """URL of a new, empty MySQL/MariaDB database, dropped after the test."""
    _check_marked(request, "mysql")
    yield from _fresh_database(_mysql_admin, mysql_server_url)


@pytest.fixture
def stores():
    """A list a test appends its stores to; each is closed after the test."""
    opened = []
    yield opened
    for store in opened:
        store.close()


@pytest.fixture(autouse=True)
def _ferryman_logger_as_it_was():
    """The CLI sets up the "ferryman" logger for its process (a handler of its own, no
    propagation); a CLI test run in-process must not leave that to the tests after it, whose
    ``caplog`` listens on the root logger."""
    logger = logging.getLogger("ferryman")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate
