// adit control room: a read-only live view.
//
// Rules this page keeps:
// - a value is shown as LIVE only while the stream is connected, its point
//   is good and fresh; the page enforces each point's staleness bound on its
//   own too (ages keep counting on this screen between updates);
// - a dropped or silent stream (no event for LOST_AFTER_MS; the server sends
//   at least one a second) marks every value NO CONNECTION at once;
// - a frame that arrives late counts as old: every frame carries the
//   server's monotonic time (SSE `id:`), and the delay beyond the quickest
//   frame seen on this connection is added to every age it carries;
// - last values are kept when a point goes bad or stale, visibly marked;
// - nothing here can write to a device.
'use strict';

const LOST_AFTER_MS = 3000;
const TREND_STEP_MS = 2000;
const TREND_LEN = 120;

const model = {
  site: '', intervalMs: 250, points: [], byDevice: new Map(), alerts: [],
  conn: 'connecting', lastEventAt: 0, lostSince: null, abort: null, retryMs: 1000,
  // min(page time − server time) over this connection's frames, and the
  // delay of the last frame beyond it (ms).
  transitMin: null, delayMs: 0,
};

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem('adit-token');
}

// ---- formatting --------------------------------------------------------

function fmtValue(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'boolean') return v ? 'TRUE' : 'FALSE';
  if (typeof v === 'string') return v;
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(3);
}

function fmtAge(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 10000) return (ms / 1000).toFixed(1) + ' s';
  if (ms < 120000) return Math.round(ms / 1000) + ' s';
  if (ms < 7200000) return Math.round(ms / 60000) + ' min';
  return Math.round(ms / 3600000) + ' h';
}

function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : '—';
}

// ---- state of a point ----------------------------------------------------

function ageOf(p, field, now) {
  const base = p[field];
  return base === null || base === undefined ? null : base + (now - p.rxAt);
}

// live | uncertain | bad | stale | never (the connection is shown separately).
function stateOf(p, now) {
  if (p.q === 'never') return 'never';
  // A good reading always has a value: anything else is not live.
  if ((p.v === null || p.v === undefined) && p.q !== 'bad') return 'stale';
  const age = ageOf(p, 'a', now);
  const bound = p.stale_ms + model.intervalMs + 1000;
  if (p.s || p.r === 'stale' || (age !== null && age > bound)) return 'stale';
  if (p.q === 'bad') return 'bad';
  if (p.q === 'uncertain') return 'uncertain';
  return 'live';
}

const BADGE = {
  live: ['● LIVE', 'st-live'], uncertain: ['◆ UNCERTAIN', 'st-uncertain'], bad: ['▲ BAD', 'st-bad'],
  stale: ['◌ STALE', 'st-stale'], never: ['✕ NEVER', 'st-never'], lost: ['⊘ NO CONNECTION', 'st-lost'],
};

function areaOf(id) {
  const dot = id.indexOf('.');
  return dot > 0 ? id.slice(0, dot) : '';
}

