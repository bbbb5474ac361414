"""The dashboard in a real headless Chromium against the real server, driven over DevTools.

Chromium is Debian's (``chromium_path`` fixture), driven by :mod:`chromium`. The tests leave
screenshots in /tmp/ferryman-dashboard*.png for a person to look at.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from chromium import Chromium

from ferryman import MemoryStore, MigrationService, Retry, migration
from ferryman.progress.reader import FailedPage
from ferryman.progress.sqlite import SqliteLedger
from ferryman.server import BackgroundServer, LedgerStatusSource, LiveStatusSource, create_app
from ferryman.server.failed import FailedQuery, page_body
from ferryman.server.status import StatusSnapshot

SCREENSHOT = Path("/tmp/ferryman-dashboard.png")
PAYLOAD = ('<script>window.__xss = 1; alert(1)</script>'
           '<img src=x onerror="window.__xss = 2; alert(2)">')
NO_RETRY = Retry(times=0, delay=0)


# --- the data shown -----------------------------------------------------------------------------


class LabelledStore(MemoryStore):
    """A store whose failure reports show a field of the record, as a user's store may."""

    def describe(self, record):
        return record["label"]


@migration(source="stations", dest="station_copy", batch_size=10, save_retry=NO_RETRY,
           load_retry=NO_RETRY, name="stations")
class CopyStations:
    def transform(self, aggregates, record):
        if record["id"] % 9 == 0:
            raise ValueError(f"bad coordinates in {record['label']}")
        return [{"id": record["id"], "label": record["label"]}]


@migration(source="areas", dest="area_copy", batch_size=10, name="areas")
class CopyAreas:
    def transform(self, aggregates, record):
        return [dict(record)]



def dest(name: str) -> MemoryStore:
    return MemoryStore(name)


@pytest.fixture
def server(tmp_path):
    stations = [{"id": i, "label": f"station {i}"} for i in range(1, 40)]
    stations[8]["label"] = PAYLOAD  # id 9 fails: its description is the payload
    service = MigrationService(
        [LabelledStore("stations", records=stations), dest("station_copy"),
         MemoryStore("areas", records=[{"id": i} for i in range(1, 26)]), dest("area_copy")],
        [CopyStations, CopyAreas], ledger=tmp_path / "run.db", checkpoint_interval=0)
    assert not service.run().ok
    service.ledger.close()
    with BackgroundServer(create_app(LedgerStatusSource(tmp_path / "run.db"))) as running:
        yield running


