"""The dashboard in a real headless Chromium against the real server, driven over DevTools.

Chromium is Debian's (``chromium_path`` fixture); the DevTools protocol runs over the
``--remote-debugging-pipe`` file descriptors 3 and 4, so nothing beyond the standard library is
needed. The test leaves a screenshot in /tmp/ferryman-dashboard.png for a person to look at.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ferryman import MemoryStore, MigrationService, Retry, migration
from ferryman.server import BackgroundServer, LedgerStatusSource, LiveStatusSource, create_app
from ferryman.server.status import FAILED_RECORDS_SHOWN

SCREENSHOT = Path("/tmp/ferryman-dashboard.png")
PAYLOAD = ('<script>window.__xss = 1; alert(1)</script>'
           '<img src=x onerror="window.__xss = 2; alert(2)">')
NO_RETRY = Retry(times=0, delay=0)


class Chromium:
    """A headless Chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # in the child: Chromium reads fd 3 and writes fd 4
            read_end = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 100)
            write_end = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 100)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=wire_fds,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        self.session = self.call("Target.attachToTarget", targetId=pages[0]["targetId"],
                                 flatten=True)["sessionId"]

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                with self._cond:
                    self._cond.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                with self._cond:
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._cond.notify_all()

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        with self._cond:
            while ident not in self._replies:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"no answer from Chromium to {method}")
                self._cond.wait(0.2)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, session=self.session, **params)

    def js(self, expression: str) -> Any:
        reply = self.page("Runtime.evaluate", expression=expression, returnByValue=True,
                          awaitPromise=True)
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_js(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        problem = None
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except AssertionError as exc:  # e.g. the page is still loading
                problem, value = exc, None
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression} ({problem})")

    def wait_event(self, method: str, timeout: float = 20, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while time.monotonic() < deadline:
                for event in self.events:
                    params = event.get("params", {})
                    if event["method"] == method and all(params.get(k) == v for k, v in match.items()):
                        return params
                self._cond.wait(0.2)
        raise AssertionError(f"no {method} event {match}")

    def click(self, selector: str) -> None:
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                      " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                      " return [r.x + Math.min(r.width / 2, 40), r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def screenshot(self, path: Path, width: int = 1280) -> None:
        height = int(self.js("document.documentElement.scrollHeight"))
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.js("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))")
        data = self.page("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except AssertionError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        self._reader.join(5)
        os.close(self._from_chrome)


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


def test_more_failed_records_than_the_server_sends_says_how_many_and_where_the_rest_are(browser, tmp_path):
    stations = [{"id": i, "label": f"station {i}"} for i in range(1, 9 * 30 + 1)]  # 30 fail
    service = MigrationService([LabelledStore("stations", records=stations), dest("station_copy")],
                               [CopyStations], ledger=tmp_path / "run.db", checkpoint_interval=0)
    assert not service.run().ok
    service.ledger.close()
    with BackgroundServer(create_app(LedgerStatusSource(tmp_path / "run.db"))) as server:
        browser.page("Page.enable")
        browser.page("Page.navigate", url=f"{server.url}/")
        browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 1")
        shown = browser.js("""[...document.querySelectorAll('#failed details.failure')].map(d =>
            d.querySelector('.failure-desc').textContent)""")
        assert shown == [f"station {9 * i}" for i in range(30, 30 - FAILED_RECORDS_SHOWN, -1)]
        assert browser.js("document.getElementById('failed-count').textContent") == "30"
        assert browser.js("document.querySelector('#failed p.more').textContent") == (
            f"Showing the newest {FAILED_RECORDS_SHOWN} of 30. Use `ferryman failed list` for all of them.")
