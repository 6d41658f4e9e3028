// Sentra dashboard. Plain ES module, no build step, no third-party code.
// The access token lives only in this module's memory: never in localStorage, a cookie
// or a URL. A reload means signing in again.
'use strict';

const $ = (id) => document.getElementById(id);
const ROW_H = 32;
const FRESH_S = 180; // WireGuard re-handshakes every 2 min on an active tunnel
const AGING_S = 600;
// The server's presence thresholds (sentra-ingest PresenceConfig defaults): an agent silent
// for longer than 30 s is stale, longer than 120 s offline. The page ages presence with the
// clock between events, so an agent that goes silent changes colour without a new event.
const STALE_AFTER_MS = 30000;
const OFFLINE_AFTER_MS = 120000;
// A peer is handshaking while its last handshake is within 210 s (PresenceConfig default).
const PEER_TIMEOUT_MS = 210000;
const RANGES = [
  { label: 'Last hour', span: 3600e3, step: 60e3 },
  { label: 'Last 6 hours', span: 6 * 3600e3, step: 300e3 },
  { label: 'Last 24 hours', span: 24 * 3600e3, step: 900e3 },
  { label: 'Last 7 days', span: 7 * 24 * 3600e3, step: 3600e3 },
];

const state = {
  token: null,
  role: null,
  expiryTimer: null,
  stream: null, // AbortController of the live stream
  agents: new Map(), // agent_id -> AgentStatus
  view: 'login',
  iface: null, // { agent, name }
  agent: null, // the agent page's agent id
  peer: null, // { agent, iface, key }
  chartSeq: 0, // drops answers to superseded chart queries
  sortKey: 'handshake',
  sortDir: 1,
  filter: '',
  rows: [], // the peer table's filtered, sorted rows
  renderQueued: false,
  alerts: null, // the last answer of GET /api/v1/alerts (null: not loaded / alerting off)
  alertsSeq: 0,
  alertsTimer: null,
  manageSeq: 0,
  // The pool field was typed into since the page loaded it: a late answer must not
  // overwrite what the administrator is typing.
  poolEdited: false,
};

// ------------------------------------------------------------------ API

class Expired extends Error {}

async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const resp = await fetch(path, { ...opts, headers, cache: 'no-store' });
  if (resp.status === 401 && state.token) {
    signOut('Your session has expired. Please sign in again.');
    throw new Expired('session expired');
  }
  return resp;
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    const e = body.error;
    return (e && typeof e === 'object' ? e.message : e) || body.message || `HTTP ${resp.status}`;
  } catch {
    return `HTTP ${resp.status}`;
  }
}

// ------------------------------------------------------------------ login

async function onLogin(ev) {
  ev.preventDefault();
  const msg = $('login-msg');
  msg.textContent = '';
  $('login-submit').disabled = true;
  try {
    const resp = await fetch('/api/v1/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: $('username').value, password: $('password').value }),
      cache: 'no-store',
    });
    if (resp.status === 401) {
      msg.textContent = 'Wrong user name or password.';
      return;
    }
    if (resp.status === 429) {
      const after = resp.headers.get('Retry-After');
      msg.textContent = `Too many failed attempts. Try again in ${after || 'a few'} seconds.`;
      return;
    }
    if (!resp.ok) {
      msg.textContent = `Sign-in failed: ${await errorText(resp)}`;
      return;
    }
    const issued = await resp.json();
    $('password').value = '';
    signIn(issued.access_token, issued.expires_in);
  } catch (e) {
    msg.textContent = `Cannot reach the server (${e.message}).`;
  } finally {
    $('login-submit').disabled = false;
  }
}

function signIn(token, expiresIn) {
  state.token = token;
  clearTimeout(state.expiryTimer);
  if (expiresIn > 0) {
    state.expiryTimer = setTimeout(
      () => signOut('Your session has expired. Please sign in again.'),
      expiresIn * 1000,
    );
  }
  $('nav').hidden = false;
  show('fleet');
  startStream();
  loadRole();
}

async function loadRole() {
  try {
    const resp = await api('/api/v1/auth/me');
    if (!resp.ok) return;
    const me = await resp.json();
    state.role = me.role;
    $('nav-enrol').hidden = me.role !== 'admin';
    if (state.view === 'peers') paintManageRole();
  } catch {
    // Expired (handled by api()) or unreachable: the menu stays as it is.
  }
}

function signOut(message) {
  const token = state.token;
  state.token = null;
  clearTimeout(state.expiryTimer);
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.agents.clear();
  state.rows = [];
  state.role = null;
  state.alerts = null;
  state.alertsSeq += 1;
  clearTimeout(state.alertsTimer);
  $('alerts-list').replaceChildren();
  clearAddResult();
  clearEnrol();
  $('nav-enrol').hidden = true;
  $('nav').hidden = true;
  $('login-msg').textContent = message || '';
  show('login');
  if (token && !message) {
    fetch('/api/v1/auth/logout', { method: 'POST', headers: { Authorization: `Bearer ${token}` } })
      .catch(() => {});
  }
}

// ------------------------------------------------------------------ live stream

// Server-Sent Events over fetch (EventSource cannot send the Bearer header).
async function startStream() {
  const ctl = new AbortController();
  state.stream = ctl;
  let backoff = 500;
  while (state.stream === ctl && state.token) {
    try {
      setLive('connecting…');
      const resp = await api('/api/v1/status/stream', {
        headers: { Accept: 'text/event-stream' },
        signal: ctl.signal,
      });
      if (!resp.ok) throw new Error(await errorText(resp));
      setLive('live');
      backoff = 500;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const raw = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          if (onEvent(raw) === 'end') return;
        }
      }
    } catch (e) {
      if (e instanceof Expired || ctl.signal.aborted) return;
      setLive(`disconnected (${e.message}), retrying`);
    }
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