@pytest.fixture
def browser(chromium_path, tmp_path):
    chromium = Chromium(chromium_path, tmp_path / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


def test_dashboard_renders_progress_escapes_data_and_exports_json(server, browser, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads),
                 eventsEnabled=True)
    browser.page("Page.enable")
    browser.page("Runtime.enable")
    browser.page("Page.navigate", url=f"{server.url}/")
    browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 2")

    # status, step, attempts
    assert browser.js("document.getElementById('status').textContent") == "failed"
    assert browser.js("document.getElementById('status').dataset.status") == "failed"
    assert browser.js("document.getElementById('step').textContent") == "areas"
    assert browser.js("document.getElementById('attempts').textContent") == "1"
    assert "bad coordinates" in browser.js("document.getElementById('last-err').textContent")
    assert browser.js("document.getElementById('last-error').hidden") is False

    # one bar per migration and one overall, filled to read/total
    bars = browser.js("""[...document.querySelectorAll('.migration')].map(m => ({
        name: m.querySelector('.name').textContent,
        state: m.dataset.state,
        width: m.querySelector('.bar .fill').style.width,
        now: m.querySelector('.bar').getAttribute('aria-valuenow'),
        done: m.querySelector('.done').textContent}))""")
    assert [(b["name"], b["state"], b["width"], b["now"]) for b in bars] == [
        ("stations", "failed", "100%", "100"), ("areas", "completed", "100%", "100")]
    assert bars[0]["done"] == "39 / 39 read · 100%"
    assert browser.js("document.querySelector('#overall-bar .fill').style.width") == "100%"
    assert browser.js("document.getElementById('t-failed').textContent") == "4"
    assert browser.js("document.getElementById('t-read').textContent") == "64"

    # failed records: the payload is text, nothing was injected, nothing ran
    failures = browser.js("""[...document.querySelectorAll('#failed details.failure')].map(d =>
        d.querySelector('.failure-desc').textContent)""")
    assert len(failures) == 4 and PAYLOAD in failures
    assert browser.js("document.querySelector('.failure-migration').textContent") == "stations"
    assert browser.js("document.querySelectorAll('#failed img, #failed script').length") == 0
    assert browser.js("document.querySelectorAll('img').length") == 0
    assert browser.js("document.scripts.length") == 1
    assert browser.js("window.__xss === undefined") is True
    assert not [e for e in browser.events if e["method"] == "Page.javascriptDialogOpening"]
    assert failures.index(PAYLOAD) == 3  # newest first: id 9 failed first
    oldest = "#failed details.failure:last-of-type"
    browser.click(f"{oldest} summary")
    browser.wait_js(f"document.querySelector('{oldest}').open")
    cause = browser.js(f"document.querySelector('{oldest} pre.cause').textContent")
    assert cause.startswith("Traceback") and cause.endswith(f"ValueError: bad coordinates in {PAYLOAD}")
    refreshes = "performance.getEntriesByType('resource').filter(e => e.name.includes('/migrate/progress')).length"
    browser.wait_js(f"{refreshes} >= {browser.js(refreshes) + 2}")  # a whole refresh ran since
    assert browser.js(f"document.querySelector('{oldest}').open") is True  # and kept the record open

    # run history
    runs = browser.js("[...document.querySelectorAll('#runs tr')].map(r => r.textContent)")
    assert len(runs) == 1 and "failed" in runs[0] and "job 1 · try 1" in runs[0]

    # the export button downloads {exportedAt, result, progress, runs, failedRecords}
    browser.click("#export")
    began = browser.wait_event("Browser.downloadWillBegin")
    assert began["suggestedFilename"].startswith("ferryman-progress-")
    assert began["suggestedFilename"].endswith(".json")
    browser.wait_event("Browser.downloadProgress", guid=began["guid"], state="completed")
    exported = json.loads((downloads / began["suggestedFilename"]).read_text())
    assert set(exported) == {"exportedAt", "result", "progress", "runs", "failedRecords"}
    assert exported["result"] == {"status": "failed", "step": "areas",
                                  "last_err": exported["progress"]["last_err"], "try_count": 1}
    assert exported["progress"]["totals"]["read"] == 64
    assert len(exported["failedRecords"]) == 4 and exported["runs"][0]["outcome"] == "failed"
    assert PAYLOAD in [f["description"] for f in exported["failedRecords"]]

    browser.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000


class UncountableStore(MemoryStore):
    """A source that cannot count cheaply, like a big collection or a file."""

    def count(self, filter=None):
        return None


@migration(source="events", dest="event_copy", batch_size=5, name="events")
class SlowEvents:
    def transform(self, aggregates, record):
        time.sleep(0.02)
        return [dict(record)]


def test_a_running_migration_of_unknown_size_has_an_indeterminate_bar(browser, tmp_path):
    service = MigrationService(
        [UncountableStore("events", records=[{"id": i} for i in range(1, 151)]), dest("event_copy")],
        [SlowEvents], ledger=tmp_path / "run.db", checkpoint_interval=0)
    live = LiveStatusSource(service.ledger)
    service.add_observer(live)
    with BackgroundServer(create_app(live)) as server:
        browser.page("Page.enable")
        browser.page("Page.navigate", url=f"{server.url}/")
        browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 1")
        assert browser.js("document.getElementById('status').textContent") == "pending"
        thread = threading.Thread(target=service.run)
        thread.start()
        try:
            browser.wait_js("document.getElementById('status').textContent === 'running'")
            browser.wait_js("document.querySelectorAll('.migration .bar.indeterminate').length === 1")
            assert browser.js("document.getElementById('overall-bar').classList"
                              ".contains('indeterminate')") is True
            assert browser.js("document.getElementById('step').textContent") == "events"
        finally:
            thread.join(60)
        browser.wait_js("document.getElementById('status').textContent === 'completed'")
        assert browser.js("document.querySelectorAll('.bar.indeterminate').length") == 0
        assert browser.js("document.querySelector('.migration .bar .fill').style.width") == "100%"
    service.ledger.close()


