// Test side of the cluster: node processes (cluster-node.mjs), a cluster of them over one Redis,
// one shared store and one fake model (in the test process, so tests can see the model requests),
// HTTP with timeouts (a stopped node never answers), and Socket.IO watchers that record every
// numbered event and can roam to another node with `since` when theirs goes away.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';
import { startFakeAnthropic } from '../../fake-model/fake-anthropic.mjs';
import { pidsMentioning, pidsWorkingIn } from './agent.mjs';
import { AUTH } from './http.mjs';
import { startRedis } from './redis.mjs';

const NODE_SCRIPT = fileURLToPath(new URL('./cluster-node.mjs', import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hrNow = () => process.hrtime.bigint();

/** Kill whatever still runs in a node's sandbox directory (after the node itself is gone), then remove it. */
function reapSandboxes(root) {
  const inside = () => [...new Set([...pidsMentioning(root), ...pidsWorkingIn(root)])].filter((p) => p !== process.pid);
  for (let round = 0; round < 20; round++) {
    const pids = inside();
    if (!pids.length) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
  }
  fs.rmSync(root, { recursive: true, force: true });
}

/**
 * Spawn one node (cluster-node.mjs); resolves when it printed READY:
 * `{ nodeId, port, url, pid, proc, sandboxRoot, alive, stopped, exited, signal(sig), kill(sig), stop(), log() }`.
 *   signal(sig)  sends it and returns the moment (process.hrtime.bigint()); SIGSTOP/SIGCONT tracked
 *   kill(sig)    default SIGKILL: sends it, waits for the exit, reaps the sandboxes; returns the moment
 *   stop()       SIGTERM (graceful: the runtime stores and releases its sessions), bounded; resolves
 *                `{ code, signal }`
 * `modelUrl` is the fake model its sandboxes use; `config` goes into the runtime config.
 */
export async function startNode({ redisUrl, nodeId, storeDir, leaseTtlMs, modelUrl, port = 0, config, redisViaEnv = false, logLevel, startTimeoutMs = 90_000, echo = process.env.CLUSTER_TEST_LOGS === '1' }) {
  const sandboxRoot = fs.mkdtempSync(path.join(os.tmpdir(), `arn-cluster-${nodeId}-`));
  const env = {
    ...process.env,
    REDIS_URL: redisUrl,
    NODE_ID: nodeId,
    STORE_DIR: storeDir,
    PORT: String(port),
    SANDBOX_ROOT: sandboxRoot,
    LOG_LEVEL: logLevel ?? process.env.TEST_LOG_LEVEL ?? 'warn',
    ...(leaseTtlMs !== undefined && { LEASE_TTL_MS: String(leaseTtlMs) }),
    ...(modelUrl && { MODEL_URL: modelUrl }),
    ...(config && { NODE_CONFIG: JSON.stringify(config) }),
    ...(redisViaEnv && { REDIS_VIA_ENV: '1' }),
  };
  delete env.AGENT_RUNTIME_REDIS_URL; // only what we pass
  if (!redisViaEnv) delete env.REDIS_VIA_ENV;
  const proc = spawn(process.execPath, [NODE_SCRIPT], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = [];
  const keep = (line) => {
    lines.push(line);
    if (lines.length > 400) lines.splice(0, lines.length - 400);
    if (echo) process.stderr.write(`[${nodeId}:${proc.pid}] ${line}\n`);
  };
  readline.createInterface({ input: proc.stderr }).on('line', keep);
  const out = readline.createInterface({ input: proc.stdout });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal, hr: hrNow() })));

  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`node ${nodeId} did not print READY within ${startTimeoutMs} ms:\n${lines.join('\n')}`));
    }, startTimeoutMs);
    out.on('line', (line) => {
      const m = /^READY (\d+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      } else keep(`stdout: ${line}`);
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`node ${nodeId} exited before READY (${signal ?? code}):\n${lines.join('\n')}`));
    });
  }).catch((err) => {
    reapSandboxes(sandboxRoot);
    throw err;
  });

  const node = {
    nodeId,
    port: ready,
    url: `http://127.0.0.1:${ready}`,
    pid: proc.pid,
    proc,
    sandboxRoot,
    startedHr: hrNow(),
    /** False once it was told to go (or went); a SIGSTOPped node is alive but `stopped`. */
    alive: true,
    stopped: false,
    /** [{ sig, hr }] in the order sent. */
    signals: [],
    exited,
    log: () => lines.join('\n'),
    signal(sig) {
      const hr = hrNow();
      node.signals.push({ sig, hr });
      proc.kill(sig);
      if (sig === 'SIGSTOP') node.stopped = true;
      if (sig === 'SIGCONT') node.stopped = false;
      if (sig === 'SIGKILL' || sig === 'SIGTERM') node.alive = false;
      return hr;
    },
    async kill(sig = 'SIGKILL') {
      const hr = node.signal(sig);
      if (sig === 'SIGKILL' || sig === 'SIGTERM') {
        await exited;
        reapSandboxes(sandboxRoot);
      }
      return hr;
    },
    async stop(timeoutMs = 60_000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        if (node.stopped) node.signal('SIGCONT');
        node.signal('SIGTERM');
        const timer = sleep(timeoutMs).then(() => 'timeout');
        if ((await Promise.race([exited, timer])) === 'timeout') {
          keep(`test: no exit ${timeoutMs} ms after SIGTERM; SIGKILL`);
          node.signal('SIGKILL');
        }
      }
      node.alive = false;
      const result = await exited;
      reapSandboxes(sandboxRoot);
      return result;
    },
  };
  // A node that dies by itself is not alive either.
  exited.then(() => (node.alive = false));
  return node;
}

