// Ours against the TypeScript reference, in the same run, with the shared benchmark scripts
// (`startup`, `rest`, `transcript`, `memory`, `fanout`: they drive any package with this API
// through its public JS API and print one JSON line each). Every script runs for both packages,
// alternating which goes first each round, and the table gives the ratio of each metric with
// the target the performance issue sets (speed-up > 1: ours is better).
//
//   npm run bench                       # BENCH_DIR and REF_DIR must be set up (see below)
//   BENCH_ROUNDS=2 npm run bench        # medians of two rounds
//   BENCH_ONLY=rest,fanout-paced npm run bench
//
// Setup, once: the scripts live in BENCH_DIR (default: ../shared/bench beside this checkout);
// `npm install` there. REF_DIR is a reference build made by its setup-reference.sh (default:
// BENCH_DIR/ref-build). Knobs are smaller than the scripts' defaults so a whole run takes
// about four minutes here; each script's own env variables still apply.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, printTable } from './report.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ours = path.resolve(here, '..', 'index.mjs');
const benchDir = path.resolve(process.env.BENCH_DIR ?? path.resolve(here, '..', '..', 'shared', 'bench'));
const refDir = path.resolve(process.env.REF_DIR ?? path.join(benchDir, 'ref-build'));
const rounds = Number(process.env.BENCH_ROUNDS ?? 1);
const only = process.env.BENCH_ONLY?.split(',');

function need(ok, why) {
  if (!ok) {
    console.error(`npm run bench: ${why}`);
    process.exit(2);
  }
}
need(fs.existsSync(path.join(benchDir, 'fanout.mjs')), `no benchmark scripts in ${benchDir} (set BENCH_DIR)`);
need(fs.existsSync(path.join(benchDir, 'node_modules', 'autocannon')), `run \`npm install\` in ${benchDir} first`);
need(fs.existsSync(path.join(refDir, 'backend', 'dist', 'index.js')), `no reference build in ${refDir}: run \`bash ${path.join(benchDir, 'setup-reference.sh')} <agent-runtime git dir> ${refDir}\` or set REF_DIR`);

const lower = (ref, us) => ref / us; // time, CPU, memory: the reference's over ours
const higher = (ref, us) => us / ref; // throughput: ours over the reference's
const ep = (name) => (r) => r.results.autocannon?.[name]?.rps;
const size = (mb, key) => (r) => r.results.find((x) => x.mb === mb)?.[key];
const first = (key) => (r) => r.results[0]?.[key];