def test_a_server_error_shows_a_banner_and_keeps_the_last_values(server, browser, tmp_path):
    browser.page("Page.enable")
    browser.page("Page.navigate", url=f"{server.url}/")
    browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 1")
    assert browser.js("document.getElementById('conn').dataset.state") == "live"
    ledger = tmp_path / "run.db"
    data = ledger.read_bytes()
    ledger.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    banner = browser.wait_js("(() => { const b = document.getElementById('banner');"
                             " return !b.hidden && b.textContent; })()")
    assert "cannot read" in banner
    assert browser.js("document.getElementById('conn').dataset.state") == "down"
    assert browser.js("document.getElementById('status').textContent") == "failed"


def test_failed_records_are_paged_and_searched_on_the_server(browser, tmp_path):
    stations = [{"id": i, "label": f"station {i}"} for i in range(1, 9 * 30 + 1)]  # 30 fail
    service = MigrationService([LabelledStore("stations", records=stations), dest("station_copy")],
                               [CopyStations], ledger=tmp_path / "run.db", checkpoint_interval=0)
    assert not service.run().ok
    service.ledger.close()
    shown = """[...document.querySelectorAll('#failed details.failure')].map(d =>
        d.querySelector('.failure-desc').textContent)"""
    with BackgroundServer(create_app(LedgerStatusSource(tmp_path / "run.db"))) as server:
        browser.page("Page.enable")
        browser.page("Page.navigate", url=f"{server.url}/")
        browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 1")
        assert browser.js(shown) == [f"station {9 * i}" for i in range(30, 5, -1)]  # newest 25
        assert browser.js("document.getElementById('failed-count').textContent") == "30"
        assert browser.js("document.getElementById('failed-range').textContent") == "1–25 of 30"
        assert browser.js("document.getElementById('failed-prev').disabled") is True
        browser.click("#failed-next")
        browser.wait_js("document.getElementById('failed-range').textContent === '26–30 of 30'")
        assert browser.js(shown) == [f"station {9 * i}" for i in range(5, 0, -1)]
        assert browser.js("document.getElementById('failed-next').disabled") is True

        # a search goes back to the first page; it looks at ids, descriptions and causes
        browser.js("(() => { const q = document.getElementById('failed-q'); q.value = 'STATION 27';"
                   " q.dispatchEvent(new Event('input')); })()")
        browser.wait_js("document.getElementById('failed-range').textContent === '1–2 of 2'")
        assert browser.js(shown) == ["station 270", "station 27"]
        browser.js("(() => { const q = document.getElementById('failed-q'); q.value = 'nothing like it';"
                   " q.dispatchEvent(new Event('input')); })()")
        browser.wait_js("document.querySelector('#failed p.empty')?.textContent === 'No failed record matches.'")
        assert browser.js("document.getElementById('failed-range').textContent") == ""
        browser.js("(() => { const q = document.getElementById('failed-q'); q.value = '';"
                   " q.dispatchEvent(new Event('input')); })()")
        browser.wait_js("document.getElementById('failed-range').textContent === '1–25 of 30'")


# --- layout at the widths people use ---------------------------------------------------------------