/**
 * HTTP to a node with a bound on the wait: resolves `{ status, body, headers, ms }`; a network
 * error or the timeout rejects (naming the request).
 */
export async function request(baseUrl, method, p, body, { timeoutMs = 30_000, headers = AUTH } = {}) {
  const init = { method, headers, signal: AbortSignal.timeout(timeoutMs) };
  if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
  const t0 = performance.now();
  let res;
  let text;
  try {
    res = await fetch(baseUrl + p, init);
    text = await res.text();
  } catch (err) {
    throw new Error(`${method} ${baseUrl}${p} failed after ${Math.round(performance.now() - t0)} ms: ${err.cause?.message ?? err.message}`);
  }
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, body: json, headers: res.headers, ms: performance.now() - t0 };
}

/**
 * Call `attempt()` (resolving a request's result) until it answers something other than 503 (or
 * fails to connect), for at most `deadlineMs`; resolves that answer plus `tries` and `tried`
 * (every answer seen). Past the deadline it rejects with what it last got.
 */
export async function untilNot503(attempt, { deadlineMs, what = 'request', pauseMs = 100 }) {
  const deadline = Date.now() + deadlineMs;
  const tried = [];
  for (;;) {
    let r;
    try {
      r = await attempt();
    } catch (err) {
      r = { status: 0, body: String(err.message) };
    }
    tried.push({ status: r.status, code: r.body?.code, ms: Math.round(r.ms ?? 0) });
    if (r.status !== 503 && r.status !== 0) return { ...r, tries: tried.length, tried };
    if (Date.now() > deadline) throw new Error(`${what}: still ${r.status} ${JSON.stringify(r.body).slice(0, 300)} after ${deadlineMs} ms (${tried.length} tries)`);
    await sleep(pauseMs);
  }
}

