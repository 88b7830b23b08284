// Soak: many sessions doing turns for a long time against the bundled fake model, with Socket.IO
// clients joining and leaving throughout, through the public JS API only. Samples the Node
// process (RSS, open descriptors, inotify instances) and the sandboxes (processes, directories)
// over time, then checks that they stayed flat after warm-up and that nothing was lost: every
// completed turn's prompt is in the transcript the adapter holds, and every file a turn wrote
// reached the adapter with its content.
//
// Sessions rotate: after SOAK_TURNS_PER_SESSION turns a session is unloaded over REST (final
// sync), checked against the adapter, dropped from it and replaced by a new one, so the data held
// stays constant and any growth is the runtime's, not the workload's.
//
// Env: SOAK_SESSIONS (50), SOAK_MINUTES (10, fractional ok), SOAK_SAMPLE_SECONDS (30),
// SOAK_CONCURRENCY (4 concurrent turns), SOAK_CLIENTS (20 concurrent Socket.IO clients),
// SOAK_TURNS_PER_SESSION (4; 0 = never rotate), SOAK_WARMUP_SECONDS (min(60, 25% of the run)),
// SOAK_TURN_TIMEOUT_SECONDS (180), SOAK_RSS_TOLERANCE (1.25 = +25%), SOAK_FD_TOLERANCE (1.2),
// SOAK_SLACK (8: absolute slack added to the fd / process / inotify limits), LOG_LEVEL (warn).
// Exit code: 0 flat and nothing lost; 1 otherwise (the reasons are printed).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { io } from 'socket.io-client';
import { createAgentRuntime } from '../index.mjs';
import { startFakeAnthropic } from '../fake-model/fake-anthropic.mjs';
import { num } from './env.mjs';

const SESSIONS = Math.max(1, Math.floor(num('SOAK_SESSIONS', 50)));
const MINUTES = num('SOAK_MINUTES', 10);
const SAMPLE_S = Math.max(1, num('SOAK_SAMPLE_SECONDS', 30));
const CONCURRENCY = Math.max(1, Math.floor(num('SOAK_CONCURRENCY', 4)));
const CLIENTS = Math.floor(num('SOAK_CLIENTS', 20));
const TURNS_PER_SESSION = Math.floor(num('SOAK_TURNS_PER_SESSION', 4));
const DURATION_MS = MINUTES * 60_000;
const WARMUP_MS = num('SOAK_WARMUP_SECONDS', Math.min(60, (DURATION_MS / 1000) * 0.25)) * 1000;
const TURN_TIMEOUT_MS = num('SOAK_TURN_TIMEOUT_SECONDS', 180) * 1000;
const RSS_TOL = num('SOAK_RSS_TOLERANCE', 1.25);
const FD_TOL = num('SOAK_FD_TOLERANCE', 1.2);
const SLACK = num('SOAK_SLACK', 8);
const API_KEY = 'soak-key';
const FINE_MS = 2000; // probe interval; each printed row also shows the floor since the last row

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MB = (b) => Math.round(b / 1048576);

// ---- The adapter: in memory, counting every write. ----
const store = new Map(); // sessionId -> { record..., rawTranscript, workspaceFiles: Map(path -> content) }
const writes = { createSessionRecord: 0, updateSessionRecord: 0, saveTranscript: 0, saveWorkspaceFile: 0, deleteSessionFile: 0 };
const PROFILE = { id: 'default', name: 'Soak Agent', systemPrompt: 'You are a helpful assistant.', tools: ['Read', 'Write', 'Edit', 'Bash'] };
const persistence = {
  listAllSessions: async () => [...store.values()].map(({ rawTranscript, workspaceFiles, ...rec }) => rec),
  loadSession: async (id) => {
    const s = store.get(id);
    if (!s) return null;
    const { workspaceFiles, ...rest } = s;
    return { ...rest, workspaceFiles: [...workspaceFiles].map(([p, content]) => ({ path: p, content })) };
  },
  createSessionRecord: async (rec) => {
    writes.createSessionRecord++;
    store.set(rec.sessionId, { ...rec, rawTranscript: undefined, workspaceFiles: new Map() });
  },
  updateSessionRecord: async (id, updates) => {
    writes.updateSessionRecord++;
    const s = store.get(id);
    if (s) Object.assign(s, updates);
  },
  saveTranscript: async (id, raw) => {
    writes.saveTranscript++;
    const s = store.get(id);
    if (s) s.rawTranscript = raw;
  },
  saveWorkspaceFile: async (id, file) => {
    writes.saveWorkspaceFile++;
    store.get(id)?.workspaceFiles.set(file.path, file.content);
  },
  deleteSessionFile: async (id, p) => {
    writes.deleteSessionFile++;
    store.get(id)?.workspaceFiles.delete(p);
  },
  listAgentProfiles: async () => [{ id: PROFILE.id, name: PROFILE.name }],
  loadAgentProfile: async (id) => (id === PROFILE.id ? PROFILE : null),
};

