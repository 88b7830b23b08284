// What the model proxy costs: the same turns with the proxy on (the default: the sandbox gets
// ANTHROPIC_BASE_URL=http://127.0.0.1:<proxy> and a session token, the proxy puts the real key on
// and forwards to the upstream) and with `modelProxy: false` (the sandbox talks to the upstream
// directly), in the same run. The upstream is the bundled fake Messages API, which answers at once.
// The issue's targets: the proxy adds < 2 ms to time to first token and < 5% CPU per streamed
// token relative to the agent's own work.
//
// Measured (claude-agent-sdk, local sandbox, the real Claude Agent SDK / CLI):
//   1. Latency of warm turns (the runner already started; each session has one unmeasured
//      warm-up turn), the configs' turns alternating (on, off, off, on, ...): time to first token
//      (sendMessage -> the first `session:block:delta`, or the first `session:block:start` of a
//      model block if earlier) and the whole turn; and tool turns ("run: true": a Bash call, then
//      a second model call right after the tool result): sendMessage -> tool result, tool result
//      -> the model's next output, the whole turn.
//   2. CPU per streamed token over a whole turn with a long answer: a burst ("tell me a story
//      slowly 0ms <k> words": k one-word text deltas written by the fake all at once, so they
//      travel in large chunks) and a paced one (one word per write, PROXY_PACED_MS apart: each
//      token its own chunk, as from the real API). CPU of the runtime's Node process (where the
//      proxy runs, in its Rust threads: process.cpuUsage() covers every thread) and of the
//      agent's own processes (every descendant of the runtime process: bubblewrap, the runner,
//      the claude CLI; utime+stime+cutime+cstime from /proc, 10 ms ticks). The proxy's cost is
//      runtime CPU on - off, per token and as % of the agent's CPU per token.
//   3. The proxy alone (no agent, no runtime event work): while the sessions are loaded, the
//      proxy-on sandbox's proxy URL and token are read from its /proc/<pid>/environ and this
//      process sends raw streaming POST /v1/messages (keep-alive connections, like the SDK's)
//      through the proxy and directly to the fake, alternating: short answers back-to-back and
//      PROXY_RAW_GAP_MS apart (time to the first content_block_delta, whole response), then the
//      burst and paced answers (runtime-process CPU per token; while the client goes direct the
//      runtime idles, which is the baseline; gaps between deltas' arrivals).
//
// Processes: this one (the schedule, the raw client, the table), the fake model, and one runtime
// per config (both live for the whole run, each with one loaded session per round; only one works
// at a time). Medians over all samples; the order of on / off flips every round.
//
//   node benches/proxy.mjs            (or: npm run bench:proxy)
//
// Env: RUNS (3 rounds), PROXY_TTFB_TURNS (8 short turns per config and round), PROXY_TOOL_TURNS
// (6), PROXY_WORDS (20000 words in the burst answer), PROXY_PACED_WORDS (2000; 0 = no paced
// answers), PROXY_PACED_MS (1), PROXY_RAW_SHORT (10 short raw requests per path, kind and round),
// PROXY_RAW_GAP_MS (300), PROXY_JSON (write every sample to this file), LOG_LEVEL (warn, the
// runtimes'). Needs the addon built and bubblewrap, like the tests. A default run takes about
// 1.5 minutes. Exit code 1 when a turn or request failed.
import { fork } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { num } from './env.mjs';
import { fixed as f, ms, printTable, quantile } from './report.mjs';
import { localRuntime } from './local.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(SCRIPT), '..');
const MODEL_BLOCKS = new Set(['assistant_text', 'tool_use', 'thinking']);
const TICK_US = 1e6 / 100; // /proc stat times are in clock ticks (USER_HZ, 100 on Linux)

if (process.argv[2] === '--fake') await fakeMain();
else if (process.argv[2] === '--runtime') await runtimeMain(process.argv[3], process.argv[4]);
else await parent();

// ---------------------------------------------------------------------------------------------
// IPC: the parent calls { id, cmd, args } and gets { id, ok, result | error }.

