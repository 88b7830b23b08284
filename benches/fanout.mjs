// What the per-session event log costs on Socket.IO fan-out: the same stream of
// `session:block:delta` events to N clients of one session, once with the log on (the default
// config: every session event numbered and kept) and once with `eventLog: false`, in the same run.
// Reports server CPU per delivered event (one event to one client), delivery latency p50/p99 and
// the server's peak RSS, and the ratio log on / log off. The issue's target: the log costs at most
// 15% CPU per delivered event (ratio <= 1.15; judged on the median of same-run on/off pairs).
//
// The events take the real path. Events user code emits on `runtime.eventBus` do NOT: the JS
// glue hands them straight to each Socket.IO server (RealtimeServer.publish -> Hub::publish), past
// the Rust EventBus, so they are never numbered or logged and would show no difference at all.
// Here a real turn (local sandbox, the real Claude Agent SDK) streams text from a fake Messages
// API in this process; each text delta becomes one `session:block:delta` that the core emits on
// its EventBus (numbered and logged when on), and the Socket.IO server fans it out.
//
// Processes: this one (the fake model, the schedule), one server per config (the runtime behind a
// Node http.Server with createWebSocketServer; its process.cpuUsage() is the measured CPU; the
// sandbox's processes are its children, not counted), and one client process per config
// (socket.io-client, websocket transport). Both servers live for the whole run, so every
// measurement is on a warm runner; only one of them streams at a time, and the order of log
// on / off flips every run so drift on a shared machine hits both alike.
//
// The measured window per stream: the model has opened the text block and the server is idle;
// CPU is read, the deltas are streamed, CPU is read again once every client has every delta, and
// only then does the model end its message (so the turn's end, transcript and persistence stay
// out of the window). The window's CPU includes reading the SDK's output, the same for both
// configs and shared by the N clients. Before the clients join, each session streams
// FANOUT_PREFILL events so its log is already at its bound (10,000 events by default) and every
// append also drops the oldest, as in a long session. Latency is model write -> client receive (CLOCK_MONOTONIC stamp in the
// delta text), so it includes the SDK's hops, which are the same for both configs.
//
//   node benches/fanout.mjs            (or: npm run bench:fanout)
//
// Env: FANOUT_N (200 clients), FANOUT_M (400 events per paced stream), FANOUT_RATE (20 events/s),
// FANOUT_BURST_M (2000 events per unpaced stream, written to the SDK all at once: saturation),
// FANOUT_MODES (paced,unpaced), FANOUT_PREFILL (10000), RUNS (3; medians are reported),
// FANOUT_JSON (write every sample to this file), FANOUT_DEADLINE_S (900), LOG_LEVEL (warn, the
// servers'). A default run takes about 2.5 minutes. Needs the addon built and bubblewrap, like the
// tests. Exit code 1 when a stream did not reach every client.
import { fork } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { num } from './env.mjs';
import { fixed as f, median, printTable } from './report.mjs';
import { localRuntime } from './local.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(SCRIPT), '..');
// CLOCK_MONOTONIC µs: the same clock in every process of this machine.
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (process.argv[2] === '--server') await server(process.argv[3]);
else if (process.argv[2] === '--clients') await clients(JSON.parse(process.argv[3]));
else await parent();

// ---------------------------------------------------------------------------------------------
// IPC: the parent calls { id, cmd, args } and gets { id, ok, result | error }; anything else a
// child sends (ready, done, turnEnd) is waited for with `next`.

function serve(handlers) {
  process.on('message', async ({ id, cmd, args }) => {
    try {
      process.send({ id, ok: true, result: await handlers[cmd](args ?? {}) });
    } catch (e) {
      process.send({ id, ok: false, error: String(e?.stack ?? e) });
    }
  });
}

