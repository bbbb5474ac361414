// ferryman dashboard: polls /migrate/progress and renders it.
// Every value that comes from the data is inserted as text (textContent / text nodes), never
// as HTML: record descriptions and error causes are user data.
(() => {
  'use strict';

  const POLL_MS = 1500;
  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat();
  const STATUS_TEXT = {
    pending: 'pending', running: 'running', completed: 'completed',
    migrated: 'migrated', failed: 'failed',
  };

  let latest = null;
  const openFailures = new Set();
  const rendered = { failed: '', runs: '' };
  const migrationRows = new Map();

  // --- small helpers --------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function num(value) {
    return value === null || value === undefined ? '—' : numberFormat.format(value);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return '—';
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = s % 60;
    if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
    if (m > 0) return `${m}m ${String(rest).padStart(2, '0')}s`;
    return `${rest}s`;
  }

  function time(epochSeconds) {
    if (!epochSeconds) return '—';
    return new Date(epochSeconds * 1000).toLocaleString();
  }

  function rate(value) {
    return value > 0 ? `${numberFormat.format(Math.round(value * 10) / 10)}/s` : '—';
  }

  function setBar(bar, done, total, state) {
    const fill = bar.querySelector('.fill');
    const unknown = total === null || total === undefined;
    const finished = state === 'completed' || state === 'migrated';
    let pct = null;
    if (!unknown) pct = total > 0 ? Math.min(100, (100 * done) / total) : (finished ? 100 : 0);
    else if (finished) pct = 100;
    bar.classList.toggle('indeterminate', pct === null && state === 'running');
    bar.dataset.state = state || '';
    fill.style.width = pct === null ? '' : `${pct}%`;
    if (pct === null) bar.removeAttribute('aria-valuenow');
    else bar.setAttribute('aria-valuenow', String(Math.round(pct)));
    return pct;
  }

  function pctText(pct) {
    if (pct === null) return '—';
    return pct >= 99.95 || pct === 0 ? `${Math.round(pct)}%` : `${pct.toFixed(1)}%`;
  }

  // --- rendering ------------------------------------------------------------------------------

  function renderHeader(data) {
    const badge = $('status');
    badge.textContent = STATUS_TEXT[data.status] || String(data.status);
    badge.dataset.status = data.status;
    const step = $('step');
    step.textContent = data.step || (data.status === 'pending' ? 'not started' : '—');
    step.classList.toggle('muted', !data.step);
    $('attempts').textContent = String(data.try_count);
    $('updated').textContent = new Date(data.updated_at * 1000).toLocaleTimeString();
    document.title = `${data.status}${data.step ? ' · ' + data.step : ''} — ferryman`;
    const box = $('last-error');
    box.hidden = !data.last_err;
    $('last-err').textContent = data.last_err || '';
  }

  function renderTotals(data) {
    const t = data.totals;
    const pct = setBar($('overall-bar'), t.read, t.total, data.status === 'running' ? 'running' : data.status);
    $('overall-pct').textContent = pct === null ? '' : pctText(pct);
    const read = t.total === null ? `${num(t.read)} source records read (total unknown)`
      : `${num(t.read)} of ${num(t.total)} source records read`;
    const parts = [read, `${t.completed} of ${t.migrations} migrations completed`];
    $('overall-sub').textContent = t.migrations ? parts.join(' · ') : 'waiting for the first run';
    for (const key of ['read', 'succeeded', 'failed', 'skipped', 'ignored', 'written']) {
      $(`t-${key}`).textContent = num(t[key]);
    }
    $('t-succeeded').parentElement.classList.toggle('good', t.succeeded > 0);
    $('t-failed').parentElement.classList.toggle('bad', t.failed > 0);
    $('t-rate').textContent = rate(t.rate);
    $('t-eta').textContent = t.eta === null ? '—' : duration(t.eta);
  }

  function migrationRow() {
    const row = el('article', 'migration');
    const head = el('div', 'row-head');
    const title = el('div', 'title');
    const name = el('span', 'name');
    const route = el('span', 'route');
    title.append(name, route);
    const state = el('span', 'pill');
    head.append(title, state);
    const bar = el('div', 'bar');
    bar.setAttribute('role', 'progressbar');
    bar.append(el('div', 'fill'));
    const line = el('div', 'row-line');
    const done = el('span', 'done');
    const speed = el('span', 'speed');
    line.append(done, speed);
    const counts = el('div', 'chips');
    const error = el('div', 'row-error');
    row.append(head, bar, line, counts, error);
    return { row, name, route, state, bar, done, speed, counts, error };
  }

  function chip(label, value, kind) {
    const c = el('span', `chip${kind ? ' ' + kind : ''}`);
    c.append(el('b', null, num(value)), document.createTextNode(` ${label}`));
    return c;
  }

  function renderMigrations(data) {
    const box = $('migrations');
    const list = data.migrations;
    $('migrations-count').textContent = list.length ? String(list.length) : '';
    if (!list.length) {
      if (!box.querySelector('.empty')) box.replaceChildren(el('p', 'empty', 'No migration has started yet.'));
      migrationRows.clear();
      return;
    }
    const wanted = new Set(list.map((m) => m.identity));
    for (const key of [...migrationRows.keys()]) if (!wanted.has(key)) migrationRows.delete(key);
    const rows = list.map((m) => {
      let r = migrationRows.get(m.identity);
      if (!r) { r = migrationRow(); migrationRows.set(m.identity, r); }
      r.row.dataset.state = m.state;
      r.name.textContent = m.name;
      r.route.textContent = m.source && m.dest ? `${m.source} → ${m.dest}` : m.identity;
      r.state.textContent = m.state.replace('_', ' ');
      r.state.dataset.state = m.state;
      const pct = setBar(r.bar, m.read, m.total, m.state);
      r.bar.setAttribute('aria-label', `${m.name} progress`);
      const of = m.total === null ? '' : ` / ${num(m.total)}`;
      r.done.textContent = `${num(m.read)}${of} read${pct === null ? '' : ' · ' + pctText(pct)}`;
      const eta = m.eta === null ? '' : ` · ETA ${duration(m.eta)}`;
      r.speed.textContent = m.state === 'running' ? `${rate(m.rate)}${eta}` : (m.rate > 0 ? rate(m.rate) : '');
      r.counts.replaceChildren(
        chip('migrated', m.succeeded, 'good'), chip('failed', m.failed, m.failed ? 'bad' : ''),
        chip('already done', m.skipped), chip('ignored', m.ignored),
        chip('written', m.written));
      const problems = [];
      if (m.held_back_by && m.held_back_by.length) problems.push(`held back: ${m.held_back_by.join(', ')} failed`);
      if (m.fatal_error) problems.push(`fatal: ${m.fatal_error}`);
      else if (m.last_error) problems.push(m.last_error);
      r.error.textContent = problems.join(' — ');
      r.error.hidden = !problems.length;
      return r.row;
    });
    box.replaceChildren(...rows);
  }

  function failureKey(f) {
    return `${f.migration}\u0000${JSON.stringify(f.id)}`;
  }

  function renderFailed(data) {
    const text = JSON.stringify([data.failed_records, data.failed_total]);
    if (text === rendered.failed) return;
    rendered.failed = text;
    const list = data.failed_records;
    $('failed-count').textContent = data.failed_total ? String(data.failed_total) : '';
    const box = $('failed');
    if (!list.length) {
      box.replaceChildren(el('p', 'empty', 'No failed records.'));
      return;
    }
    const items = list.map((f) => {
      const item = el('details', 'failure');
      const key = failureKey(f);
      item.open = openFailures.has(key);
      item.addEventListener('toggle', () => {
        if (item.open) openFailures.add(key); else openFailures.delete(key);
      });
      const summary = el('summary');
      const action = el('span', 'pill action', f.action);
      action.dataset.action = f.action;
      summary.append(
        action,
        el('span', 'failure-migration', f.migration),
        el('span', 'failure-desc', f.description || JSON.stringify(f.id)),
        el('span', 'failure-cause', firstLine(f.cause)));
      const cause = el('pre', 'cause', f.cause);
      const meta = el('div', 'failure-meta',
        `id ${JSON.stringify(f.id)}${f.timestamp ? ' · ' + f.timestamp.replace('T', ' ') : ''}`);
      item.append(summary, meta, cause);
      return item;
    });
    if (data.failed_total > list.length) {
      items.push(el('p', 'more', `Showing the newest ${list.length} of ${num(data.failed_total)}. ` +
        'Use `ferryman failed list` for all of them.'));
    }
    box.replaceChildren(...items);
  }

  function firstLine(cause) {
    const lines = String(cause || '').split('\n').map((l) => l.trim()).filter(Boolean);
    return lines.length ? lines[lines.length - 1] : '';
  }

  function renderRuns(data) {
    const text = JSON.stringify(data.runs);
    if (text === rendered.runs) return;
    rendered.runs = text;
    $('runs-count').textContent = data.runs.length ? String(data.runs.length) : '';
    const body = $('runs');
    if (!data.runs.length) {
      const tr = el('tr', 'empty-row');
      const td = el('td', 'empty', 'No runs yet.');
      td.colSpan = 7;
      tr.append(td);
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(...data.runs.map((r) => {
      const tr = el('tr');
      const outcome = r.outcome || 'running';
      const pill = el('span', 'pill', outcome);
      pill.dataset.state = outcome;
      const end = r.ended_at || (r.outcome ? null : Date.now() / 1000);
      const err = el('td', 'run-error', r.last_error || '');
      if (r.last_error) err.title = r.last_error;
      const outcomeCell = el('td');
      outcomeCell.append(pill);
      tr.append(el('td', 'mono', `#${r.id}`), el('td', null, `job ${r.job} · try ${r.attempt}`),
        el('td', null, time(r.started_at)),
        el('td', null, end ? duration(end - r.started_at) : '—'),
        outcomeCell, el('td', null, r.step || '—'), err);
      return tr;
    }));
  }

  function render(data) {
    latest = data;
    renderHeader(data);
    renderTotals(data);
    renderMigrations(data);
    renderFailed(data);
    renderRuns(data);
    const root = document.documentElement;
    root.dataset.renders = String(Number(root.dataset.renders || 0) + 1);
  }

  // --- polling ---------------------------------------------------------------------------------

  function setConnection(state, text) {
    const conn = $('conn');
    conn.dataset.state = state;
    conn.textContent = text;
  }

  function showBanner(text) {
    const banner = $('banner');
    banner.hidden = !text;
    banner.textContent = text || '';
  }

  async function fetchJson(path) {
    const response = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const reason = body && typeof body.error === 'string' ? body.error : `HTTP ${response.status}`;
      throw new Error(reason);
    }
    return body;
  }

  async function tick() {
    try {
      const data = await fetchJson('/migrate/progress');
      render(data);
      setConnection('live', 'live');
      showBanner('');
    } catch (error) {
      setConnection('down', 'reconnecting…');
      showBanner(`Cannot read the status: ${error.message}. Retrying every ${POLL_MS / 1000}s; ` +
        'the values below are the last ones read.');
    } finally {
      window.setTimeout(tick, POLL_MS);
    }
  }

  // --- export ----------------------------------------------------------------------------------

  async function exportJson() {
    let progress = latest;
    let result = null;
    try {
      [result, progress] = await Promise.all([fetchJson('/migrate/result'), fetchJson('/migrate/progress')]);
    } catch (error) {
      if (!progress) { showBanner(`Export failed: ${error.message}`); return; }
    }
    if (!result) {
      result = { status: progress.status, step: progress.step, last_err: progress.last_err, try_count: progress.try_count };
    }
    const exportedAt = new Date().toISOString();
    const doc = { exportedAt, result, progress, runs: progress.runs, failedRecords: progress.failed_records };
    const blob = new Blob([JSON.stringify(doc, null, 2)], { type: 'application/json' });
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = `ferryman-progress-${exportedAt.replace(/[:.]/g, '-')}.json`;
    document.body.append(a);
    a.click();
    a.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('export').addEventListener('click', exportJson);
    tick();
  });
})();