// [name, script, env, metrics: [label, pick(result line), better, target speed-up]]
const BENCHES = [
  ['startup', 'startup.mjs', { STARTUP_REPEATS: '3' }, [['start to first /health, ms', (r) => r.results.healthMs, lower, 1]]],
  ['rest', 'rest.mjs', { REST_TOOLS: 'autocannon', REST_DURATION_S: '5', REST_CREATE_FIXED: '500' }, [
    ['GET /health req/s', ep('health'), higher, 1],
    ['GET /api/sessions (100) req/s', ep('list_sessions_100'), higher, 1.5],
    ['GET /api/sessions/:id req/s', ep('get_loaded_session'), higher, 1],
    ['POST /api/sessions req/s', ep('create_session'), higher, 1],
    ['POST /api/sessions fixed req/s', ep('create_session_fixed'), higher, 1],
  ]],
  ['transcript', 'transcript.mjs', {}, [
    ['1 MB load + first state, ms', size(1, 'loadPlusStateMs'), lower, 1],
    ['10 MB load + first state, ms', size(10, 'loadPlusStateMs'), lower, 1],
    ['50 MB load + first state, ms', size(50, 'loadPlusStateMs'), lower, 5],
    ['50 MB GET /api/sessions/:id, ms', size(50, 'httpGetMs'), lower, 3],
    ['50 MB peak RSS growth in load, MB', size(50, 'peakRssLoadDeltaMB'), lower, 1],
  ]],
  ['memory', 'memory.mjs', { MEMORY_SESSIONS: '1000', MEMORY_CONNECTIONS: '500' }, [
    ['RSS per loaded session, KB', (r) => r.results.sessions?.rssPerSessionKB, lower, 1],
    ['RSS per Socket.IO connection, KB', (r) => r.results.connections?.rssPerConnectionKB, lower, 1],
  ]],
  ['fanout-paced', 'fanout.mjs', { FANOUT_RATE: '20', FANOUT_N: '1000', FANOUT_M: '400' }, [
    ['1000 clients @20/s: CPU µs per delivery', first('serverCpuUsPerDelivery'), lower, 3],
    ['1000 clients @20/s: p99 ms', first('latencyP99Ms'), lower, 1],
  ]],
  ['fanout-paced-200', 'fanout.mjs', { FANOUT_RATE: '200', FANOUT_N: '100', FANOUT_M: '2000' }, [
    ['100 clients @200/s: CPU µs per delivery', first('serverCpuUsPerDelivery'), lower, 3],
    ['100 clients @200/s: p99 ms', first('latencyP99Ms'), lower, 1],
  ]],
  ['fanout-unpaced', 'fanout.mjs', { FANOUT_N: '100', FANOUT_M: '20000' }, [
    ['100 clients unpaced: CPU µs per delivery', first('serverCpuUsPerDelivery'), lower, 8],
    ['100 clients unpaced: p99 ms', first('latencyP99Ms'), lower, 0.5],
    ['100 clients unpaced: peak RSS MB', first('serverRssPeakMB'), lower, 1],
  ]],
].filter(([name]) => !only || only.includes(name));

/** One script for one package: its JSON line, or null (the reason goes to stderr). */
function run(script, env, module) {
  const r = spawnSync(process.execPath, [script], {
    cwd: benchDir,
    env: { ...process.env, ...env, REF_DIR: refDir, RUNTIME_MODULE: module ?? '' },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 20 * 60_000,
  });
  const line = r.stdout?.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (r.status !== 0 || !line) {
    console.error(`${script} (${module ?? 'reference'}) failed: exit ${r.status}\n${(r.stderr ?? '').slice(-2000)}`);
    return null;
  }
  return JSON.parse(line);
}

const samples = new Map(); // label -> { ref: [], ours: [] }
for (let round = 0; round < rounds; round++) {
  for (const [name, script, env, metrics] of BENCHES) {
    const order = round % 2 ? ['ours', 'ref'] : ['ref', 'ours'];
    for (const who of order) {
      process.stderr.write(`round ${round + 1}/${rounds}: ${name} (${who})\n`);
      const line = run(script, env, who === 'ours' ? ours : undefined);
      for (const [label, pick] of metrics) {
        const s = samples.get(label) ?? { ref: [], ours: [] };
        let v = null;
        try {
          v = line ? pick(line) : null;
        } catch {}
        s[who].push(v);
        samples.set(label, s);
      }
    }
  }
}

const rows = [['metric', 'reference', 'ours', 'speed-up', 'target', '']];
let missed = 0;
for (const [, , , metrics] of BENCHES) {
  for (const [label, , better, target] of metrics) {
    const s = samples.get(label);
    const ref = median(s.ref);
    const us = median(s.ours);
    const ratio = Number.isFinite(ref) && us > 0 ? better(ref, us) : NaN;
    const met = ratio >= target;
    if (!met) missed++;
    const fmt = (v) => (!Number.isFinite(v) ? 'n/a' : v >= 100 ? v.toFixed(0) : v.toFixed(2));
    rows.push([label, fmt(ref), fmt(us), Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : 'n/a', `>= ${target}x`, met ? 'met' : 'MISSED']);
  }
}
printTable(rows);
console.log(`\n${rounds} round(s), medians; speed-up = reference / ours for times, CPU and memory, ours / reference for req/s.`);
console.log(`${missed} of ${rows.length - 1} targets missed.`);
