"""The event log: every status change of a run, in the ledger (GET /migrate/events) and, with
``events=`` / ``--events FILE``, one JSON line each in a file."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

import httpx
import pytest

from ferryman import (
    MemoryLedger,
    MemoryStore,
    MigrationService,
    Retry,
    SqlStore,
    migration,
)
from ferryman.ledger_commands import failed_set_action
from ferryman.progress.sqlite import SqliteLedger
from ferryman.server import (
    BackgroundServer,
    LedgerStatusSource,
    LiveStatusSource,
    create_app,
)

BROKEN: set[int] = set()
NO_RETRY = Retry(times=0, delay=0)


@migration(source="src", dest="dst", batch_size=5, save_retry=NO_RETRY, name="copy")
class Copy:
    def transform(self, aggregates, record):
        if record["id"] in BROKEN:
            raise ValueError(f"item {record['id']} is broken")
        return [{"id": record["id"], "name": record["name"]}]


@migration(source="dst", dest="totals", name="totals")
class Totals:
    def transform(self, aggregates, record):
        return [{"id": record["id"], "name": record["name"]}]


@pytest.fixture(autouse=True)
def _broken():
    BROKEN.clear()
    yield
    BROKEN.clear()


def _service(tmp_path) -> MigrationService:
    urls = {name: f"sqlite:///{tmp_path}/{name}.db" for name in ("src", "dst", "totals")}
    for name in urls:
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
            if name == "src":
                db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?)", [(i, f"item {i}") for i in range(1, 21)])
    return MigrationService([SqlStore(n, u, "items") for n, u in urls.items()], [Copy, Totals])


def _kinds(events: list[dict]) -> list[tuple[str, str | None]]:
    return [(e["event"], e.get("migration")) for e in events]


FIRST_RUN = [
    ("run.started", None), ("migration.started", "copy"), ("migration.failed", "copy"),
    ("migration.held_back", "totals"), ("run.failed", None),
]
FIXED_RUN = [
    ("run.started", None), ("migration.started", "copy"), ("migration.completed", "copy"),
    ("migration.started", "totals"), ("migration.completed", "totals"), ("run.completed", None),
]


def test_the_log_holds_every_transition_of_a_failing_then_fixed_run(tmp_path):
    service = _service(tmp_path)
    path = tmp_path / "p.db"
    events_file = tmp_path / "events.jsonl"
    BROKEN.add(7)
    with SqliteLedger(path) as ledger:
        first = service.run(ledger, events=events_file, max_tries=2, retry_delay=0)
    assert first.exit_code == 1
    failed_set_action(path, "IGNORE", all=True)   # a person looks, sets it aside...
    failed_set_action(path, "RETRY", ids=[7])     # ...then fixes the cause and asks for it again
    BROKEN.clear()
    with SqliteLedger(path) as ledger:
        assert service.run(ledger, events=events_file).ok

    lines = events_file.read_text().splitlines()
    written = [json.loads(line) for line in lines]
    assert _kinds(written) == [*FIRST_RUN, ("run.retrying", None), *FIRST_RUN, *FIXED_RUN]
    with SqliteLedger(path) as ledger:
        kept = ledger.events()
    assert _kinds(kept) == [*FIRST_RUN, ("run.retrying", None), *FIRST_RUN,
                            ("records.marked", "copy"), ("records.marked", "copy"), *FIXED_RUN]
    marked = [e for e in kept if e["event"] == "records.marked"]
    assert [(e["action"], e["count"]) for e in marked] == [("IGNORE", 1), ("RETRY", 1)]
    # the file and the ledger hold the same events: the same seq, time and fields
    by_seq = {e["seq"]: e for e in kept}
    assert all(by_seq[e["seq"]] == e for e in written)
    seqs = [e["seq"] for e in kept]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    times = [datetime.fromisoformat(e["time"]) for e in kept]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    failed = next(e for e in kept if e["event"] == "migration.failed")
    assert failed["counts"]["failed"] == 1 and failed["counts"]["succeeded"] == 19
    assert "item 7 is broken" in failed["last_err"]
    held = next(e for e in kept if e["event"] == "migration.held_back")
    assert held["held_back_by"] == ["copy"]
    assert [e["attempt"] for e in kept if e["event"] == "run.started"] == [1, 2, 1]
    done = kept[-1]
    assert done["event"] == "run.completed" and done["counts"]["succeeded"] == 20 + 1  # totals 20, copy 1


def test_events_are_served_paged_with_after(tmp_path):
    service = _service(tmp_path)
    path = tmp_path / "p.db"
    BROKEN.add(3)
    with SqliteLedger(path) as ledger:
        service.run(ledger)
    with BackgroundServer(create_app(LedgerStatusSource(path))) as server, \
            httpx.Client(base_url=server.url) as client:
        page = client.get("/migrate/events", params={"limit": 2}).json()
        assert _kinds(page["events"]) == FIRST_RUN[:2] and page["next"] == page["events"][-1]["seq"]
        rest = client.get("/migrate/events", params={"after": page["next"]}).json()
        assert _kinds(rest["events"]) == FIRST_RUN[2:]
        empty = client.get("/migrate/events", params={"after": rest["next"]}).json()
        assert empty == {"events": [], "next": rest["next"]}
        for wrong in ("-1", "²", "1e3", "x" * 50):
            bad = client.get("/migrate/events", params={"after": wrong})
            assert bad.status_code == 400 and "query parameter after must be an integer" in bad.json()["error"]


def test_a_run_in_memory_serves_its_events_live(tmp_path):
    src = MemoryStore("src", records=[{"id": i, "name": f"n{i}"} for i in range(1, 11)])
    ledger = MemoryLedger()
    service = MigrationService([src, MemoryStore("dst"), MemoryStore("totals")], [Copy, Totals], ledger=ledger)
    live = LiveStatusSource(ledger)
    service.add_observer(live)
    assert service.run().ok
    assert _kinds(live.events(0, 100)) == FIXED_RUN
    assert _kinds(live.events(2, 1)) == FIXED_RUN[2:3]


def test_an_unwritable_event_file_is_refused_before_any_work(tmp_path):
    from ferryman import commands
    from ferryman.errors import InputError

    _service(tmp_path)
    target = tmp_path / "m.py"
    target.write_text("from ferryman import MemoryStore, migration\nstores = []\nmigrations = []\n")
    with pytest.raises(InputError, match="no-such-dir"):
        commands.run(str(target), progress=tmp_path / "p.db", events=tmp_path / "no-such-dir" / "e.jsonl")
    assert not (tmp_path / "p.db").exists()


def test_a_ledger_of_schema_3_reads_as_without_events_and_gains_them_on_open(tmp_path):
    import ledger_files

    from ferryman.progress.sqlite import SCHEMA_VERSION, SqliteReader

    path = tmp_path / "old.db"
    with SqliteLedger(path) as ledger:
        ledger.record_event({"event": "run.started"})
    ledger_files.as_version_3(path)
    with SqliteReader.open(str(path)) as reader:  # read-only: as it is
        assert reader.schema_version == 3
        assert reader.events() == [] and reader.verification() is None
    with SqliteLedger(path) as ledger:  # opened for writing: upgraded, nothing lost
        assert ledger.schema_version == int(SCHEMA_VERSION) == 4
        assert ledger.record_event({"event": "run.started"}) == 1
        ledger.record_verification({"ok": True, "migrations": []})
        assert ledger.verification() == {"ok": True, "migrations": []}


def test_an_action_from_the_dashboard_is_an_event(tmp_path):
    from ferryman.server import Actions

    service = _service(tmp_path)
    path = tmp_path / "p.db"
    BROKEN.add(5)
    with SqliteLedger(path) as ledger:
        service.run(ledger)
    app = create_app(LedgerStatusSource(path), Actions(path, token="a-token-for-this-test"))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        answer = client.post("/migrate/actions", headers={"X-Ferryman-Token": "a-token-for-this-test"},
                             json={"action": "ignore", "migration": "copy", "ids": [5]})
        assert answer.status_code == 200, answer.text
        last = client.get("/migrate/events").json()["events"][-1]
    assert (last["event"], last["migration"], last["action"], last["count"]) == ("records.marked", "copy", "IGNORE", 1)