// ---- DOM -------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function buildDom() {
  const main = $('devices');
  main.replaceChildren();
  model.byDevice = new Map();
  const areas = new Set();
  for (const p of model.points) {
    if (!p) continue;
    let dev = model.byDevice.get(p.dev);
    if (!dev) {
      const section = el('section', 'device');
      section.dataset.device = p.dev;
      const h = el('h3');
      const name = el('span', 'dev-name', p.dev);
      const st = el('span', 'dev-state dev-unknown', '✕ NO DATA');
      const n = el('span', 'dev-count');
      h.append(name, st, n);
      const table = el('table');
      const head = el('tr');
      for (const t of ['state', 'point', 'value', 'quality / reason', 'age', 'trend (4 min)']) head.append(el('th', '', t));
      const thead = el('thead'); thead.append(head);
      const tbody = el('tbody');
      table.append(thead, tbody);
      section.append(h, table);
      main.append(section);
      dev = { section, st, n, tbody, points: [] };
      model.byDevice.set(p.dev, dev);
    }
    const tr = el('tr', 'point');
    tr.dataset.id = p.id;
    tr.dataset.device = p.dev;
    const badge = el('span', 'badge');
    const value = el('td', 'value');
    const num = el('span', 'num');
    const unit = el('span', 'unit');
    const last = el('span', 'last');
    value.append(num, ' ', unit, last);
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', `0 0 ${TREND_LEN} 20`);
    svg.setAttribute('preserveAspectRatio', 'none');
    const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
    svg.append(path);
    const tdBadge = el('td'); tdBadge.append(badge);
    const tdTrend = el('td'); tdTrend.append(svg);
    const reason = el('td', 'reason');
    const age = el('td', 'age');
    tr.append(tdBadge, el('td', 'id', p.id), value, reason, age, tdTrend);
    dev.tbody.append(tr);
    dev.points.push(p);
    p.dom = { tr, badge, num, unit, last, reason, age, path };
    p.area = areaOf(p.id);
    if (p.area) areas.add(p.area);
    renderPoint(p, performance.now());
  }
  const sel = $('area');
  const keep = sel.value;
  sel.replaceChildren(new Option('all areas', ''));
  for (const a of [...areas].sort()) sel.append(new Option(a, a));
  sel.value = keep;
  applyFilter();
}

function renderPoint(p, now) {
  const d = p.dom;
  if (!d) return;
  const state = stateOf(p, now);
  const shown = model.conn === 'live' ? state : 'lost';
  p.state = state;
  if (d.tr.dataset.state !== state) d.tr.dataset.state = state;
  const [text, cls] = BADGE[shown];
  if (d.badge.textContent !== text) { d.badge.textContent = text; d.badge.className = 'badge ' + cls; }
  d.num.textContent = fmtValue(p.v);
  d.unit.textContent = p.unit || '';
  const valueAge = ageOf(p, 'va', now);
  let lastText = '';
  if (shown === 'lost') lastText = 'not live: no connection';
  else if (state === 'bad' || state === 'stale') lastText = p.v === null ? 'no value' : `last value, ${fmtAge(valueAge)} old`;
  else if (state === 'never') lastText = 'no reading yet';
  d.last.textContent = lastText;
  let reason = state === 'never' ? 'never seen' : p.q;
  if (p.r) reason += ' · ' + p.r + (p.c !== null && p.c !== undefined ? ` (0x${p.c.toString(16)})` : '');
  if (state === 'stale' && p.r !== 'stale') reason += ' · stale';
  d.reason.textContent = reason;
  d.age.textContent = fmtAge(ageOf(p, 'a', now));
}

function renderSpark(p) {
  const t = p.trend;
  if (!p.dom || !t || t.length === 0) return;
  let lo = Infinity; let hi = -Infinity;
  for (const v of t) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (lo === Infinity) { p.dom.path.setAttribute('d', ''); return; }
  const span = hi - lo || 1;
  const x0 = TREND_LEN - t.length;
  let d = ''; let pen = false;
  t.forEach((v, k) => {
    if (v === null) { pen = false; return; }
    const y = (19 - ((v - lo) / span) * 18).toFixed(1);
    d += (pen ? 'L' : 'M') + (x0 + k) + ' ' + y;
    pen = true;
  });
  p.dom.path.setAttribute('d', d);
}

function renderDevices(now) {
  let live = 0; let bad = 0; let stale = 0; let never = 0; let unc = 0;
  for (const [, dev] of model.byDevice) {
    let up = 0; let seen = 0;
    for (const p of dev.points) {
      const s = stateOf(p, now);
      if (s === 'live') { live++; up++; seen++; } else if (s === 'uncertain') { unc++; up++; seen++; } else if (s === 'bad') { bad++; seen++; } else if (s === 'stale') { stale++; seen++; } else never++;
    }
    let text; let cls;
    if (model.conn !== 'live') { text = '⊘ UNKNOWN (no connection)'; cls = 'dev-unknown'; } else if (up > 0) { text = '● UP'; cls = 'dev-up'; } else if (seen > 0) { text = '▲ DOWN'; cls = 'dev-down'; } else { text = '✕ NO DATA'; cls = 'dev-unknown'; }
    if (dev.st.textContent !== text) { dev.st.textContent = text; dev.st.className = 'dev-state ' + cls; }
    dev.section.dataset.state = cls.slice(4);
    dev.n.textContent = `${up}/${dev.points.length} points live`;
  }
  $('counts').textContent = `${live} live · ${unc} uncertain · ${bad} bad · ${stale} stale · ${never} never seen`;
}