// ---- Probes. ----
const PID = process.pid;
const sandboxRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-soak-'));
const readdir = (d) => {
  try {
    return fs.readdirSync(d);
  } catch {
    return [];
  }
};
function fds() {
  let n = 0;
  let inotify = 0;
  for (const fd of readdir('/proc/self/fd')) {
    n++;
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:inotify') inotify++;
    } catch {}
  }
  return { fds: n, inotify };
}
/** Processes below this one, and processes elsewhere that run in our sandbox root (escaped). */
function processes() {
  const parent = new Map();
  const all = readdir('/proc').filter((d) => /^\d+$/.test(d));
  for (const p of all) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      // The command name may contain spaces and parentheses: fields start after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(p), ppid);
    } catch {}
  }
  let descendants = 0;
  let escaped = 0;
  for (const pid of parent.keys()) {
    if (pid === PID) continue;
    let q = parent.get(pid);
    let seen = 0;
    while (q && q !== PID && seen++ < 64) q = parent.get(q);
    if (q === PID) {
      descendants++;
      continue;
    }
    try {
      const cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
      if (cwd.startsWith(sandboxRoot)) escaped++;
    } catch {}
  }
  return { procs: descendants, escaped };
}
const probe = () => ({ t: Date.now(), rss: process.memoryUsage().rss, ...fds(), ...processes(), dirs: readdir(sandboxRoot).length });