function serve(handlers, gone = () => process.exit(1)) {
  process.on('message', async ({ id, cmd, args }) => {
    try {
      process.send({ id, ok: true, result: await handlers[cmd](args ?? {}) });
    } catch (e) {
      process.send({ id, ok: false, error: String(e?.stack ?? e) });
    }
  });
  process.on('disconnect', gone);
  process.send({ ready: true });
}

function child(args, name) {
  const proc = fork(SCRIPT, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const pending = new Map();
  let next = 0;
  let ready;
  const readyP = new Promise((resolve, reject) => (ready = { resolve, reject }));
  proc.on('message', (m) => {
    if (m.ready) return ready.resolve();
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    m.ok ? p.resolve(m.result) : p.reject(new Error(`${name}: ${m.error}`));
  });
  proc.on('exit', (code, sig) => {
    const err = new Error(`${name} exited (${sig ?? code})`);
    ready.reject(err);
    for (const p of pending.values()) p.reject(err);
  });
  return {
    proc,
    name,
    ready: readyP,
    call: (cmd, a, ms = 300_000) =>
      new Promise((resolve, reject) => {
        const id = next++;
        const t = setTimeout(() => (pending.delete(id), reject(new Error(`${name}: ${cmd} timed out`))), ms);
        pending.set(id, { resolve: (v) => (clearTimeout(t), resolve(v)), reject: (e) => (clearTimeout(t), reject(e)) });
        proc.send({ id, cmd, args: a });
      }),
  };
}

/** This process's CPU time (every thread), µs. */
function cpuUs() {
  const c = process.cpuUsage();
  return c.user + c.system;
}

// ---------------------------------------------------------------------------------------------
// The fake model, alone in its process (its CPU is reported for reference).

async function fakeMain() {
  const { startFakeAnthropic } = await import(pathToFileURL(path.join(ROOT, 'fake-model', 'fake-anthropic.mjs')).href);
  const fake = await startFakeAnthropic();
  serve({
    url: () => fake.url,
    cpu: () => cpuUs(),
    // Messages requests so far, and forget their bodies (the long answers' history adds up).
    requests: () => {
      const n = fake.requests.filter((r) => r.path === '/v1/messages').length;
      fake.requests.length = 0;
      return n;
    },
  });
}

// ---------------------------------------------------------------------------------------------
// A runtime (proxy on or off) with at most one loaded session.

async function runtimeMain(mode, modelUrl) {
  const config = mode === 'off' ? { modelProxy: false } : {};
  const { rt, clear, removeRoot } = await localRuntime({ dir: ROOT, prefix: 'proxy', modelUrl, config });
  const bail = () => {
    removeRoot();
    process.exit(1);
  };
  process.on('SIGTERM', bail);
  process.on('SIGINT', bail);

  // The turn being timed: the first model output, and the deltas.
  let pending = null;
  const first = (kind) => {
    const now = performance.now();
    if (pending.first === null) {
      pending.first = now;
      pending.firstKind = kind;
    }
    if (pending.toolResult !== null && pending.afterTool === null) pending.afterTool = now - pending.toolResult;
  };
  const toolResult = ({ sessionId, block }) => {
    if (pending && sessionId === pending.sessionId && block?.type === 'tool_result' && pending.toolResult === null) pending.toolResult = performance.now();
  };
  rt.eventBus.on('session:block:start', ({ sessionId, block }) => {
    if (pending && sessionId === pending.sessionId && MODEL_BLOCKS.has(block?.type)) first(`${block.type} start`);
    toolResult({ sessionId, block });
  });
  rt.eventBus.on('session:block:complete', toolResult);
  rt.eventBus.on('session:block:delta', ({ sessionId }) => {
    if (pending && sessionId === pending.sessionId) {
      pending.deltas++;
      first('delta');
    }
  });
  rt.eventBus.on('session:error', ({ sessionId, error }) => {
    if (pending && sessionId === pending.sessionId) pending.errors.push(error?.message ?? String(error));
  });

  let session = null;
  const turn = async (prompt) => {
    const p = (pending = { sessionId: session.sessionId, first: null, firstKind: null, toolResult: null, afterTool: null, deltas: 0, errors: [] });
    const c0 = cpuUs();
    const a0 = agentCpuUs(process.pid);
    const t0 = performance.now();
    try {
      await session.sendMessage(prompt);
    } catch (e) {
      p.errors.push(e?.message ?? String(e));
    }
    const t1 = performance.now();
    const c1 = cpuUs();
    const a1 = agentCpuUs(process.pid);
    pending = null;
    if (p.first === null && !p.errors.length) p.errors.push('the turn ended without model output');
    return { ttfb: p.first === null ? null : p.first - t0, firstKind: p.firstKind, toolAt: p.toolResult === null ? null : p.toolResult - t0, afterTool: p.afterTool, turnMs: t1 - t0, runtimeCpuUs: c1 - c0, agentCpuUs: a1 - a0, deltas: p.deltas, errors: p.errors };
  };

  serve({
    open: async () => {
      session = await rt.sessionManager.createSession({ agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
      const warm = await turn('hello, this is the warm-up turn');
      return { sessionId: session.sessionId, errors: warm.errors };
    },
    turn: ({ prompt }) => turn(prompt),
    // The sandbox's view of the model API, from a sandbox process's environment.
    creds: () => {
      for (const pid of descendants(process.pid)) {
        let env;
        try {
          env = Object.fromEntries(fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
        } catch {
          continue;
        }
        if (env.ANTHROPIC_BASE_URL && env.ANTHROPIC_API_KEY) return { pid, baseUrl: env.ANTHROPIC_BASE_URL, apiKey: env.ANTHROPIC_API_KEY };
      }
      throw new Error('no sandbox process with ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY');
    },
    cpu: () => cpuUs(),
    close: async () => {
      if (session) await rt.sessionManager.unloadSession(session.sessionId);
      session = null;
      clear();
    },
    exit: async () => {
      await rt.shutdown().catch(() => {});
      removeRoot();
      setImmediate(() => process.exit(0));
    },
  }, bail);
}

/** One /proc/<pid>/stat: ppid and CPU (own + reaped children), µs. */
function stat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state): ppid = field 4, utime..cstime = fields 14..17.
    return { ppid: Number(f[1]), own: (Number(f[11]) + Number(f[12])) * TICK_US, reaped: (Number(f[13]) + Number(f[14])) * TICK_US };
  } catch {
    return null;
  }
}

function descendants(root) {
  const byParent = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const s = stat(d);
    if (s) byParent.set(s.ppid, [...(byParent.get(s.ppid) ?? []), Number(d)]);
  }
  const out = [];
  const walk = (p) => (byParent.get(p) ?? []).forEach((c) => (out.push(c), walk(c)));
  walk(root);
  return out;
}

