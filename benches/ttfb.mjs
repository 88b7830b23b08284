// Time to first block: from `session.sendMessage(...)` to the first `session:block:start` of a
// block the model produced (assistant_text, tool_use or thinking; never the user_message block),
// on the local provider against the bundled fake Messages API, for both architectures:
//   - cold: the first turn of a fresh session (the sandbox starts inside the measurement),
//   - warm: the later turns of the same session (its sandbox is already running).
// The whole turn (sendMessage until its promise settles) is reported too.
//
// Two builds in one run: the package this script belongs to (or OURS_DIR) and, when BASE_DIR
// names another checkout with its addon built, that one as the baseline. Each package is loaded
// in its own child process (two addons in one process would clash); one fake model, in this
// process, answers both. Sessions run one at a time, alternating between the builds (the order
// flips every round) so drift on a shared machine hits both alike. Prints median and p90 per
// (architecture, cold/warm) and, with a baseline, the ratio ours/baseline (< 1: ours is faster).
//
//   node benches/ttfb.mjs                                  # our numbers only
//   BASE_DIR=/path/to/other/checkout node benches/ttfb.mjs # ours vs that baseline
//
// Env: TTFB_SESSIONS (3 per architecture and build), TTFB_WARM_TURNS (5 per session),
// TTFB_ARCHS (claude-agent-sdk,opencode), TTFB_WARMUP (1: unmeasured single-turn sessions per
// architecture and build before measuring; 0 = none), TTFB_TURN_TIMEOUT_SECONDS (180),
// TTFB_WARM_POOL (1: warmPool with one session per architecture; each session then starts
// TTFB_POOL_PAUSE_MS, 2000, after the last, as a person's next chat would), TTFB_JSON (write every sample to this file), OURS_DIR (default: this script's checkout),
// BASE_DIR, LOG_LEVEL (warn). Needs each package's addon built (`npm run build`); OpenCode
// needs opencode-ai and rg (see the README). Exit code 1 when any measured turn failed.
import { fork, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { num } from './env.mjs';
import { ms, printTable, quantile } from './report.mjs';
import { localRuntime } from './local.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const HERE = path.resolve(path.dirname(SCRIPT), '..');
const OPENCODE_MODEL = 'anthropic/claude-sonnet-4-5';
const MODEL_BLOCKS = new Set(['assistant_text', 'tool_use', 'thinking']);

if (process.argv[2] === '--child') await child(process.argv[3]);
else await parent();

// ---------------------------------------------------------------------------------------------
// Child: one package, one runtime; runs the sessions the parent asks for.
async function child(dir) {
  const send = (m) => process.send(m);
  const turnTimeoutMs = Number(process.env.TTFB_TURN_TIMEOUT_MS);
  // TTFB_WARM_POOL=1: one warm session per architecture, as createSession below asks for it.
  const warmPool = process.env.TTFB_WARM_POOL === '1'
    ? [
        { architecture: 'claude-agent-sdk', agentProfileRef: 'default' },
        { architecture: 'opencode', agentProfileRef: 'default', sessionOptions: { model: OPENCODE_MODEL } },
      ]
    : undefined;
  const { rt, clear, removeRoot } = await localRuntime({ dir, prefix: 'ttfb', modelUrl: process.env.TTFB_MODEL_URL, config: { warmPool } });
  // Stopped from outside (Ctrl-C, the parent gone): leave no sandbox directory behind (the
  // runtime kills the sandboxes' processes when this process exits).
  const bail = () => {
    removeRoot();
    process.exit(1);
  };
  process.on('SIGTERM', bail);
  process.on('SIGINT', bail);
  process.on('disconnect', bail);

  // One turn at a time: `pending` is the turn being timed.
  let pending = null;
  rt.eventBus.on('session:block:start', ({ sessionId, block }) => {
    if (pending && sessionId === pending.sessionId && pending.first === null && MODEL_BLOCKS.has(block?.type)) {
      pending.first = performance.now();
      pending.firstType = block.type;
    }
  });
  rt.eventBus.on('session:error', ({ sessionId, error }) => {
    if (pending && sessionId === pending.sessionId) pending.errors.push(error?.message ?? String(error));
  });

  const turn = async (session, prompt) => {
    const p = (pending = { sessionId: session.sessionId, first: null, firstType: null, errors: [] });
    let timer;
    let timedOut = false;
    const t0 = performance.now();
    try {
      await Promise.race([
        session.sendMessage(prompt),
        new Promise((_, reject) => (timer = setTimeout(() => (timedOut = true, reject(new Error(`turn timed out after ${turnTimeoutMs} ms`))), turnTimeoutMs))),
      ]);
    } catch (e) {
      p.errors.push(e?.message ?? String(e));
    } finally {
      clearTimeout(timer);
    }
    const end = performance.now();
    pending = null;
    if (p.first === null && !p.errors.length) p.errors.push('the turn ended without a model block');
    return { ttfb: p.first === null ? null : p.first - t0, turn: end - t0, firstType: p.firstType, errors: p.errors, timedOut };
  };

  process.on('message', async (m) => {
    if (m.type === 'exit') {
      process.off('disconnect', bail);
      await rt.shutdown().catch(() => {});
      removeRoot();
      process.exit(0);
    }
    if (m.type !== 'run') return;
    // A person opens a new chat at human pace: the pool has refilled by then.
    if (warmPool) await new Promise((r) => setTimeout(r, num('TTFB_POOL_PAUSE_MS', 2000)));
    const out = { cold: null, warm: [], errors: [] };
    let session;
    try {
      session = await rt.sessionManager.createSession({
        agentProfileRef: 'default',
        architecture: m.arch,
        ...(m.arch === 'opencode' ? { sessionOptions: { model: OPENCODE_MODEL } } : {}),
      });
      for (let i = 0; i <= m.warmTurns; i++) {
        const r = await turn(session, `hello, this is turn ${i + 1}`);
        if (i === 0) out.cold = r;
        else out.warm.push(r);
        // A turn that timed out may still be running: later turns would queue behind it.
        if (r.timedOut) {
          out.errors.push(`the session's remaining ${m.warmTurns - i} turn(s) were skipped after a timeout`);
          break;
        }
      }
    } catch (e) {
      out.errors.push(e?.message ?? String(e));
    }
    if (session) await rt.sessionManager.unloadSession(session.sessionId).catch((e) => out.errors.push(`unload: ${e.message}`));
    clear();
    send({ type: 'result', ...out });
  });
  send({ type: 'ready' });
}

// ---------------------------------------------------------------------------------------------
// Parent: the fake model, the children, the schedule and the table.
async function parent() {
  const SESSIONS = Math.max(1, Math.floor(num('TTFB_SESSIONS', 3)));
  const WARM = Math.floor(num('TTFB_WARM_TURNS', 5));
  const WARMUP = Math.floor(num('TTFB_WARMUP', 1));
  const TURN_TIMEOUT_MS = Math.max(1, num('TTFB_TURN_TIMEOUT_SECONDS', 180)) * 1000;
  const ARCHS = (process.env.TTFB_ARCHS ?? 'claude-agent-sdk,opencode').split(',').map((s) => s.trim()).filter(Boolean);
  for (const a of ARCHS) if (a !== 'claude-agent-sdk' && a !== 'opencode') throw new Error(`TTFB_ARCHS: unknown architecture ${JSON.stringify(a)}`);

  const builds = [{ name: 'ours', dir: path.resolve(process.env.OURS_DIR || HERE) }];
  if (process.env.BASE_DIR) builds.push({ name: 'baseline', dir: path.resolve(process.env.BASE_DIR) });
  for (const b of builds) {
    let addon;
    try {
      addon = createRequire(path.join(b.dir, 'package.json'))(path.join(b.dir, 'binding-name.js')).localBinaryName();
    } catch (e) {
      throw new Error(`${b.dir} does not look like a checkout of agent-runtime-native (${e.message})`);
    }
    if (!fs.existsSync(path.join(b.dir, addon))) throw new Error(`${b.dir}/${addon} is missing: build it first (cd ${b.dir} && npm run build)`);
    b.addonMtime = fs.statSync(path.join(b.dir, addon)).mtime.toISOString().slice(0, 19).replace('T', ' ');
    try {
      const head = execFileSync('git', ['-C', b.dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      const dirty = execFileSync('git', ['-C', b.dir, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      b.rev = head + (dirty ? '+dirty' : '');
    } catch {
      b.rev = '?';
    }
  }

  const { startFakeAnthropic } = await import(pathToFileURL(path.join(HERE, 'fake-model', 'fake-anthropic.mjs')).href);
  const fake = await startFakeAnthropic();

  const children = [];
  const stopAll = () => children.forEach((c) => c.proc.exitCode === null && c.proc.kill('SIGTERM'));
  process.on('SIGINT', () => (stopAll(), process.exit(130)));
  process.on('SIGTERM', () => (stopAll(), process.exit(143)));

  const start = (b) =>
    new Promise((resolve, reject) => {
      const proc = fork(SCRIPT, ['--child', b.dir], {
        cwd: b.dir,
        env: { ...process.env, TTFB_MODEL_URL: fake.url, TTFB_TURN_TIMEOUT_MS: String(TURN_TIMEOUT_MS) },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const c = { b, proc, waiting: null };
      children.push(c);
      proc.on('message', (m) => {
        if (m.type === 'ready') resolve(c);
        else if (m.type === 'result' && c.waiting) {
          const w = c.waiting;
          c.waiting = null;
          w.resolve(m);
        }
      });
      proc.on('exit', (code, sig) => {
        const err = new Error(`${b.name} child (${b.dir}) exited (${sig ?? code})`);
        reject(err);
        c.waiting?.reject(err);
      });
    });
  const run = (c, arch, warmTurns) =>
    new Promise((resolve, reject) => {
      c.waiting = { resolve, reject };
      c.proc.send({ type: 'run', arch, warmTurns });
    });

  const log = (s) => process.stderr.write(`[ttfb] ${s}\n`);
  log(`${ARCHS.join(' + ')}: ${SESSIONS} session(s) x (1 cold + ${WARM} warm) per build${WARMUP ? `, after ${WARMUP} unmeasured warm-up session(s)` : ''}; fake model at ${fake.url}`);
  for (const b of builds) log(`${b.name.padEnd(8)} ${b.dir} (${b.rev}, addon built ${b.addonMtime})`);

  const samples = {}; // `${build}|${arch}|${phase}` -> { ttfb: [], turn: [] }
  const failures = [];
  const add = (build, arch, phase, r) => {
    const k = `${build}|${arch}|${phase}`;
    samples[k] ??= { ttfb: [], turn: [], firstTypes: {} };
    if (r.errors.length || r.ttfb === null) return void failures.push({ build, arch, phase, errors: r.errors });
    samples[k].ttfb.push(r.ttfb);
    samples[k].turn.push(r.turn);
    samples[k].firstTypes[r.firstType] = (samples[k].firstTypes[r.firstType] ?? 0) + 1;
  };

  let exitCode = 0;
  try {
    const kids = [];
    for (const b of builds) kids.push(await start(b));
    const t0 = Date.now();
    for (const arch of ARCHS) {
      for (let w = 0; w < WARMUP; w++) {
        for (const c of kids) {
          const r = await run(c, arch, 0);
          const errs = [...r.errors, ...(r.cold?.errors ?? [])];
          log(`warm-up ${c.b.name} ${arch}: ${errs.length ? `FAILED: ${errs.join('; ')}` : `cold ${ms(r.cold.ttfb)}`}`);
        }
      }
    }
    for (let s = 0; s < SESSIONS; s++) {
      for (const arch of ARCHS) {
        const order = s % 2 ? [...kids].reverse() : kids;
        for (const c of order) {
          const r = await run(c, arch, WARM);
          for (const e of r.errors) failures.push({ build: c.b.name, arch, phase: 'session', errors: [e] });
          if (r.cold) add(c.b.name, arch, 'cold', r.cold);
          for (const x of r.warm) add(c.b.name, arch, 'warm', x);
          const warm = r.warm.filter((x) => x.ttfb !== null).map((x) => x.ttfb);
          log(`round ${s + 1}/${SESSIONS} ${c.b.name.padEnd(8)} ${arch.padEnd(16)} cold ${r.cold ? ms(r.cold.ttfb) : 'failed'}  warm median ${warm.length ? ms(quantile(warm, 0.5)) : '-'} (${Math.round((Date.now() - t0) / 1000)} s)`);
        }
      }
    }
  } finally {
    const alive = children.filter((c) => c.proc.exitCode === null && c.proc.signalCode === null);
    for (const c of alive) if (c.proc.connected) c.proc.send({ type: 'exit' });
    await Promise.all(alive.map((c) => new Promise((r) => (c.proc.exitCode !== null || c.proc.signalCode !== null ? r() : c.proc.once('exit', r)))));
    await fake.close();
  }

  // ---- Report ----
  const base = builds.length > 1;
  console.log();
  for (const [metric, title] of [
    ['ttfb', 'time to first model block (sendMessage -> first assistant_text/tool_use/thinking block:start), ms'],
    ['turn', 'whole turn (sendMessage -> its promise settles), ms'],
  ]) {
    console.log(title);
    const head = ['architecture', 'phase', 'n', 'ours med', 'ours p90'];
    if (base) head.push('base med', 'base p90', 'ratio med', 'ratio p90');
    const rows = [head];
    for (const arch of ARCHS) {
      for (const phase of ['cold', 'warm']) {
        const o = samples[`ours|${arch}|${phase}`]?.[metric] ?? [];
        const row = [arch, phase, base ? `${o.length}/${(samples[`baseline|${arch}|${phase}`]?.[metric] ?? []).length}` : String(o.length), ms(quantile(o, 0.5)), ms(quantile(o, 0.9))];
        if (base) {
          const bs = samples[`baseline|${arch}|${phase}`]?.[metric] ?? [];
          row.push(ms(quantile(bs, 0.5)), ms(quantile(bs, 0.9)), ratio(quantile(o, 0.5), quantile(bs, 0.5)), ratio(quantile(o, 0.9), quantile(bs, 0.9)));
        }
        rows.push(row);
      }
    }
    printTable(rows, { left: 2 });
    console.log();
  }
  if (base) console.log('ratio = ours / baseline (< 1.00 means ours is faster); n = ours/baseline samples');
  const firsts = Object.entries(samples).filter(([, v]) => v.ttfb.length).map(([k, v]) => `${k.replaceAll('|', ' ')}: ${Object.entries(v.firstTypes).map(([t, n]) => `${t} x${n}`).join(', ')}`);
  console.log(`first block types: ${firsts.join('; ')}`);
  if (failures.length) {
    exitCode = 1;
    console.log(`\n${failures.length} failed turn(s) (not in the numbers):`);
    for (const f of failures.slice(0, 20)) console.log(`  ${f.build} ${f.arch} ${f.phase}: ${f.errors.join('; ')}`);
  }
  if (process.env.TTFB_JSON) {
    fs.writeFileSync(process.env.TTFB_JSON, JSON.stringify({ builds, archs: ARCHS, sessions: SESSIONS, warmTurns: WARM, samples, failures }, null, 2));
    console.log(`samples written to ${process.env.TTFB_JSON}`);
  }
  process.exit(exitCode);
}

function ratio(a, b) {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? (a / b).toFixed(2) : '-';
}

