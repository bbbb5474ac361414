"""Lookups: one line per many-to-one join, matched as Matches are, on SQLite and PostgreSQL.

The reference is the join a script would write with dicts: for random lines, tracks and albums
(missing keys, None keys, keys that find nothing), a chained Lookup migration must give exactly
the outputs and the failures that join says, whichever path answers (preloaded or queried).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman import (
    Cardinality,
    CardinalityError,
    Lookup,
    Match,
    MigrationDefinitionError,
    MigrationProgress,
    MigrationService,
    Retry,
    SqlDatabase,
    migration,
)

SCHEMA = """
CREATE TABLE artists ("ArtistId" INTEGER PRIMARY KEY, "Name" TEXT);
CREATE TABLE albums ("AlbumId" INTEGER PRIMARY KEY, "Title" TEXT, "ArtistId" INTEGER);
CREATE TABLE tracks ("TrackId" INTEGER PRIMARY KEY, "Name" TEXT, "AlbumId" INTEGER);
CREATE TABLE lines (id INTEGER PRIMARY KEY, track_id INTEGER, needs_album BOOLEAN);
CREATE TABLE out (id INTEGER PRIMARY KEY, track TEXT, album TEXT, artist TEXT);
"""


def make_database(url: str, tracks: dict[int, int | None], albums: dict[int, int | None],
                  lines: list[tuple[int, int | None, bool]]) -> SqlDatabase:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in filter(str.strip, SCHEMA.split(";")):
            conn.exec_driver_sql(statement)
        conn.execute(sa.text("INSERT INTO artists VALUES (:i, :n)"), [{"i": i, "n": f"artist{i}"} for i in range(5)])
        if albums:
            conn.execute(sa.text("INSERT INTO albums VALUES (:i, :t, :a)"),
                         [{"i": i, "t": f"album{i}", "a": a} for i, a in albums.items()])
        if tracks:
            conn.execute(sa.text("INSERT INTO tracks VALUES (:i, :n, :a)"),
                         [{"i": i, "n": f"track{i}", "a": a} for i, a in tracks.items()])
        if lines:
            conn.execute(sa.text("INSERT INTO lines VALUES (:i, :t, :n)"),
                         [{"i": i, "t": t, "n": n} for i, t, n in lines])
    engine.dispose()
    return SqlDatabase(url)


def chained_migration(preload: bool | None, track_required: bool, read_only: bool = False) -> type:
    @migration(source="lines", dest="out", load_retry=Retry(times=1, delay=0), match=[
        Lookup("tracks", on={"TrackId": "track_id"}, into="track", required=track_required, preload=preload,
               read_only=read_only),
        Lookup("albums", on={"AlbumId": "track.AlbumId"}, into="album", preload=preload,
               required=lambda line: bool(line["needs_album"]), read_only=read_only),
        Lookup("artists", on={"ArtistId": "album.ArtistId"}, into="artist", preload=preload, read_only=read_only),
    ])
    class Lines:
        def transform(self, aggregates: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
            name = lambda found, field: None if found is None else found[field]  # noqa: E731
            return [{"id": record["id"], "track": name(aggregates["track"], "Name"),
                     "album": name(aggregates["album"], "Title"), "artist": name(aggregates["artist"], "Name")}]

    return Lines


def expected(tracks: dict[int, int | None], albums: dict[int, int | None], lines: list[tuple[int, int | None, bool]],
             track_required: bool) -> tuple[dict[int, tuple[Any, ...]], set[int]]:
    """The join a script would write: outputs by id, and the ids that must fail."""
    rows: dict[int, tuple[Any, ...]] = {}
    failed: set[int] = set()
    for line_id, track_id, needs_album in lines:
        track = track_id if track_id in tracks else None
        if track is None and track_required:
            failed.add(line_id)
            continue
        album_id = None if track is None else tracks[track]
        album = album_id if album_id in albums else None
        if album is None and needs_album:
            failed.add(line_id)
            continue
        artist_id = None if album is None else albums[album]
        rows[line_id] = (None if track is None else f"track{track}", None if album is None else f"album{album}",
                         None if artist_id is None or artist_id >= 5 else f"artist{artist_id}")
    return rows, failed


def run(db: SqlDatabase, cls: type) -> tuple[dict[int, tuple[Any, ...]], dict[int, str], Any]:
    stores = [db[name] for name in ("lines", "tracks", "albums", "artists", "out")]
    progress = MigrationProgress()
    result = MigrationService(stores, [cls]).run(progress)
    for store in stores:
        store.close()
    failed = {i: f.cause for entry in progress.migrations.values() for i, f in entry.failed.items()}
    with sa.create_engine(db.url).connect() as conn:
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(sa.text("SELECT id, track, album, artist FROM out"))}
    return rows, failed, result


KEYS = st.one_of(st.none(), st.integers(0, 7))
counter = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tracks=st.dictionaries(st.integers(0, 5), KEYS), albums=st.dictionaries(st.integers(0, 5), KEYS),
       lines=st.lists(st.tuples(KEYS, st.booleans()), max_size=30), track_required=st.booleans(),
       preload=st.sampled_from([True, False, None]), read_only=st.booleans())
def test_chained_lookups_give_what_a_dict_join_gives(tmp_path, tracks, albums, lines, track_required, preload,
                                                     read_only):
    numbered = [(i, t, n) for i, (t, n) in enumerate(lines, 1)]
    db = make_database(f"sqlite:///{tmp_path}/lookup{next(counter)}.db", tracks, albums, numbered)
    rows, failed, _ = run(db, chained_migration(preload, track_required, read_only))
    want_rows, want_failed = expected(tracks, albums, numbered, track_required)
    assert rows == want_rows
    assert set(failed) == want_failed
    assert all("CardinalityError" in cause for cause in failed.values())


TRACKS = {1: 1, 2: 2, 3: None, 4: 9}
ALBUMS = {1: 1, 2: 3}
LINES = [(1, 1, False), (2, 2, True), (3, 3, False), (4, 3, True), (5, 4, True), (6, None, False), (7, 8, False)]


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db.sqlite"
    return request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("preload", [True, False])
def test_lookups_on_a_database_say_which_record_failed_and_why(sql_url, preload):
    db = make_database(sql_url, TRACKS, ALBUMS, LINES)
    rows, failed, result = run(db, chained_migration(preload, track_required=True))
    assert rows == {1: ("track1", "album1", "artist1"), 2: ("track2", "album2", "artist3"),
                    3: ("track3", None, None)}
    assert set(failed) == {4, 5, 6, 7}
    assert "Lookup('albums', into='album') is required, but track.AlbumId is None" in failed[4]
    assert "Lookup('albums', into='album') requires EXACTLY_ONE record(s) per filter, but filter " \
           "{'AlbumId': 9} matched 0" in failed[5]
    assert "Lookup('tracks', into='track') is required, but the record's track_id is None" in failed[6]
    assert "Lookup('tracks', into='track') requires EXACTLY_ONE" in failed[7]
    preloaded = result.report("Lines").preloaded
    assert set(preloaded) == ({"tracks", "albums", "artists"} if preload else set())


def test_two_lookups_of_one_store_share_its_preload_and_a_match_with_columns_gets_its_own(sqlite_url):
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE employees (EmployeeId INTEGER PRIMARY KEY, Name TEXT, ReportsTo INTEGER)")
        conn.exec_driver_sql("CREATE TABLE customers (CustomerId INTEGER PRIMARY KEY, SupportRepId INTEGER)")
        conn.exec_driver_sql("CREATE TABLE out (id INTEGER PRIMARY KEY, rep TEXT, boss TEXT, colleagues INTEGER)")
        conn.exec_driver_sql("INSERT INTO employees VALUES (1, 'Ann', NULL), (2, 'Bob', 1), (3, 'Cy', 1)")
        conn.exec_driver_sql("INSERT INTO customers VALUES (10, 2), (11, 3), (12, 1)")
    engine.dispose()

    @migration(source="customers", dest="out", match=[
        Lookup("employees", on={"EmployeeId": "SupportRepId"}, into="rep", required=True),
        Lookup("employees", on={"EmployeeId": "rep.ReportsTo"}, into="boss"),
        Match("employees", columns=("ReportsTo",), order=1),
    ])
    class Customers:
        def start_reduction(self, record, aggregates):
            aggregates["colleagues"] = 0

        def match_with_employees(self, record, aggregates, store):
            return {"ReportsTo": aggregates["rep"]["ReportsTo"]}

        def reduce_from_employees(self, aggregates, batch):
            assert all(set(e) == {"EmployeeId", "ReportsTo"} for e in batch)  # its columns only
            aggregates["colleagues"] += len(batch)

        def transform(self, aggregates, record):
            boss = aggregates["boss"]
            return [{"id": record["CustomerId"], "rep": aggregates["rep"]["Name"],
                     "boss": boss and boss["Name"], "colleagues": aggregates["colleagues"]}]

    db = SqlDatabase(sqlite_url)
    stores = [db["employees"], db["customers"], db["out"]]
    result = MigrationService(stores, [Customers]).run()
    assert result.exit_code == 0, result.summary()
    with sa.create_engine(sqlite_url).connect() as conn:
        rows = conn.execute(sa.text("SELECT id, rep, boss, colleagues FROM out ORDER BY id")).all()
    # Ann reports to no one: no boss, and the Match's {"ReportsTo": None} finds those who don't either
    assert [tuple(r) for r in rows] == [(10, "Bob", "Ann", 2), (11, "Cy", "Ann", 2), (12, "Ann", None, 1)]
    assert set(result.report("Customers").preloaded) == {"employees"}


def test_a_match_cardinality_may_depend_on_the_record(sqlite_url):
    """Records with equal filters but other cardinalities are judged each by their own."""
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, code TEXT, strict BOOLEAN)")
        conn.exec_driver_sql("CREATE TABLE discounts (id INTEGER PRIMARY KEY, code TEXT)")
        conn.exec_driver_sql("CREATE TABLE out (id INTEGER PRIMARY KEY, n INTEGER)")
        conn.exec_driver_sql("INSERT INTO orders VALUES (1, 'A', 1), (2, 'A', 0), (3, 'B', 1), (4, 'B', 0), "
                             "(5, 'C', 1)")
        conn.exec_driver_sql("INSERT INTO discounts VALUES (1, 'A'), (2, 'A'), (3, 'B')")
    engine.dispose()

    @migration(source="orders", dest="out", match=[Match(
        "discounts", preload=False,
        cardinality=lambda r: Cardinality.EXACTLY_ONE if r["strict"] else Cardinality.ZERO_OR_MORE)])
    class Orders:
        def start_reduction(self, record, aggregates):
            aggregates["n"] = 0

        def match_with_discounts(self, record, aggregates, store):
            return {"code": record["code"]}

        def reduce_from_discounts(self, aggregates, batch):
            aggregates["n"] += len(batch)

        def transform(self, aggregates, record):
            return [{"id": record["id"], "n": aggregates["n"]}]

    db = SqlDatabase(sqlite_url)
    progress = MigrationProgress()
    MigrationService([db["orders"], db["discounts"], db["out"]], [Orders]).run(progress)
    (entry,) = progress.migrations.values()
    assert set(entry.failed) == {1, 5}  # A matched 2, C matched 0: not EXACTLY_ONE
    assert set(entry.succeeded) == {2, 3, 4}


def test_every_lookup_problem_is_reported_with_the_others_when_the_class_is_decorated():
    with pytest.raises(MigrationDefinitionError) as info:
        @migration(source="lines", dest="out", bogus=1, match=[
            Lookup("tracks", on={"TrackId": "track_id"}, into="track", requird=True),
            Lookup("tracks2", on={"TrackId": "track_id"}, into="track"),
            Lookup("albums", on={"AlbumId": "trak.AlbumId"}, into="album"),
            Lookup("artists", into="artist"),
            Lookup("genres", on={"GenreId": "genre_id"}, into="genre", required="yes", preload="maybe"),
        ])
        class Broken:
            def transform(self, aggregates, record):
                return []

    problems = info.value.problems
    assert len(problems) == 7, problems
    assert problems[0].startswith("unknown option(s) bogus")
    assert "Lookup('tracks', into='track'): unknown option(s) requird; known options: on, into, required," \
           in problems[1]
    assert "into='track' is already the into= of Lookup('tracks', into='track')" in problems[2]
    assert "reads 'trak', which no earlier Lookup puts into the aggregates (earlier into= values: 'track')" \
           in problems[3]
    assert "Lookup('artists', into='artist'): on= must map" in problems[4]
    assert "required= must be True, False or a function of the record, got 'yes'" in problems[5]
    assert "preload must be True, False or None" in problems[6]


def lookup_hooks(**options: Any) -> tuple[Any, Any]:
    cls = type("M", (), {"transform": lambda self, aggregates, record: []})
    spec = migration(source="s", dest="d", match=[Lookup("t", on={"Id": "tid"}, into="t", **options)])(cls)
    return spec.__ferryman_spec__.matches[0].hooks(cls())


def test_a_lookup_fills_its_into_and_names_a_missing_field_of_the_record():
    match_with, reduce_from = lookup_hooks()
    aggregates: dict[str, Any] = {}
    assert match_with({"tid": 4}, aggregates, None) == {"Id": 4} and aggregates == {"t": None}
    reduce_from(aggregates, [{"Id": 4, "x": 1}])
    assert aggregates == {"t": {"Id": 4, "x": 1}}
    assert match_with({"tid": None}, aggregates, None) is None and aggregates == {"t": None}
    with pytest.raises(KeyError, match=r"the source record has no field 'tid' \(on=\{'Id': 'tid'\}\)"):
        match_with({"id": 1}, {}, None)
    required, _ = lookup_hooks(required=True)
    with pytest.raises(CardinalityError, match="is required, but the record's tid is None"):
        required({"tid": None}, {}, None)