/** CPU of every process below `root`, live or reaped (a process that exits mid-turn moves from
 *  its own count to its parent's reaped count, so differences stay right). */
function agentCpuUs(root) {
  let sum = stat(root)?.reaped ?? 0;
  for (const pid of descendants(root)) {
    const s = stat(pid);
    if (s) sum += s.own + s.reaped;
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// The raw client: one streaming POST /v1/messages; time to the first content_block_delta and the
// gaps between deltas' arrivals.

function rawStream(agent, baseUrl, apiKey, prompt) {
  const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 32000, stream: true, messages: [{ role: 'user', content: prompt }] });
  const u = new URL('/v1/messages', baseUrl);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request(
      { agent, host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-api-key': apiKey, 'anthropic-version': '2023-06-01' } },
      (res) => {
        const head = performance.now() - t0;
        let first = null;
        let last = null;
        let deltas = 0;
        let carry = '';
        const gaps = [];
        res.setEncoding('utf8');
        res.on('data', (c) => {
          const now = performance.now();
          const lines = (carry + c).split('\n');
          carry = lines.pop();
          for (const l of lines) {
            if (l !== 'event: content_block_delta') continue;
            deltas++;
            first ??= now;
            if (last !== null) gaps.push(now - last);
            last = now;
          }
        });
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode} from ${baseUrl}`));
          const end = performance.now();
          resolve({ head, ttfb: first === null ? null : first - t0, ms: end - t0, tail: last === null ? null : end - last, deltas, gapP99: quantile(gaps, 0.99), gapMax: gaps.length ? Math.max(...gaps) : NaN });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------------------------
// Parent: the schedule and the table.

async function parent() {
  const RUNS = Math.max(1, Math.floor(num('RUNS', 3)));
  const TURNS = Math.max(1, Math.floor(num('PROXY_TTFB_TURNS', 8)));
  const TOOL_TURNS = Math.floor(num('PROXY_TOOL_TURNS', 6));
  const WORDS = Math.max(1, Math.floor(num('PROXY_WORDS', 20000)));
  const SHORT = Math.floor(num('PROXY_RAW_SHORT', 10));
  const GAP_MS = num('PROXY_RAW_GAP_MS', 300);
  const PACED_WORDS = Math.floor(num('PROXY_PACED_WORDS', 2000));
  const PACED_MS = num('PROXY_PACED_MS', 1);
  const log = (s) => process.stderr.write(`[proxy] ${s}\n`);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const kids = [];
  const stopAll = () => kids.forEach((c) => c.proc.exitCode === null && c.proc.kill('SIGTERM'));
  process.on('SIGINT', () => (stopAll(), process.exit(130)));
  process.on('SIGTERM', () => (stopAll(), process.exit(143)));

  const fake = child(['--fake'], 'fake model');
  kids.push(fake);
  await fake.ready;
  const fakeUrl = await fake.call('url');
  const rts = { on: child(['--runtime', 'on', fakeUrl], 'runtime (proxy on)'), off: child(['--runtime', 'off', fakeUrl], 'runtime (proxy off)') };
  kids.push(rts.on, rts.off);
  await Promise.all([rts.on.ready, rts.off.ready]);
  const streams = [
    ['burst', `tell me a story slowly 0ms ${WORDS} words`, WORDS],
    ['paced', `tell me a story slowly ${PACED_MS}ms ${PACED_WORDS} words`, PACED_WORDS],
  ].filter(([, , n]) => n > 0);
  log(
    `${RUNS} round(s); per config and round: 1 warm-up turn, ${TURNS} warm turns, ${TOOL_TURNS} tool turns, a burst turn (${WORDS} words)` +
      `${PACED_WORDS ? ` and a paced one (${PACED_WORDS} words, ${PACED_MS} ms apart)` : ''}; raw, per path: ${SHORT} short back-to-back, ${SHORT} short ${GAP_MS} ms apart, ` +
      `the same streams; fake model at ${fakeUrl}`,
  );

  const pair = () => ({ on: [], off: [], diffs: [] });
  const S = {
    ttfb: pair(),
    turn: pair(),
    toolAt: pair(),
    afterTool: pair(),
    toolTurn: pair(),
    firstKinds: {},
    reqPerTurn: { on: [], off: [] },
    reqPerToolTurn: { on: [], off: [] },
    long: Object.fromEntries(streams.map(([k]) => [k, { on: [], off: [] }])),
    raw: { short: { proxy: [], direct: [] }, spaced: { proxy: [], direct: [] }, ...Object.fromEntries(streams.map(([k]) => [k, { proxy: [], direct: [] }])) },
  };
  const failures = [];
  const fail = (what, errs) => errs.length && failures.push(`${what}: ${errs.join('; ')}`);
  const t0 = Date.now();
  const since = () => `${Math.round((Date.now() - t0) / 1000)} s`;
  let sandboxUrls = {};

  try {
    for (let run = 0; run < RUNS; run++) {
      const order = run % 2 ? ['off', 'on'] : ['on', 'off'];
      const R = `round ${run + 1}/${RUNS}`;
      for (const m of order) fail(`${R} ${m} warm-up`, (await rts[m].call('open')).errors);
      const creds = {};
      for (const m of order) creds[m] = await rts[m].call('creds');
      sandboxUrls = { on: creds.on.baseUrl, off: creds.off.baseUrl };
      if (creds.on.baseUrl === fakeUrl || !creds.on.apiKey.startsWith('arn-')) throw new Error(`the proxy-on sandbox talks to ${creds.on.baseUrl} directly: is the proxy running?`);
      if (creds.off.baseUrl !== fakeUrl) throw new Error(`the proxy-off sandbox talks to ${creds.off.baseUrl}, not the fake model`);
      await fake.call('requests');

      // 1. Short turns, alternating on/off: time to first token; tool turns: the model's next
      //    output after the tool result (a second call right after the first).
      const alternate = async (n, prompt, take) => {
        for (let i = 0; i < n; i++) {
          const got = {};
          for (const m of (run + i) % 2 ? ['off', 'on'] : ['on', 'off']) {
            const r = await rts[m].call('turn', { prompt: prompt(i) });
            const reqs = await fake.call('requests');
            if (r.errors.length) fail(`${R} ${m} "${prompt(i)}"`, r.errors);
            else got[m] = take(r, reqs, m);
          }
          for (const [k, v] of Object.entries(got.on ?? {})) if (got.off?.[k] !== undefined) S[k].diffs.push(v - got.off[k]);
        }
      };
      await alternate(TURNS, (i) => `hello, this is turn ${i + 1}`, (r, reqs, m) => {
        S.ttfb[m].push(r.ttfb);
        S.turn[m].push(r.turnMs);
        S.reqPerTurn[m].push(reqs);
        S.firstKinds[r.firstKind] = (S.firstKinds[r.firstKind] ?? 0) + 1;
        return { ttfb: r.ttfb, turn: r.turnMs };
      });
      await alternate(TOOL_TURNS, () => 'run: true', (r, reqs, m) => {
        S.reqPerToolTurn[m].push(reqs);
        S.toolTurn[m].push(r.turnMs);
        if (r.afterTool === null) return fail(`${R} ${m} tool turn`, ['no tool result followed by model output']), {};
        S.afterTool[m].push(r.afterTool);
        S.toolAt[m].push(r.toolAt);
        return { toolAt: r.toolAt, afterTool: r.afterTool, toolTurn: r.turnMs };
      });
      log(`${R} ttfb median on ${ms(quantile(S.ttfb.on.slice(-TURNS), 0.5))} ms, off ${ms(quantile(S.ttfb.off.slice(-TURNS), 0.5))} ms; after tool result on ${ms(quantile(S.afterTool.on.slice(-TOOL_TURNS), 0.5))} ms, off ${ms(quantile(S.afterTool.off.slice(-TOOL_TURNS), 0.5))} ms (${since()})`);

      // 2. Long answers: CPU per token.
      for (const [kind, prompt, words] of streams) {
        for (const m of order) {
          const f0 = await fake.call('cpu');
          const r = await rts[m].call('turn', { prompt });
          const f1 = await fake.call('cpu');
          await fake.call('requests');
          if (r.errors.length) fail(`${R} ${m} ${kind} turn`, r.errors);
          else S.long[kind][m].push({ ...r, words, fakeCpuUs: f1 - f0 });
          log(`${R} ${kind} ${m.padEnd(3)} ${(r.turnMs / 1000).toFixed(1)} s, ${r.deltas} deltas, runtime ${(r.runtimeCpuUs / words).toFixed(1)} µs/token, agent ${(r.agentCpuUs / words).toFixed(1)} µs/token (${since()})`);
        }
      }

      // 3. The proxy alone: raw requests through the proxy-on runtime's proxy vs directly.
      const paths = { proxy: [creds.on.baseUrl, creds.on.apiKey], direct: [fakeUrl, 'fake-key'] };
      const agents = { proxy: new http.Agent({ keepAlive: true }), direct: new http.Agent({ keepAlive: true }) };
      const porder = run % 2 ? ['direct', 'proxy'] : ['proxy', 'direct'];
      try {
        for (const p of porder) await rawStream(agents[p], ...paths[p], 'hello');
        for (const [kind, gap] of [['short', 0], ['spaced', GAP_MS]]) {
          for (let i = 0; i < SHORT; i++) {
            for (const p of i % 2 ? [...porder].reverse() : porder) {
              if (gap) await sleep(gap);
              const r = await rawStream(agents[p], ...paths[p], `hello number ${i}`);
              S.raw[kind][p].push(r);
            }
          }
        }
        for (const [kind, prompt, words] of streams) {
          for (const p of porder) {
            await sleep(GAP_MS);
            const c0 = await rts.on.call('cpu');
            const f0 = await fake.call('cpu');
            const u0 = cpuUs();
            const r = await rawStream(agents[p], ...paths[p], prompt);
            const u1 = cpuUs();
            const c1 = await rts.on.call('cpu');
            const f1 = await fake.call('cpu');
            if (r.deltas !== words) fail(`${R} raw ${kind} ${p}`, [`${r.deltas} of ${words} deltas`]);
            S.raw[kind][p].push({ ...r, words, runtimeCpuUs: c1 - c0, fakeCpuUs: f1 - f0, clientCpuUs: u1 - u0 });
          }
        }
      } catch (e) {
        fail(`${R} raw requests`, [e.message]);
      } finally {
        agents.proxy.destroy();
        agents.direct.destroy();
        await fake.call('requests');
      }
      const rawMed = (k, p) => ms(quantile(S.raw[k][p].slice(-SHORT).map((r) => r.ttfb), 0.5));
      log(`${R} raw ttfb median: back-to-back proxy ${rawMed('short', 'proxy')} ms, direct ${rawMed('short', 'direct')} ms; spaced proxy ${rawMed('spaced', 'proxy')} ms, direct ${rawMed('spaced', 'direct')} ms (${since()})`);

      for (const m of order) await rts[m].call('close');
    }
  } finally {
    for (const m of ['on', 'off']) if (rts[m].proc.exitCode === null) await rts[m].call('exit', {}, 60_000).catch(() => rts[m].proc.kill('SIGTERM'));
    fake.proc.kill('SIGTERM');
  }

  // ---- Report ----
  const med = (xs) => quantile(xs.filter((x) => x !== null), 0.5);
  const p90 = (xs) => quantile(xs.filter((x) => x !== null), 0.9);
  const per = (rs, k) => med(rs.map((r) => r[k] / r.words));
  console.log();
  console.log(`sandbox ANTHROPIC_BASE_URL: proxy on ${sandboxUrls.on} (the proxy), off ${sandboxUrls.off} (the fake model)`);
  console.log();
  console.log('1. latency through the agent (claude-agent-sdk, warm runner), ms; on - off: difference of medians [median of adjacent on/off pairs]');
  const lat = [['metric', 'n on/off', 'on med', 'on p90', 'off med', 'off p90', 'on - off', 'model calls/turn']];
  for (const [k, name, reqs] of [['ttfb', 'first token (sendMessage -> first delta)', 'reqPerTurn'], ['turn', 'whole short turn', 'reqPerTurn'], ['toolAt', 'tool turn: sendMessage -> tool result', 'reqPerToolTurn'], ['afterTool', 'tool turn: tool result -> next output', 'reqPerToolTurn'], ['toolTurn', 'whole tool turn ("run: true")', 'reqPerToolTurn']]) {
    const x = S[k];
    lat.push([name, `${x.on.length}/${x.off.length}`, ms(med(x.on)), ms(p90(x.on)), ms(med(x.off)), ms(p90(x.off)), `${sign(med(x.on) - med(x.off))} [${sign(med(x.diffs))}]`, `${f(med(S[reqs].on), 0)}/${f(med(S[reqs].off), 0)}`]);
  }
  printTable(lat, { indent: '   ' });
  console.log(`   target: the proxy adds < 2 ms to time to first token. First output seen as: ${Object.entries(S.firstKinds).map(([k, n]) => `${k} x${n}`).join(', ')}`);
  console.log();

  console.log('2. CPU per streamed token over a whole turn, µs/token (medians over rounds); agent = every process below the runtime (bwrap, runner, claude CLI)');
  const cpu = [['answer', 'proxy', 'n', 'runtime proc', 'agent procs', 'fake model', 'turn s', 'deltas']];
  const agentPer = {};
  for (const [kind, , words] of streams) {
    for (const m of ['on', 'off']) {
      const rs = S.long[kind][m];
      cpu.push([`${kind} ${words}`, m, rs.length, f(per(rs, 'runtimeCpuUs'), 1), f(per(rs, 'agentCpuUs'), 1), f(per(rs, 'fakeCpuUs'), 1), f(med(rs.map((r) => r.turnMs / 1000)), 1), f(med(rs.map((r) => r.deltas)), 0)]);
    }
    agentPer[kind] = med([...S.long[kind].on, ...S.long[kind].off].map((r) => r.agentCpuUs / r.words));
  }
  printTable(cpu, { indent: '   ' });
  for (const [kind] of streams) {
    const { on, off } = S.long[kind];
    const d = per(on, 'runtimeCpuUs') - per(off, 'runtimeCpuUs');
    const pairs = on.map((r, i) => off[i] && (r.runtimeCpuUs - off[i].runtimeCpuUs) / r.words).filter((x) => x !== undefined);
    console.log(`   ${kind}: runtime on - off ${sign(d, 2)} µs/token [per round: ${pairs.map((x) => sign(x, 2)).join(', ')}] = ${sign((d / agentPer[kind]) * 100, 1)}% of the agent's ${f(agentPer[kind], 1)} µs/token; target < 5%`);
  }
  console.log();

  console.log('3. the proxy alone: raw streaming POST /v1/messages from this process (keep-alive), through the proxy vs directly to the fake');
  const tt = [['short answers', 'ms', 'n', 'proxy med', 'proxy p90', 'direct med', 'direct p90', 'proxy - direct']];
  for (const [k, name] of [['short', 'back-to-back'], ['spaced', `${GAP_MS} ms apart`]]) {
    for (const [metric, mname] of [['ttfb', 'first delta'], ['ms', 'whole response']]) {
      const proxy = S.raw[k].proxy.map((r) => r[metric]);
      const direct = S.raw[k].direct.map((r) => r[metric]);
      tt.push([name, mname, `${proxy.length}/${direct.length}`, f(med(proxy), 2), f(p90(proxy), 2), f(med(direct), 2), f(p90(direct), 2), sign(med(proxy) - med(direct), 2)]);
    }
  }
  printTable(tt, { indent: '   ' });
  const rows = [['stream', 'path', 'n', 'runtime µs/tok', 'fake µs/tok', 'client µs/tok', 'wall ms', 'ttfb ms', 'gap p99 ms', 'gap max ms', 'last delta -> end ms']];
  for (const [kind, , words] of streams) {
    for (const p of ['proxy', 'direct']) {
      const rs = S.raw[kind][p];
      rows.push([`${kind} ${words}`, p, rs.length, f(per(rs, 'runtimeCpuUs'), 2), f(per(rs, 'fakeCpuUs'), 2), f(per(rs, 'clientCpuUs'), 2), f(med(rs.map((r) => r.ms)), 0), f(med(rs.map((r) => r.ttfb)), 2), f(med(rs.map((r) => r.gapP99)), 2), f(med(rs.map((r) => r.gapMax)), 2), f(med(rs.map((r) => r.tail)), 2)]);
    }
  }
  printTable(rows, { indent: '   ' });
  for (const [kind] of streams) {
    const c = per(S.raw[kind].proxy, 'runtimeCpuUs') - per(S.raw[kind].direct, 'runtimeCpuUs');
    console.log(`   ${kind}: the proxy's CPU ${f(c, 2)} µs/token (runtime process, proxy - direct) = ${f((c / agentPer[kind]) * 100, 1)}% of the agent's ${f(agentPer[kind], 1)} µs/token for the same answer (section 2)`);
  }

  if (process.env.PROXY_JSON) {
    fs.writeFileSync(process.env.PROXY_JSON, JSON.stringify({ runs: RUNS, words: WORDS, samples: S, failures }, null, 2));
    console.log(`samples written to ${process.env.PROXY_JSON}`);
  }
  if (failures.length) {
    console.log(`\n${failures.length} failure(s) (not in the numbers):`);
    for (const x of failures.slice(0, 20)) console.log(`  ${x}`);
  }
  process.exit(failures.length ? 1 : 0);
}

function sign(x, d = 1) {
  return Number.isFinite(x) ? (x >= 0 ? '+' : '') + x.toFixed(d) : '-';
}