function child(args, name) {
  const proc = fork(SCRIPT, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const pending = new Map();
  const listeners = new Set();
  let next = 0;
  proc.on('message', (m) => {
    if (m.id !== undefined && pending.has(m.id)) {
      const p = pending.get(m.id);
      pending.delete(m.id);
      m.ok ? p.resolve(m.result) : p.reject(new Error(`${name}: ${m.error}`));
    } else for (const l of listeners) l(m);
  });
  proc.on('exit', (code, sig) => {
    for (const p of pending.values()) p.reject(new Error(`${name} exited (${sig ?? code})`));
    for (const l of listeners) l({ type: 'exit', code, sig });
  });
  return {
    proc,
    call: (cmd, a, ms = 120_000) =>
      new Promise((resolve, reject) => {
        const id = next++;
        const t = setTimeout(() => (pending.delete(id), reject(new Error(`${name}: ${cmd} timed out`))), ms);
        pending.set(id, { resolve: (v) => (clearTimeout(t), resolve(v)), reject: (e) => (clearTimeout(t), reject(e)) });
        proc.send({ id, cmd, args: a });
      }),
    /** The next unsolicited message `match` accepts; a child that exits rejects it. */
    next: (match, ms, what) =>
      new Promise((resolve, reject) => {
        const l = (m) => {
          if (m.type === 'exit') return done(reject, new Error(`${name} exited (${m.sig ?? m.code}) while waiting for ${what}`));
          if (match(m)) done(resolve, m);
        };
        const t = setTimeout(() => done(reject, new Error(`${name}: timed out waiting for ${what}`)), ms);
        const done = (f, v) => (clearTimeout(t), listeners.delete(l), f(v));
        listeners.add(l);
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// Server: one runtime (log on or off) with one session, Socket.IO on a Node http.Server the way
// the documented example does it. Nothing listens on runtime.eventBus here: a JS listener would
// add a napi hop per event to both configs.

async function server(log) {
  const config = log === 'off' ? { eventLog: false } : {};
  const { rt, removeRoot } = await localRuntime({ dir: ROOT, prefix: 'fanout', modelUrl: process.env.FANOUT_MODEL_URL, tools: [], config });
  const httpServer = http.createServer((req, res) => res.writeHead(404).end());
  rt.createWebSocketServer(httpServer);
  await new Promise((r) => httpServer.listen(0, '127.0.0.1', r));
  const session = await rt.sessionManager.createSession({ agentProfileRef: 'default', architecture: 'claude-agent-sdk' });

  const bye = async () => {
    await rt.shutdown().catch(() => {});
    removeRoot();
    process.exit(0);
  };
  process.on('disconnect', bye);
  process.on('SIGTERM', bye);

  const status = (k) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) * 1024;
  serve({
    // reset: peak RSS from here on (Linux clear_refs 5), then the CPU reading.
    mark: ({ reset }) => {
      if (reset) fs.writeFileSync('/proc/self/clear_refs', '5');
      return { cpu: process.cpuUsage(), hwm: status('VmHWM'), rss: status('VmRSS') };
    },
    // Answers at once; the turn's end comes as its own message.
    turn: ({ prompt }) => {
      session.sendMessage(prompt).then(
        () => process.send({ type: 'turnEnd', prompt }),
        (e) => process.send({ type: 'turnEnd', prompt, error: String(e?.message ?? e) }),
      );
      return true;
    },
    shutdown: () => void setImmediate(bye),
  });
  process.send({ type: 'ready', port: httpServer.address().port, sessionId: session.sessionId });
}

// ---------------------------------------------------------------------------------------------
// Clients: N websocket connections joined to the session's room. While armed with a tag, they
// count that stream's deltas and keep each one's latency.

async function clients({ url, n, sessionId }) {
  const { io } = await import('socket.io-client');
  const sockets = [];
  let run = null;
  const onDelta = (i, p) => {
    const r = run;
    if (!r || typeof p?.delta !== 'string' || !p.delta.startsWith(r.tag)) return;
    const t = nowUs();
    if (r.total === r.lat.length) {
      const grown = new Float64Array(r.lat.length * 2);
      grown.set(r.lat);
      r.lat = grown;
    }
    r.lat[r.total++] = t - Number(p.delta.slice(p.delta.lastIndexOf(':') + 1, -1));
    r.last = t;
    if (typeof p.seq === 'number') r.numbered++;
    r.bytes ||= JSON.stringify(p).length; // what numbering adds to every frame
    if (++r.counts[i] === r.expect && ++r.doneSockets === n) {
      r.cpu = process.cpuUsage(r.cpu0);
      process.send({ type: 'done', tag: r.tag });
    }
  };
  const connect = (i) =>
    new Promise((resolve, reject) => {
      const s = io(url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 30_000 });
      s.once('connect', () => resolve(s));
      s.once('connect_error', (e) => reject(new Error(`client ${i}: ${e.message}`)));
      s.on('session:block:delta', (p) => onDelta(i, p));
    });
  // A hundred at a time: a burst of thousands of handshakes measures nothing we want.
  for (let i = 0; i < n; i += 100) {
    const batch = await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, k) => connect(i + k)));
    sockets.push(...batch);
  }
  await Promise.all(
    sockets.map(async (s) => {
      const ack = await s.timeout(30_000).emitWithAck('session:join', sessionId);
      if (ack?.success !== true) throw new Error(`join refused: ${JSON.stringify(ack)}`);
    }),
  );
  serve({
    arm: ({ tag, expect }) => {
      run = { tag, expect, counts: new Int32Array(n), doneSockets: 0, total: 0, numbered: 0, last: 0, lat: new Float64Array(1 << 16) };
      run.armed = nowUs();
      run.cpu0 = process.cpuUsage();
      return true;
    },
    // After the window (sorting is not free): counts and latency percentiles of the armed stream.
    report: () => {
      const r = run;
      run = null;
      const lat = r.lat.subarray(0, r.total).sort();
      const q = (x) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(x * lat.length))] : NaN);
      const cpu = r.cpu ?? process.cpuUsage(r.cpu0);
      // Near 100%: the clients, not the server, set the pace (then compare CPU per delivery only).
      const cpuPct = ((cpu.user + cpu.system) / ((r.last || nowUs()) - r.armed)) * 100;
      return { total: r.total, numbered: r.numbered, doneSockets: r.doneSockets, last: r.last, p50: q(0.5), p99: q(0.99), cpuPct, bytes: r.bytes };
    },
  });
  process.send({ type: 'ready' });
}