/** Resolves once `check()` (may be async) is truthy, re-checked every `everyMs`; rejects after `ms`. */
export async function poll(check, { ms = 15_000, everyMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}${last instanceof Error ? ` (last error: ${last.message})` : ''}`);
    await sleep(everyMs);
  }
}

/**
 * Redis, a shared store directory, a fake model and one node per name. `c.nodes[name]` is the
 * current process of that node; `c.incarnations` every process ever started (for writes.log);
 * `c.api(name)(method, path, body, opts)` talks to the current one.
 */
export async function startCluster({ names = ['A', 'B', 'C'], leaseTtlMs = 2500, config, viaEnv = [] } = {}) {
  const redis = await startRedis();
  const fake = await startFakeAnthropic();
  const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-cluster-store-'));
  let roamTurn = 0;
  const c = {
    redis,
    fake,
    storeDir,
    leaseTtlMs,
    nodes: {},
    incarnations: [],
    watchers: [],
    /** A SessionWatcher on node `name` (closed with the cluster); `{ roam: true }` makes it move
     *  to another serving node, with `since`, when its node goes away. */
    async watch(name, sessionId, { roam = false, ...opts } = {}) {
      const w = await SessionWatcher.open(c.nodes[name].url, sessionId, { ...opts, ...(roam && { roam: c.roam }) });
      c.watchers.push(w);
      return w;
    },
    async start(name) {
      const n = await startNode({ redisUrl: redis.url, nodeId: name, storeDir, leaseTtlMs, modelUrl: fake.url, config, redisViaEnv: viaEnv.includes(name) });
      c.nodes[name] = n;
      c.incarnations.push(n);
      return n;
    },
    /** SIGTERM the node, wait for its exit, start it again (a new process, same nodeId). */
    async restart(name) {
      const exit = await c.nodes[name].stop();
      const node = await c.start(name);
      return { exit, node };
    },
    api: (name) => (method, p, body, opts) => request(c.nodes[name].url, method, p, body, opts),
    /** Nodes that serve (not told to go, not SIGSTOPped). */
    live: () => Object.values(c.nodes).filter((n) => n.alive && !n.stopped),
    /** For a watcher that lost its node: the url of another serving node. */
    roam: (fromUrl, attempt = 0) => {
      const others = c.live().filter((n) => n.url !== fromUrl);
      const pool = others.length ? others : c.live();
      // Rotate, so that watchers leaving one node spread over the others.
      return pool.length ? pool[(attempt + roamTurn++) % pool.length].url : fromUrl;
    },
    /** The tail of every node process's stderr, for failure messages. */
    logs(tail = 60) {
      return c.incarnations
        .map((n) => `--- node ${n.nodeId} (pid ${n.pid}) ---\n${n.log().split('\n').slice(-tail).join('\n')}`)
        .join('\n');
    },
    async close() {
      for (const w of c.watchers) w.close();
      await Promise.all(c.incarnations.map((n) => n.stop(20_000).catch(() => {})));
      await fake.close();
      await redis.close();
      fs.rmSync(storeDir, { recursive: true, force: true });
    },
  };
  try {
    await Promise.all(names.map((n) => c.start(n)));
  } catch (err) {
    await c.close().catch(() => {});
    throw err;
  }
  return c;
}

/** startCluster, run `fn(c)`, close everything; a failure carries the nodes' log tails. */
export async function withCluster(opts, fn) {
  const c = await startCluster(opts);
  try {
    return await fn(c);
  } catch (err) {
    if (err && typeof err === 'object') {
      try {
        err.message += `\n${c.logs()}`;
      } catch {}
    }
    throw err;
  } finally {
    await c.close();
  }
}

/**
 * An event in a form that compares equal whether it came over Socket.IO or from the log (REST):
 * `[name, seq, payload]`. A `session:error` is the exception: the log keeps the bus's payload
 * `{ sessionId, error: { message, code } }`, Socket.IO sends the reference's `error` event
 * `{ sessionId, message, code }` with host paths in the message replaced; so only its code is
 * compared. `name`: the log's name (SessionWatcher records `error` as `session:error`).
 */
export function comparable(name, seq, p) {
  if (name === 'session:error') return [name, seq, { sessionId: p.sessionId, code: p.code ?? p.error?.code ?? null, eventId: p.eventId }];
  return [name, seq, p];
}
/** A log entry (GET /events) / a watcher's event as comparable(). */
export const fromLog = (e) => comparable(e.event, e.seq, e.payload);
export const fromWire = (e) => comparable(e.name, e.seq, e.p);
/** The code of a session:error, in either shape. */
export const errorCode = (p) => p.code ?? p.error?.code;

/** Is this payload the end of a turn (the system block every turn ends with)? */
export const isTurnEnd = (name, p) => name === 'session:block:complete' && !!p?.block?.metadata?.stopReason;

/**
 * A Socket.IO client joined to one session that records every numbered event it gets (`events`:
 * `{ name, seq, json, p }`, in arrival order; `name` as the log names it, so `error` on the wire
 * is `session:error` here). With `roam(url, attempt)` it is a client that,
 * when its node goes away, connects to the node `roam` names and joins again with
 * `since` = the last eventId it saw, as a browser behind a load balancer would.
 */
export class SessionWatcher {
  constructor(sessionId, { roam, since, transports = ['websocket'] } = {}) {
    this.sessionId = sessionId;
    this.roamTo = roam;
    this.initialSince = since ?? null;
    this.transports = transports;
    this.events = [];
    this.lists = []; // sessions:list payloads
    this.errors = []; // `error` events (e.g. slow_consumer)
    this.joins = []; // { url, since, ack }
    this.disconnects = []; // { url, reason }
    this.roamErrors = [];
    this.waiters = new Set();
    this.closed = false;
    this.socket = null;
    this.url = null;
  }

  /** A watcher connected to `url` (and joined, when it has a session). */
  static async open(url, sessionId, opts) {
    const w = new SessionWatcher(sessionId, opts);
    await w.#connect(url);
    return w;
  }

  lastEventId() {
    return this.events.at(-1)?.p.eventId ?? this.initialSince;
  }
  /** [name, seq, payload JSON] of every numbered event, comparable between watchers. */
  got() {
    return this.events.map((e) => [e.name, e.seq, e.json]);
  }
  seqs() {
    return this.events.map((e) => e.seq);
  }
  /** Turn ends received so far. */
  ends() {
    return this.events.filter((e) => isTurnEnd(e.name, e.p)).length;
  }
  /** Has an assistant text containing `text` completed, and a turn end come after it? */
  replied(text) {
    const i = this.events.findIndex((e) => e.name === 'session:block:complete' && e.p.block?.type === 'assistant_text' && String(e.p.block.content).includes(text));
    return i >= 0 && this.events.slice(i + 1).some((e) => isTurnEnd(e.name, e.p));
  }
  describe() {
    const last = this.events.at(-1);
    return `${this.events.length} events, last ${last ? `${last.name} #${last.seq}` : 'none'}, on ${this.url}, joins ${JSON.stringify(this.joins.map((j) => j.ack))}, disconnects ${JSON.stringify(this.disconnects)}${this.roamErrors.length ? `, roam errors ${JSON.stringify(this.roamErrors.slice(-3))}` : ''}`;
  }

  /** Resolves once `pred()` holds (checked now and after every event); rejects after `ms`. */
  waitFor(pred, ms = 60_000, what = 'condition') {
    return new Promise((resolve, reject) => {
      if (pred()) return resolve();
      const w = {
        pred,
        resolve: () => (clearTimeout(w.timer), resolve()),
      };
      w.timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`watcher: timed out after ${ms} ms waiting for ${what} (${this.describe()})`));
      }, ms);
      this.waiters.add(w);
    });
  }
  waitReply(text, ms = 60_000) {
    return this.waitFor(() => this.replied(text), ms, `the reply "${text}" and its turn end`);
  }

  /** Re-check the waiters (after an event, a join, a disconnect). */
  #notify() {
    for (const w of [...this.waiters]) {
      if (w.pred()) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  async #connect(url) {
    const s = io(url, { transports: this.transports, reconnection: false, forceNew: true, timeout: 5000 });
    await new Promise((resolve, reject) => {
      s.once('connect', resolve);
      s.once('connect_error', (e) => (s.close(), reject(new Error(`connect to ${url}: ${e.message}`))));
    });
    this.socket = s;
    this.url = url;
    s.onAny((name, p) => {
      if (s !== this.socket) return;
      if (name === 'sessions:list') this.lists.push(p);
      // A session's `session:error` goes out on Socket.IO as `error` (the reference's name),
      // numbered like every session event; unnumbered ones are the server's own (slow_consumer).
      if (name === 'error') this.errors.push(p);
      if (p && typeof p.seq === 'number') {
        const logged = name === 'error' ? 'session:error' : name; // the name the log (REST) uses
        this.events.push({ name: logged, seq: p.seq, json: JSON.stringify(p), p });
      }
      this.#notify();
    });
    s.on('disconnect', (reason) => {
      this.disconnects.push({ url, reason });
      this.#notify();
      if (!this.closed && s === this.socket && reason !== 'io client disconnect' && this.roamTo) this.#roam(url);
    });
    if (!this.sessionId) return;
    const since = this.lastEventId();
    let ack;
    try {
      ack = await s.timeout(15_000).emitWithAck('session:join', since ? { sessionId: this.sessionId, since } : { sessionId: this.sessionId });
    } catch (err) {
      ack = { success: false, error: `no ack: ${err.message}` };
    }
    this.joins.push({ url, since, ack });
    this.#notify();
    if (ack?.success !== true) {
      this.socket = null;
      s.close();
      throw new Error(`session:join on ${url} refused: ${JSON.stringify(ack)}`);
    }
  }

  #roam(fromUrl) {
    this.roaming = (async () => {
      const deadline = Date.now() + 90_000;
      for (let attempt = 0; !this.closed; attempt++) {
        const url = this.roamTo(fromUrl, attempt);
        try {
          await this.#connect(url);
          return;
        } catch (err) {
          this.roamErrors.push(err.message);
        }
        if (Date.now() > deadline) return;
        await sleep(200);
      }
    })();
  }

  close() {
    this.closed = true;
    this.socket?.close();
    for (const w of this.waiters) clearTimeout(w.timer);
    this.waiters.clear();
  }
}

/** Every event of a session's log after `since` (all of it without), read page by page. */
export async function readLog(api, sessionId, since) {
  const all = [];
  for (let after = since; ; ) {
    const q = after ? `&since=${encodeURIComponent(after)}` : '';
    const r = await api('GET', `/api/sessions/${sessionId}/events?limit=1000${q}`);
    if (r.status !== 200) throw new Error(`GET events: ${r.status} ${JSON.stringify(r.body)}`);
    if (r.body.reset) throw new Error(`GET events since ${after}: reset (the log does not know it)`);
    if (r.body.events.length === 0) return all;
    all.push(...r.body.events);
    after = r.body.events.at(-1).eventId;
  }
}

/** The prompt a model request starts a turn for: the newest user text (system reminders aside)
 *  when no assistant message follows it; '' for the later requests of a turn (tool results). */
export function promptOf(req) {
  const messages = req.body?.messages ?? [];
  const own = (m) =>
    m.role === 'user'
      ? (typeof m.content === 'string' ? [m.content] : (m.content ?? []).filter((b) => b.type === 'text').map((b) => b.text)).filter(
          (t) => !t.trimStart().startsWith('<system-reminder>'),
        )
      : [];
  let i = messages.length - 1;
  while (i >= 0 && !own(messages[i]).length) {
    if (messages[i].role === 'assistant') return '';
    i--;
  }
  return i >= 0 ? own(messages[i]).join('\n') : '';
}

/** The model requests that started a turn for a prompt containing `text` (one per run of it). */
export function turnRequests(fake, text) {
  return fake.requests.filter(
    (r) => r.path === '/v1/messages' && r.method === 'POST' && r.body?.tools?.length && !r.headers['x-claude-code-agent-id'] && promptOf(r).includes(text),
  );
}

/** The user messages of a session's state, in order. */
export const userMessages = (state) => state.blocks.filter((b) => b.type === 'user_message').map((b) => b.content);

/** A session state without what changes by itself between two reads (clocks of the sandbox). */
export function comparableState(state) {
  const s = structuredClone(state);
  if (s.runtime?.sandbox) delete s.runtime.sandbox.lastHealthCheck;
  if (s.runtime?.usage) delete s.runtime.usage.sandboxSeconds;
  delete s.lastActivity;
  return s;
}