function onEvent(raw) {
  let type = 'message';
  const data = [];
  for (const line of raw.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'event') type = val;
    else if (field === 'data') data.push(val);
  }
  const text = data.join('\n');
  window.sentraEvents = (window.sentraEvents || 0) + 1;
  if (type === 'snapshot') {
    const snap = JSON.parse(text);
    state.agents.clear();
    for (const a of snap.agents) state.agents.set(a.agent_id, a);
    state.skew = Date.now() - snap.at_ms;
    queueRender(true);
  } else if (type === 'agent') {
    const ev = JSON.parse(text);
    if (ev.status) state.agents.set(ev.agent_id, ev.status);
    queueRender(true);
  } else if (type === 'session_ended') {
    signOut('Your session has ended. Please sign in again.');
    return 'end';
  }
  return null;
}

function setLive(text) {
  $('live').textContent = text;
}

// ------------------------------------------------------------------ views

const VIEWS = ['login', 'fleet', 'agent', 'peers', 'peer', 'enrol'];

function show(view) {
  if (state.view === 'enrol' && view !== 'enrol') clearEnrol();
  // A new peer's configuration is shown once: leaving the interface page forgets it.
  if (state.view === 'peers' && view !== 'peers') clearAddResult();
  state.view = view;
  for (const v of VIEWS) $(`${v}-view`).hidden = v !== view;
  if (view === 'login') $('username').focus();
  else {
    // Move focus to the new page's heading so keyboard and screen-reader users land on it.
    const h = $(`${view}-title`);
    h.tabIndex = -1;
    h.focus({ preventScroll: true });
  }
  if (view === 'fleet') loadAlerts();
  else clearTimeout(state.alertsTimer);
  queueRender(true);
}

// Coalesces bursts of events into one render per animation frame.
let dataChanged = false;
function queueRender(changed) {
  dataChanged = dataChanged || changed;
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    const c = dataChanged;
    dataChanged = false;
    if (state.view === 'fleet') renderFleet(c);
    else if (state.view === 'peers') renderPeers(c);
    else if (state.view === 'agent') renderAgent();
    else if (state.view === 'peer') renderPeerFacts();
  });
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function ago(ms) {
  if (ms == null) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

const RANK = { online: 0, stale: 1, offline: 2 };

// Presence now: the server's word at its last event, aged by the silence since then.
function presenceOf(a) {
  const silent = Date.now() - (state.skew || 0) - a.last_seen_ms;
  const local = silent > OFFLINE_AFTER_MS ? 'offline' : silent > STALE_AFTER_MS ? 'stale' : 'online';
  return (RANK[local] ?? 0) > (RANK[a.presence] ?? 0) ? local : a.presence;
}

function handshaking(peers) {
  const now = Date.now() - (state.skew || 0);
  return peers.filter((p) => p.last_handshake_ms != null && now - p.last_handshake_ms <= PEER_TIMEOUT_MS).length;
}

// Re-renders the cards when the data changed; on clock ticks only presence and ages move,
// updated in place so keyboard focus stays where it is.
function renderFleet(changed) {
  const counts = { online: 0, stale: 0, offline: 0 };
  for (const a of state.agents.values()) counts[presenceOf(a)] += 1;
  $('summary').replaceChildren(
    ...['online', 'stale', 'offline'].map((p) =>
      el('li', { class: `p-${p}`, 'data-presence': p, text: `${counts[p]} ${p}` }),
    ),
  );
  renderAlerts(changed);
  const box = $('agents');
  if (!changed && box.dataset.rendered === '1') {
    for (const card of box.querySelectorAll('[data-agent]')) {
      const a = state.agents.get(card.dataset.agent);
      if (a) paintPresence(card, a);
    }
    return;
  }
  const focused = document.activeElement && document.activeElement.closest('#agents') ? focusKey(document.activeElement) : null;
  const cards = [];
  for (const a of state.agents.values()) {
    const ifaces = a.interfaces.map((i) =>
      el(
        'li',
        {},
        el('button', {
          type: 'button',
          class: 'link',
          'data-iface': `${a.agent_id}/${i.name}`,
          'aria-label': `Peers of ${i.name} on ${a.agent_id}`,
          text: `${i.name}`,
          onclick: () => openPeers(a.agent_id, i.name),
        }),
        ` — ${i.peers.length} peers, ${handshaking(i.peers)} handshaking`,
      ),
    );
    const card = el(
      'article',
      { class: 'card agent', 'data-agent': a.agent_id, 'aria-label': `Agent ${a.agent_id}` },
      el(
        'h3',
        {},
        el('button', {
          type: 'button',
          class: 'link',
          'data-open-agent': a.agent_id,
          'aria-label': `Agent page of ${a.agent_id}`,
          text: a.agent_id,
          onclick: () => openAgent(a.agent_id),
        }),
      ),
      el('span', { class: 'badge', 'data-badge': '' }),
      el('p', { class: 'muted', 'data-seen': '' }),
      ifaces.length ? el('ul', { 'aria-label': 'Interfaces' }, ...ifaces) : el('p', { class: 'muted', text: 'no WireGuard interfaces' }),
    );
    paintPresence(card, a);
    cards.push(card);
  }
  if (!cards.length) cards.push(el('p', { class: 'muted', text: 'No agent has reported yet.' }));
  box.replaceChildren(...cards);
  box.dataset.rendered = '1';
  if (focused) box.querySelector(focused)?.focus();
}

function paintPresence(card, a) {
  const p = presenceOf(a);
  const badge = card.querySelector('[data-badge]');
  badge.className = `badge p-${p}`;
  badge.textContent = p;
  card.dataset.presence = p;
  card.querySelector('[data-seen]').textContent = `last seen ${ago(a.last_seen_ms + (state.skew || 0))} ago`;
}

// A CSS selector that finds the same control after a re-render.
function focusKey(e) {
  for (const k of ['data-iface', 'data-open-agent']) {
    if (e.hasAttribute(k)) return `[${k}="${CSS.escape(e.getAttribute(k))}"]`;
  }
  return null;
}

// ------------------------------------------------------------------ peer table

const COLUMNS = [
  { key: 'name', label: 'Allowed IPs', get: (p) => p.allowed_ips.join(', ') },
  { key: 'key', label: 'Public key', get: (p) => p.public_key },
  { key: 'endpoint', label: 'Endpoint', get: (p) => p.endpoint || '' },
  { key: 'handshake', label: 'Handshake', get: (p) => (p.last_handshake_ms == null ? -Infinity : p.last_handshake_ms) },
  { key: 'rx', label: 'Rx rate', get: (p) => p.rx_rate_bps ?? -1 },
  { key: 'tx', label: 'Tx rate', get: (p) => p.tx_rate_bps ?? -1 },
  { key: 'total', label: 'Rx / Tx', get: (p) => p.rx_bytes + p.tx_bytes },
];

function setIface(agent, name) {
  state.iface = { agent, name };
  $('peers-title').textContent = `Peers of ${name} on ${agent}`;
  state.filter = '';
  $('peer-filter').value = '';
  renderHead();
  $('peer-scroll').scrollTop = 0;
  clearAddResult();
  loadManage(true);
}

function openPeers(agent, name) {
  setIface(agent, name);
  show('peers');
}

function renderHead() {
  $('peer-head').replaceChildren(
    ...COLUMNS.map((c) => {
      const sorted = state.sortKey === c.key;
      const dir = sorted ? (state.sortDir > 0 ? 'ascending' : 'descending') : 'none';
      return el(
        'div',
        { role: 'columnheader', 'aria-sort': dir },
        el('button', {
          type: 'button',
          'data-sort': c.key,
          text: c.label + (sorted ? (state.sortDir > 0 ? ' ▲' : ' ▼') : ''),
          onclick: () => {
            if (state.sortKey === c.key) state.sortDir = -state.sortDir;
            else {
              state.sortKey = c.key;
              state.sortDir = c.key === 'handshake' ? 1 : 1;
            }
            renderHead();
            queueRender(true);
          },
        }),
      );
    }),
  );
}

function currentPeers() {
  const a = state.iface && state.agents.get(state.iface.agent);
  const i = a && a.interfaces.find((x) => x.name === state.iface.name);
  return i ? i.peers : [];
}

function rebuildRows() {
  const f = state.filter.trim().toLowerCase();
  let rows = currentPeers();
  if (f) {
    rows = rows.filter(
      (p) =>
        p.public_key.toLowerCase().includes(f) ||
        (p.endpoint || '').toLowerCase().includes(f) ||
        p.allowed_ips.some((ip) => ip.includes(f)),
    );
  } else {
    rows = rows.slice();
  }
  const col = COLUMNS.find((c) => c.key === state.sortKey) || COLUMNS[0];
  const dir = state.sortDir;
  rows.sort((x, y) => {
    const a = col.get(x);
    const b = col.get(y);
    return (a < b ? -1 : a > b ? 1 : 0) * dir;
  });
  state.rows = rows;
  $('peer-count').textContent = `${rows.length} of ${currentPeers().length} peers`;
  $('peer-spacer').style.height = `${rows.length * ROW_H}px`;
}

function fmtRate(bps) {
  if (bps == null) return '—';
  const units = ['B/s', 'kB/s', 'MB/s', 'GB/s'];
  let v = bps;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u += 1;
  }
  return `${v.toFixed(u ? 1 : 0)} ${units[u]}`;
}