// ---- Runtime, fake model, native listener. ----
const fake = await startFakeAnthropic();
const runtime = await createAgentRuntime({
  persistence,
  logLevel: process.env.LOG_LEVEL ?? 'warn',
  sandbox: {
    provider: 'local',
    root: sandboxRoot,
    env: { ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'fake-key', CLAUDE_CODE_MAX_RETRIES: '0', API_TIMEOUT_MS: '30000' },
  },
});
await runtime.start();
const listener = await runtime.listen({ port: 0, host: '127.0.0.1', apiKey: API_KEY });
const BASE = `http://127.0.0.1:${listener.port}`;
const api = async (method, p, body) => {
  const res = await fetch(BASE + p, {
    method,
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text);
};

// Turn ends: the transcript was saved (session:transcript:changed), or the turn failed.
const waiting = new Map(); // sessionId -> { resolve }
const errors = [];
runtime.eventBus.on('session:transcript:changed', ({ sessionId }) => waiting.get(sessionId)?.resolve('done'));
runtime.eventBus.on('session:error', ({ sessionId, error }) => {
  errors.push({ sessionId, message: error?.message, code: error?.code });
  waiting.get(sessionId)?.resolve('error');
});

// ---- Sessions and turns. ----
const stats = { turns: 0, turnErrors: 0, stuck: 0, retired: 0, created: 0, checkedTurns: 0, checkedFiles: 0 };
const loss = []; // { sessionId, what }
const sessions = []; // { id, turns: [{ prompt, file, content }], busy, retiring, dead }
let seq = 0;

async function newSession() {
  const created = await api('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
  stats.created++;
  const s = { id: created.sessionId, turns: [], busy: false, retiring: false, dead: false, lastUsed: 0 };
  sessions.push(s);
  return s;
}

async function runTurn(s) {
  const n = ++seq;
  const file = `t${n}.txt`;
  const content = `soak-${s.id.slice(0, 8)}-${n}-${Math.random().toString(36).slice(2, 10)}`;
  const prompt = `write ${file} containing ${content}`;
  const ended = new Promise((resolve) => waiting.set(s.id, { resolve }));
  let timer;
  const timeout = new Promise((resolve) => (timer = setTimeout(() => resolve('timeout'), TURN_TIMEOUT_MS)));
  try {
    await api('POST', `/api/sessions/${s.id}/messages`, { content: prompt });
    const how = await Promise.race([ended, timeout]);
    if (how === 'done') {
      s.turns.push({ prompt, file, content });
      stats.turns++;
    } else if (how === 'error') stats.turnErrors++;
    else {
      stats.stuck++;
      s.dead = true; // never touched again: a stuck turn is reported, not retried
    }
  } catch (err) {
    stats.turnErrors++;
    errors.push({ sessionId: s.id, message: String(err.message ?? err) });
  } finally {
    clearTimeout(timer);
    waiting.delete(s.id);
  }
}

/** After unload (which syncs), everything the completed turns produced must be in the adapter. */
function verify(s) {
  const stored = store.get(s.id);
  for (const t of s.turns) {
    stats.checkedTurns++;
    if (!stored?.rawTranscript?.includes(t.prompt)) loss.push({ sessionId: s.id, what: `transcript lacks "${t.prompt}"` });
    stats.checkedFiles++;
    const got = stored?.workspaceFiles.get(t.file);
    if (got === undefined) loss.push({ sessionId: s.id, what: `file ${t.file} never reached the adapter` });
    else if (got.trimEnd() !== t.content) loss.push({ sessionId: s.id, what: `file ${t.file} holds ${JSON.stringify(got.slice(0, 80))}` });
  }
}

async function retire(s) {
  s.retiring = true;
  await api('DELETE', `/api/sessions/${s.id}`);
  verify(s);
  store.delete(s.id);
  sessions.splice(sessions.indexOf(s), 1);
  stats.retired++;
}

let stopping = false;
async function worker() {
  while (!stopping) {
    const idle = sessions.filter((x) => !x.busy && !x.retiring && !x.dead);
    if (!idle.length) {
      await sleep(100);
      continue;
    }
    const s = idle.reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a));
    s.busy = true;
    await runTurn(s);
    s.lastUsed = Date.now();
    s.busy = false;
    if (TURNS_PER_SESSION > 0 && s.turns.length >= TURNS_PER_SESSION && !s.dead && !stopping) {
      try {
        await retire(s);
        await newSession();
      } catch (err) {
        errors.push({ sessionId: s.id, message: `rotation failed: ${err.message}` });
      }
    }
  }
}

// ---- Socket.IO clients joining and leaving. ----
const clientStats = { connected: 0, joins: 0, joinFailures: 0, notFound: 0, events: 0, connectErrors: 0, ackTimeouts: 0 };
const live = new Set();
async function oneClient() {
  const transports = Math.random() < 0.7 ? ['websocket'] : ['polling'];
  const c = io(BASE, { transports, reconnection: false, auth: { token: API_KEY }, timeout: 10_000 });
  live.add(c);
  try {
    await new Promise((resolve, reject) => {
      c.once('connect', resolve);
      c.once('connect_error', reject);
    });
    clientStats.connected++;
    c.onAny(() => clientStats.events++);
    const stayUntil = Date.now() + 1000 + Math.random() * 9000;
    while (Date.now() < stayUntil && !stopping) {
      const pool = sessions.filter((x) => !x.retiring);
      const s = pool[Math.floor(Math.random() * pool.length)];
      if (s) {
        const ack = await c.timeout(10_000).emitWithAck('session:join', s.id);
        clientStats.joins++;
        if (ack?.error === 'Session not found') clientStats.notFound++; // raced a rotation
        else if (!ack?.success) clientStats.joinFailures++;
        await sleep(500 + Math.random() * 2500);
        if (Math.random() < 0.5) await c.timeout(10_000).emitWithAck('session:leave', s.id);
      } else await sleep(500);
    }
  } catch (err) {
    // socket.io-client rejects an unanswered emitWithAck with "operation has timed out".
    if (/timed out/.test(String(err?.message))) clientStats.ackTimeouts++;
    else clientStats.connectErrors++;
  } finally {
    c.close();
    live.delete(c);
  }
}
async function clientLoop(i) {
  await sleep(i * 150);
  while (!stopping) await oneClient();
}

