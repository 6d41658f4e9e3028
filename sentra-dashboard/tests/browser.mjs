// Browser test of the dashboard: headless Debian Chromium driven by playwright-core against
// a real sentra-server (started by scripts/check-dashboard), with 10 000 peers pushed
// through the real gRPC ingest path by examples/seed_fleet.rs.
//
// Env: SENTRA_API (http://127.0.0.1:port), SENTRA_GRPC (http://...), SEED_BIN,
// ADMIN_PASSWORD, ARTIFACTS (screenshot dir), PW_PREFIX (where playwright-core is installed).
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';

const require = createRequire(`${process.env.PW_PREFIX}/`);
const { chromium } = require('playwright-core');

const API = process.env.SENTRA_API;
const GRPC = process.env.SENTRA_GRPC;
const ART = process.env.ARTIFACTS;
const PEERS = 10000;
mkdirSync(ART, { recursive: true });

const results = [];
function check(name, ok, detail = '') {
  results.push({ name, ok, detail });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
  if (!ok) throw new Error(`${name}: ${detail}`);
}

async function call(method, path, token, body) {
  const resp = await fetch(API + path, {
    method,
    headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  return { status: resp.status, json: text ? JSON.parse(text) : null, headers: resp.headers };
}

// Waits (polling the REST API, at most 150 s) until the server answers a history query of
// `name` over the last `span` ms from its one-minute rollups, every matching series with at
// least two points.
let adminToken = null;
async function untilRolledUp(name, agentId, labels, span, step) {
  const started = Date.now();
  for (;;) {
    const to = Math.ceil(Date.now() / step) * step;
    const q = new URLSearchParams({ name, agent: agentId, from: String(to - span), to: String(to), step_ms: String(step), agg: 'max', resolution: 'minute' });
    for (const l of labels) q.append('label', l);
    const r = await call('GET', `/api/v1/metrics/history?${q}`, adminToken);
    if (r.status !== 200) throw new Error(`history query: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    if (r.json.series.length && r.json.series.every((x) => x.points.length >= 2)) return Date.now() - started;
    if (Date.now() - started > 150000) throw new Error(`no minute rollups of ${name} after 150 s`);
    await new Promise((res) => setTimeout(res, 500));
  }
}

async function main() {
  // --- fixtures over the REST API: a viewer for the browser, an enrolled agent
  const admin = (await call('POST', '/api/v1/auth/login', null, { username: 'admin', password: process.env.ADMIN_PASSWORD })).json.access_token;
  check('admin login over REST', !!admin);
  adminToken = admin;
  const viewerPw = 'viewer-password-1';
  const cu = await call('POST', '/api/v1/users', admin, { username: 'ops', password: viewerPw, role: 'viewer' });
  check('viewer created', cu.status === 201 || cu.status === 200, `HTTP ${cu.status}`);
  const enrol = async (name) => {
    const boot = await call('POST', '/api/v1/tokens', admin, { ttl_s: 600 });
    const enr = await call('POST', '/api/v1/agents/enroll', null, { token: boot.json.token, name });
    check(`agent ${name} enrolled`, enr.status === 201, `HTTP ${enr.status}`);
    return enr.json;
  };
  const big = await enrol('edge-dashboard');
  const hist = await enrol('edge-history');
  const agent = big.agent_id;
  const histAgent = hist.agent_id;
  const seedAs = (a, peers, seq, ageing, history = 0) =>
    execFileSync(process.env.SEED_BIN, [GRPC, a.agent_id, String(a.key_id), a.secret, String(peers), String(seq), String(ageing), String(history)], { encoding: 'utf8' });
  const seed = (peers, seq, ageing) => seedAs(big, peers, seq, ageing);

  // --- the page and its headers
  const idx = await fetch(`${API}/`);
  const csp = idx.headers.get('content-security-policy') || '';
  check('index served with CSP', idx.status === 200 && csp.includes("frame-ancestors 'none'") && !csp.includes('unsafe-inline'), csp);
  check('nosniff + referrer policy', idx.headers.get('x-content-type-options') === 'nosniff' && idx.headers.get('referrer-policy') === 'no-referrer');
  const html = await idx.text();
  const js = html.match(/\/assets\/app\.[0-9a-f]{16}\.js/);
  check('hashed script name', !!js, js && js[0]);
  const jsResp = await fetch(API + js[0]);
  check('script cached immutable, JS content type', jsResp.headers.get('cache-control').includes('immutable') && jsResp.headers.get('content-type').startsWith('text/javascript'));

  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  try {
    const ctx = await browser.newContext({ viewport: { width: 1366, height: 800 } });
    // The page's clock runs normally from now, and the test moves it forward where ages and
    // presence must change with time alone (no waiting out real minutes, no timing races).
    await ctx.clock.install();
    const page = await ctx.newPage();
    const cspErrors = [];
    page.on('console', (m) => {
      if (m.type() === 'error') cspErrors.push(m.text());
    });
    await page.goto(`${API}/`);

    // --- bad login
    await page.getByLabel('User name').fill('ops');
    await page.getByLabel('Password').fill('wrong-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Wrong user name or password.').waitFor({ timeout: 10000 });
    check('bad login shows a clear message', true);
    await page.screenshot({ path: `${ART}/01-bad-login.png` });

    // --- seed now (presence is online for 30 s after a push): 10 000 peers, then an agent
    // with one hour of history (host metrics and 5 peers, one batch a minute)
    const t0 = Date.now();
    const ack = seed(PEERS, 1, 1);
    check('10 000 peers pushed over gRPC', ack.startsWith('accepted seq 1'), `${ack.trim().slice(0, 80)} in ${Date.now() - t0} ms`);
    const th = Date.now();
    const hack = seedAs(hist, 5, 1, 0, 60);
    check('one hour of history pushed over gRPC', hack.startsWith('accepted seq 1..=61'), `${hack.trim()} in ${Date.now() - th} ms`);

    // --- login, fleet overview
    await page.getByLabel('Password').fill(viewerPw);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator(`[data-agent="${agent}"]`).waitFor({ timeout: 15000 });
    await page.locator(`[data-agent="${histAgent}"]`).waitFor({ timeout: 15000 });
    const summary = await page.locator('#summary').innerText();
    check('agents appear online', summary.includes('2 online'), summary.replace(/\n/g, ', '));
    check('a viewer has no enrolment menu', await page.locator('#nav-enrol').isHidden());
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + document.cookie + location.href);
    check('token not in localStorage, cookie or URL', !/eyJ/.test(stored), stored);
    await page.screenshot({ path: `${ART}/02-fleet.png`, fullPage: true });

    // --- per-agent page, reached with the keyboard only
    let tabs = 0;
    while (!(await page.evaluate((a) => document.activeElement?.getAttribute('data-open-agent') === a, histAgent))) {
      await page.keyboard.press('Tab');
      tabs += 1;
      if (tabs > 40) throw new Error('the agent page link is not reachable with Tab');
    }
    await page.keyboard.press('Enter');
    await page.locator('#agent-view:not([hidden])').waitFor();
    check('agent page opened with Tab and Enter', await page.evaluate(() => document.activeElement?.id === 'agent-title'), `${tabs} tabs, focus on the page heading`);
    await page.locator('#agent-charts[aria-busy="false"] [data-chart="cpu"] path[data-points]').first().waitFor({ state: 'attached', timeout: 15000 });
    const pointsOf = (chart) => page.locator(`[data-chart="${chart}"] path[data-points]`).first().getAttribute('data-points').then(Number);
    const cpuPoints = await pointsOf('cpu');
    check('host charts from the metrics history', cpuPoints >= 30, `CPU chart: ${cpuPoints} points over the last hour`);
    const legend = await page.locator('#agent-charts').innerText();
    check('CPU busy from node_cpu_seconds_total', legend.includes('busy: 25 %'), legend.replace(/\n/g, ' | '));
    check('network rate from node_network_*_bytes_total', legend.includes('received: 100.0 kB/s') && legend.includes('sent: 50.0 kB/s'));
    check('load and memory charts', (await pointsOf('load')) >= 30 && (await pointsOf('memory')) >= 30);
    const ifaceRow = await page.locator('[data-agent-iface="wg0"]').innerText();
    check('agent page lists its interfaces', /wg0\s+\S+\s+51820\s+5\s+5/.test(ifaceRow), ifaceRow.replace(/\s+/g, ' '));
    check('charts labelled for screen readers', /^CPU busy: latest busy 25 %/.test(await page.locator('[data-chart="cpu"] svg').getAttribute('aria-label')));
    await page.screenshot({ path: `${ART}/03-agent.png`, fullPage: true });
    await page.getByRole('button', { name: 'Fleet' }).click();

    // --- presence ages with the clock: 35 s later on the page's clock, both agents (silent
    // since their pushes, the server's last word "online") are stale, without any new event
    const events = await page.evaluate(() => window.sentraEvents);
    await page.clock.fastForward('00:35');
    await page.locator(`[data-agent="${histAgent}"][data-presence="stale"]`).waitFor({ timeout: 10000 });
    const eventsAfter = await page.evaluate(() => window.sentraEvents);
    const staleSummary = await page.locator('#summary').innerText();
    check('silent agents turn stale without a new event', events === eventsAfter && staleSummary.includes('2 stale'), `${events} events before, ${eventsAfter} after; ${staleSummary.replace(/\n/g, ', ')}`);
    await page.screenshot({ path: `${ART}/04-fleet-stale.png`, fullPage: true });

    // --- alerts on the overview: a real rule (scripts/check-dashboard gives the server a
    // rule file: DashboardPeerStale, wg_handshake_stale with max_age 55 s, for agents named
    // edge-alerts-*) fires for a peer whose last handshake is 60 s old, and resolves when
    // the peer handshakes again. The page asks for alerts when the overview is shown and
    // every 10 s while it stays shown.
    const alerting = await enrol('edge-alerts');
    const aack = seedAs(alerting, 1, 1, 1);
    check('a peer with a 60 s old handshake pushed', aack.startsWith('accepted seq 1'), aack.trim());
    const alertItem = page.locator('#alerts-list [data-rule="DashboardPeerStale"]');
    await alertItem.waitFor({ timeout: 40000 });
    const peerKey0 = (await call('GET', `/api/v1/status/agents/${alerting.agent_id}`, admin)).json.interfaces[0].peers[0].public_key;
    const part = (sel) => alertItem.locator(sel).first().innerText();
    const shown = { severity: await part('.badge'), rule: await part('.rule'), target: await part('[data-alert-link]'), since: await part('[data-since]') };
    check(
      'the firing alert is on the overview (rule, severity, peer, since)',
      shown.severity === 'warning' && shown.rule === 'DashboardPeerStale' && shown.target === `peer ${peerKey0.slice(0, 8)}…${peerKey0.slice(-4)} on ${alerting.agent_id}/wg0` && /^since \d\d:\d\d /.test(shown.since),
      JSON.stringify(shown),
    );
    const firingCount = Number(await page.locator('#alerts-count').getAttribute('data-count'));
    const apiFiring = (await call('GET', '/api/v1/alerts', admin)).json.alerts.filter((a) => a.status === 'firing').length;
    check('alert count as the API has it', firingCount >= 1 && firingCount <= apiFiring + 1, `page ${firingCount}, API ${apiFiring}`);
    await page.screenshot({ path: `${ART}/04b-fleet-alerts.png`, fullPage: true });
    await alertItem.locator('[data-alert-link="peer"]').click();
    await page.locator('#peer-view:not([hidden])').waitFor();
    const peerTitle = await page.locator('#peer-title').innerText();
    check('the alert links to its peer page', peerTitle.includes(`${peerKey0.slice(0, 8)}…`) && peerTitle.includes(alerting.agent_id), peerTitle);
    await page.getByRole('button', { name: 'Fleet' }).click();
    await alertItem.waitFor({ timeout: 15000 });
    const rack = seedAs(alerting, 1, 2, 0);
    check('the peer handshakes again', rack.startsWith('accepted seq 2'), rack.trim());
    await alertItem.waitFor({ state: 'detached', timeout: 40000 });
    check('the alert leaves the overview once resolved', (await call('GET', '/api/v1/alerts', admin)).json.alerts.every((a) => a.rule !== 'DashboardPeerStale' || a.status !== 'firing'));

    // --- the 10 000-peer table, time to first render
    const started = await page.evaluate(() => performance.now());
    await page.locator(`[data-iface="${agent}/wg0"]`).click();
    await page.locator('#peer-spacer .vrow').first().waitFor();
    const rendered = await page.evaluate(() => window.sentraLastRender);
    const ttfr = rendered - started;
    const count = await page.locator('#peer-count').innerText();
    const domRows = await page.locator('#peer-spacer .vrow').count();
    check('peer table shows 10 000 peers', count === `${PEERS} of ${PEERS} peers`, count);
    check('rows virtualised', domRows < 100, `${domRows} rows in the DOM`);
    check('time to first render of 10 000 peers', ttfr < 5000, `${ttfr.toFixed(0)} ms`);
    await page.screenshot({ path: `${ART}/05-peers-10000.png` });

    // scroll to the end: the last peer is reachable
    await page.locator('#peer-scroll').evaluate((e) => { e.scrollTop = e.scrollHeight; });
    await page.waitForFunction(() => [...document.querySelectorAll('#peer-spacer .vrow')].some((r) => r.getAttribute('aria-rowindex') === '10001'));
    check('last row reachable by scrolling', true);

    // sort by endpoint, descending
    await page.locator('[data-sort="endpoint"]').click();
    await page.locator('[data-sort="endpoint"]').click();
    await page.locator('#peer-scroll').evaluate((e) => { e.scrollTop = 0; });
    await page.waitForFunction(() => document.querySelector('[data-sort="endpoint"]').textContent.includes('▼'));
    // The header re-renders at once, the rows on the next animation frame: wait for that
    // frame (two, to be past any render queued by the scroll) and for the top row.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await page.waitForFunction(() => document.querySelector('#peer-spacer .vrow')?.getAttribute('aria-rowindex') === '2');
    const firstEndpoints = await page.locator('#peer-spacer .vrow > div:nth-child(3)').allInnerTexts();
    const sorted = firstEndpoints.slice(0, 5);
    check('sortable (endpoint descending)', JSON.stringify(sorted) === JSON.stringify([...sorted].sort().reverse()), sorted.join(' '));

    // filter to the one ageing peer: fresh now, ageing live without a reload
    await page.getByLabel('Filter').fill('10.0.0.0/32');
    await page.waitForFunction(() => document.getElementById('peer-count').textContent.startsWith('1 of'));
    const ageing = page.locator('#peer-spacer .vrow [data-fresh]').first();
    const before = await ageing.getAttribute('data-fresh');
    check('filter finds one peer, fresh at first', before === 'fresh', before);
    // Its handshake was 60 s old at the push: 90 s more on the page's clock cross 3 min.
    await page.clock.fastForward('01:30');
    await page.waitForFunction(() => document.querySelector('#peer-spacer .vrow [data-fresh]')?.getAttribute('data-fresh') === 'aging', null, { timeout: 10000 });
    check('handshake age goes stale-coloured live', true);
    await page.screenshot({ path: `${ART}/06-peer-ageing.png` });

    // live update over SSE: a second push adds a peer
    await page.getByLabel('Filter').fill('');
    seed(PEERS + 1, 2, 0);
    await page.waitForFunction((n) => document.getElementById('peer-count').textContent === `${n} of ${n} peers`, PEERS + 1, { timeout: 10000 });
    check('live update over the status stream', true, `${PEERS + 1} peers without a reload`);

    // --- per-peer traffic chart (the history agent's first peer), opened with the keyboard
    await page.getByRole('button', { name: 'Fleet' }).click();
    await page.locator(`[data-iface="${histAgent}/wg0"]`).click();
    await page.waitForFunction(() => document.getElementById('peer-count').textContent === '5 of 5 peers');
    await page.getByLabel('Filter').fill('10.0.0.0/32');
    await page.waitForFunction(() => document.getElementById('peer-count').textContent.startsWith('1 of'));
    await page.locator('#peer-spacer [data-peer]').first().focus();
    await page.keyboard.press('Enter');
    await page.locator('#peer-charts[aria-busy="false"] [data-chart="peer-traffic"] path[data-points]').first().waitFor({ state: 'attached', timeout: 15000 });
    const peerPoints = await pointsOf('peer-traffic');
    const peerLegend = await page.locator('#peer-charts').innerText();
    check('per-peer traffic chart, last hour', peerPoints >= 30 && peerLegend.includes('received: 1.0 kB/s') && peerLegend.includes('sent: 500 B/s'), `${peerPoints} points; ${peerLegend.replace(/\n/g, ' | ')}`);
    check('peer page facts', (await page.locator('#peer-facts').innerText()).includes('10.0.0.0/32'));
    await page.screenshot({ path: `${ART}/07-peer-traffic.png`, fullPage: true });
    // Ranges of 6 h and more come from the rollups, written by the server's maintenance
    // pass (once a minute): wait until the server answers from them, then choose the range.
    const peer0 = (await page.locator('#peer-facts dd').first().innerText()).trim();
    const rolled = await untilRolledUp('wireguard_received_bytes_total', histAgent, ['interface=wg0', `public_key=${peer0}`], 24 * 3600e3, 900e3);
    await page.locator('#peer-range').selectOption({ label: 'Last 24 hours' });
    await page.waitForFunction(() => {
      const p = document.querySelector('#peer-charts[aria-busy="false"] [data-chart="peer-traffic"] path[data-points]');
      return p && Number(p.getAttribute('data-points')) >= 2 && Number(p.getAttribute('data-points')) <= 5;
    }, null, { timeout: 15000 });
    check('peer chart over a chosen range, from the rollups', true, `${await pointsOf('peer-traffic')} fifteen-minute points over 24 h (minute rollups after ${rolled} ms)`);

    // phone layout
    await page.setViewportSize({ width: 390, height: 800 });
    await page.getByRole('button', { name: 'Fleet' }).click();
    await page.screenshot({ path: `${ART}/08-fleet-phone.png`, fullPage: true });
    await page.locator(`[data-open-agent="${histAgent}"]`).click();
    await page.locator('#agent-charts[aria-busy="false"] [data-chart="cpu"] path[data-points]').first().waitFor({ state: 'attached', timeout: 15000 });
    const rolledCpu = await untilRolledUp('node_cpu_seconds_total', histAgent, [], 6 * 3600e3, 300e3);
    await page.locator('#agent-range').selectOption({ label: 'Last 6 hours' });
    await page.waitForFunction(() => {
      const p = document.querySelector('#agent-charts[aria-busy="false"] [data-chart="cpu"] path[data-points]');
      return p && Number(p.getAttribute('data-points')) >= 5 && Number(p.getAttribute('data-points')) <= 13;
    }, null, { timeout: 15000 });
    check('agent charts over 6 hours, from the rollups', true, `${await pointsOf('cpu')} five-minute points (minute rollups after ${rolledCpu} ms)`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    check('agent page fits a phone (no sideways scroll)', overflow <= 0, `${overflow} px too wide`);
    await page.screenshot({ path: `${ART}/09-agent-phone.png`, fullPage: true });
    await page.setViewportSize({ width: 1366, height: 800 });

    // --- the session ends (admin resets the password): back to sign-in with a message
    const patch = await call('PATCH', '/api/v1/users/ops', admin, { password: 'another-password-2' });
    check('admin reset the viewer password', patch.status === 200 || patch.status === 204, `HTTP ${patch.status}`);
    await page.locator('#login-view:not([hidden])').waitFor({ timeout: 15000 });
    const msg = await page.locator('#login-msg').innerText();
    check('ended token returns to sign-in', /session has (ended|expired)/.test(msg), msg);
    await page.screenshot({ path: `${ART}/10-session-ended.png` });

    // --- enrolment as an administrator: a bootstrap token, the install command shown once
    const tokensBefore = (await call('GET', '/api/v1/tokens', admin)).json.tokens.length;
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill(process.env.ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#nav-enrol:not([hidden])').waitFor({ timeout: 15000 });
    await page.getByRole('button', { name: 'Enrol agent' }).click();
    await page.getByLabel('Note (optional)').fill('browser test');
    await page.getByLabel('Valid for').selectOption({ label: '1 hour' });
    await page.getByRole('button', { name: 'Create bootstrap token' }).click();
    await page.locator('#enrol-result:not([hidden])').waitFor({ timeout: 15000 });
    const cmd = await page.locator('#enrol-cmd').innerText();
    const token = (cmd.match(/--token '([^']+)'/) || [])[1];
    check('install command with a fresh bootstrap token', cmd.startsWith(`sentra-agent enroll --server-api '${API}'`) && !!token, cmd.replace(token || '-', '<token>').replace(/\n/g, ' | '));
    const tokensAfter = (await call('GET', '/api/v1/tokens', admin)).json.tokens;
    check('the token is stored with its note', tokensAfter.length === tokensBefore + 1 && tokensAfter.some((t) => t.note === 'browser test'), `${tokensBefore} -> ${tokensAfter.length} tokens`);
    await page.screenshot({ path: `${ART}/11-enrol.png` });
    const used = await call('POST', '/api/v1/agents/enroll', null, { token, name: 'edge-from-page' });
    check('the shown token enrols an agent', used.status === 201, `HTTP ${used.status}`);
    await page.getByRole('button', { name: 'Fleet' }).click();
    await page.getByRole('button', { name: 'Enrol agent' }).click();
    const again = await page.evaluate(() => ({ text: document.getElementById('enrol-cmd').textContent, shown: document.getElementById('enrol-result').checkVisibility() }));
    check('the command is shown once (gone after leaving the page)', again.text === '' && !again.shown, JSON.stringify(again));

    // --- peer management on the interface page (administrator): pool, add peer -> config
    // and QR once, declared peers, remove; the API's messages on errors
    // The interface's peers answer late (1 s): the administrator types the pool before it
    // arrives, and the late answer must not wipe what was typed.
    const slowPeers = (url) => url.pathname.endsWith(`/agents/${histAgent}/interfaces/wg0/peers`);
    await page.route(slowPeers, async (route) => {
      await new Promise((r) => setTimeout(r, 1000));
      await route.continue();
    });
    await page.getByRole('button', { name: 'Fleet' }).click();
    await page.locator(`[data-iface="${histAgent}/wg0"]`).click();
    await page.locator('#pool-form:not([hidden])').waitFor({ timeout: 15000 });
    await page.getByLabel('Address pool (prefixes, comma-separated)').fill('10.99.0.0/30');
    await page.waitForFunction(() => !document.getElementById('manage-msg').textContent.startsWith('loading'), null, { timeout: 15000 });
    const typed = await page.getByLabel('Address pool (prefixes, comma-separated)').inputValue();
    check('a pool typed while the page loads is kept', typed === '10.99.0.0/30', JSON.stringify(typed));
    await page.unroute(slowPeers);
    await page.getByRole('button', { name: 'Save pool' }).click();
    await page.waitForFunction(() => document.getElementById('manage-msg').textContent.startsWith('Address pool 10.99.0.0/30;'), null, { timeout: 15000 });
    const pool = (await call('GET', `/api/v1/agents/${histAgent}/interfaces/wg0/pool`, admin)).json;
    check('address pool set from the page', JSON.stringify(pool.prefixes) === '["10.99.0.0/30"]', JSON.stringify(pool));
    // a bad static address: the API's message
    await page.getByLabel('Client address (optional, default: next free in the pool)').fill('10.99.0.300');
    await page.getByRole('button', { name: 'Add peer' }).click();
    await page.waitForFunction(() => document.getElementById('add-msg').textContent.startsWith('Cannot add the peer: '), null, { timeout: 15000 });
    const badMsg = await page.locator('#add-msg').innerText();
    check('a bad address shows the API\'s message', badMsg.includes('address') && !badMsg.includes('[object'), badMsg);
    await page.getByLabel('Client address (optional, default: next free in the pool)').fill('');
    await page.getByLabel('DNS servers (optional, comma-separated)').fill('10.99.0.1');
    await page.getByLabel('Add a preshared key').check();
    await page.getByRole('button', { name: 'Add peer' }).click();
    await page.locator('#add-result:not([hidden])').waitFor({ timeout: 15000 });
    const conf = await page.locator('#add-config').innerText();
    const newKey = await page.locator('#add-result').getAttribute('data-key');
    check('the client configuration is shown', conf.includes('[Interface]') && conf.includes('[Peer]') && /Address = 10\.99\.0\.2\/32/.test(conf) && /PrivateKey = [A-Za-z0-9+/]{43}=/.test(conf) && conf.includes('PresharedKey'), conf.replace(/(PrivateKey|PresharedKey) = \S+/g, '$1 = <secret>').replace(/\n/g, ' | '));
    await page.waitForFunction(() => { const i = document.getElementById('add-qr'); return i.complete && i.naturalWidth > 0; }, null, { timeout: 15000 });
    const qr = await page.locator('#add-qr').evaluate((i) => ({ w: i.naturalWidth, h: i.naturalHeight, src: i.src.slice(0, 22) }));
    check('the QR code decodes as an image (data: URL, no markup)', qr.w > 0 && qr.h === qr.w && qr.src === 'data:image/png;base64,', JSON.stringify(qr));
    check('the private-key warning is shown', (await page.locator('#add-result .warn').innerText()).includes('not stored'));
    await page.locator(`#declared [data-declared="${newKey}"]`).waitFor({ timeout: 15000 });
    const declaredRow = await page.locator(`#declared [data-declared="${newKey}"]`).innerText();
    check('the new peer is listed with its address', declaredRow.includes('10.99.0.2/32'), declaredRow.replace(/\s+/g, ' '));
    await page.screenshot({ path: `${ART}/12-add-peer.png`, fullPage: true });
    // the pool (/30: one client address) is full now
    await page.getByRole('button', { name: 'Add peer' }).click();
    await page.waitForFunction(() => document.getElementById('add-msg').textContent.startsWith('Cannot add the peer: '), null, { timeout: 15000 });
    const fullMsg = await page.locator('#add-msg').innerText();
    check('a full pool shows the API\'s message', fullMsg.includes('no free address left'), fullMsg);
    check('a failed add hides the previous configuration', await page.locator('#add-result').isHidden());
    await page.setViewportSize({ width: 390, height: 800 });
    const peersOverflow = await page.evaluate(() => {
      const w = document.documentElement.clientWidth;
      // what sticks out of the page (not out of a box that scrolls sideways itself)
      const clipped = (e) => {
        for (let a = e.parentElement; a; a = a.parentElement) if (getComputedStyle(a).overflowX !== 'visible') return true;
        return false;
      };
      const wide = [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > w + 0.5 && e.checkVisibility() && !clipped(e))
        .slice(0, 5)
        .map((e) => `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}.${e.className}`);
      return { px: document.documentElement.scrollWidth - w, wide };
    });
    check('interface page with peer management fits a phone', peersOverflow.px <= 0, `${peersOverflow.px} px too wide: ${peersOverflow.wide.join(', ')}`);
    await page.screenshot({ path: `${ART}/13-add-peer-phone.png`, fullPage: true });
    await page.setViewportSize({ width: 1366, height: 800 });
    // remove, with the keyboard: Enter asks to confirm, Enter again removes
    await page.getByRole('button', { name: `Remove peer ${newKey}` }).focus();
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('#declared button[data-remove]')?.textContent === 'Confirm removal');
    await page.keyboard.press('Enter');
    await page.locator(`#declared [data-declared="${newKey}"]`).waitFor({ state: 'detached', timeout: 15000 });
    const left = (await call('GET', `/api/v1/agents/${histAgent}/interfaces/wg0/peers`, admin)).json.peers;
    check('remove works', !left.some((p) => p.public_key === newKey), `${left.length} declared peers left`);
    await page.getByRole('button', { name: 'Fleet' }).click();
    await page.locator(`[data-iface="${histAgent}/wg0"]`).click();
    const onceMore = await page.evaluate(() => ({ text: document.getElementById('add-config').textContent, shown: document.getElementById('add-result').checkVisibility(), qr: document.getElementById('add-qr').hasAttribute('src') }));
    check('the configuration is shown once (gone after leaving the page)', onceMore.text === '' && !onceMore.shown && !onceMore.qr, JSON.stringify(onceMore));

    // 401 (expired session), 400 and 409 (the error paths above) are expected responses
    const unexpected = cspErrors.filter((e) => !/status of (401|400|409)/.test(e) && !e.includes('401'));
    check('no console errors (CSP violations included)', unexpected.length === 0, unexpected.join(' | '));
    writeFileSync(`${ART}/results.json`, JSON.stringify({ ttfr_ms: ttfr, results }, null, 2));
  } finally {
    await browser.close();
  }
}

main().then(
  () => {
    console.log(`PASS dashboard browser test (${results.length} checks)`);
    // Do not wait for idle keep-alive sockets or a lingering browser process to let go.
    process.exit(0);
  },
  (e) => {
    console.log(`FAIL dashboard browser test: ${e.message}`);
    process.exit(1);
  },
);
