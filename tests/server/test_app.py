"""The status server over HTTP: a real uvicorn on loopback, real runs, every route."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferryman import FerrymanError, MemoryStore, MigrationService, Retry, migration
from ferryman.server import (
    BackgroundServer,
    LedgerStatusSource,
    LiveStatusSource,
    StatusSnapshot,
    create_app,
    metrics,
    serve_forever,
)

REPO = Path(__file__).resolve().parents[2]
NO_RETRY = Retry(times=0, delay=0)
SLOW = {"seconds": 0.0}
BROKEN: set[int] = set()


@migration(source="src", dest="dst", batch_size=4, save_retry=NO_RETRY, load_retry=NO_RETRY,
           name="copy_areas")
class CopyAreas:
    def transform(self, aggregates, record):
        time.sleep(SLOW["seconds"])
        if record["id"] in BROKEN:
            raise ValueError(f"area {record['id']} has no code")
        return [dict(record)]


@pytest.fixture(autouse=True)
def _reset():
    BROKEN.clear()
    SLOW["seconds"] = 0.0
    yield
    BROKEN.clear()



def make_service(ledger, n: int = 40) -> MigrationService:
    dst = MemoryStore("dst")
    src = MemoryStore("src", records=[{"id": i, "code": f"A{i}"} for i in range(1, n + 1)])
    return MigrationService([src, dst], [CopyAreas], ledger=ledger, checkpoint_interval=0)


def run_in_thread(service: MigrationService) -> threading.Thread:
    thread = threading.Thread(target=service.run, name="test-run")
    thread.start()
    return thread


def poll_until_final(client: httpx.Client, timeout: float = 60) -> list[dict]:
    """Every distinct /migrate/result seen until the status is no longer pending/running."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/migrate/result")
        assert response.status_code == 200
        body = response.json()
        if not seen or seen[-1] != body:
            seen.append(body)
        if body["status"] not in ("pending", "running"):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"still not finished: {seen[-3:]}")


