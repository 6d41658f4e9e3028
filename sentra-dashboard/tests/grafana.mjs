// Checks packaging/grafana/sentra.json against a real sentra-server's /metrics: every
// metric a panel or template variable queries must be one the server exposes, every panel
// has a unique id, a datasource and a position, and every query names at least one metric.
//
// Usage: node grafana.mjs <dashboard.json> <http://host:port/metrics>
import { readFileSync } from 'node:fs';

const [file, url] = process.argv.slice(2);
const dash = JSON.parse(readFileSync(file, 'utf8'));
const text = await (await fetch(url)).text();

// Exposed names: every sample name, plus what each TYPE line implies (a family whose label
// sets have not been created yet prints its TYPE only).
const exposed = new Set();
for (const line of text.split('\n')) {
  const type = line.match(/^# TYPE (\S+) (\S+)/);
  if (type) {
    const [, name, kind] = type;
    exposed.add(name);
    if (kind === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exposed.add(name + s);
    if (kind === 'counter' && !name.endsWith('_total')) exposed.add(`${name}_total`);
  } else if (line && !line.startsWith('#')) {
    exposed.add(line.match(/^[a-zA-Z_:][a-zA-Z0-9_:]*/)[0]);
  }
}

const problems = [];
const queries = [];
const ids = new Set();
const walk = (panels) => {
  for (const p of panels) {
    if (ids.has(p.id)) problems.push(`panel id ${p.id} used twice`);
    ids.add(p.id);
    if (!p.gridPos) problems.push(`panel "${p.title}" has no gridPos`);
    if (p.type === 'row') {
      walk(p.panels || []);
      continue;
    }
    if (!p.datasource) problems.push(`panel "${p.title}" has no datasource`);
    if (!p.targets?.length) problems.push(`panel "${p.title}" has no query`);
    for (const t of p.targets || []) queries.push([`panel "${p.title}" ${t.refId}`, t.expr]);
  }
};
walk(dash.panels);
for (const v of dash.templating?.list || []) {
  if (v.type === 'query') queries.push([`variable $${v.name}`, typeof v.query === 'string' ? v.query : v.query.query]);
}

// Metric names in PromQL: identifiers outside label matchers and strings that are neither
// functions (followed by '('), keywords, nor label lists of by/without/on/ignoring.
const KEYWORDS = new Set([
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan',
  // aggregation operators, which may be followed by `by (...)` instead of '('
  'sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile',
]);
function metricNames(expr) {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '$1')
    .replace(/\[[^\]]*\]/g, '');
  const names = [];
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?/g)) {
    if (m[1] || KEYWORDS.has(m[0].toLowerCase())) continue;
    if (/^\d/.test(m[0])) continue;
    names.push(m[0]);
  }
  return names;
}

const used = new Set();
for (const [where, expr] of queries) {
  if (typeof expr !== 'string' || !expr.trim()) {
    problems.push(`${where}: empty query`);
    continue;
  }
  // label_values(metric, label): the label is not a metric.
  const lv = expr.match(/^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$/);
  const names = metricNames(lv ? lv[1] : expr).filter((n) => !/^\$/.test(n));
  if (!names.length) problems.push(`${where}: names no metric: ${expr}`);
  for (const n of names) {
    used.add(n);
    if (!exposed.has(n)) problems.push(`${where}: ${n} is not exposed by the server (${expr})`);
  }
}

if (problems.length) {
  for (const p of problems) console.log(`FAIL ${p}`);
  console.log(`FAIL grafana dashboard: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`ok   grafana dashboard: ${queries.length} queries, ${used.size} metrics, all exposed by the server's /metrics (${exposed.size} names)`);