function applyFilter() {
  const q = $('search').value.trim().toLowerCase();
  const f = $('filter').value;
  const area = $('area').value;
  const now = performance.now();
  let shown = 0;
  for (const [, dev] of model.byDevice) {
    let any = false;
    for (const p of dev.points) {
      const s = stateOf(p, now);
      let ok = !area || p.area === area;
      if (ok && q) ok = (p.id + ' ' + p.dev + ' ' + (p.unit || '')).toLowerCase().includes(q);
      if (ok && f !== 'all') ok = f === 'attention' ? s !== 'live' : f === 'good' ? s === 'live' : s === f;
      p.dom.tr.classList.toggle('hidden', !ok);
      if (ok) { any = true; shown++; }
    }
    dev.section.classList.toggle('hidden', !any);
  }
  $('shown').textContent = `${shown} of ${model.points.filter(Boolean).length} points shown`;
}

function renderAlerts() {
  const list = $('alert-list');
  list.replaceChildren();
  for (const a of model.alerts) {
    const li = el('li');
    li.dataset.severity = a.severity;
    li.append(el('span', 'sev sev-' + a.severity, (a.severity || 'info').toUpperCase()), ' ',
      el('strong', '', a.name), ' ', a.summary || '',
      a.subject ? ` (${a.subject})` : '', ` since ${fmtTime(a.since_ms)}`);
    if (a.check_first) li.append(el('span', 'check', 'Check first: ' + a.check_first));
    list.append(li);
  }
  $('alert-count').textContent = String(model.alerts.length);
  $('no-alerts').hidden = model.alerts.length > 0;
}

// ---- connection --------------------------------------------------------

function setConn(conn, why) {
  if (model.conn === conn) return;
  model.conn = conn;
  document.body.dataset.conn = conn;
  const text = { live: 'LIVE', connecting: 'CONNECTING…', lost: 'NO CONNECTION' }[conn];
  $('conn').title = '';
  $('conn').querySelector('.shape').textContent = conn === 'live' ? '●' : '⊘';
  $('conn-text').textContent = text + (why ? ` (${why})` : '');
  if (conn === 'live') {
    model.lostSince = null;
    $('lost-banner').hidden = true;
  } else if (model.points.length > 0) {
    if (!model.lostSince) model.lostSince = Date.now();
    $('lost-since').textContent = fmtTime(model.lostSince);
    $('lost-banner').hidden = false;
  }
  const now = performance.now();
  for (const p of model.points) if (p) renderPoint(p, now);
  renderDevices(now);
}

function onEvent(name, data, serverMs) {
  const arrived = performance.now();
  model.lastEventAt = arrived;
  const msg = JSON.parse(data);
  if (Number.isFinite(serverMs)) {
    const transit = arrived - serverMs;
    if (model.transitMin === null || transit < model.transitMin) model.transitMin = transit;
    model.delayMs = transit - model.transitMin;
  }
  // What this frame says was true when it was rendered: ages count from then.
  const rx = arrived - model.delayMs;
  const now = arrived;
  showDelay();
  if (name === 'snapshot') {
    const old = new Map(model.points.filter(Boolean).map((p) => [p.id, p.trend]));
    model.site = msg.site;
    model.intervalMs = msg.interval_ms;
    model.points = [];
    for (const p of msg.points) { p.rxAt = rx; p.trend = old.get(p.id) || []; model.points[p.i] = p; }
    model.alerts = msg.alerts;
    $('site').textContent = msg.site;
    document.title = `${msg.site} — adit`;
    buildDom();
    renderAlerts();
    setConn('live');
    loadTrends();
  } else if (name === 'delta') {
    for (const u of msg.points) {
      const p = model.points[u.i];
      if (!p) continue;
      Object.assign(p, u);
      p.rxAt = rx;
      renderPoint(p, now);
    }
    if (msg.points.length) renderDevices(now);
  } else if (name === 'alerts') {
    model.alerts = msg.alerts;
    renderAlerts();
  }
  model.retryMs = 1000;
}

