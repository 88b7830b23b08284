// What cluster mode costs (issue #15), measured in one run against a baseline of the same run:
//
//   1. Socket.IO fan-out: N clients joined to one session whose turn streams M text deltas
//      (`session:block:delta`), in three configurations:
//        "1 node"                         Redis + one node, every client on it (the baseline)
//        "3 nodes, clients on the owner"  two more nodes started, every client still on the owner
//        "3 nodes, clients spread"        clients spread evenly over the three nodes, so two thirds
//                                         of the deliveries cross Redis to another node
//      Reported: server CPU per delivered event (one event to one client) of the node processes
//      (read from /proc/<pid>/stat utime+stime: they are not our children's process.cpuUsage()),
//      split into the owner and the other nodes, plus Redis's own; delivery latency p50/p99 from
//      the model writing the delta to the client receiving it (a CLOCK_MONOTONIC stamp in the delta
//      text; every process here reads the same clock), overall and for clients on the owner vs
//      elsewhere. The window starts once the model has opened the text block and the clients are
//      armed, and ends when every client has every delta (turn start, end and persistence are
//      outside it).
//   2. Request latency through a forwarding node vs directly on the owner (3 nodes), alternating:
//      `GET /api/sessions/:id` and `POST /api/sessions/:id/messages` (answered once the message is
//      stored; each turn is let finish before the next request).
//
// Processes: this one (Redis's supervisor, a scripted fake Messages API, the schedule, one watcher
// socket on the owner that tells when a turn ended: the same extra client in every configuration),
// the nodes (__test__/helpers/cluster-node.mjs, REST + Socket.IO on a Node http.Server, local
// sandboxes running the real Claude Agent SDK), and one client process (socket.io-client,
// websocket transport).
//
//   node benches/cluster.mjs
//
// Env: CLUSTER_N (clients, 150), CLUSTER_M (events per stream, 300), CLUSTER_RATE (events/s, 50;
// 0 = all at once), RUNS (3; medians are reported), CLUSTER_MSGS (requests per path, 40),
// CLUSTER_LEASE_TTL_MS (15000), CLUSTER_JSON (write every sample to this file), CLUSTER_DEADLINE_S
// (900), LOG_LEVEL (warn, the nodes'; CLUSTER_TEST_LOGS=1 streams their stderr). Needs redis-server, the addon built (`npm run build`) and
// bubblewrap, like the tests. Exit code 1 when a stream did not reach every client.
import { execFileSync, fork } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { num } from './env.mjs';
import { fixed as f, median, ms, printTable, quantile } from './report.mjs';
import { promptOf, request, SessionWatcher, startNode } from '../__test__/helpers/cluster.mjs';
import { startRedis } from '../__test__/helpers/redis.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(SCRIPT), '..');
const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };
// CLOCK_MONOTONIC µs: the same clock in every process of this machine.
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const sleep = (t) => new Promise((r) => setTimeout(r, t));

// ---------------------------------------------------------------------------------------------
// IPC between the parent and the client process: calls { id, cmd, args } answered with
// { id, ok, result | error }; other messages ({ type: 'done', tag }) are waited for with `next`.

function answerCalls(handlers) {
  process.on('message', async ({ id, cmd, args }) => {
    try {
      process.send({ id, ok: true, result: await handlers[cmd](args ?? {}) });
    } catch (e) {
      process.send({ id, ok: false, error: String(e?.stack ?? e) });
    }
  });
}