def openapi_validator(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


# --- a run observed live -------------------------------------------------------------------------


def test_live_server_shows_running_then_completed_during_a_real_run(tmp_path):
    service = make_service(tmp_path / "run.db", n=60)
    live = LiveStatusSource(service.ledger)
    service.add_observer(live)
    SLOW["seconds"] = 0.02
    with BackgroundServer(create_app(live)) as server, httpx.Client(base_url=server.url) as client:
        assert server.url.startswith("http://127.0.0.1:")
        assert client.get("/migrate/result").json() == {
            "status": "pending", "step": None, "last_err": None, "try_count": 0}
        thread = run_in_thread(service)
        statuses, reads = [], []
        while thread.is_alive():
            progress = client.get("/migrate/progress").json()
            statuses.append(progress["status"])
            if progress["status"] == "running" and progress["migrations"]:
                reads.append(progress["migrations"][0]["read"])
            time.sleep(0.05)
        thread.join()
        final = client.get("/migrate/result").json()
    service.ledger.close()
    assert final == {"status": "completed", "step": "copy_areas", "last_err": None, "try_count": 1}
    assert "running" in statuses and set(statuses) <= {"pending", "running", "completed"}
    assert statuses.index("running") < ([*statuses, "completed"]).index("completed")
    assert len(reads) >= 3 and reads == sorted(reads) and reads[0] < 60


def test_ledger_server_watches_a_run_across_processes_and_a_later_server_says_migrated(tmp_path):
    ledger = tmp_path / "run.db"
    source = LedgerStatusSource(ledger)
    SLOW["seconds"] = 0.02
    with BackgroundServer(create_app(source)) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/migrate/result").json()["status"] == "pending"
        service = make_service(ledger, n=60)
        thread = run_in_thread(service)
        seen = poll_until_final(client)
        thread.join()
        service.ledger.close()
    statuses = [s["status"] for s in seen]
    assert "running" in statuses and statuses[-1] == "completed"
    assert statuses.index("running") < statuses.index("completed")
    assert seen[-1] == {"status": "completed", "step": "copy_areas", "last_err": None, "try_count": 1}
    with BackgroundServer(create_app(LedgerStatusSource(ledger))) as later:
        assert httpx.get(f"{later.url}/migrate/result").json() == {
            "status": "migrated", "step": "copy_areas", "last_err": None, "try_count": 1}


# --- every route, against its documentation -------------------------------------------------------


@pytest.fixture
def failed_server(tmp_path):
    BROKEN.update({2, 5})
    service = make_service(tmp_path / "run.db", n=12)
    assert not service.run().ok
    service.ledger.close()
    app = create_app(LedgerStatusSource(tmp_path / "run.db"))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        yield app, client


def test_every_route_is_documented_and_every_documented_route_exists(failed_server):
    app, client = failed_server
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    routes = {route.path: route.methods for route in app.routes}
    assert set(routes) == set(doc["paths"])
    for path, methods in routes.items():
        documented = {m.upper() for m in doc["paths"][path]}
        assert documented == {m for m in methods if m != "HEAD"}, path
    jsonschema.Draft202012Validator.check_schema({"components": doc["components"]})
    for path, item in doc["paths"].items():
        response = client.get(path)
        assert response.status_code == 200, path
        (media_type,) = item["get"]["responses"]["200"]["content"]
        assert response.headers["content-type"].split(";")[0] == media_type, path
    result_enum = doc["components"]["schemas"]["Result"]["properties"]["status"]["enum"]
    assert set(result_enum) == {"pending", "running", "completed", "migrated", "failed"}


def test_responses_validate_against_the_schemas(failed_server):
    _, client = failed_server
    doc = client.get("/openapi.json").json()
    result = client.get("/migrate/result").json()
    openapi_validator(doc, "Result").validate(result)
    assert result == {"status": "failed", "step": "copy_areas",
                      "last_err": "copy_areas: src(id=5): ValueError: area 5 has no code", "try_count": 1}
    progress = client.get("/migrate/progress").json()
    openapi_validator(doc, "Progress").validate(progress)
    assert {k: progress[k] for k in result} == result
    assert progress["totals"]["failed"] == 2 and progress["failed_total"] == 2
    assert [f["id"] for f in progress["failed_records"]] == [5, 2]  # newest first
    assert progress["failed_records"][0]["cause"].startswith("Traceback")
    (migration_,) = progress["migrations"]
    assert (migration_["read"], migration_["total"], migration_["succeeded"]) == (12, 12, 10)
    # the schema really checks: a wrong type is refused
    with pytest.raises(jsonschema.ValidationError):
        openapi_validator(doc, "Result").validate({**result, "last_err": {"op": "x"}})
    with pytest.raises(jsonschema.ValidationError):
        openapi_validator(doc, "Result").validate({**result, "status": "done"})


def test_metrics_are_valid_prometheus_text(failed_server):
    _, client = failed_server
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["ferryman_up"].samples[0].value == 1
    assert families["ferryman_records"].type == "counter"
    samples = {(s.labels["migration"], s.labels["outcome"]): s.value
               for s in families["ferryman_records"].samples}
    assert samples == {("copy_areas", "succeeded"): 10, ("copy_areas", "failed"): 2,
                       ("copy_areas", "skipped"): 0, ("copy_areas", "ignored"): 0}
    assert families["ferryman_outputs_written"].samples[0].value == 10
    assert families["ferryman_source_records"].samples[0].value == 12
    assert families["ferryman_run_attempt"].samples[0].value == 1
    states = {s.labels["state"]: s.value for s in families["ferryman_migration_state"].samples}
    assert states["failed"] == 1 and sum(states.values()) == 1
    status = {s.labels["status"]: s.value for s in families["ferryman_status"].samples}
    assert status == {"pending": 0, "running": 0, "completed": 0, "migrated": 0, "failed": 1}
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            assert line.split()[3] in ("gauge", "counter")


def test_metric_labels_are_escaped():
    weird = 'a "quoted" \\ back\nslash'
    snap = StatusSnapshot("running", weird, None, 1, migrations=[{
        "identity": "m.X", "name": weird, "state": "running", "total": None, "read": 3,
        "succeeded": 3, "failed": 0, "skipped": 0, "ignored": 0, "written": 3, "rate": 1.5,
        "eta": None}])
    text = metrics.render(snap)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["ferryman_records_read"].samples
    assert sample.labels == {"migration": weird} and sample.value == 3
    assert "ferryman_source_records{" not in text  # unknown totals are left out, not 0


# --- failures of the server itself ---------------------------------------------------------------


def test_an_unreadable_ledger_is_a_500_with_a_json_error(tmp_path):
    ledger = tmp_path / "run.db"
    service = make_service(ledger, n=8)
    assert service.run().ok
    service.ledger.close()
    with BackgroundServer(create_app(LedgerStatusSource(ledger))) as server, \
            httpx.Client(base_url=server.url) as client:
        assert client.get("/migrate/result").status_code == 200
        data = ledger.read_bytes()
        ledger.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
        for path in ("/migrate/result", "/migrate/progress"):
            response = client.get(path)
            assert response.status_code == 500, path
            body = response.json()
            assert set(body) == {"error"} and isinstance(body["error"], str)
            assert "cannot read" in body["error"]
        metrics_text = client.get("/metrics")
        assert metrics_text.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(metrics_text.text)}
        assert list(families) == ["ferryman_up"] and families["ferryman_up"].samples[0].value == 0
        assert client.get("/").status_code == 200  # the page still loads, and says what is wrong
        assert client.get("/nope").status_code == 404