function fmtBytes(b) {
  return fmtRate(b).replace('/s', '');
}

function freshness(p) {
  if (p.last_handshake_ms == null) return 'never';
  const age = (Date.now() - (state.skew || 0) - p.last_handshake_ms) / 1000;
  if (age <= FRESH_S) return 'fresh';
  if (age <= AGING_S) return 'aging';
  return 'stale';
}

function shortKey(k) {
  return `${k.slice(0, 8)}…${k.slice(-4)}`;
}

// Renders only the rows in view (plus a margin): 10 000 peers cost ~40 DOM rows.
function renderPeers(changed) {
  if (changed) rebuildRows();
  const scroll = $('peer-scroll');
  const first = Math.max(0, Math.floor(scroll.scrollTop / ROW_H) - 5);
  const count = Math.ceil(scroll.clientHeight / ROW_H) + 10;
  const out = [];
  for (let i = first; i < Math.min(state.rows.length, first + count); i++) {
    const p = state.rows[i];
    const fresh = freshness(p);
    const row = el(
      'div',
      { class: 'row vrow', role: 'row', 'data-key': p.public_key, 'aria-rowindex': String(i + 2) },
      el('div', { role: 'cell', class: 'mono', text: p.allowed_ips.join(', ') }),
      el(
        'div',
        { role: 'cell', class: 'mono' },
        el('button', {
          type: 'button',
          class: 'link mono',
          title: p.public_key,
          'data-peer': p.public_key,
          'aria-label': `Traffic of peer ${p.public_key}`,
          text: shortKey(p.public_key),
        }),
      ),
      el('div', { role: 'cell', class: 'mono', text: p.endpoint || '—' }),
      el('div', {
        role: 'cell',
        class: `h-${fresh}`,
        'data-fresh': fresh,
        text: p.last_handshake_ms == null ? 'never' : `${ago(p.last_handshake_ms + (state.skew || 0))} ago`,
      }),
      el('div', { role: 'cell', text: fmtRate(p.rx_rate_bps) }),
      el('div', { role: 'cell', text: fmtRate(p.tx_rate_bps) }),
      el('div', { role: 'cell', text: `${fmtBytes(p.rx_bytes)} / ${fmtBytes(p.tx_bytes)}` }),
    );
    row.style.transform = `translateY(${i * ROW_H}px)`;
    out.push(row);
  }
  $('peer-spacer').replaceChildren(...out);
  window.sentraLastRender = performance.now();
}