// ---- Run. ----
const fmt = (r) =>
  [
    `${String(Math.round((r.t - started) / 1000)).padStart(6)}s`,
    String(stats.turns).padStart(6),
    `${String(MB(r.rss)).padStart(6)} MB`,
    String(r.fds).padStart(5),
    String(r.procs).padStart(6),
    String(r.inotify).padStart(8),
    String(r.dirs).padStart(5),
    String(r.escaped).padStart(7),
    `  floor: rss ${MB(r.floor.rss)} MB fds ${r.floor.fds} procs ${r.floor.procs} inotify ${r.floor.inotify}`,
  ].join(' ');

console.log(
  `soak: ${SESSIONS} sessions, ${MINUTES} min, sample every ${SAMPLE_S}s, ${CONCURRENCY} concurrent turns, ${CLIENTS} clients, ` +
    `rotate after ${TURNS_PER_SESSION || 'never'} turns, warm-up ${Math.round(WARMUP_MS / 1000)}s; sandbox root ${sandboxRoot}`,
);
const initial = probe();
const started = Date.now();
await Promise.all(Array.from({ length: SESSIONS }, () => newSession()));
const workers = Array.from({ length: CONCURRENCY }, () => worker());
const clients = Array.from({ length: CLIENTS }, (_, i) => clientLoop(i));

console.log('elapsed  turns      rss   fds  procs inotify  dirs escaped');
const rows = []; // { t, rss, fds, procs, inotify, dirs, escaped, floor }
let window = [];
let nextRow = started + SAMPLE_S * 1000;
while (Date.now() - started < DURATION_MS) {
  await sleep(Math.min(FINE_MS, Math.max(0, started + DURATION_MS - Date.now())));
  // The fake model keeps every request for tests; a soak must not measure that.
  fake.requests.length = 0;
  window.push(probe());
  if (Date.now() >= nextRow || Date.now() - started >= DURATION_MS) {
    const floor = {};
    for (const k of ['rss', 'fds', 'procs', 'inotify', 'dirs']) floor[k] = Math.min(...window.map((w) => w[k]));
    const row = { ...window[window.length - 1], floor };
    rows.push(row);
    console.log(fmt(row));
    window = [];
    nextRow += SAMPLE_S * 1000;
  }
}

// ---- Drain: no new turns, finish the running ones, close the clients, unload and check all. ----
stopping = true;
await Promise.all(workers);
await Promise.all(clients);
for (const c of live) c.close();
for (const s of [...sessions]) {
  if (s.dead) continue;
  try {
    await retire(s);
  } catch (err) {
    errors.push({ sessionId: s.id, message: `final unload failed: ${err.message}` });
  }
}
// Sandboxes end asynchronously after unload: wait (bounded) for their processes and watchers to go.
const drainDeadline = Date.now() + 15_000;
let drained = probe();
while ((drained.procs > 0 || drained.escaped > 0 || drained.inotify > initial.inotify) && Date.now() < drainDeadline) {
  await sleep(250);
  drained = probe();
}

