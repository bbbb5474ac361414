"""The routes behind the dashboard over HTTP, on a real server: throughput history, failed records
searched and paged, and actions with their token checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import httpx
import jsonschema
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman import (
    Action,
    FailedRecord,
    MemoryStore,
    MigrationProgress,
    MigrationService,
    Retry,
    migration,
)
from ferryman.cli import cli
from ferryman.progress.failed import FailedRecords
from ferryman.server import (
    Actions,
    BackgroundServer,
    LedgerStatusSource,
    LiveStatusSource,
    create_app,
)
from ferryman.server.history import History
from ferryman.server.status import StatusSnapshot

REPO = Path(__file__).resolve().parents[2]
TOKEN = "0123456789abcdef-token"
NO_RETRY = Retry(times=0, delay=0)
SLOW = {"seconds": 0.0}


@migration(source="boxes", dest="box_copy", batch_size=10, save_retry=NO_RETRY, load_retry=NO_RETRY,
           name="boxes")
class CopyBoxes:
    def transform(self, aggregates, record):
        time.sleep(SLOW["seconds"])
        if record["id"] % 7 == 0:
            raise ValueError(f"box {record['id']} has a {record['kind']} label")
        return [dict(record)]


@migration(source="bags", dest="bag_copy", batch_size=10, save_retry=NO_RETRY, load_retry=NO_RETRY,
           name="bags")
class CopyBags:
    def transform(self, aggregates, record):
        if record["id"] % 5 == 0:
            raise KeyError(f"bag {record['id']}")
        return [dict(record)]


KINDS = ["Torn", "wet", "MISSING", "ok"]


def service_on(ledger: Path, boxes: int = 300, bags: int = 100) -> MigrationService:
    stores = [MemoryStore("boxes", records=[{"id": i, "kind": KINDS[i % 4]} for i in range(1, boxes + 1)]),
              MemoryStore("box_copy"), MemoryStore("bags", records=[{"id": i} for i in range(1, bags + 1)]),
              MemoryStore("bag_copy")]
    return MigrationService(stores, [CopyBoxes, CopyBags], ledger=ledger, checkpoint_interval=0)


@pytest.fixture(autouse=True)
def _fast():
    SLOW["seconds"] = 0.0
    yield
    SLOW["seconds"] = 0.0


@pytest.fixture
def ledger(tmp_path) -> Path:
    """42 failed boxes and 20 failed bags."""
    service = service_on(tmp_path / "run.db")
    assert not service.run().ok
    service.ledger.close()
    return tmp_path / "run.db"


def validator(client: httpx.Client, name: str) -> jsonschema.Draft202012Validator:
    doc = client.get("/openapi.json").json()
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                            "components": doc["components"]})


# --- failed records, searched and paged -----------------------------------------------------------


@pytest.fixture
def client(ledger):
    with BackgroundServer(create_app(LedgerStatusSource(ledger))) as server, \
            httpx.Client(base_url=server.url) as http:
        yield http


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.sampled_from(["", "torn", "WET", "KeyError", "box 2", "7", "nothing"]),
       migration=st.sampled_from(["", "boxes", "bags", "test_dashboard_api.CopyBags"]),
       limit=st.integers(1, 30))
def test_pages_put_together_are_the_whole_search(client, ledger, q, migration, limit):
    params = {"q": q, "migration": migration}
    whole = client.get("/migrate/failed", params={**params, "limit": 500}).json()
    records, offset = [], 0
    while True:
        page = client.get("/migrate/failed", params={**params, "offset": offset, "limit": limit}).json()
        assert (page["total"], page["offset"], page["limit"]) == (whole["total"], offset, limit)
        records += page["records"]
        if offset + limit >= page["total"]:
            assert len(page["records"]) == page["total"] - offset
            break
        assert len(page["records"]) == limit
        offset += limit
    assert records == whole["records"] and len(records) == whole["total"]
    # the same records as `ferryman failed list` chooses, newest first
    listed = [row for row in FailedRecords(ledger).list(migration=migration or None)
              if row.record.mentions(q.casefold())]
    assert sorted((r["migration"], r["id"]) for r in records) == sorted((r.name, r.record.id) for r in listed)
    times = [r["timestamp"] for r in records]
    assert times == sorted(times, reverse=True)


def test_a_page_validates_and_a_bad_parameter_is_one_clear_line(client):
    page = client.get("/migrate/failed", params={"q": "torn", "limit": 3}).json()
    validator(client, "FailedPage").validate(page)
    assert page["total"] == 10 and len(page["records"]) == 3 and page["partial"] is False
    assert {r["migration"] for r in page["records"]} == {"boxes"}
    assert all("torn" in r["cause"].casefold() for r in page["records"])
    for params, message in [
        ({"limit": "0"}, "limit: 0 is out of range (from 1 to 500)"),
        ({"limit": "501"}, "limit: 501 is out of range (from 1 to 500)"),
        ({"offset": "-1"}, "offset: '-1' is not a whole number"),
        ({"offset": "1e3"}, "offset: '1e3' is not a whole number"),
        ({"page": "2"}, "unknown parameter 'page': use migration, q, offset, limit"),
        ({"migration": "crates"}, "no migration 'crates' in "),
        ({"q": "x" * 1001}, "q: at most 1000 characters to look for, not 1001"),
    ]:
        response = client.get("/migrate/failed", params=params)
        assert response.status_code == 400, params
        assert response.json()["error"].startswith(message), params
        assert "\n" not in response.json()["error"]
    assert client.get("/migrate/failed", params={"offset": "1000"}).json()["records"] == []


def test_a_run_without_a_durable_ledger_pages_what_it_keeps_and_says_so(tmp_path):
    service = service_on(tmp_path / "p.json", boxes=200, bags=0)
    live = LiveStatusSource(service.ledger)
    service.add_observer(live)
    assert not service.run().ok
    with BackgroundServer(create_app(live)) as server:
        page = httpx.get(f"{server.url}/migrate/failed", params={"limit": 5}).json()
        assert page["total"] == 20 and page["partial"] is True  # 28 failed, the newest 20 kept
        assert [r["id"] for r in page["records"]] == [196, 189, 182, 175, 168]
    service.ledger.close()


# --- throughput history ----------------------------------------------------------------------------


def snapshot_at(t: float, read: int, started: float = 1000.0) -> StatusSnapshot:
    return StatusSnapshot("running", "m", None, 1, [{"identity": "a.M", "name": "m", "state": "running",
                                                   "started_at": started, "finished_at": None, "read": read,
                                                   "succeeded": read, "failed": 0}], taken_at=t)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 30), min_size=1, max_size=400), st.integers(3, 40))
def test_a_series_stays_bounded_spread_and_ends_with_the_newest_counts(steps, limit):
    history = History(limit=limit, every=1.0)
    t, read = 1000.0, 0
    for step in steps:
        t += step
        read += int(step * 10)
        history.record(snapshot_at(t, read))
        (series,) = history.to_dict(snapshot_at(t, read))["migrations"]
        points = series["points"]
        assert len(points) <= limit
        assert points[0] == {"t": 1000.0, "read": 0, "succeeded": 0, "failed": 0, "rate": 0.0}
        assert (points[-1]["t"], points[-1]["read"]) == (round(t, 3), read)
        assert all(a["t"] < b["t"] and a["read"] <= b["read"] for a, b in pairwise(points))
    # the rates between kept points add up to what was read
    area = sum(p["rate"] * (p["t"] - q["t"]) for q, p in pairwise(points))
    assert area == pytest.approx(read, rel=1e-3, abs=1)


def test_a_migration_that_starts_again_starts_a_new_series():
    history = History()
    history.record(snapshot_at(1010, 100))
    history.record(snapshot_at(2005, 30, started=2000))
    (series,) = history.to_dict(snapshot_at(2005, 30, started=2000))["migrations"]
    assert series["started_at"] == 2000
    assert [(p["t"], p["read"], p["rate"]) for p in series["points"]] == [(2000, 0, 0.0), (2005, 30, 6.0)]


def test_the_history_grows_during_a_live_run_and_validates(tmp_path):
    SLOW["seconds"] = 0.01
    service = service_on(tmp_path / "run.db", boxes=300, bags=0)
    live = LiveStatusSource(service.ledger)
    service.add_observer(live)
    with BackgroundServer(create_app(live)) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/migrate/history").json()["migrations"] == []
        thread = threading.Thread(target=service.run)
        thread.start()
        thread.join(60)  # nobody polls: the server samples by itself
        body = client.get("/migrate/history").json()
        validator(client, "History").validate(body)
    service.ledger.close()
    (boxes,) = [m for m in body["migrations"] if m["name"] == "boxes"]
    points = boxes["points"]
    assert len(points) >= 3, points  # the start, samples every second, the end
    assert points[-1]["read"] == 300 and boxes["state"] == "failed"
    assert [p["read"] for p in points] == sorted(p["read"] for p in points)
    assert any(0 < p["read"] < 300 for p in points)


# --- actions ---------------------------------------------------------------------------------------


def actions_of(ledger: Path) -> dict[tuple[str, object], str]:
    return {(row.name, row.record.id): row.record.action.value for row in FailedRecords(ledger).list()}


@pytest.fixture
def acting(ledger):
    with BackgroundServer(create_app(LedgerStatusSource(ledger), Actions(ledger, TOKEN))) as server, \
            httpx.Client(base_url=server.url) as http:
        yield http


def post(client: httpx.Client, body, token: str | None = TOKEN, **headers) -> httpx.Response:
    sent = {"Content-Type": "application/json", **headers}
    if token is not None:
        sent["X-Ferryman-Token"] = token
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/migrate/actions", content=content, headers=sent)


def test_actions_need_the_token_and_change_only_what_they_name(acting, ledger):
    before = actions_of(ledger)
    assert acting.get("/migrate/actions").json() == {
        "enabled": True, "actions": ["ignore", "retry"], "token_header": "X-Ferryman-Token"}
    ignore = {"action": "ignore", "migration": "boxes", "ids": [14, 21]}
    for response, status, error in [
        (post(acting, ignore, token=None), 401, "X-Ferryman-Token header must hold the token"),
        (post(acting, ignore, token=""), 401, "X-Ferryman-Token"),
        (post(acting, ignore, token=TOKEN[:-1]), 401, "X-Ferryman-Token"),
        (post(acting, ignore, token=TOKEN + "0"), 401, "X-Ferryman-Token"),
        (post(acting, ignore, **{"Content-Type": "text/plain"}), 415, "JSON"),
        (post(acting, b"{not json"), 400, "the body is not JSON"),
        (post(acting, [ignore]), 400, "must be a JSON object"),
        (post(acting, b"x" * 300_000), 413, "over"),
        (post(acting, {**ignore, "action": "delete"}), 400, "action: 'delete' is not one of ignore, retry"),
        (post(acting, {**ignore, "ids": []}), 400, "ids: a non-empty list"),
        (post(acting, {**ignore, "ids": [14, 15]}), 400, "not a failed record of migration boxes"),
        (post(acting, {**ignore, "ids": [14, 1.5]}), 400, "ids: 1.5 is not a record id"),
        (post(acting, {**ignore, "ids": [14, True]}), 400, "ids: true is not a record id"),
        (post(acting, {**ignore, "migration": "crates"}), 400, "no migration 'crates'"),
        (post(acting, {**ignore, "force": True}), 400, "unknown field 'force'"),
    ]:
        assert response.status_code == status, (response.status_code, response.text)
        assert error in response.json()["error"], response.text
    assert actions_of(ledger) == before

    done = post(acting, ignore)
    assert done.status_code == 200 and done.json() == {"action": "ignore", "changed": {"boxes": 2}}
    after = actions_of(ledger)
    assert {k for k in after if after[k] != before[k]} == {("boxes", 14), ("boxes", 21)}
    assert after[("boxes", 14)] == "IGNORE"
    page = acting.get("/migrate/failed", params={"q": "box 14 "}).json()
    assert [(r["id"], r["action"]) for r in page["records"]] == [(14, "IGNORE")]
    again = post(acting, {"action": "retry", "migration": "boxes", "ids": [14, 21]})
    assert again.json() == {"action": "retry", "changed": {"boxes": 2}}
    assert actions_of(ledger) == before


def test_a_read_only_server_refuses_every_action(client, ledger):
    before = actions_of(ledger)
    assert client.get("/migrate/actions").json()["enabled"] is False
    response = post(client, {"action": "ignore", "migration": "boxes", "ids": [14]})
    assert response.status_code == 403 and "read-only" in response.json()["error"]
    for path in ("/migrate/progress", "/migrate/failed", "/migrate/history", "/metrics", "/"):
        assert client.post(path).status_code == 405, path
    assert actions_of(ledger) == before


def test_an_action_is_refused_while_a_live_run_holds_the_ledger(acting, ledger):
    before = actions_of(ledger)
    SLOW["seconds"] = 0.01
    for row in FailedRecords(ledger).list(migration="boxes"):
        assert row.record.action.value == "RETRY"
    service = service_on(ledger, boxes=600, bags=0)  # retries the failed boxes, reads 300 more
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while acting.get("/migrate/result").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        response = post(acting, {"action": "ignore", "migration": "bags", "ids": [5]})
        assert response.status_code == 409, response.text
        assert "in use by pid" in response.json()["error"]
    finally:
        thread.join(60)
        service.ledger.close()
    assert actions_of(ledger)[("bags", 5)] == before[("bags", 5)] == "RETRY"
    assert post(acting, {"action": "ignore", "migration": "bags", "ids": [5]}).status_code == 200


def test_a_short_token_or_a_token_without_actions_is_refused_by_the_cli(ledger):
    with pytest.raises(Exception, match="--token: at least 16 characters, not 5"):
        Actions(ledger, "short")
    result = CliRunner().invoke(cli, ["serve", "--progress", str(ledger), "--token", TOKEN])
    assert result.exit_code == 2 and "--token is for --allow-actions" in result.output
    result = CliRunner().invoke(cli, ["serve", "--progress", str(ledger), "--allow-actions", "--token", "abc"])
    assert result.exit_code != 0 and "--token: at least 16 characters, not 3" in result.output


def test_ferryman_serve_allow_actions_prints_a_token_that_works(ledger):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("FERRYMAN_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "ferryman", "serve", "--progress", str(ledger), "--port", "0",
                             "--allow-actions"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        url = re.search(r"at (http://\S+)/ ", first).group(1)
        token = re.search(r"X-Ferryman-Token: (\S+)$", second.strip()).group(1)
        assert f"{url}/#actions={token} " in second and len(token) >= 32
        with httpx.Client(base_url=url) as client:
            assert post(client, {"action": "ignore", "migration": "bags", "ids": [10]}, token="x" * 32).status_code == 401
            assert post(client, {"action": "ignore", "migration": "bags", "ids": [10]}, token=token).status_code == 200
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert actions_of(ledger)[("bags", 10)] == "IGNORE"
    assert "dashboard action refused from 127.0.0.1: wrong token" in err
    assert 'dashboard action from 127.0.0.1: {"action": "ignore", "migration": "bags", "ids": [10]}' in err


def test_an_mjg_json_progress_is_searched_too(tmp_path):
    progress = MigrationProgress()
    progress.entry("shop.Orders").mark_failed([
        FailedRecord(i, f"orders(id={i})", f"ValueError: quantity {i}", Action.RETRY, datetime(2026, 1, 1, 0, 0, i))
        for i in range(1, 31)])
    progress.entry("shop.Lines").mark_failed([
        FailedRecord("L-1", "lines(id=L-1)", "KeyError: 'sku'", Action.IGNORE, datetime(2026, 1, 2))])
    progress.save(tmp_path / "p.json")
    with BackgroundServer(create_app(LedgerStatusSource(tmp_path / "p.json"))) as server, \
            httpx.Client(base_url=server.url) as client:
        page = client.get("/migrate/failed", params={"limit": 3}).json()
        assert page["total"] == 31
        assert [(r["migration"], r["id"]) for r in page["records"]] == [("Lines", "L-1"), ("Orders", 30),
                                                                       ("Orders", 29)]
        page = client.get("/migrate/failed", params={"q": "QUANTITY 2", "migration": "Orders"}).json()
        assert [r["id"] for r in page["records"]] == [29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 2]
        assert client.get("/migrate/failed", params={"migration": "Crates"}).status_code == 400


def test_a_token_in_the_environment_alone_leaves_a_server_read_only(ledger, monkeypatch):
    served = {}
    monkeypatch.setattr("ferryman.ledger_commands.serve",
                        lambda progress, host, port, **options: served.update(options))
    result = CliRunner().invoke(cli, ["serve", "--progress", str(ledger)], env={"FERRYMAN_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert served == {"echo": served["echo"], "allow_actions": False, "token": None}
    result = CliRunner().invoke(cli, ["serve", "--progress", str(ledger), "--allow-actions"],
                                env={"FERRYMAN_TOKEN": TOKEN})
    assert result.exit_code == 0 and served["token"] == TOKEN and served["allow_actions"] is True
