// Sentra dashboard. Plain ES module, no build step, no third-party code.
// The access token lives only in this module's memory: never in localStorage, a cookie
// or a URL. A reload means signing in again.
'use strict';

const $ = (id) => document.getElementById(id);
const ROW_H = 32;
const FRESH_S = 180; // WireGuard re-handshakes every 2 min on an active tunnel
const AGING_S = 600;

const state = {
  token: null,
  expiryTimer: null,
  stream: null, // AbortController of the live stream
  agents: new Map(), // agent_id -> AgentStatus
  view: 'login',
  iface: null, // { agent, name }
  sortKey: 'handshake',
  sortDir: 1,
  filter: '',
  rows: [], // the peer table's filtered, sorted rows
  renderQueued: false,
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
    return body.message || body.error || `HTTP ${resp.status}`;
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
}

function signOut(message) {
  const token = state.token;
  state.token = null;
  clearTimeout(state.expiryTimer);
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.agents.clear();
  state.rows = [];
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

function show(view) {
  state.view = view;
  $('login-view').hidden = view !== 'login';
  $('fleet-view').hidden = view !== 'fleet';
  $('peers-view').hidden = view !== 'peers';
  if (view === 'login') $('username').focus();
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
    if (state.view === 'fleet') renderFleet();
    else if (state.view === 'peers') renderPeers(c);
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

function renderFleet() {
  const counts = { online: 0, stale: 0, offline: 0 };
  for (const a of state.agents.values()) counts[a.presence] = (counts[a.presence] || 0) + 1;
  $('summary').replaceChildren(
    ...['online', 'stale', 'offline'].map((p) =>
      el('li', { class: `p-${p}`, 'data-presence': p, text: `${counts[p]} ${p}` }),
    ),
  );
  const cards = [];
  for (const a of state.agents.values()) {
    const ifaces = a.interfaces.map((i) => {
      const up = i.peers.filter((p) => p.online).length;
      return el(
        'li',
        {},
        el('button', {
          type: 'button',
          class: 'link',
          'data-iface': `${a.agent_id}/${i.name}`,
          text: `${i.name}`,
          onclick: () => openPeers(a.agent_id, i.name),
        }),
        ` — ${i.peers.length} peers, ${up} handshaking`,
      );
    });
    cards.push(
      el(
        'article',
        { class: 'card agent', 'data-agent': a.agent_id },
        el('h3', { text: a.agent_id }),
        el('span', { class: `badge p-${a.presence}`, text: a.presence }),
        el('p', { class: 'muted', text: `last seen ${ago(a.last_seen_ms)} ago` }),
        ifaces.length ? el('ul', { 'aria-label': 'Interfaces' }, ...ifaces) : el('p', { class: 'muted', text: 'no WireGuard interfaces' }),
      ),
    );
  }
  if (!cards.length) cards.push(el('p', { class: 'muted', text: 'No agent has reported yet.' }));
  $('agents').replaceChildren(...cards);
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

function openPeers(agent, name) {
  state.iface = { agent, name };
  $('peers-title').textContent = `Peers of ${name} on ${agent}`;
  state.filter = '';
  $('peer-filter').value = '';
  renderHead();
  $('peer-scroll').scrollTop = 0;
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
      el('div', { role: 'cell', class: 'mono', title: p.public_key, text: shortKey(p.public_key) }),
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

// ------------------------------------------------------------------ wiring

function init() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', () => signOut());
  $('nav-fleet').addEventListener('click', () => show('fleet'));
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