// ---- Verdict. ----
const fail = [];
// Warm-up ends after WARMUP_MS and once nearly every session has its sandbox (before that the
// ramp-up itself is growth).
const rampedAt = rows.find((r) => r.floor.dirs >= Math.floor(SESSIONS * 0.9))?.t ?? Infinity;
const post = rows.filter((r) => r.t - started >= WARMUP_MS && r.t >= rampedAt);
console.log('');
if (post.length < 2) {
  console.log(`verdict: not enough samples after warm-up (${post.length}); run longer or sample more often`);
} else {
  const base = post[0].floor;
  const last = post[post.length - 1].floor;
  const ratio = (k) => (base[k] ? last[k] / base[k] : last[k] ? Infinity : 1);
  const checks = [
    ['rss', last.rss <= base.rss * RSS_TOL, `≤ ×${RSS_TOL}`],
    ['fds', last.fds <= base.fds * FD_TOL + SLACK, `≤ ×${FD_TOL} + ${SLACK}`],
    ['procs', last.procs <= base.procs + SLACK, `≤ +${SLACK}`],
    ['inotify', last.inotify <= base.inotify + SLACK, `≤ +${SLACK}`],
    ['dirs', last.dirs <= base.dirs + SLACK, `≤ +${SLACK}`],
  ];
  console.log(`verdict (floor of the first row after warm-up at ${Math.round((post[0].t - started) / 1000)}s vs the last row):`);
  for (const [k, ok, rule] of checks) {
    const show = (v) => (k === 'rss' ? `${MB(v)} MB` : String(v));
    console.log(`  ${k.padEnd(8)} ${show(base[k]).padStart(8)} -> ${show(last[k]).padStart(8)}  ratio ${ratio(k).toFixed(2)}  (${rule}) ${ok ? 'flat' : 'GROWING'}`);
    if (!ok) fail.push(`${k} grew beyond tolerance`);
  }
}
console.log(
  `after drain: procs ${drained.procs}, escaped ${drained.escaped}, sandbox dirs ${drained.dirs}, fds ${drained.fds} (at start ${initial.fds}), ` +
    `inotify ${drained.inotify} (at start ${initial.inotify}), rss ${MB(drained.rss)} MB`,
);
if (drained.procs > 0 || drained.escaped > 0) fail.push(`${drained.procs + drained.escaped} sandbox processes outlived their sessions`);
// One instance is the process-wide shared watcher, which lives as long as the process.
if (drained.inotify > initial.inotify + 1) fail.push(`${drained.inotify - initial.inotify - 1} inotify instances outlived their sessions`);

console.log(
  `turns: ${stats.turns} completed, ${stats.turnErrors} failed, ${stats.stuck} stuck (> ${TURN_TIMEOUT_MS / 1000}s); ` +
    `sessions: ${stats.created} created, ${stats.retired} unloaded and checked`,
);
console.log(`adapter writes: ${Object.entries(writes).map(([k, v]) => `${k} ${v}`).join(', ')}`);
console.log(
  `clients: ${clientStats.connected} connected (${clientStats.connectErrors} connect errors, ${clientStats.ackTimeouts} acks never came), ${clientStats.joins} joins ` +
    `(${clientStats.joinFailures} failed, ${clientStats.notFound} raced a rotation), ${clientStats.events} events received`,
);
console.log(`loss check: ${stats.checkedTurns} transcripts and ${stats.checkedFiles} files checked, ${loss.length} lost`);
for (const l of loss.slice(0, 20)) console.log(`  LOST ${l.sessionId}: ${l.what}`);
if (loss.length) fail.push(`${loss.length} turn outputs lost`);
if (stats.stuck) fail.push(`${stats.stuck} turns never ended`);
if (stats.turnErrors) fail.push(`${stats.turnErrors} turns failed`);
if (clientStats.joinFailures) fail.push(`${clientStats.joinFailures} joins failed`);
const distinct = new Map();
for (const e of errors) distinct.set(e.message, (distinct.get(e.message) ?? 0) + 1);
for (const [m, c] of [...distinct].slice(0, 10)) console.log(`  error ×${c}: ${String(m).slice(0, 300)}`);

listener.close();
await runtime.shutdown();
await fake.close();
fs.rmSync(sandboxRoot, { recursive: true, force: true });
console.log(fail.length ? `FAIL: ${fail.join('; ')}` : 'PASS: flat after warm-up, nothing lost');
process.exit(fail.length ? 1 : 0);