// ---------------------------------------------------------------------------------------------
// The fake Messages API: a prompt "fanout <tag>" opens a text block and waits for the parent to
// stream; everything else (the SDK's side requests) gets a one-line answer.

function startModel() {
  const waiting = new Map(); // tag -> resolve(stream)
  const sse = (res, type, data) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  const lastUserText = (body) => {
    for (const m of [...(body.messages ?? [])].reverse()) {
      if (m.role !== 'user') continue;
      const t = typeof m.content === 'string' ? [m.content] : (m.content ?? []).filter((b) => b.type === 'text').map((b) => b.text);
      const own = t.filter((x) => !x.trimStart().startsWith('<system-reminder>'));
      if (own.length) return own.at(-1);
    }
    return '';
  };
  const open = (res, body) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const usage = { input_tokens: 10, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
    sse(res, 'message_start', {
      message: { id: `msg_${nowUs()}`, type: 'message', role: 'assistant', model: body.model ?? 'claude-sonnet-4-5', content: [], stop_reason: null, stop_sequence: null, usage },
    });
    sse(res, 'content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
  };
  const close = (res) => {
    sse(res, 'content_block_stop', { index: 0 });
    sse(res, 'message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 20 } });
    sse(res, 'message_stop', {});
    res.end();
  };
  const delta = (tag, i) => `event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: `${tag}:${i}:${nowUs()}|` } })}\n\n`;

  const srv = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://x').pathname;
      if (req.method !== 'POST' || url !== '/v1/messages') {
        const known = url === '/v1/messages/count_tokens';
        return res.writeHead(known || req.method === 'HEAD' ? 200 : 404, { 'content-type': 'application/json' }).end(known ? '{"input_tokens":10}' : '{}');
      }
      let body = {};
      try {
        body = JSON.parse(raw);
      } catch {}
      const tag = /^fanout (\S+)$/.exec(lastUserText(body).trim())?.[1];
      // The turn's own request carries the tools; a side request quoting the prompt does not.
      if (tag && waiting.has(tag) && body.stream && body.tools?.length) {
        const resolve = waiting.get(tag);
        waiting.delete(tag);
        open(res, body);
        return resolve({
          /** All at once (rate 0: one write, the SDK takes them as fast as it can) or paced. */
          async stream(m, rate) {
            if (!rate) return void res.write(Array.from({ length: m }, (_, i) => delta(tag, i)).join(''));
            const t0 = performance.now();
            for (let i = 0; i < m; i++) {
              const due = t0 + (i * 1000) / rate - performance.now();
              if (due > 0) await sleep(due);
              res.write(delta(tag, i));
            }
          },
          end: () => close(res),
        });
      }
      // Side requests (titles and the like): a short answer in the shape asked for.
      const text = body.output_config?.format ? '{"title":"Fan-out bench"}' : 'ok';
      if (!body.stream) {
        return res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({ id: `msg_${nowUs()}`, type: 'message', role: 'assistant', model: body.model, content: [{ type: 'text', text }], stop_reason: 'end_turn', stop_sequence: null, usage: { input_tokens: 10, output_tokens: 5 } }),
        );
      }
      open(res, body);
      sse(res, 'content_block_delta', { index: 0, delta: { type: 'text_delta', text } });
      close(res);
    });
  });
  return new Promise((resolve) =>
    srv.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${srv.address().port}`,
        /** Resolves with the stream of the turn prompted "fanout <tag>" once its request arrives. */
        expect: (tag) => new Promise((r) => waiting.set(tag, r)),
        close: () => (srv.closeAllConnections(), srv.close()),
      }),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Parent: the servers, the schedule, the table.

async function parent() {
  const N = Math.max(1, Math.floor(num('FANOUT_N', 200)));
  const M = Math.max(1, Math.floor(num('FANOUT_M', 400)));
  const RATE = num('FANOUT_RATE', 20);
  const BURST_M = Math.max(1, Math.floor(num('FANOUT_BURST_M', 2000)));
  const RUNS = Math.max(1, Math.floor(num('RUNS', 3)));
  const PREFILL = Math.floor(num('FANOUT_PREFILL', 10_000));
  const MODES = (process.env.FANOUT_MODES ?? 'paced,unpaced').split(',').map((s) => s.trim()).filter(Boolean);
  for (const m of MODES) if (m !== 'paced' && m !== 'unpaced') throw new Error(`FANOUT_MODES: unknown mode ${JSON.stringify(m)}`);
  if (MODES.includes('paced') && !RATE) throw new Error('FANOUT_RATE must be > 0 for the paced mode');
  const shape = { paced: { m: M, rate: RATE }, unpaced: { m: BURST_M, rate: 0 } };
  const log = (s) => process.stderr.write(`[fanout] ${s}\n`);

  const model = await startModel();
  const configs = [];
  const stopAll = () => configs.forEach((c) => [c.server, c.clients].forEach((x) => x?.proc.exitCode === null && x.proc.kill('SIGTERM')));
  process.on('SIGINT', () => (stopAll(), process.exit(130)));
  process.on('SIGTERM', () => (stopAll(), process.exit(143)));
  const deadline = setTimeout(() => (log('took longer than FANOUT_DEADLINE_S; giving up'), stopAll(), process.exit(2)), num('FANOUT_DEADLINE_S', 900) * 1000);
  deadline.unref();

  let seq = 0;
  /** A turn whose model request has arrived and opened its text block. */
  async function turn(c) {
    const tag = `f${String(++seq).padStart(4, '0')}x${c.log === 'on' ? 1 : 0}`; // the same length for both
    const streamReady = model.expect(tag);
    const ended = c.server.next((x) => x.type === 'turnEnd' && x.prompt === `fanout ${tag}`, 180_000, 'the end of the turn');
    ended.catch(() => {}); // awaited later; a failure before that must not go unhandled
    await c.server.call('turn', { prompt: `fanout ${tag}` });
    const stream = await Promise.race([streamReady, ended.then((x) => Promise.reject(new Error(`turn ended before streaming: ${x.error ?? 'no model request'}`)))]);
    return { tag, stream, ended };
  }

  /** One measured stream on one config. */
  async function window(c, { m, rate }) {
    const { tag, stream, ended } = await turn(c);
    await sleep(300); // the block's start has reached the clients; the server is idle
    await c.clients.call('arm', { tag, expect: m });
    const done = c.clients.next((x) => x.type === 'done' && x.tag === tag, 60_000 + (rate ? (m / rate) * 1000 : 0), 'every delta at every client').catch((e) => e);
    const before = await c.server.call('mark', { reset: true });
    const busy0 = cpuTimes();
    const t0 = nowUs();
    await stream.stream(m, rate);
    const failed = await done;
    const after = await c.server.call('mark');
    const busy1 = cpuTimes();
    const r = await c.clients.call('report');
    stream.end();
    const end = await ended;
    const cpuUs = after.cpu.user + after.cpu.system - before.cpu.user - before.cpu.system;
    return {
      log: c.log, m, rate, delivered: r.total, expected: N * m, complete: !(failed instanceof Error) && r.total === N * m,
      numbered: r.numbered, payloadBytes: r.bytes, cpuUs, cpuUsPerDelivery: cpuUs / r.total, p50Ms: r.p50 / 1000, p99Ms: r.p99 / 1000,
      peakRssMB: after.hwm / 1048576, wallMs: (r.last - t0) / 1000, deliveredPerSec: r.total / ((r.last - t0) / 1e6),
      clientCpuPct: r.cpuPct, machineBusyPct: (1 - (busy1.idle - busy0.idle) / (busy1.total - busy0.total)) * 100,
      turnError: end.error ?? null,
    };
  }

  let exitCode = 0;
  const samples = [];
  process.env.FANOUT_MODEL_URL = model.url; // the servers' sandboxes talk to it
  try {
    for (const l of ['on', 'off']) {
      const c = { log: l };
      configs.push(c);
      const t = Date.now();
      c.server = child(['--server', l], `server (log ${l})`);
      const ready = await c.server.next((x) => x.type === 'ready', 120_000, 'the server');
      // Before anyone joins: a long session's log is full, so every append also drops the oldest.
      if (PREFILL) {
        const { stream, ended } = await turn(c);
        await stream.stream(PREFILL, 0);
        stream.end();
        const e = await ended;
        if (e.error) throw new Error(`prefill turn failed: ${e.error}`);
      }
      c.rssAfterPrefill = (await c.server.call('mark', {})).rss / 1048576;
      c.clients = child(['--clients', JSON.stringify({ url: `http://127.0.0.1:${ready.port}`, n: N, sessionId: ready.sessionId })], `clients (log ${l})`);
      await c.clients.next((x) => x.type === 'ready', 120_000, `${N} clients joined`);
      // Unmeasured: a full-size burst, so the first measured one does not pay for buffers and
      // heap growing to their working size (it did, on either config, by up to 2x).
      const w = await window(c, { m: MODES.includes('unpaced') ? BURST_M : 50, rate: 0 });
      log(`log ${l.padEnd(3)}: server up, ${PREFILL} events before (RSS then ${c.rssAfterPrefill.toFixed(0)} MB), ${N} clients joined, warm-up stream ${w.complete ? 'ok' : 'INCOMPLETE'} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    }
    for (let run = 0; run < RUNS; run++) {
      const order = run % 2 ? [...configs].reverse() : configs;
      for (const mode of MODES) {
        for (const c of order) {
          const s = { run, mode, ...(await window(c, shape[mode])) };
          samples.push(s);
          if (!s.complete) exitCode = 1;
          log(
            `run ${run + 1}/${RUNS} ${mode.padEnd(7)} log ${s.log.padEnd(3)} ${s.cpuUsPerDelivery.toFixed(3)} µs CPU/delivery, p50 ${s.p50Ms.toFixed(1)} ms, p99 ${s.p99Ms.toFixed(1)} ms, ` +
              `peak RSS ${s.peakRssMB.toFixed(0)} MB, ${Math.round(s.deliveredPerSec)} deliveries/s, ${s.delivered}/${s.expected} delivered, ${s.numbered} numbered, ` +
              `clients ${s.clientCpuPct.toFixed(0)}% of a core, machine ${s.machineBusyPct.toFixed(0)}% busy` +
              (s.turnError ? `, turn error: ${s.turnError}` : ''),
          );
        }
      }
    }
  } finally {
    await Promise.all(
      configs.flatMap((c) => [c.server, c.clients]).filter((x) => x && x.proc.exitCode === null && x.proc.signalCode === null)
        .map((x) => new Promise((r) => (x.proc.once('exit', r), x.proc.connected ? x.proc.disconnect() : x.proc.kill('SIGTERM')))),
    );
    model.close();
  }

  // ---- Report ----
  const pick = (mode, l, k) => samples.filter((s) => s.mode === mode && s.log === l).map((s) => s[k]);
  const metrics = [['cpuUsPerDelivery', 'CPU µs/delivery', 3], ['p50Ms', 'p50 ms', 1], ['p99Ms', 'p99 ms', 1], ['peakRssMB', 'peak RSS MB', 1], ['deliveredPerSec', 'deliveries/s', 0], ['clientCpuPct', 'clients %core', 0], ['payloadBytes', 'payload B', 0], ['machineBusyPct', 'machine %busy', 0]];
  console.log(`\nsession:block:delta fan-out to ${N} Socket.IO clients (websocket), server CPU per delivered event; median of ${RUNS} run(s)`);
  const rows = [['mode', 'log', 'events', ...metrics.map(([, h]) => h), 'numbered']];
  for (const mode of MODES) {
    for (const l of ['on', 'off']) {
      const { m, rate } = shape[mode];
      const numbered = pick(mode, l, 'numbered').reduce((a, b) => a + b, 0) / Math.max(1, pick(mode, l, 'delivered').reduce((a, b) => a + b, 0));
      rows.push([mode, l, rate ? `${m} @${rate}/s` : `${m} at once`, ...metrics.map(([k, , d]) => f(median(pick(mode, l, k)), d)), `${Math.round(numbered * 100)}%`]);
    }
  }
  printTable(rows, { left: 2 });
  // The headline ratio pairs the two streams of the same run (the order flips every run), so
  // drift between runs (other load, a warming allocator) cancels; the ratio of medians is shown too.
  console.log('\nratio log on / log off');
  const ratioRows = [['mode', 'CPU/delivery, same-run pairs: median [each run]', 'of medians', ...metrics.slice(1, 4).map(([, h]) => h)]];
  const verdict = [];
  for (const mode of MODES) {
    const paired = samples
      .filter((s) => s.mode === mode && s.log === 'on')
      .map((on) => on.cpuUsPerDelivery / samples.find((s) => s.mode === mode && s.log === 'off' && s.run === on.run)?.cpuUsPerDelivery);
    const r = median(paired);
    const ofMedians = (k) => f(median(pick(mode, 'on', k)) / median(pick(mode, 'off', k)), 2);
    ratioRows.push([mode, `${f(r, 2)} [${paired.map((x) => f(x, 2)).join(' ')}]`, ofMedians('cpuUsPerDelivery'), ...metrics.slice(1, 4).map(([k]) => ofMedians(k))]);
    verdict.push(`${mode} ${f(r, 2)} ${r <= 1.15 ? 'holds' : 'MISSED'}`);
  }
  printTable(ratioRows, { left: 2 });
  if (PREFILL) console.log(`\nserver RSS after the ${PREFILL}-event prefill, before any client: ${configs.map((c) => `log ${c.log} ${f(c.rssAfterPrefill, 0)} MB`).join(', ')}`);
  console.log(`\ntarget: the log costs at most 15% CPU per delivered event (same-run ratio <= 1.15): ${verdict.join(', ')}`);
  console.log('numbered = share of delivered deltas carrying a seq (on: 100%, off: 0%, else the path is not the one meant);');
  console.log('clients %core near 100: the client process, not the server, set the pace (latency is then its queue).');
  console.log('machine %busy: all cores, whoever used them; well above what the bench itself uses means other load (noisier numbers).');
  if (process.env.FANOUT_JSON) fs.writeFileSync(process.env.FANOUT_JSON, JSON.stringify({ n: N, m: M, rate: RATE, burstM: BURST_M, runs: RUNS, samples }, null, 2));
  process.exit(exitCode);
}

/** Whole-machine CPU ticks (Linux /proc/stat): busy time that is not ours shows up here. */
function cpuTimes() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3] + (f[4] || 0), total: f.reduce((a, b) => a + b, 0) };
}