async function loadTrends() {
  try {
    const r = await fetch('/api/trends', { headers: authHeaders() });
    if (!r.ok) return;
    const t = await r.json();
    t.series.forEach((s, i) => {
      const p = model.points[i];
      if (p) { p.trend = s.slice(-TREND_LEN); renderSpark(p); }
    });
  } catch (e) { /* the sparklines fill from the stream */ }
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

function showDelay() {
  if (model.conn !== 'live') return;
  const behind = model.delayMs >= 1000 ? ` · ${(model.delayMs / 1000).toFixed(1)} s behind` : '';
  const text = 'LIVE' + behind;
  if ($('conn-text').textContent !== text) $('conn-text').textContent = text;
}

async function connect() {
  setConn(model.points.length ? 'lost' : 'connecting', model.points.length ? 'reconnecting' : '');
  const ctl = new AbortController();
  model.abort = ctl;
  model.lastEventAt = performance.now();
  model.transitMin = null;
  model.delayMs = 0;
  let why = 'stream ended';
  try {
    const r = await fetch('/events', { headers: authHeaders(), signal: ctl.signal, cache: 'no-store' });
    if (r.status === 401) {
      const t = window.prompt('adit needs an access token for this page:');
      if (t) sessionStorage.setItem('adit-token', t.trim());
      why = 'not authorised';
    } else if (!r.ok) {
      why = 'HTTP ' + r.status;
    } else {
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let name = 'message'; let data = ''; let id = NaN;
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) name = line.slice(7);
            else if (line.startsWith('id: ')) id = Number(line.slice(4));
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (data) onEvent(name, data, id);
        }
      }
    }
  } catch (e) {
    why = ctl.signal.aborted ? 'no data for ' + LOST_AFTER_MS / 1000 + ' s' : 'connection failed';
  }
  if (model.abort === ctl) model.abort = null;
  // The retry first: nothing below may stop the page from reconnecting.
  setTimeout(connect, model.retryMs);
  model.retryMs = Math.min(model.retryMs * 2, 5000);
  try { setConn('lost', why); } catch (e) { /* shown at the next tick */ }
}

// ---- clocks ------------------------------------------------------------

function everySecond() {
  const now = performance.now();
  if (model.conn === 'live' && now - model.lastEventAt > LOST_AFTER_MS) {
    setConn('lost', 'no data for ' + LOST_AFTER_MS / 1000 + ' s');
    if (model.abort) model.abort.abort();
  } else if (model.conn !== 'live' && model.abort && now - model.lastEventAt > LOST_AFTER_MS + 5000) {
    // A connection attempt that hangs (half-open TCP, a proxy that never
    // answers) is given up too, so the page keeps retrying.
    model.abort.abort();
  }
  for (const p of model.points) if (p) renderPoint(p, now);
  renderDevices(now);
  if (model.conn === 'lost' && model.lostSince) $('lost-since').textContent = fmtTime(model.lostSince);
}

function sampleTrends() {
  const now = performance.now();
  for (const p of model.points) {
    if (!p) continue;
    const s = stateOf(p, now);
    const v = model.conn === 'live' && (s === 'live' || s === 'uncertain') && typeof p.v === 'number' ? p.v
      : model.conn === 'live' && (s === 'live' || s === 'uncertain') && typeof p.v === 'boolean' ? Number(p.v) : null;
    p.trend.push(v);
    if (p.trend.length > TREND_LEN) p.trend.shift();
    renderSpark(p);
  }
}

for (const id of ['search', 'filter', 'area']) $(id).addEventListener('input', applyFilter);
setInterval(everySecond, 1000);
// Background tabs run timers rarely: catch up as soon as it is seen again.
document.addEventListener('visibilitychange', () => { if (!document.hidden) everySecond(); });
setInterval(sampleTrends, TREND_STEP_MS);
setInterval(applyFilter, 5000);
connect();
