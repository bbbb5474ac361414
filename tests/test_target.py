"""Loading a TARGET: files and modules, `service` winning, and one clear error per mistake."""

from __future__ import annotations

import sys
import textwrap

import pytest

from ferryman import MemoryStore, MigrationDefinitionError, MigrationService, PlanError
from ferryman.target import TargetError, is_file_target, load_target

GOOD = """
from ferryman import MemoryStore, migration

stores = [MemoryStore("src", records=[{"id": 1}, {"id": 2}]), MemoryStore("dst")]

@migration(source="src", dest="dst")
class Copy:
    def transform(self, aggregates, record):
        return [dict(record)]

migrations = [Copy]
"""


def write(path, text: str):
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def test_a_file_defines_stores_and_migrations(tmp_path):
    target = load_target(write(tmp_path / "migrations.py", GOOD))
    assert [s.name for s in target.stores] == ["src", "dst"]
    service = target.build_service()
    assert service.plan() == ["migrations.Copy"]  # the identity uses the file's stem, every run
    assert service.run().ok


def test_a_file_can_import_its_sibling_modules(tmp_path):
    write(tmp_path / "shop_helpers_x1.py", "NAME = 'dst'\n")
    target = load_target(write(tmp_path / "m.py", GOOD.replace('"dst"', "shop_helpers_x1.NAME").replace(
        "from ferryman import", "import shop_helpers_x1\nfrom ferryman import")))
    assert [s.name for s in target.stores] == ["src", "dst"]


def test_service_wins_over_stores_and_migrations(tmp_path):
    text = GOOD + textwrap.dedent("""
        from ferryman import MigrationService
        service = MigrationService([MemoryStore("a"), MemoryStore("b")], [])
    """)
    target = load_target(write(tmp_path / "svc.py", text))
    assert isinstance(target.service, MigrationService)
    assert target.build_service() is target.service
    assert set(target.service.stores) == {"a", "b"}


def test_an_importable_module_is_a_target(tmp_path, monkeypatch):
    package = tmp_path / "fm_target_pkg"
    package.mkdir()
    write(package / "__init__.py", "")
    write(package / "migs.py", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    service = load_target("fm_target_pkg.migs").build_service()
    assert service.plan() == ["fm_target_pkg.migs.Copy"]
    sys.modules.pop("fm_target_pkg.migs", None)
    sys.modules.pop("fm_target_pkg", None)


def test_file_or_module():
    assert is_file_target("a/b.py") and is_file_target("b.py") and is_file_target("./x")
    assert not is_file_target("pkg.migrations")


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(TargetError, match=r"^TARGET .*nope\.py: no such file$"):
        load_target(str(tmp_path / "nope.py"))


def test_a_missing_module_is_one_line():
    with pytest.raises(TargetError, match="no module named 'no_such_pkg_fm'"):
        load_target("no_such_pkg_fm.migrations")


def test_an_error_inside_the_file_names_type_message_and_line(tmp_path):
    path = write(tmp_path / "bad_import.py", """\
        import os

        x = 1 / 0
    """)
    with pytest.raises(TargetError) as info:
        load_target(path)
    message = str(info.value)
    assert "\n" not in message
    assert "ZeroDivisionError: division by zero" in message
    assert "bad_import.py:3" in message
    assert "bad_import" not in sys.modules  # a failed import leaves nothing behind


def test_an_error_raised_in_a_library_names_both_lines(tmp_path):
    path = write(tmp_path / "bad_lib.py", """\
        import json

        json.loads("{")
    """)
    with pytest.raises(TargetError) as caught:
        load_target(path)
    message = str(caught.value)
    assert "JSONDecodeError" in message and "bad_lib.py:3" in message and "decoder.py" in message


def test_a_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path / "bad_syntax.py", "x = 1\ndef (:\n")
    with pytest.raises(TargetError) as caught:
        load_target(path)
    message = str(caught.value)
    assert "SyntaxError" in message and "bad_syntax.py:2" in message


def test_a_missing_import_inside_the_file_is_not_a_missing_target(tmp_path):
    path = write(tmp_path / "bad_dep.py", "import no_such_dependency_fm\n")
    with pytest.raises(TargetError) as caught:
        load_target(path)
    message = str(caught.value)
    assert "ModuleNotFoundError" in message and "bad_dep.py:1" in message


def test_a_missing_database_driver_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    path = write(tmp_path / "pg.py", textwrap.dedent("""
        from ferryman import SqlStore
        stores = [SqlStore("t", "postgresql+psycopg://u@db.example/shop", "t")]
        migrations = []
    """))
    with pytest.raises(TargetError) as caught:
        load_target(path)
    message = str(caught.value)
    assert "the database driver is not installed (pip install 'ferryman[postgres]')" in message


def test_nothing_defined(tmp_path):
    with pytest.raises(TargetError, match="defines neither `service` nor `stores` and `migrations`"):
        load_target(write(tmp_path / "empty.py", "x = 1\n"))


def test_half_defined(tmp_path):
    with pytest.raises(TargetError, match="defines no `migrations`"):
        load_target(write(tmp_path / "half.py", "stores = []\n"))


def test_wrong_types(tmp_path):
    with pytest.raises(TargetError, match="`service` must be a ferryman.MigrationService, not int"):
        load_target(write(tmp_path / "s.py", "service = 3\n"))
    with pytest.raises(TargetError, match="not a ferryman Store"):
        load_target(write(tmp_path / "t.py", "stores = ['x']\nmigrations = []\n"))
    with pytest.raises(TargetError, match="`migrations` must be a list, not str"):
        load_target(write(tmp_path / "u.py", "stores = []\nmigrations = 'abc'\n"))


def test_a_definition_error_comes_through_as_itself(tmp_path):
    path = write(tmp_path / "bad_def.py", """\
        from ferryman import migration

        @migration(source="a", dest="b")
        class NoTransform:
            pass
    """)
    with pytest.raises(MigrationDefinitionError, match="missing method transform"):
        load_target(path)


def test_a_plan_error_comes_when_the_service_is_built(tmp_path):
    target = load_target(write(tmp_path / "bad_plan.py", GOOD.replace('dest="dst"', 'dest="nowhere"')))
    with pytest.raises(PlanError, match="unknown store"):
        target.build_service()


def test_a_directory_is_not_a_target(tmp_path):
    with pytest.raises(TargetError, match="is a directory"):
        load_target(str(tmp_path) + "/")


def test_stores_may_be_any_iterable(tmp_path):
    target = load_target(write(tmp_path / "tup.py", GOOD.replace("stores = [", "stores = (").replace(
        'MemoryStore("dst")]', 'MemoryStore("dst"))')))
    assert all(isinstance(s, MemoryStore) for s in target.stores)