# --- serving ---------------------------------------------------------------------------------------


def test_a_port_in_use_is_a_clear_error_at_once(tmp_path):
    app = create_app(LedgerStatusSource(tmp_path / "run.db"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(FerrymanError) as info:
            BackgroundServer(app, port=port).start()
        assert str(info.value) == f"port {port} on 127.0.0.1 is in use"
        with pytest.raises(FerrymanError, match=f"^port {port} on 127.0.0.1 is in use$"):
            serve_forever(app, "127.0.0.1", port)
        assert time.monotonic() - started < 5


def test_stop_frees_the_port_for_the_next_server(tmp_path):
    app = create_app(LedgerStatusSource(tmp_path / "run.db"))
    first = BackgroundServer(app)
    first.start()
    port = int(first.url.rsplit(":", 1)[1])
    assert httpx.get(f"{first.url}/migrate/result").status_code == 200
    first.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{first.url}/migrate/result")
    with BackgroundServer(app, port=port) as second:
        assert second.url == first.url
        assert httpx.get(f"{second.url}/migrate/result").status_code == 200


SERVE = """
import sys
from ferryman.server import LedgerStatusSource, create_app, serve_forever
serve_forever(create_app(LedgerStatusSource(sys.argv[1])), "127.0.0.1", 0,
              on_ready=lambda url: print(url, flush=True))
print("stopped", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_forever_answers_and_stops_cleanly_on_a_signal(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path / "run.db")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url if url else proc.stderr.read()
        assert httpx.get(f"{url}/migrate/result").json()["status"] == "pending"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip() == "stopped"
    assert "Traceback" not in err


# --- a progress file written by Java mjg --------------------------------------------------------------

JAVA_CAUSE = ("java.lang.IllegalStateException: boom\n"
              "\tat mjg.StationMigration.transform(StationMigration.java:42)\n"
              "\tat mjg.Runner.run(Runner.java:10)\n")


def java_progress(path: Path, *, failed: bool = True, fatal: bool = False) -> None:
    """An mjg JSON progress as Java mjg writes it: causes are Java stack traces, the frames
    after the exception's line."""
    records = [{"id": 3, "description": "StationEntity(id=3)", "cause": JAVA_CAUSE, "action": "RETRY",
                "timestamp": "2025-08-29T00:33:52"}] if failed else []
    document = {
        "metadata": {"timestamp": "2025-08-29T00:33:51.600238326", "completedMigrationFQCNs": [],
                     "inProgressMigrationFQCNs": ["mjg.StationMigration"]},
        "migrationProgress": {"mjg.StationMigration": {
            "fqcn": "mjg.StationMigration", "succeededRecordIds": [1, 2], "failedRecords": records}},
        "fatalErrors": ["java.sql.SQLException: source unreadable\n\tat mjg.Runner.run(Runner.java:10)"]
        if fatal else [],
    }
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")


@pytest.mark.parametrize("failed, fatal, last_err", [
    (True, False, "StationEntity(id=3): IllegalStateException: boom"),
    (False, True, "SQLException: source unreadable"),
])
def test_a_java_progress_says_what_failed_not_where(tmp_path, failed, fatal, last_err):
    from click.testing import CliRunner

    from ferryman.cli import cli

    path = tmp_path / "progress.json"
    java_progress(path, failed=failed, fatal=fatal)
    with BackgroundServer(create_app(LedgerStatusSource(path))) as server:
        result = httpx.get(f"{server.url}/migrate/result").json()
    assert result == {"status": "failed", "step": "StationMigration", "last_err": last_err, "try_count": 0}
    shown = CliRunner().invoke(cli, ["status", "--progress", str(path)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0].endswith(f"last error: {last_err}")
    assert "Runner.java" not in shown.output