function forkClients() {
  const proc = fork(SCRIPT, ['--clients'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const pending = new Map();
  const listeners = new Set();
  let next = 0;
  proc.on('message', (m) => {
    const p = m.id !== undefined && pending.get(m.id);
    if (p) {
      pending.delete(m.id);
      m.ok ? p.resolve(m.result) : p.reject(new Error(`clients: ${m.error}`));
    } else for (const l of listeners) l(m);
  });
  proc.on('exit', (code, sig) => {
    for (const p of pending.values()) p.reject(new Error(`the client process exited (${sig ?? code})`));
    for (const l of listeners) l({ type: 'exit' });
  });
  return {
    proc,
    call: (cmd, args, timeoutMs = 120_000) =>
      new Promise((resolve, reject) => {
        const id = next++;
        const t = setTimeout(() => (pending.delete(id), reject(new Error(`clients: ${cmd} timed out`))), timeoutMs);
        pending.set(id, { resolve: (v) => (clearTimeout(t), resolve(v)), reject: (e) => (clearTimeout(t), reject(e)) });
        proc.send({ id, cmd, args });
      }),
    next: (match, timeoutMs, what) =>
      new Promise((resolve, reject) => {
        const l = (m) => {
          if (m.type === 'exit') done(reject, new Error(`the client process exited while waiting for ${what}`));
          else if (match(m)) done(resolve, m);
        };
        const t = setTimeout(() => done(reject, new Error(`timed out waiting for ${what}`)), timeoutMs);
        const done = (fn, v) => (clearTimeout(t), listeners.delete(l), fn(v));
        listeners.add(l);
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// The client process: N websocket connections spread round-robin over the given node urls, all
// joined to the session. While armed with a tag they count that stream's deltas per socket and
// keep every delivery's latency, by the node the socket is on.

async function clients() {
  const { io } = await import('socket.io-client');
  let sockets = [];
  let run = null;
  const onDelta = (i, p) => {
    const r = run;
    if (!r || typeof p?.delta !== 'string' || !p.delta.startsWith(r.tag)) return;
    const t = nowUs();
    // One stamp per model delta; should several ever arrive merged, each is one delivery.
    for (const m of p.delta.matchAll(/[^:|]+:\d+:(\d+)\|/g)) {
      r.lat[sockets[i].slot].push(t - Number(m[1]));
      r.total++;
      r.counts[i]++;
    }
    r.last = t;
    if (r.counts[i] >= r.expect && !r.finished[i]) {
      r.finished[i] = 1;
      if (++r.doneSockets === sockets.length) process.send({ type: 'done', tag: r.tag });
    }
  };
  const connect = (url, slot, i, sessionId) =>
    new Promise((resolve, reject) => {
      const s = io(url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 30_000 });
      s.once('connect_error', (e) => reject(new Error(`client ${i} on ${url}: ${e.message}`)));
      s.once('connect', async () => {
        try {
          const ack = await s.timeout(30_000).emitWithAck('session:join', { sessionId });
          if (ack?.success !== true) throw new Error(`join refused: ${JSON.stringify(ack)}`);
          resolve(Object.assign(s, { slot }));
        } catch (e) {
          reject(e);
        }
      });
      s.on('session:block:delta', (p) => onDelta(i, p));
    });
  answerCalls({
    /** Connect and join `n` clients, round-robin over `urls`; 50 at a time. */
    async setup({ urls, n, sessionId }) {
      for (let i = 0; i < n; i += 50) {
        const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, k) => connect(urls[(i + k) % urls.length], (i + k) % urls.length, i + k, sessionId)));
        sockets.push(...batch);
      }
      return sockets.length;
    },
    arm({ tag, expect, slots }) {
      run = { tag, expect, counts: new Int32Array(sockets.length), finished: new Uint8Array(sockets.length), doneSockets: 0, total: 0, last: 0, armed: nowUs(), lat: Array.from({ length: slots }, () => []), cpu0: process.cpuUsage() };
      return true;
    },
    report() {
      const r = run;
      run = null;
      const q = (xs, x) => quantile(xs, x) / 1000;
      const all = r.lat.flat();
      const cpu = process.cpuUsage(r.cpu0);
      return {
        total: r.total,
        doneSockets: r.doneSockets,
        p50Ms: q(all, 0.5),
        p99Ms: q(all, 0.99),
        // slot 0 is the owner (its url is first in every configuration)
        p99OwnerMs: q(r.lat[0], 0.99),
        p99ElsewhereMs: r.lat.length > 1 ? q(r.lat.slice(1).flat(), 0.99) : NaN,
        clientCpuPct: ((cpu.user + cpu.system) / Math.max(1, (r.last || nowUs()) - r.armed)) * 100,
      };
    },
    teardown() {
      for (const s of sockets) s.close();
      sockets = [];
      return true;
    },
  });
  process.on('disconnect', () => process.exit(0));
  process.send({ type: 'ready' });
}

// ---------------------------------------------------------------------------------------------
// The fake Messages API: a turn prompted "bench <tag>" opens a text block and waits for the
// parent to stream it; every other request (other turns, the SDK's side requests) is answered
// at once with a short text.

function startModel() {
  const waiting = new Map(); // tag -> resolve(controller)
  const event = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
  const usage = { input_tokens: 10, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
  const open = (res, body) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(event('message_start', { message: { id: `msg_${nowUs()}`, type: 'message', role: 'assistant', model: body.model ?? 'claude-sonnet-4-5', content: [], stop_reason: null, stop_sequence: null, usage } }));
    res.write(event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }));
  };
  const text = (res, t) => res.write(event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: t } }));
  const close = (res) => {
    res.write(event('content_block_stop', { index: 0 }));
    res.write(event('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 5 } }));
    res.end(event('message_stop', {}));
  };
  const srv = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://x').pathname;
      if (req.method !== 'POST' || url !== '/v1/messages') {
        const counting = url === '/v1/messages/count_tokens';
        return res.writeHead(counting || req.method === 'HEAD' ? 200 : 404, { 'content-type': 'application/json' }).end(counting ? '{"input_tokens":10}' : '{}');
      }
      let body = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {}
      const tag = /^bench (\S+)$/.exec(promptOf({ body }).trim())?.[1];
      if (tag && waiting.has(tag) && body.stream && body.tools?.length) {
        const resolve = waiting.get(tag);
        waiting.delete(tag);
        open(res, body);
        return resolve({
          /** `m` stamped deltas, `rate` per second (0: one write, all at once). */
          async stream(m, rate) {
            const delta = (i) => event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: `${tag}:${i}:${nowUs()}|` } });
            if (!rate) return void res.write(Array.from({ length: m }, (_, i) => delta(i)).join(''));
            const t0 = performance.now();
            for (let i = 0; i < m; i++) {
              const due = t0 + (i * 1000) / rate - performance.now();
              if (due > 0) await sleep(due);
              res.write(delta(i));
            }
          },
          end: () => close(res),
        });
      }
      const answer = body.output_config?.format ? '{"title":"Cluster bench"}' : 'ok';
      if (!body.stream) {
        return res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({ id: `msg_${nowUs()}`, type: 'message', role: 'assistant', model: body.model, content: [{ type: 'text', text: answer }], stop_reason: 'end_turn', stop_sequence: null, usage: { input_tokens: 10, output_tokens: 5 } }),
        );
      }
      open(res, body);
      text(res, answer);
      close(res);
    });
  });
  return new Promise((resolve) =>
    srv.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${srv.address().port}`,
        expect: (tag) => new Promise((r) => waiting.set(tag, r)),
        close: () => (srv.closeAllConnections(), srv.close()),
      }),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// CPU of processes that are not our children's process.cpuUsage(): /proc/<pid>/stat.

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process (all its threads), in µs; NaN when it is gone. */
function cpuUs(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // from field 3 (state) on
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Whole-machine CPU ticks (Linux /proc/stat): busy time that is not ours shows up here. */
function machine() {
  const v = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: v[3] + (v[4] || 0), total: v.reduce((a, b) => a + b, 0) };
}

// ---------------------------------------------------------------------------------------------
// Parent: Redis, the nodes, the schedule, the tables.

async function parent() {
  const N = Math.max(1, Math.floor(num('CLUSTER_N', 150)));
  const M = Math.max(1, Math.floor(num('CLUSTER_M', 300)));
  const RATE = num('CLUSTER_RATE', 50);
  const RUNS = Math.max(1, Math.floor(num('RUNS', 3)));
  const MSGS = Math.max(1, Math.floor(num('CLUSTER_MSGS', 40)));
  const TTL = Math.max(1000, num('CLUSTER_LEASE_TTL_MS', 15_000));
  const log = (s) => process.stderr.write(`[cluster] ${s}\n`);

  const redis = await startRedis();
  const model = await startModel();
  const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-cluster-bench-'));
  const nodes = {};
  let clientsProc = null;
  let watcher = null;
  const stopAll = async () => {
    watcher?.close();
    clientsProc?.proc.connected && clientsProc.proc.disconnect();
    await Promise.all(Object.values(nodes).map((n) => n.stop(30_000).catch(() => {})));
    await redis.close().catch(() => {});
    model.close();
    fs.rmSync(storeDir, { recursive: true, force: true });
  };
  const bail = (code, why) => {
    if (why) log(why);
    stopAll().finally(() => process.exit(code));
  };
  process.on('SIGINT', () => bail(130));
  process.on('SIGTERM', () => bail(143));
  setTimeout(() => bail(2, 'took longer than CLUSTER_DEADLINE_S; giving up'), num('CLUSTER_DEADLINE_S', 900) * 1000).unref();

  const startNamed = async (name) => {
    const t = Date.now();
    nodes[name] = await startNode({ redisUrl: redis.url, nodeId: name, storeDir, leaseTtlMs: TTL, modelUrl: model.url, logLevel: process.env.LOG_LEVEL ?? 'warn' });
    log(`node ${name} up (pid ${nodes[name].pid}, ${Date.now() - t} ms)`);
  };
  const api = (name) => (method, p, body) => request(nodes[name].url, method, p, body, { timeoutMs: 60_000 });

  let exitCode = 0;
  const samples = [];
  const requests = { 'GET direct': [], 'GET forwarded': [], 'POST direct': [], 'POST forwarded': [] };
  try {
    await startNamed('A');
    const created = await api('A')('POST', '/api/sessions', CLAUDE);
    if (created.status !== 201) throw new Error(`create: ${created.status} ${JSON.stringify(created.body)}`);
    const sessionId = created.body.sessionId;
    watcher = await SessionWatcher.open(nodes.A.url, sessionId);
    clientsProc = forkClients();
    await clientsProc.next((m) => m.type === 'ready', 60_000, 'the client process');

    let seq = 0;
    /** A turn on the owner whose text block the model has opened; `ended()` waits for its end. */
    const streamTurn = async () => {
      const tag = `c${String(++seq).padStart(4, '0')}`;
      const ready = model.expect(tag);
      const endsBefore = watcher.ends();
      const sent = await api('A')('POST', `/api/sessions/${sessionId}/messages`, { content: `bench ${tag}` });
      if (sent.status !== 200) throw new Error(`message: ${sent.status} ${JSON.stringify(sent.body)}`);
      const stream = await Promise.race([ready, sleep(120_000).then(() => Promise.reject(new Error(`no model request for ${tag}`)))]);
      return { tag, stream, ended: () => watcher.waitFor(() => watcher.ends() > endsBefore, 120_000, `the end of turn ${tag}`) };
    };

    /** One measured stream with the clients on `where` (node names, the owner first). */
    const window = async (config, where, { measured = true } = {}) => {
      await clientsProc.call('setup', { urls: where.map((n) => nodes[n].url), n: N, sessionId }, 300_000);
      const { tag, stream, ended } = await streamTurn();
      await sleep(300); // the block's start has reached every client; the servers are idle
      await clientsProc.call('arm', { tag, expect: M, slots: where.length });
      const done = clientsProc.next((m) => m.type === 'done' && m.tag === tag, 60_000 + (RATE ? (M / RATE) * 1000 : 0), 'every delta at every client').catch((e) => e);
      const names = Object.keys(nodes);
      const cpu0 = Object.fromEntries(names.map((n) => [n, cpuUs(nodes[n].pid)]));
      const redis0 = cpuUs(redis.pid());
      const busy0 = machine();
      const t0 = nowUs();
      await stream.stream(M, RATE);
      const failed = await done;
      const wallMs = (nowUs() - t0) / 1000;
      const cpu1 = Object.fromEntries(names.map((n) => [n, cpuUs(nodes[n].pid)]));
      const redis1 = cpuUs(redis.pid());
      const busy1 = machine();
      const r = await clientsProc.call('report');
      stream.end();
      await ended();
      await clientsProc.call('teardown');
      const used = (n) => cpu1[n] - cpu0[n];
      const nodesUs = names.reduce((a, n) => a + used(n), 0);
      const s = {
        config,
        measured,
        nodes: names.length,
        clientsOn: where.join(','),
        delivered: r.total,
        expected: N * M,
        complete: !(failed instanceof Error) && r.total === N * M,
        cpuUsPerDelivery: nodesUs / r.total,
        ownerUsPerDelivery: used('A') / r.total,
        othersUsPerDelivery: (nodesUs - used('A')) / r.total,
        redisUsPerDelivery: (redis1 - redis0) / r.total,
        p50Ms: r.p50Ms,
        p99Ms: r.p99Ms,
        p99OwnerMs: r.p99OwnerMs,
        p99ElsewhereMs: r.p99ElsewhereMs,
        wallMs,
        clientCpuPct: r.clientCpuPct,
        machineBusyPct: (1 - (busy1.idle - busy0.idle) / (busy1.total - busy0.total)) * 100,
      };
      if (measured && !s.complete) exitCode = 1;
      log(
        `${measured ? '' : '(warm-up) '}${config}: ${f(s.cpuUsPerDelivery, 2)} µs/delivery on the nodes (owner ${f(s.ownerUsPerDelivery, 2)}, others ${f(s.othersUsPerDelivery, 2)}, redis ${f(s.redisUsPerDelivery, 2)}), ` +
          `p50 ${ms(s.p50Ms)} ms, p99 ${ms(s.p99Ms)} ms, ${s.delivered}/${s.expected} delivered, clients ${f(s.clientCpuPct, 0)}% of a core, machine ${f(s.machineBusyPct, 0)}% busy`,
      );
      if (measured) samples.push(s);
      return s;
    };

    const ONE = '1 node';
    const OWNER = '3 nodes, clients on the owner';
    const SPREAD = '3 nodes, clients spread';
    await window(ONE, ['A'], { measured: false });
    for (let run = 0; run < RUNS; run++) await window(ONE, ['A']);
    await Promise.all(['B', 'C'].map(startNamed));
    await window(SPREAD, ['A', 'B', 'C'], { measured: false });
    for (let run = 0; run < RUNS; run++) {
      // The order flips every run so drift on a shared machine hits both alike.
      for (const [config, where] of run % 2 ? [[SPREAD, ['A', 'B', 'C']], [OWNER, ['A']]] : [[OWNER, ['A']], [SPREAD, ['A', 'B', 'C']]]) await window(config, where);
    }

    // Requests: directly on the owner A, or through B / C (alternately), interleaved.
    const once = async (node, kind, i) => {
      const g = await api(node)('GET', `/api/sessions/${sessionId}`);
      if (g.status !== 200) throw new Error(`GET via ${node}: ${g.status} ${JSON.stringify(g.body)}`);
      const endsBefore = watcher.ends();
      const p = await api(node)('POST', `/api/sessions/${sessionId}/messages`, { content: `ping ${i} via ${node}` });
      if (p.status !== 200) throw new Error(`POST via ${node}: ${p.status} ${JSON.stringify(p.body)}`);
      await watcher.waitFor(() => watcher.ends() > endsBefore, 120_000, 'the ping turn');
      if (kind) {
        requests[`GET ${kind}`].push(g.ms);
        requests[`POST ${kind}`].push(p.ms);
      }
    };
    for (const node of ['A', 'B', 'C']) await once(node, null, -1); // warm-up, unmeasured
    for (let i = 0; i < MSGS; i++) {
      const other = i % 2 ? 'C' : 'B';
      for (const [node, kind] of i % 2 ? [[other, 'forwarded'], ['A', 'direct']] : [['A', 'direct'], [other, 'forwarded']]) await once(node, kind, i);
    }
  } catch (err) {
    // What the nodes said (their stderr) is the first thing one wants then.
    for (const n of Object.values(nodes)) log(`--- node ${n.nodeId} (pid ${n.pid}) ---\n${n.log().split('\n').slice(-40).join('\n')}`);
    throw err;
  } finally {
    await stopAll();
  }

  // ---- Report ----
  const pick = (config, k) => samples.filter((s) => s.config === config).map((s) => s[k]);
  const med = (config, k) => median(pick(config, k));
  const metrics = [
    ['cpuUsPerDelivery', 'nodes µs/delivery', 2],
    ['ownerUsPerDelivery', 'owner', 2],
    ['othersUsPerDelivery', 'others', 2],
    ['redisUsPerDelivery', 'redis', 2],
    ['p50Ms', 'p50 ms', 1],
    ['p99Ms', 'p99 ms', 1],
    ['p99OwnerMs', 'p99 on owner', 1],
    ['p99ElsewhereMs', 'p99 elsewhere', 1],
    ['clientCpuPct', 'clients %core', 0],
    ['machineBusyPct', 'machine %busy', 0],
  ];
  const configs = [...new Set(samples.map((s) => s.config))];
  console.log(`\nsession:block:delta fan-out to ${N} Socket.IO clients (websocket), ${M} events ${RATE ? `@ ${RATE}/s` : 'at once'}, server CPU per delivered event; median of ${RUNS} run(s)`);
  printTable([['config', ...metrics.map(([, h]) => h), 'delivered'], ...configs.map((c) => [c, ...metrics.map(([k, , d]) => f(med(c, k), d)), `${pick(c, 'delivered').reduce((a, b) => a + b, 0)}/${pick(c, 'expected').reduce((a, b) => a + b, 0)}`])]);

  console.log('\nratios (same run)');
  const ratio = (a, b, k) => f(med(a, k) / med(b, k), 2);
  const pairs = [
    ['3 nodes spread / 1 node', '3 nodes, clients spread', '1 node'],
    ['3 nodes on owner / 1 node', '3 nodes, clients on the owner', '1 node'],
    ['spread / on owner (3 nodes)', '3 nodes, clients spread', '3 nodes, clients on the owner'],
  ].filter(([, a, b]) => configs.includes(a) && configs.includes(b));
  printTable([['', 'nodes CPU/delivery', 'nodes+redis CPU/delivery', 'p50', 'p99'], ...pairs.map(([label, a, b]) => [label, ratio(a, b, 'cpuUsPerDelivery'), f((med(a, 'cpuUsPerDelivery') + med(a, 'redisUsPerDelivery')) / (med(b, 'cpuUsPerDelivery') + med(b, 'redisUsPerDelivery')), 2), ratio(a, b, 'p50Ms'), ratio(a, b, 'p99Ms')])]);

  console.log(`\nrequest latency, 3 nodes: directly on the owner vs through another node (${MSGS} each, interleaved)`);
  const q = (xs, x) => quantile(xs, x);
  printTable([
    ['request', 'n', 'p50 ms', 'p90 ms', 'p99 ms'],
    ...Object.entries(requests).map(([k, xs]) => [k, xs.length, ms(q(xs, 0.5)), ms(q(xs, 0.9)), ms(q(xs, 0.99))]),
  ]);
  const r50 = (kind) => f(q(requests[`${kind} forwarded`], 0.5) / q(requests[`${kind} direct`], 0.5), 2);
  const r99 = (kind) => f(q(requests[`${kind} forwarded`], 0.99) / q(requests[`${kind} direct`], 0.99), 2);
  console.log(`forwarded / direct: GET p50 ${r50('GET')}, p99 ${r99('GET')}; POST messages p50 ${r50('POST')}, p99 ${r99('POST')}`);
  console.log('\nnodes µs/delivery: CPU of every node process (utime+stime from /proc) over the window, per delivered event; owner/others split it.');
  console.log(`/proc counts CPU in ticks of ${(1000 / CLK_TCK).toFixed(0)} ms: with few deliveries (CLUSTER_N x CLUSTER_M) the CPU columns are mostly rounding.`);
  console.log('clients %core near 100: the client process, not the servers, set the pace (latency is then its queue).');
  console.log('machine %busy: all cores, whoever used them; well above what the bench uses means other load (noisier numbers).');
  if (process.env.CLUSTER_JSON) fs.writeFileSync(process.env.CLUSTER_JSON, JSON.stringify({ n: N, m: M, rate: RATE, runs: RUNS, samples, requests }, null, 2));
  process.exit(exitCode);
}

// Last, so that every constant above is initialised before either side runs.
if (process.argv[2] === '--clients') await clients();
else await parent();
