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

async function main() {
  // --- fixtures over the REST API: a viewer for the browser, an enrolled agent
  const admin = (await call('POST', '/api/v1/auth/login', null, { username: 'admin', password: process.env.ADMIN_PASSWORD })).json.access_token;
  check('admin login over REST', !!admin);
  const viewerPw = 'viewer-password-1';
  const cu = await call('POST', '/api/v1/users', admin, { username: 'ops', password: viewerPw, role: 'viewer' });
  check('viewer created', cu.status === 201 || cu.status === 200, `HTTP ${cu.status}`);
  const boot = await call('POST', '/api/v1/tokens', admin, { ttl_s: 600 });
  const enr = await call('POST', '/api/v1/agents/enroll', null, { token: boot.json.token, name: 'edge-dashboard' });
  check('agent enrolled', enr.status === 201, `HTTP ${enr.status}`);
  const { agent_id: agent, key_id: keyId, secret } = enr.json;
  const seed = (peers, seq, ageing) =>
    execFileSync(process.env.SEED_BIN, [GRPC, agent, String(keyId), secret, String(peers), String(seq), String(ageing)], { encoding: 'utf8' });
  const t0 = Date.now();
  const ack = seed(PEERS, 1, 1);
  check('10 000 peers pushed over gRPC', ack.startsWith('accepted seq 1'), `${ack.trim().slice(0, 80)} in ${Date.now() - t0} ms`);

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

    // --- login, fleet overview
    await page.getByLabel('Password').fill(viewerPw);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator(`[data-agent="${agent}"]`).waitFor({ timeout: 15000 });
    const summary = await page.locator('#summary').innerText();
    check('agent appears online', summary.includes('1 online'), summary.replace(/\n/g, ', '));
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + document.cookie + location.href);
    check('token not in localStorage, cookie or URL', !/eyJ/.test(stored), stored);
    await page.screenshot({ path: `${ART}/02-fleet.png`, fullPage: true });

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
    await page.screenshot({ path: `${ART}/03-peers-10000.png` });

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
    await page.waitForFunction(() => document.querySelector('#peer-spacer .vrow [data-fresh]')?.getAttribute('data-fresh') === 'aging', null, { timeout: 20000 });
    check('handshake age goes stale-coloured live', true);
    await page.screenshot({ path: `${ART}/04-peer-ageing.png` });

    // live update over SSE: a second push adds a peer
    await page.getByLabel('Filter').fill('');
    seed(PEERS + 1, 2, 0);
    await page.waitForFunction((n) => document.getElementById('peer-count').textContent === `${n} of ${n} peers`, PEERS + 1, { timeout: 10000 });
    check('live update over the status stream', true, `${PEERS + 1} peers without a reload`);

    // phone layout
    await page.setViewportSize({ width: 390, height: 800 });
    await page.getByRole('button', { name: 'Fleet' }).click();
    await page.screenshot({ path: `${ART}/05-fleet-phone.png`, fullPage: true });

    // --- the session ends (admin resets the password): back to sign-in with a message
    const patch = await call('PATCH', '/api/v1/users/ops', admin, { password: 'another-password-2' });
    check('admin reset the viewer password', patch.status === 200 || patch.status === 204, `HTTP ${patch.status}`);
    await page.locator('#login-view:not([hidden])').waitFor({ timeout: 15000 });
    const msg = await page.locator('#login-msg').innerText();
    check('ended token returns to sign-in', /session has (ended|expired)/.test(msg), msg);
    await page.screenshot({ path: `${ART}/06-session-ended.png` });
    check('no console errors (CSP violations included)', cspErrors.filter((e) => !e.includes('401')).length === 0, cspErrors.filter((e) => !e.includes('401')).join(' | '));
    writeFileSync(`${ART}/results.json`, JSON.stringify({ ttfr_ms: ttfr, results }, null, 2));
  } finally {
    await browser.close();
  }
}

main().then(
  () => console.log(`PASS dashboard browser test (${results.length} checks)`),
  (e) => {
    console.log(`FAIL dashboard browser test: ${e.message}`);
    process.exit(1);
  },
);