// ------------------------------------------------------------------ charts (hand-written SVG)

const SVG = 'http://www.w3.org/2000/svg';
const CW = 640;
const CH = 200;
const PAD = { l: 64, r: 12, t: 10, b: 26 };

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function fmtTime(ms, span) {
  const d = new Date(ms);
  const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return span > 24 * 3600e3 ? `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${hm}` : hm;
}

// A line chart: `series` = [{ label, points: [[ms, value], ...] }]; gaps longer than 1.5
// steps break the line. The legend (latest values) doubles as the text alternative.
// The next "round" number at or above v (1, 2, 2.5 or 5 times a power of ten), > 0.
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((c) => c >= v * 1.05) || 10 * p;
}

function lineChart({ id, title, series, from, to, step, fmt, yMax }) {
  const fig = el('figure', { class: 'chart card', 'data-chart': id });
  fig.append(el('figcaption', { text: title }));
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) {
    fig.append(el('p', { class: 'muted', 'data-empty': '', text: 'No data in this range.' }));
    return fig;
  }
  const max = yMax || niceCeil(Math.max(...pts.map((p) => p[1])));
  const x = (t) => PAD.l + ((t - from) / (to - from)) * (CW - PAD.l - PAD.r);
  const y = (v) => CH - PAD.b - (v / max) * (CH - PAD.t - PAD.b);
  const summary = series
    .map((s) => `${s.label} ${s.points.length ? fmt(s.points[s.points.length - 1][1]) : 'no data'}`)
    .join(', ');
  const g = svg('svg', { viewBox: `0 0 ${CW} ${CH}`, role: 'img', 'aria-label': `${title}: latest ${summary}`, class: 'plot' });
  for (const f of [0, 0.5, 1]) {
    const yy = y(max * f);
    g.append(svg('line', { x1: PAD.l, x2: CW - PAD.r, y1: yy, y2: yy, class: 'grid' }));
    g.append(svg('text', { x: PAD.l - 6, y: yy + 4, 'text-anchor': 'end', class: 'tick' }, fmt(max * f)));
  }
  g.append(svg('text', { x: PAD.l, y: CH - 6, class: 'tick' }, fmtTime(from, to - from)));
  g.append(svg('text', { x: CW - PAD.r, y: CH - 6, 'text-anchor': 'end', class: 'tick' }, fmtTime(to, to - from)));
  series.forEach((s, i) => {
    let d = '';
    let prev = null;
    for (const [t, v] of s.points) {
      d += `${prev == null || t - prev > 1.5 * step ? 'M' : 'L'}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      prev = t;
    }
    if (s.points.length === 1) {
      const [t, v] = s.points[0];
      g.append(svg('circle', { cx: x(t), cy: y(v), r: 2.5, class: `s${i} dot` }));
    }
    g.append(svg('path', { d, class: `s${i} line`, 'data-series': s.label, 'data-points': String(s.points.length) }));
  });
  fig.append(g);
  fig.append(
    el(
      'ul',
      { class: 'legend', 'aria-hidden': 'true' },
      ...series.map((s, i) =>
        el('li', { class: `s${i}` }, el('span', { class: 'swatch' }), `${s.label}: ${s.points.length ? fmt(s.points[s.points.length - 1][1]) : 'no data'}`),
      ),
    ),
  );
  return fig;
}

function rangeOf(select) {
  const r = RANGES[Number(select.value)] || RANGES[0];
  const now = Date.now();
  const to = Math.ceil(now / r.step) * r.step;
  return { from: to - r.span, to, step: r.step };
}

async function history(name, agent, labels, range, agg) {
  const q = new URLSearchParams({ name, agent, from: String(range.from), to: String(range.to), step_ms: String(range.step), agg });
  for (const l of labels) q.append('label', l);
  const resp = await api(`/api/v1/metrics/history?${q}`);
  if (!resp.ok) throw new Error(await errorText(resp));
  return (await resp.json()).series;
}

// Per-second rate of a counter from per-step values (a decrease is a reset: the new
// value is the increase).
function rate(points) {
  const out = [];
  for (let i = 1; i < points.length; i++) {
    const [t0, v0] = points[i - 1];
    const [t1, v1] = points[i];
    if (t1 <= t0) continue;
    out.push([t1, ((v1 >= v0 ? v1 - v0 : v1) * 1000) / (t1 - t0)]);
  }
  return out;
}

// Sums series point-wise by timestamp.
function sumSeries(list, f = (p) => p) {
  const m = new Map();
  for (const s of list) for (const [t, v] of f(s.points)) m.set(t, (m.get(t) || 0) + v);
  return [...m.entries()].sort((a, b) => a[0] - b[0]);
}

const fmtNum = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2));
const fmtPct = (v) => `${v.toFixed(0)} %`;
const fmtIec = (b) => {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) {
    b /= 1024;
    i += 1;
  }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
};

// ------------------------------------------------------------------ agent page

function openAgent(id) {
  state.agent = id;
  $('agent-title').textContent = `Agent ${id}`;
  show('agent');
  loadAgentCharts();
}

function renderAgent() {
  const a = state.agents.get(state.agent);
  if (!a) {
    $('agent-presence').textContent = 'This agent has not reported since the page loaded.';
    $('agent-ifaces').replaceChildren();
    return;
  }
  const p = presenceOf(a);
  $('agent-presence').replaceChildren(
    el('span', { class: `badge p-${p}`, 'data-agent-presence': p, text: p }),
    ` last seen ${ago(a.last_seen_ms + (state.skew || 0))} ago`,
  );
  const rows = a.interfaces.map((i) =>
    el(
      'tr',
      { 'data-agent-iface': i.name },
      el(
        'th',
        { scope: 'row' },
        el('button', { type: 'button', class: 'link', 'aria-label': `Peers of ${i.name}`, text: i.name, onclick: () => openPeers(a.agent_id, i.name) }),
      ),
      el('td', { class: 'mono', title: i.public_key || '', text: i.public_key ? shortKey(i.public_key) : '—' }),
      el('td', { text: String(i.listen_port) }),
      el('td', { text: String(i.peers.length) }),
      el('td', { text: String(handshaking(i.peers)) }),
    ),
  );
  if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: '5', class: 'muted', text: 'No WireGuard interfaces.' })));
  const focused = document.activeElement && document.activeElement.closest('#agent-ifaces') ? document.activeElement.textContent : null;
  $('agent-ifaces').replaceChildren(...rows);
  if (focused) [...$('agent-ifaces').querySelectorAll('button')].find((b) => b.textContent === focused)?.focus();
}

async function loadAgentCharts() {
  const seq = ++state.chartSeq;
  const agent = state.agent;
  const range = rangeOf($('agent-range'));
  $('agent-chart-msg').textContent = 'loading…';
  $('agent-charts').setAttribute('aria-busy', 'true');
  try {
    const [l1, l5, l15, total, avail, cpu, rx, tx] = await Promise.all([
      history('node_load1', agent, [], range, 'avg'),
      history('node_load5', agent, [], range, 'avg'),
      history('node_load15', agent, [], range, 'avg'),
      history('node_memory_MemTotal_bytes', agent, [], range, 'avg'),
      history('node_memory_MemAvailable_bytes', agent, [], range, 'avg'),
      history('node_cpu_seconds_total', agent, [], range, 'max'),
      history('node_network_receive_bytes_total', agent, ['device!=lo'], range, 'max'),
      history('node_network_transmit_bytes_total', agent, ['device!=lo'], range, 'max'),
    ]);
    if (seq !== state.chartSeq) return;
    const used = [];
    const totals = new Map(sumSeries(total));
    for (const [t, v] of sumSeries(avail)) if (totals.has(t)) used.push([t, totals.get(t) - v]);
    const busy = sumSeries(cpu.filter((s) => !['idle', 'iowait'].includes(s.series.labels.mode)), rate);
    const all = new Map(sumSeries(cpu, rate));
    const cpuPct = busy.filter(([t]) => all.get(t) > 0).map(([t, v]) => [t, (100 * v) / all.get(t)]);
    const c = { ...range };
    $('agent-charts').replaceChildren(
      lineChart({ ...c, id: 'cpu', title: 'CPU busy', series: [{ label: 'busy', points: cpuPct }], fmt: fmtPct, yMax: 100 }),
      lineChart({ ...c, id: 'load', title: 'Load average', fmt: fmtNum, series: [
        { label: '1 min', points: sumSeries(l1) },
        { label: '5 min', points: sumSeries(l5) },
        { label: '15 min', points: sumSeries(l15) },
      ] }),
      lineChart({ ...c, id: 'memory', title: 'Memory in use', series: [{ label: 'used', points: used }], fmt: fmtIec }),
      lineChart({ ...c, id: 'network', title: 'Network (all devices but lo)', fmt: fmtRate, series: [
        { label: 'received', points: sumSeries(rx, rate) },
        { label: 'sent', points: sumSeries(tx, rate) },
      ] }),
    );
    $('agent-chart-msg').textContent = '';
  } catch (e) {
    if (e instanceof Expired || seq !== state.chartSeq) return;
    $('agent-chart-msg').textContent = `Cannot load the charts: ${e.message}`;
  } finally {
    if (seq === state.chartSeq) $('agent-charts').setAttribute('aria-busy', 'false');
  }
}

// ------------------------------------------------------------------ peer page

// A peer page reached from elsewhere (an alert): its interface page is the way back.
function openPeerOf(agent, iface, key) {
  setIface(agent, iface);
  openPeer(key);
}

function openPeer(key) {
  if (!state.iface) return;
  state.peer = { agent: state.iface.agent, iface: state.iface.name, key };
  $('peer-title').textContent = `Peer ${shortKey(key)} on ${state.iface.name} of ${state.iface.agent}`;
  show('peer');
  loadPeerCharts();
}

function renderPeerFacts() {
  const { agent, iface, key } = state.peer || {};
  const a = state.agents.get(agent);
  const i = a && a.interfaces.find((x) => x.name === iface);
  const p = i && i.peers.find((x) => x.public_key === key);
  const facts = [['Public key', key || '—']];
  if (p) {
    const fresh = freshness(p);
    facts.push(
      ['Allowed IPs', p.allowed_ips.join(', ') || '—'],
      ['Endpoint', p.endpoint || '—'],
      ['Last handshake', p.last_handshake_ms == null ? 'never' : `${ago(p.last_handshake_ms + (state.skew || 0))} ago (${fresh})`],
      ['Rx / Tx rate', `${fmtRate(p.rx_rate_bps)} / ${fmtRate(p.tx_rate_bps)}`],
      ['Rx / Tx total', `${fmtBytes(p.rx_bytes)} / ${fmtBytes(p.tx_bytes)}`],
    );
  } else {
    facts.push(['Status', 'not in the latest status of its interface']);
  }
  $('peer-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { class: 'mono', text: v })]));
}

async function loadPeerCharts() {
  const seq = ++state.chartSeq;
  const { agent, iface, key } = state.peer;
  const range = rangeOf($('peer-range'));
  const labels = [`interface=${iface}`, `public_key=${key}`];
  $('peer-chart-msg').textContent = 'loading…';
  $('peer-charts').setAttribute('aria-busy', 'true');
  try {
    const [rx, tx] = await Promise.all([
      history('wireguard_received_bytes_total', agent, labels, range, 'max'),
      history('wireguard_sent_bytes_total', agent, labels, range, 'max'),
    ]);
    if (seq !== state.chartSeq) return;
    $('peer-charts').replaceChildren(
      lineChart({ ...range, id: 'peer-traffic', title: 'Peer traffic', fmt: fmtRate, series: [
        { label: 'received', points: sumSeries(rx, rate) },
        { label: 'sent', points: sumSeries(tx, rate) },
      ] }),
    );
    $('peer-chart-msg').textContent = '';
  } catch (e) {
    if (e instanceof Expired || seq !== state.chartSeq) return;
    $('peer-chart-msg').textContent = `Cannot load the chart: ${e.message}`;
  } finally {
    if (seq === state.chartSeq) $('peer-charts').setAttribute('aria-busy', 'false');
  }
}

// ------------------------------------------------------------------ alerts on the overview

// Alerts change at the engine's evaluation ticks, not with the status stream: some fire
// precisely because nothing arrives (an agent gone silent), and a large fleet sends many
// events a second. So the overview asks GET /api/v1/alerts when it is shown, then every
// ALERTS_EVERY_MS while it stays shown and the browser tab is visible: one small request
// per open overview every 10 s, none from hidden tabs or other pages.
const ALERTS_EVERY_MS = 10000;
const MAX_ALERTS_SHOWN = 50;
const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };

async function loadAlerts() {
  clearTimeout(state.alertsTimer);
  state.alertsTimer = null;
  if (!state.token || state.view !== 'fleet' || document.hidden) return;
  const seq = ++state.alertsSeq;
  try {
    const resp = await api('/api/v1/alerts');
    if (seq !== state.alertsSeq) return;
    if (resp.status === 503) {
      state.alerts = null;
      $('alerts-msg').textContent = 'Alerting is off on this server.';
    } else if (!resp.ok) {
      $('alerts-msg').textContent = `Cannot load the alerts: ${await errorText(resp)}`;
    } else {
      const list = (await resp.json()).alerts;
      if (seq !== state.alertsSeq) return;
      state.alerts = list;
      $('alerts-msg').textContent = '';
    }
    renderAlerts(true);
  } catch (e) {
    if (e instanceof Expired || seq !== state.alertsSeq) return;
    $('alerts-msg').textContent = `Cannot load the alerts (${e.message}).`;
  } finally {
    if (seq === state.alertsSeq && state.token && state.view === 'fleet' && !document.hidden) {
      state.alertsTimer = setTimeout(loadAlerts, ALERTS_EVERY_MS);
    }
  }
}

function sinceText(ms) {
  const d = new Date(ms);
  return `since ${d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })} (${ago(ms)})`;
}

// The alert's link: its peer's page, its interface's peer table or its agent's page.
function alertTarget(l) {
  if (l.agent && l.interface && l.peer) {
    return el('button', {
      type: 'button',
      class: 'link target mono',
      'data-alert-link': 'peer',
      'aria-label': `Peer ${l.peer} on ${l.interface} of ${l.agent}`,
      text: `peer ${shortKey(l.peer)} on ${l.agent}/${l.interface}`,
      onclick: () => openPeerOf(l.agent, l.interface, l.peer),
    });
  }
  if (l.agent && l.interface) {
    return el('button', {
      type: 'button',
      class: 'link target',
      'data-alert-link': 'interface',
      text: `${l.agent}/${l.interface}`,
      onclick: () => openPeers(l.agent, l.interface),
    });
  }
  if (l.agent) {
    return el('button', { type: 'button', class: 'link target', 'data-alert-link': 'agent', text: l.agent, onclick: () => openAgent(l.agent) });
  }
  const rest = Object.entries(l).filter(([k]) => !['alertname', 'severity'].includes(k));
  return el('span', { class: 'target mono', text: rest.map(([k, v]) => `${k}=${v}`).join(' ') || '—' });
}

function renderAlerts(changed) {
  const list = state.alerts || [];
  const firing = list.filter((a) => a.status === 'firing').length;
  const pending = list.length - firing;
  const count = $('alerts-count');
  count.textContent = state.alerts ? String(firing) : '–';
  count.dataset.count = String(firing);
  count.className = `badge ${firing ? 'count-n' : 'count-0'}`;
  count.setAttribute('aria-label', `${firing} firing${pending ? `, ${pending} pending` : ''}`);
  const box = $('alerts-list');
  if (!changed) {
    for (const s of box.querySelectorAll('[data-since]')) s.textContent = sinceText(Number(s.dataset.since) + (state.skew || 0));
    return;
  }
  const focused = document.activeElement?.closest('#alerts-list [data-alert]')?.dataset.alert;
  const sorted = list.slice().sort(
    (a, b) =>
      (a.status === 'firing' ? 0 : 1) - (b.status === 'firing' ? 0 : 1) ||
      (SEVERITY_RANK[a.severity] ?? 3) - (SEVERITY_RANK[b.severity] ?? 3) ||
      a.since_ms - b.since_ms,
  );
  // A fleet-wide outage can fire thousands: the list shows the first MAX_ALERTS_SHOWN.
  const items = sorted.slice(0, MAX_ALERTS_SHOWN).map((a) =>
    el(
      'li',
      { class: `sev-${a.severity}`, 'data-alert': a.fingerprint, 'data-rule': a.rule, 'data-status': a.status },
      el('span', { class: `badge sev-${a.severity}`, text: a.severity }),
      el('span', { class: 'rule', text: a.status === 'pending' ? `${a.rule} (pending)` : a.rule }),
      alertTarget(a.labels || {}),
      el('span', { class: 'muted', 'data-since': String(a.since_ms), text: sinceText(a.since_ms + (state.skew || 0)) }),
      a.summary ? el('span', { class: 'muted summary-text', text: a.summary }) : null,
    ),
  );
  if (sorted.length > MAX_ALERTS_SHOWN) {
    items.push(el('li', { class: 'none', 'data-more': '', text: `and ${sorted.length - MAX_ALERTS_SHOWN} more (GET /api/v1/alerts lists them all)` }));
  }
  if (!items.length && state.alerts) items.push(el('li', { class: 'none', 'data-none': '', text: 'No alert is firing.' }));
  box.replaceChildren(...items);
  if (focused) box.querySelector(`[data-alert="${CSS.escape(focused)}"] button`)?.focus();
}

// ------------------------------------------------------------------ declared peers, add peer

function peersPath(extra = '') {
  const { agent, name } = state.iface;
  return `/api/v1/agents/${encodeURIComponent(agent)}/interfaces/${encodeURIComponent(name)}/${extra}`;
}

const splitList = (v) => v.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);

function paintManageRole() {
  const admin = state.role === 'admin';
  $('pool-form').hidden = !admin;
  $('add-form').hidden = !admin;
  for (const b of $('declared').querySelectorAll('button[data-remove]')) b.hidden = !admin;
}

// Reads the interface's pool and declared peers (GET .../peers answers both).
async function loadManage(fresh) {
  const seq = ++state.manageSeq;
  const iface = state.iface;
  if (fresh) {
    $('declared').replaceChildren();
    $('pool-prefixes').value = '';
    state.poolEdited = false;
    $('pool-msg').textContent = '';
    $('add-msg').textContent = '';
    const a = state.agents.get(iface.agent);
    const i = a && a.interfaces.find((x) => x.name === iface.name);
    $('add-endpoint').value = i && i.listen_port ? `${location.hostname}:${i.listen_port}` : '';
  }
  paintManageRole();
  $('manage-msg').textContent = 'loading…';
  try {
    const resp = await api(peersPath('peers'));
    if (seq !== state.manageSeq) return;
    if (!resp.ok) {
      $('manage-msg').textContent = `Cannot read the declared peers: ${await errorText(resp)}`;
      return;
    }
    const list = await resp.json();
    if (seq !== state.manageSeq) return;
    if (!state.poolEdited) $('pool-prefixes').value = list.pool.join(', ');
    $('manage-msg').textContent = list.pool.length
      ? `Address pool ${list.pool.join(', ')}; ${list.peers.length} declared peer${list.peers.length === 1 ? '' : 's'}.`
      : 'No address pool is set for this interface: set one to add peers.';
    const rows = list.peers.map((p) =>
      el(
        'tr',
        { 'data-declared': p.public_key },
        el('td', { class: 'mono', title: p.public_key, text: shortKey(p.public_key) }),
        el('td', { class: 'mono', text: p.allowed_ips.join(', ') }),
        el('td', { class: 'mono', text: p.endpoint || 'roaming' }),
        el('td', { text: p.persistent_keepalive_s ? `${p.persistent_keepalive_s} s` : 'off' }),
        el(
          'td',
          {},
          el('button', {
            type: 'button',
            class: 'danger',
            'data-remove': p.public_key,
            'aria-label': `Remove peer ${p.public_key}`,
            text: 'Remove',
          }),
        ),
      ),
    );
    if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: '5', class: 'muted', text: 'No peer is declared on this interface.' })));
    $('declared').replaceChildren(...rows);
    paintManageRole();
  } catch (e) {
    if (e instanceof Expired || seq !== state.manageSeq) return;
    $('manage-msg').textContent = `Cannot read the declared peers (${e.message}).`;
  }
}

async function onPoolSave(ev) {
  ev.preventDefault();
  $('pool-msg').textContent = '';
  $('pool-save').disabled = true;
  try {
    const resp = await api(peersPath('pool'), {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prefixes: splitList($('pool-prefixes').value) }),
    });
    if (!resp.ok) {
      $('pool-msg').textContent = `Cannot set the pool: ${await errorText(resp)}`;
      return;
    }
    state.poolEdited = false; // saved: show the pool as stored
    await loadManage(false);
  } catch (e) {
    if (!(e instanceof Expired)) $('pool-msg').textContent = `Cannot reach the server (${e.message}).`;
  } finally {
    $('pool-save').disabled = false;
  }
}

function clearAddResult() {
  // Shown once: the private key leaves the page's memory with these nodes' contents.
  $('add-config').textContent = '';
  $('add-qr').removeAttribute('src');
  $('add-result').hidden = true;
  $('add-copied').textContent = '';
}

async function onAddPeer(ev) {
  ev.preventDefault();
  clearAddResult();
  $('add-msg').textContent = '';
  const body = {
    endpoint: $('add-endpoint').value.trim(),
    preshared_key: $('add-psk').checked,
    persistent_keepalive_s: Number($('add-keepalive').value || 0),
    dns: splitList($('add-dns').value),
  };
  if ($('add-address').value.trim()) body.address = $('add-address').value.trim();
  if ($('add-pubkey').value.trim()) body.public_key = $('add-pubkey').value.trim();
  const tunnel = $('add-tunnel').value;
  if (tunnel === 'pool') body.split_tunnel = [];
  else if (tunnel === 'custom') body.split_tunnel = splitList($('add-split').value);
  $('add-submit').disabled = true;
  try {
    const resp = await api(peersPath('peers'), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!resp.ok) {
      $('add-msg').textContent = `Cannot add the peer: ${await errorText(resp)}`;
      return;
    }
    const added = await resp.json();
    $('add-config').textContent = added.client.config;
    // The PNG arrives as base64 text: shown through a data: URL in an <img> (img-src
    // allows data:), never parsed as markup.
    $('add-qr').src = `data:image/png;base64,${added.client.qr_png_base64}`;
    $('add-psk-note').textContent = added.client.contains_preshared_key ? ', and the preshared key is never shown again' : '';
    $('add-result').dataset.key = added.peer.public_key;
    $('add-result').hidden = false;
    $('add-address').value = '';
    $('add-pubkey').value = '';
    $('add-result-title').focus();
    loadManage(false);
  } catch (e) {
    if (!(e instanceof Expired)) $('add-msg').textContent = `Cannot reach the server (${e.message}).`;
  } finally {
    $('add-submit').disabled = false;
  }
}

// Remove asks twice: the first press turns the button into "Confirm removal".
async function onRemove(e) {
  const b = e.target.closest('button[data-remove]');
  if (!b) return;
  if (b.dataset.confirm !== '1') {
    b.dataset.confirm = '1';
    b.textContent = 'Confirm removal';
    b.setAttribute('aria-label', `Confirm removal of peer ${b.dataset.remove}`);
    return;
  }
  b.disabled = true;
  try {
    const resp = await api(peersPath(`peers/${encodeURIComponent(b.dataset.remove)}`), { method: 'DELETE' });
    if (!resp.ok) {
      $('manage-msg').textContent = `Cannot remove the peer: ${await errorText(resp)}`;
      b.disabled = false;
      return;
    }
    await loadManage(false);
    $('manage-title').tabIndex = -1;
    $('manage-title').focus();
  } catch (err) {
    if (!(err instanceof Expired)) $('manage-msg').textContent = `Cannot reach the server (${err.message}).`;
    b.disabled = false;
  }
}

async function copyText(pre, status) {
  try {
    await navigator.clipboard.writeText(pre.textContent);
    status.textContent = 'Copied.';
  } catch {
    // No clipboard (plain HTTP, permissions): select the text for a manual copy.
    const r = document.createRange();
    r.selectNodeContents(pre);
    getSelection().removeAllRanges();
    getSelection().addRange(r);
    status.textContent = 'Selected: press Ctrl+C to copy.';
  }
}

// ------------------------------------------------------------------ enrolment

function shellQuote(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

function clearEnrol() {
  // The token is shown once: leaving the page forgets it.
  $('enrol-cmd').textContent = '';
  $('enrol-result').hidden = true;
  $('enrol-msg').textContent = '';
  $('enrol-copied').textContent = '';
}

async function onEnrol(ev) {
  ev.preventDefault();
  clearEnrol();
  $('enrol-submit').disabled = true;
  try {
    const resp = await api('/api/v1/tokens', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ ttl_s: Number($('enrol-ttl').value), note: $('enrol-note').value }),
    });
    if (resp.status === 403) {
      $('enrol-msg').textContent = 'Only an administrator can create bootstrap tokens.';
      return;
    }
    if (!resp.ok) {
      $('enrol-msg').textContent = `Cannot create the token: ${await errorText(resp)}`;
      return;
    }
    const t = await resp.json();
    const origin = location.origin;
    const grpc = `${location.protocol}//${location.hostname}:7443`;
    $('enrol-cmd').textContent =
      `sentra-agent enroll --server-api ${shellQuote(origin)} --token ${shellQuote(t.token)}\n` +
      `# then run it (gRPC ingest address of this server; 7443 by default):\n` +
      `sentra-agent --server ${shellQuote(grpc)} --api ${shellQuote(origin)}`;
    $('enrol-expires').textContent = new Date(t.expires_ms).toLocaleString();
    $('enrol-result').hidden = false;
    $('enrol-note').value = '';
    $('enrol-cmd').focus();
  } catch (e) {
    if (!(e instanceof Expired)) $('enrol-msg').textContent = `Cannot reach the server (${e.message}).`;
  } finally {
    $('enrol-submit').disabled = false;
  }
}

