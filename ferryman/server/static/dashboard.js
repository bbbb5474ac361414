// ferryman dashboard: polls /migrate/progress, /migrate/history and /migrate/failed and renders
// them; marks failed records through POST /migrate/actions when the server allows it.
// Every value that comes from the data is inserted as text (textContent / text nodes, SVG
// attributes), never as HTML: record ids, descriptions and error causes are user data.
(() => {
  'use strict';

  const POLL_MS = 1500;
  const PAGE = 25;
  const SVG = 'http://www.w3.org/2000/svg';
  const TOKEN_KEY = 'ferryman-token';
  const TOKEN_HEADER = 'X-Ferryman-Token';
  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat();
  const STATUS_TEXT = {
    pending: 'pending', running: 'running', completed: 'completed',
    migrated: 'migrated', failed: 'failed',
  };

  let latest = null;
  const openFailures = new Set();
  const rendered = { failed: '', runs: '', chart: '', migrations: '', verification: '', partitions: '' };
  const search = { q: '', migration: '', offset: 0 };
  let failedPage = null;
  let latestHistory = null;
  let actions = { enabled: false, actions: [] };
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
    if (seconds < 9.95) return `${Math.max(0, seconds).toFixed(1)}s`;
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
    if (t.total !== null && t.uncounted) {
      parts.push(`${t.uncounted} not counted yet (not started or held back)`);
    }
    $('overall-sub').textContent = t.migrations ? parts.join(' · ') : 'waiting for the first run';
    for (const key of ['read', 'succeeded', 'failed', 'skipped', 'ignored', 'written']) {
      $(`t-${key}`).textContent = num(t[key]);
    }
    $('t-succeeded').parentElement.classList.toggle('good', t.succeeded > 0);
    $('t-failed').parentElement.classList.toggle('bad', t.failed > 0);
    const running = data.status === 'running';
    // once a run ended: its average rate and how long it took, rather than an empty "now"
    $('t-rate-label').textContent = running ? 'Rate' : 'Average rate';
    $('t-rate').textContent = rate(running ? t.rate : t.average_rate);
    $('t-eta-label').textContent = running ? 'ETA' : 'Duration';
    $('t-eta').textContent = duration(running ? t.eta : t.elapsed);
    fitStats();
  }

  // Shrinks a stat's text until it fits its card: big counts never wrap nor spill.
  function fitStats() {
    for (const value of document.querySelectorAll('.stat .value')) {
      value.style.fontSize = '';
      let size = parseFloat(getComputedStyle(value).fontSize);
      while (value.scrollWidth > value.clientWidth && size > 10) {
        size -= 1;
        value.style.fontSize = `${size}px`;
      }
    }
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
    renderMigrationChoices(list);
  }

  function renderMigrationChoices(list) {
    const text = JSON.stringify(list.map((m) => [m.identity, m.name]));
    if (text === rendered.migrations) return;
    rendered.migrations = text;
    const select = $('failed-migration');
    const options = [el('option', null, 'All migrations')];
    options[0].value = '';
    for (const m of list) {
      const option = el('option', null, m.name);
      option.value = m.identity;
      options.push(option);
    }
    select.replaceChildren(...options);
    select.value = list.some((m) => m.identity === search.migration) ? search.migration : '';
  }

  // --- throughput chart (inline SVG) -------------------------------------------------------------

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function renderChart(history) {
    const box = $('chart');
    // drawn at the box's width, so that its text keeps its size at any width
    const W = Math.max(480, Math.round(box.clientWidth || 900));
    const text = JSON.stringify([W, history.migrations]);
    if (text === rendered.chart) return;
    rendered.chart = text;
    const series = history.migrations.filter((m) => m.points.length >= 2);
    if (!series.length) {
      box.replaceChildren(el('p', 'empty', history.migrations.length
        ? 'Waiting for the first counts…' : 'No migration has started yet.'));
      return;
    }
    const H = 240, L = 76, R = 12, T = 12, B = 28;
    const t0 = Math.min(...series.map((m) => m.points[0].t));
    const t1 = Math.max(...series.map((m) => m.points[m.points.length - 1].t));
    const span = Math.max(t1 - t0, 1e-3);
    const top = niceMax(Math.max(...series.flatMap((m) => m.points.map((p) => p.rate))));
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const y = (r) => T + (1 - r / top) * (H - T - B);
    const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img',
      'aria-label': 'Throughput over time per migration' });
    for (const f of [0, 0.5, 1]) {
      const yy = y(top * f);
      chart.append(svg('line', { x1: L, x2: W - R, y1: yy, y2: yy, class: 'grid' }));
      const label = svg('text', { x: L - 8, y: yy + 4, class: 'axis', 'text-anchor': 'end' });
      label.textContent = rate(top * f).replace('—', '0/s');
      chart.append(label);
    }
    for (const [text, at, anchor] of [[time(t0), L, 'start'], [`+${duration(span)}`, W - R, 'end']]) {
      const label = svg('text', { x: at, y: H - 8, class: 'axis', 'text-anchor': anchor });
      label.textContent = text;
      chart.append(label);
    }
    const legend = el('div', 'legend');
    let points = 0;
    series.forEach((m, i) => {
      // a step per interval: the rate between two points holds over the whole interval
      const p = m.points;
      let d = `M${x(p[0].t).toFixed(1)},${y(p[1].rate).toFixed(1)}`;
      for (let k = 1; k < p.length; k += 1) {
        d += ` H${x(p[k].t).toFixed(1)}`;
        if (k + 1 < p.length) d += ` V${y(p[k + 1].rate).toFixed(1)}`;
      }
      const path = svg('path', { d, class: `line s${i % 6}` });
      path.dataset.migration = m.identity;
      const title = svg('title');
      title.textContent = m.name;
      path.append(title);
      chart.append(path);
      points += p.length;
      const key = el('span', `key s${i % 6}`);
      const last = p[p.length - 1];
      const average = last.t > p[0].t ? (last.read - p[0].read) / (last.t - p[0].t) : 0;
      key.append(el('b', null, m.name), document.createTextNode(` ${m.state === 'running'
        ? 'now ' + rate(last.rate) : 'average ' + rate(average)}`));
      legend.append(key);
    });
    chart.dataset.points = String(points);
    box.replaceChildren(chart, legend);
  }

  function failureKey(f) {
    return `${f.migration}\u0000${JSON.stringify(f.id)}`;
  }

  function renderFailed(data) {
    $('failed-count').textContent = data.failed_total ? String(data.failed_total) : '';
    const page = failedPage;
    const text = JSON.stringify([page, actions.enabled, Boolean(token())]);
    if (text === rendered.failed) return;
    rendered.failed = text;
    const box = $('failed');
    const searching = Boolean(search.q || search.migration);
    if (!page) return;
    const first = page.total ? page.offset + 1 : 0;
    const last = page.offset + page.records.length;
    $('failed-range').textContent = page.total ? `${num(first)}–${num(last)} of ${num(page.total)}` : '';
    $('failed-prev').disabled = page.offset === 0;
    $('failed-next').disabled = last >= page.total;
    if (!page.records.length) {
      box.replaceChildren(el('p', 'empty', searching ? 'No failed record matches.' : 'No failed records.'));
      return;
    }
    const items = page.records.map((f) => {
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
      item.append(summary, meta);
      if (actions.enabled && token()) {
        const next = f.action === 'RETRY' ? 'ignore' : 'retry';
        const button = el('button', `small mark ${next}`, next === 'ignore' ? 'Ignore' : 'Retry');
        button.type = 'button';
        button.title = next === 'ignore' ? 'Mark IGNORE: the next run leaves it alone'
          : 'Mark RETRY: the next run tries it again';
        button.addEventListener('click', () => act(next, f, button));
        meta.append(button);
      }
      item.append(cause);
      return item;
    });
    if (page.partial) {
      items.push(el('p', 'more', 'This run keeps only its newest failed records in memory; ' +
        'use `ferryman failed list` for all of them.'));
    }
    box.replaceChildren(...items);
  }

  function firstLine(cause) {
    const lines = String(cause || '').split('\n').map((l) => l.trim()).filter(Boolean);
    return lines.length ? lines[lines.length - 1] : '';
  }

  // The key ranges of a run with --workers, one cell each, by state: hidden when there are none.
  function renderPartitions(data) {
    const parts = data.partitions || [];
    const text = JSON.stringify(parts);
    if (text === rendered.partitions) return;
    rendered.partitions = text;
    $('partitions-card').hidden = !parts.length;
    const done = parts.filter((p) => p.state === 'completed').length;
    $('partitions-count').textContent = parts.length ? `${done}/${parts.length}` : '';
    $('partitions').replaceChildren(...parts.map((p) => {
      const cell = el('div', 'partition pill', `${p.migration} #${p.index}`);
      cell.dataset.state = p.state;
      const range = `(${JSON.stringify(p.after)}, ${JSON.stringify(p.upto)}]`;
      cell.title = `${p.state} · ${range} · ${num(p.read)} read, ${num(p.succeeded)} migrated, ` +
        `${num(p.failed)} failed · attempt ${p.attempts}` + (p.holder ? ` · ${p.holder}` : '');
      return cell;
    }));
  }

  // The newest `ferryman verify` (or `run --verify-sample`): hidden until one ran.
  function renderVerification(result) {
    const text = JSON.stringify(result);
    if (text === rendered.verification) return;
    rendered.verification = text;
    $('verification-card').hidden = !result || result.status === 'none';
    if ($('verification-card').hidden) return;
    const status = $('verification-status');
    status.textContent = result.status;
    status.dataset.state = result.ok ? 'completed' : 'failed';
    const sample = result.sample === null ? 'every succeeded record' : `a sample of ${num(result.sample)}`;
    $('verification-when').textContent = `${sample} · ${result.finished_at || result.started_at || ''}`;
    $('verification').replaceChildren(...result.migrations.map((m) => {
      const row = el('div', 'verified');
      const pill = el('span', 'pill', m.ok ? 'passed' : 'failed');
      pill.dataset.state = m.ok ? 'completed' : 'failed';
      row.append(pill, el('strong', null, ` ${m.name} `),
        el('span', 'hint', m.problems.length ? `${m.problems.length} problem(s) shown` : 'no problem'));
      if (m.problems.length) {
        const list = el('ul', 'problems');
        list.append(...m.problems.map((p) => el('li', 'mono',
          `${p.check} · ${JSON.stringify(p.id)} · ${p.detail}`)));
        row.append(list);
      }
      return row;
    }));
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

  function render(data, history) {
    latest = data;
    if (history) latestHistory = history;
    renderHeader(data);
    renderTotals(data);
    renderMigrations(data);
    renderPartitions(data);
    if (history) renderChart(history);
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

  function failedUrl() {
    const params = new URLSearchParams({ offset: String(search.offset), limit: String(PAGE) });
    if (search.q) params.set('q', search.q);
    if (search.migration) params.set('migration', search.migration);
    return `/migrate/failed?${params}`;
  }

  async function loadFailed() {
    failedPage = await fetchJson(failedUrl());
    if (failedPage.offset > 0 && failedPage.offset >= failedPage.total) {  // the page emptied
      search.offset = Math.max(0, Math.floor((failedPage.total - 1) / PAGE) * PAGE);
      failedPage = await fetchJson(failedUrl());
    }
  }

  async function tick() {
    try {
      const failed = loadFailed().then(() => '', (error) => error.message);
      const [data, history, verification, failedProblem] = await Promise.all([
        fetchJson('/migrate/progress'), fetchJson('/migrate/history'),
        fetchJson('/migrate/verify').catch(() => null), failed]);
      render(data, history);
      renderVerification(verification);
      $('failed-problem').hidden = !failedProblem;
      $('failed-problem').textContent = failedProblem ? `Cannot search the failed records: ${failedProblem}` : '';
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

  async function refreshFailed() {
    try {
      await loadFailed();
      if (latest) renderFailed(latest);
    } catch (error) {
      showResult(`Cannot search the failed records: ${error.message}`, true);
    }
  }

  // --- actions -----------------------------------------------------------------------------------

  function token() {
    try { return window.sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  function setToken(value) {
    try {
      if (value) window.sessionStorage.setItem(TOKEN_KEY, value);
      else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage off: the token lasts until the page reloads */ }
    renderActionsBar();
    if (latest) renderFailed(latest);
  }

  function tokenFromAddress() {
    // ferryman serve prints /#actions=TOKEN: a fragment never reaches a server nor a log
    const match = /^#actions=(.+)$/.exec(window.location.hash);
    if (!match) return;
    setToken(decodeURIComponent(match[1]));
    window.history.replaceState(null, '', window.location.pathname + window.location.search);
  }

  function renderActionsBar() {
    $('actions-bar').hidden = !actions.enabled;
    const have = Boolean(token());
    $('token-form').hidden = have;
    $('token-forget').hidden = !have;
    $('actions-state').textContent = have
      ? 'Actions are allowed: mark failed records IGNORE or RETRY (not while a run holds the progress).'
      : 'Actions are allowed on this server with its token:';
  }

  function showResult(text, bad) {
    const box = $('action-result');
    box.hidden = !text;
    box.textContent = text || '';
    box.classList.toggle('bad', Boolean(bad));
  }

  async function act(name, record, button) {
    button.disabled = true;
    try {
      const response = await fetch('/migrate/actions', {
        method: 'POST', cache: 'no-store', credentials: 'omit',
        headers: { 'Content-Type': 'application/json', [TOKEN_HEADER]: token() },
        body: JSON.stringify({ action: name, migration: record.identity, ids: [record.id] }),
      });
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      if (!response.ok) {
        const reason = body && typeof body.error === 'string' ? body.error : `HTTP ${response.status}`;
        showResult(`Not done: ${reason}`, true);
        if (response.status === 401) setToken('');
        return;
      }
      showResult(`${name === 'ignore' ? 'Ignored' : 'Set to retry'}: ${record.migration} ` +
        `${JSON.stringify(record.id)}`, false);
      await refreshFailed();
    } catch (error) {
      showResult(`Not done: ${error.message}`, true);
    } finally {
      button.disabled = false;
    }
  }

  async function loadActions() {
    try {
      actions = await fetchJson('/migrate/actions');
    } catch (error) {
      actions = { enabled: false, actions: [] };
    }
    renderActionsBar();
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
    let typing = null;
    $('failed-search').addEventListener('submit', (event) => event.preventDefault());
    $('failed-q').addEventListener('input', () => {
      window.clearTimeout(typing);
      typing = window.setTimeout(() => {
        search.q = $('failed-q').value.trim();
        search.offset = 0;
        refreshFailed();
      }, 250);
    });
    $('failed-migration').addEventListener('change', () => {
      search.migration = $('failed-migration').value;
      search.offset = 0;
      refreshFailed();
    });
    $('failed-prev').addEventListener('click', () => {
      search.offset = Math.max(0, search.offset - PAGE);
      refreshFailed();
    });
    $('failed-next').addEventListener('click', () => {
      search.offset += PAGE;
      refreshFailed();
    });
    $('token-save').addEventListener('click', () => {
      setToken($('token-input').value.trim());
      $('token-input').value = '';
    });
    $('token-forget').addEventListener('click', () => setToken(''));
    window.addEventListener('resize', () => {
      fitStats();
      if (latestHistory) renderChart(latestHistory);
    });
    window.addEventListener('hashchange', tokenFromAddress);
    tokenFromAddress();
    loadActions().finally(tick);
  });
})();
