"""Acting from the dashboard, in a real headless Chromium against the real server: marking failed
records needs the server's token, changes the ledger, and record data stays text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chromium import Chromium

from ferryman import Action, MemoryStore, MigrationService, Retry, migration
from ferryman.progress.failed import FailedRecords
from ferryman.server import Actions, BackgroundServer, LedgerStatusSource, create_app

TOKEN = "s3cret-token-for-tests"
PAYLOAD = ('<img src=x onerror="window.__xss = 1; alert(1)">'
           '<script>window.__xss = 2; alert(2)</script><svg onload="window.__xss = 3">')
NO_RETRY = Retry(times=0, delay=0)


@migration(source="crates", dest="crate_copy", batch_size=10, save_retry=NO_RETRY,
           load_retry=NO_RETRY, name="crates")
class CopyCrates:
    def transform(self, aggregates, record):
        if record["bad"]:
            raise ValueError(f"crate {record['id']} is broken: {PAYLOAD}")
        return [{"id": record["id"]}]


@pytest.fixture
def ledger(tmp_path) -> Path:
    """Crates whose ids are strings; the one with the payload as its id fails, and one more."""
    crates = [{"id": f"crate-{i}", "bad": i == 4} for i in range(1, 9)] + [{"id": PAYLOAD, "bad": True}]
    path = tmp_path / "run.db"
    service = MigrationService([MemoryStore("crates", records=crates), MemoryStore("crate_copy")],
                               [CopyCrates], ledger=path, checkpoint_interval=0)
    assert not service.run().ok
    service.ledger.close()
    return path


@pytest.fixture
def browser(chromium_path, tmp_path):
    chromium = Chromium(chromium_path, tmp_path / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


def actions_of(path: Path) -> dict[object, str]:
    return {row.record.id: row.record.action.value for row in FailedRecords(path).list()}


POST = """fetch('/migrate/actions', {method: 'POST', headers: HEADERS,
    body: JSON.stringify({action: 'ignore', migration: 'crates', ids: ['crate-4']})})
    .then(async r => [r.status, (await r.json()).error || ''])"""


def post_from_page(browser: Chromium, headers: dict[str, str]) -> list:
    return browser.js(POST.replace("HEADERS", json.dumps(headers)))


def test_an_action_is_refused_without_the_token_and_done_with_it(ledger, browser):
    before = actions_of(ledger)
    assert before == {"crate-4": "RETRY", PAYLOAD: "RETRY"}
    app = create_app(LedgerStatusSource(ledger), Actions(ledger, TOKEN))
    with BackgroundServer(app) as server:
        browser.page("Page.enable")
        browser.page("Page.navigate", url=f"{server.url}/")
        browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 1")
        # the page knows actions are on, asks for the token, and offers no button without it
        assert browser.js("document.getElementById('actions-bar').hidden") is False
        assert browser.js("document.getElementById('token-form').hidden") is False
        assert browser.js("document.querySelectorAll('#failed button.mark').length") == 0

        # the server checks every request, whatever the page does
        status, error = post_from_page(browser, {"Content-Type": "application/json"})
        assert status == 401 and "X-Ferryman-Token" in error
        status, _ = post_from_page(browser, {"Content-Type": "application/json",
                                             "X-Ferryman-Token": TOKEN + "x"})
        assert status == 401
        status, _ = post_from_page(browser, {"Content-Type": "text/plain", "X-Ferryman-Token": TOKEN})
        assert status == 415
        assert actions_of(ledger) == before

        # with the token typed in, each record gets its button; Ignore marks it in the ledger
        browser.js(f"document.getElementById('token-input').value = {json.dumps(TOKEN)}")
        browser.click("#token-save")
        browser.wait_js("document.querySelectorAll('#failed button.mark').length === 2")
        assert browser.js("document.cookie") == ""
        assert browser.js("sessionStorage.getItem('ferryman-token')") == TOKEN
        crate = ("[...document.querySelectorAll('#failed details.failure')]"
                 ".find(d => d.querySelector('.failure-meta').textContent.includes('\"crate-4\"'))")
        browser.js(f"{crate}.open = true")
        browser.js(f"{crate}.querySelector('button.mark').click()")
        browser.wait_js("document.getElementById('action-result').textContent.startsWith('Ignored')")
        browser.wait_js(f"{crate}.querySelector('.pill.action').textContent === 'IGNORE'")
        assert actions_of(ledger) == {"crate-4": "IGNORE", PAYLOAD: "RETRY"}
        assert browser.js(f"{crate}.querySelector('button.mark').textContent") == "Retry"

        # a token given in the address (as `ferryman serve` prints it) is taken, then hidden
        browser.js("sessionStorage.clear()")
        browser.wait_js("document.querySelectorAll('#failed button.mark').length === 0")
        browser.page("Page.navigate", url=f"{server.url}/#actions={TOKEN}")
        browser.wait_js("document.querySelectorAll('#failed button.mark').length === 2")
        assert browser.js("location.hash") == ""
        browser.js(f"{crate}.querySelector('button.mark').click()")
        browser.wait_js("document.getElementById('action-result').textContent.startsWith('Set to retry')")
    assert actions_of(ledger) == {"crate-4": "RETRY", PAYLOAD: "RETRY"}


def test_a_read_only_server_offers_no_action_and_refuses_them(ledger, browser):
    with BackgroundServer(create_app(LedgerStatusSource(ledger))) as server:
        browser.page("Page.enable")
        browser.page("Page.navigate", url=f"{server.url}/#actions={TOKEN}")
        browser.wait_js("Number(document.documentElement.dataset.renders || 0) >= 1")
        assert browser.js("document.getElementById('actions-bar').hidden") is True
        assert browser.js("document.querySelectorAll('#failed button.mark').length") == 0
        status, error = post_from_page(browser, {"Content-Type": "application/json",
                                                 "X-Ferryman-Token": TOKEN})
        assert status == 403 and "read-only" in error
    assert actions_of(ledger) == {"crate-4": "RETRY", PAYLOAD: "RETRY"}


def test_a_payload_in_a_failed_records_id_and_cause_is_shown_as_text(ledger, browser):
    with BackgroundServer(create_app(LedgerStatusSource(ledger), Actions(ledger, TOKEN))) as server:
        browser.page("Page.enable")
        browser.page("Page.navigate", url=f"{server.url}/#actions={TOKEN}")
        browser.wait_js("document.querySelectorAll('#failed button.mark').length === 2")
        for item in ("#failed details.failure:first-of-type", "#failed details.failure:last-of-type"):
            browser.click(f"{item} summary")
        browser.wait_js("[...document.querySelectorAll('#failed details.failure')].every(d => d.open)")
        texts = browser.js("""[...document.querySelectorAll('#failed details.failure')].map(d => ({
            meta: d.querySelector('.failure-meta').textContent,
            cause: d.querySelector('pre.cause').textContent,
            summary: d.querySelector('summary').textContent}))""")
        record = next(t for t in texts if json.dumps(PAYLOAD) in t["meta"])
        assert record["cause"].endswith(f"ValueError: crate {PAYLOAD} is broken: {PAYLOAD}")
        assert PAYLOAD in record["summary"]
        # a search for a piece of the payload finds it, and still as text
        browser.js("(() => { const q = document.getElementById('failed-q'); q.value = 'onerror=';"
                   " q.dispatchEvent(new Event('input')); })()")
        browser.wait_js("document.getElementById('failed-range').textContent === '1–2 of 2'")
        browser.js("document.querySelectorAll('#failed details.failure').forEach(d => d.open = true)")
        assert browser.js("document.querySelectorAll('#failed img, #failed script, #failed svg').length") == 0
        assert browser.js("document.querySelectorAll('img').length") == 0
        assert browser.js("document.scripts.length") == 1
        assert browser.js("window.__xss === undefined") is True
        assert not [e for e in browser.events if e["method"] == "Page.javascriptDialogOpening"]
    assert FailedRecords(ledger).list()[-1].record.action is Action.RETRY