function onCopy() {
  return copyText($('enrol-cmd'), $('enrol-copied'));
}

// ------------------------------------------------------------------ wiring

function init() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', () => signOut());
  $('nav-fleet').addEventListener('click', () => show('fleet'));
  $('nav-enrol').addEventListener('click', () => show('enrol'));
  $('enrol-form').addEventListener('submit', onEnrol);
  $('enrol-copy').addEventListener('click', onCopy);
  $('peer-back').addEventListener('click', () => show('peers'));
  $('pool-form').addEventListener('submit', onPoolSave);
  $('pool-prefixes').addEventListener('input', () => {
    state.poolEdited = true;
  });
  $('add-form').addEventListener('submit', onAddPeer);
  $('add-copy').addEventListener('click', () => copyText($('add-config'), $('add-copied')));
  $('add-done').addEventListener('click', () => {
    clearAddResult();
    $('manage-title').tabIndex = -1;
    $('manage-title').focus();
  });
  $('add-tunnel').addEventListener('change', () => {
    const custom = $('add-tunnel').value === 'custom';
    $('add-split').hidden = !custom;
    $('add-split-label').hidden = !custom;
  });
  $('declared').addEventListener('click', onRemove);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.view === 'fleet') loadAlerts();
  });
  for (const id of ['agent-range', 'peer-range']) {
    $(id).replaceChildren(...RANGES.map((r, i) => el('option', { value: String(i), text: r.label })));
  }
  $('agent-range').addEventListener('change', loadAgentCharts);
  $('peer-range').addEventListener('change', loadPeerCharts);
  $('agent-refresh').addEventListener('click', loadAgentCharts);
  $('peer-refresh').addEventListener('click', loadPeerCharts);
  // One listener for every peer row (rows come and go as the table scrolls).
  $('peer-spacer').addEventListener('click', (e) => {
    const b = e.target.closest('[data-peer]');
    if (b) openPeer(b.dataset.peer);
  });
  $('peer-scroll').addEventListener('scroll', () => queueRender(false), { passive: true });
  $('peer-scroll').addEventListener('keydown', (e) => {
    const s = $('peer-scroll');
    const step = { ArrowDown: ROW_H, ArrowUp: -ROW_H, PageDown: s.clientHeight, PageUp: -s.clientHeight }[e.key];
    if (step) {
      s.scrollTop += step;
      e.preventDefault();
    }
  });
  let filterTimer = null;
  $('peer-filter').addEventListener('input', (e) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      state.filter = e.target.value;
      $('peer-scroll').scrollTop = 0;
      queueRender(true);
    }, 120);
  });
  // Ages and presence move with the clock: re-render what is on screen once a second.
  setInterval(() => queueRender(false), 1000);
  window.addEventListener('resize', () => queueRender(false));
  show('login');
}

init();