class FixedSource:
    """A status that stays as given: big counts, to see that every one of them fits."""

    def __init__(self, snapshot: StatusSnapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> StatusSnapshot:
        return self._snapshot

    def version(self) -> int:
        return 0

    def failed_page(self, query: FailedQuery) -> dict:
        return page_body(FailedPage(0), {}, query)

    def events(self, after: int, limit: int) -> list[dict]:
        return []

    def verification(self) -> dict | None:
        return None


def big_snapshot() -> StatusSnapshot:
    began = time.time() - 4000
    migrations = [{
        "identity": f"big.Migration{i}", "name": f"migration_{i}", "source": "s", "dest": "d",
        "state": "completed", "total": total, "read": total, "skipped": 12_345, "ignored": 98_765,
        "succeeded": total - 111_110, "failed": 1_234_567, "written": 12_345_678, "retried": 0,
        "rate": 123_456.789, "eta": None, "last_error": None, "fatal_error": None, "held_back_by": [],
        "started_at": began + 10 * i, "finished_at": began + 3900 + i,
    } for i, total in enumerate([320_000, 1_234_567, 9_876_543])]
    run = {"id": 7, "job": 3, "attempt": 12, "started_at": began, "ended_at": began + 3905,
           "outcome": "completed", "pid": 1, "host": "h", "step": "migration_2", "last_error": None}
    return StatusSnapshot("completed", "migration_2", None, 12, migrations, [run])


@pytest.mark.parametrize("width", [1024, 1440, 1920])
def test_every_stat_fits_its_card_at_common_widths(browser, width):
    with BackgroundServer(create_app(FixedSource(big_snapshot()))) as server:
        browser.page("Page.enable")
        browser.page("Emulation.setDeviceMetricsOverride", width=width, height=900,
                     deviceScaleFactor=1, mobile=False)
        browser.page("Page.navigate", url=f"{server.url}/")
        browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 2")
        stats = browser.js("""[...document.querySelectorAll('.stat')].map(card => {
            const v = card.querySelector('.value'), r = v.getBoundingClientRect(),
                  c = card.getBoundingClientRect(), lh = parseFloat(getComputedStyle(v).lineHeight);
            return {label: card.querySelector('.label').textContent, text: v.textContent,
                    scroll: v.scrollWidth, client: v.clientWidth, inside: r.right <= c.right + 0.5,
                    lines: Math.round(r.height / (lh || r.height))}; })""")
        assert [s["text"] for s in stats] == [
            "11,431,110", "11,097,780", "3,703,701", "37,035", "296,295", "37,037,034",
            "2,927.3/s", "1h 05m"]
        assert [s["label"] for s in stats][-2:] == ["Average rate", "Duration"]
        for stat in stats:
            assert stat["scroll"] <= stat["client"], (width, stat)
            assert stat["inside"] and stat["lines"] == 1, (width, stat)
        assert browser.js("document.documentElement.scrollWidth <= window.innerWidth") is True
        assert browser.js("document.getElementById('failed-problem').hidden") is True
        assert browser.js("document.getElementById('overall-sub').textContent").startswith(
            "11,431,110 of 11,431,110 source records read")
        assert browser.js("document.querySelector('#overall-bar .fill').style.width") == "100%"
        chips = browser.js("""[...document.querySelectorAll('.migration .done')].map(d => d.textContent)""")
        assert chips[0] == "320,000 / 320,000 read · 100%"
        browser.screenshot(Path(f"/tmp/ferryman-dashboard-{width}.png"), width=width)
        assert Path(f"/tmp/ferryman-dashboard-{width}.png").stat().st_size > 10_000


# --- the throughput chart --------------------------------------------------------------------------


@migration(source="parcels", dest="parcel_copy", batch_size=5, name="parcels")
class SlowParcels:
    def transform(self, aggregates, record):
        time.sleep(0.025)
        return [dict(record)]


def test_the_throughput_chart_follows_a_live_run(browser, tmp_path):
    service = MigrationService(
        [MemoryStore("parcels", records=[{"id": i} for i in range(1, 201)]), dest("parcel_copy")],
        [SlowParcels], ledger=tmp_path / "run.db", checkpoint_interval=0)
    live = LiveStatusSource(service.ledger)
    service.add_observer(live)
    with BackgroundServer(create_app(live)) as server:
        browser.page("Page.enable")
        browser.page("Page.navigate", url=f"{server.url}/")
        browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 1")
        assert browser.js("document.querySelector('#chart svg')") is None
        thread = threading.Thread(target=service.run)
        thread.start()
        seen = []
        try:
            browser.wait_js("document.querySelector('#chart svg path.line') !== null")
            while thread.is_alive():
                state = browser.js("""(() => { const p = document.querySelector('#chart path.line');
                    return p && [p.getAttribute('d'), Number(document.querySelector('#chart svg').dataset.points),
                                 document.getElementById('status').textContent]; })()""")
                if state and state[2] == "running" and (not seen or seen[-1] != state):
                    seen.append(state)
                time.sleep(0.2)
        finally:
            thread.join(60)
        assert len({d for d, _, _ in seen}) >= 3, seen  # redrawn as the run went on
        assert [n for _, n, _ in seen] == sorted(n for _, n, _ in seen)
        assert seen[-1][1] >= 4
        browser.wait_js("document.getElementById('status').textContent === 'completed'")
        legend = browser.wait_js("(() => { const k = document.querySelector('#chart .legend .key');"
                                 " return k && k.textContent.includes('average') && k.textContent; })()")
        assert legend.startswith("parcels average ")
        assert browser.js("document.getElementById('t-rate-label').textContent") == "Average rate"
        assert browser.js("document.getElementById('t-rate').textContent").endswith("/s")
        assert browser.js("document.getElementById('t-eta-label').textContent") == "Duration"
        assert browser.js("document.getElementById('t-eta').textContent") != "—"
    service.ledger.close()


def test_a_verification_shows_what_it_found_as_text(browser, tmp_path):
    labels = MemoryStore("areas", records=[{"id": i, "label": f"area {i}"} for i in range(1, 13)])
    copies = MemoryStore("area_copy", on_conflict="update")
    service = MigrationService([labels, copies], [CopyAreas], ledger=tmp_path / "run.db", checkpoint_interval=0)
    assert service.run().ok
    with BackgroundServer(create_app(LedgerStatusSource(tmp_path / "run.db"))) as running:
        browser.page("Page.navigate", url=f"{running.url}/")
        browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 1")
        assert browser.js("document.getElementById('verification-card').hidden") is True  # none yet

        copies.save_all([{"id": 5, "label": PAYLOAD}])  # the destination drifted from what was written
        assert not service.verify(sample=None).ok
        browser.wait_js("document.getElementById('verification-card').hidden === false")
        assert browser.js("document.getElementById('verification-status').textContent") == "failed"
        rows = browser.js("[...document.querySelectorAll('.verified')].map(r => r.textContent)")
        assert len(rows) == 1 and rows[0].startswith("failed areas")
        problem = browser.js("document.querySelector('.verified .problems li').textContent")
        assert problem.startswith("different · 5 · area_copy(id=5): label: different: expected 'area 5'")
        assert "found '<script>window.__xss = 1; alert(1)</script><img src=x onerror=" in problem  # as text
        assert browser.js("window.__xss === undefined && !document.querySelector('.verified img')")


def test_the_partitions_of_a_run_with_workers_show_as_a_grid_by_state(browser, tmp_path):
    key = "shop.CopyItems"
    main = SqliteLedger(tmp_path / "run.db")
    main.begin_run([])
    main.start_migration(key)
    parts = main.partitions(key)
    parts.save_split([100, 200])
    running = parts.ledger(1, main)
    try:
        running.begin_run([])
        with BackgroundServer(create_app(LedgerStatusSource(tmp_path / "run.db"))) as server:
            browser.page("Page.navigate", url=f"{server.url}/")
            browser.wait_js("document.getElementById('partitions-card').hidden === false")
            cells = browser.js("[...document.querySelectorAll('.partition')]"
                               ".map(c => [c.textContent, c.dataset.state, c.title])")
            assert [cell[:2] for cell in cells] == [
                ["CopyItems #0", "pending"], ["CopyItems #1", "running"], ["CopyItems #2", "pending"]]
            assert cells[1][2].startswith("running · (100, 200] · 0 read") and "pid " in cells[1][2]
            assert browser.js("document.getElementById('partitions-count').textContent") == "0/3"
    finally:
        running.close()
        main.close()
