"""mjg's suite1 scenarios (Test1-4 and IGNORE) on PostgreSQL and on MariaDB.

The scenarios are those of ``test_mjg_suite.py``, imported, not copied: pytest runs each imported
test here with this module's ``stores`` fixture, which builds the stores on a fresh database of
each server instead of in memory or SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator

import mjg_suite as suite
import pytest
from mjg_suite import M1_PopulatePivotTable as M1
from test_mjg_suite import (  # noqa: F401 - collected here, run with this module's fixture
    test_data_migrated_properly_in_one_run,
    test_handle_duplicates,
    test_ignored_record_is_never_migrated_and_stays_ignored,
    test_plan_puts_m1_and_m2_before_m3,
    test_progress_persistence_and_continuation,
)

SERVERS = {"postgresql": "postgres_url", "mariadb": "mysql_url"}


@pytest.fixture(params=list(SERVERS))
def stores(request: pytest.FixtureRequest) -> Iterator[dict]:
    M1.fail_in = None
    M1.fail_station = None
    M1.duplicate_calls = 0
    url = request.getfixturevalue(SERVERS[request.param])
    made = suite.make_stores("sql", url)
    yield {s.name: s for s in made}
    for store in made:
        store.close()
