'use strict';
// Public JS API: thin glue over the native core (binding.js). It validates what only JS can
// see (the adapter object), bridges adapter calls and events, and converts Request/Response.
const { EventEmitter } = require('node:events');
const os = require('node:os');
const path = require('node:path');
const native = require('./binding.js');

const ADAPTER_METHODS = [
  'listAllSessions',
  'loadSession',
  'createSessionRecord',
  'updateSessionRecord',
  'saveTranscript',
  'saveWorkspaceFile',
  'deleteSessionFile',
  'listAgentProfiles',
  'loadAgentProfile',
];

const PUBLISHERS = Symbol('realtime publishers');
const emitLocal = EventEmitter.prototype.emit;

/** The runtime's event bus. Events user code emits on it also reach Socket.IO clients, as in
 *  the reference; events from the native core are emitted locally only (they reach Socket.IO
 *  inside the core). */
class EventBus extends EventEmitter {
  emit(name, ...args) {
    const publishers = this[PUBLISHERS];
    if (publishers && typeof name === 'string' && name.startsWith('session')) {
      const json = args[0] === undefined ? '' : JSON.stringify(args[0]);
      for (const publish of publishers) publish(name, json);
    }
    return emitLocal.call(this, name, ...args);
  }
}

// ---- errors -------------------------------------------------------------------------------

/** Native errors arrive as "[CODE] message"; give them back their `code`. */
function fromNative(err) {
  const m = /^\[([A-Z_]+)\] ([\s\S]*)$/.exec(err && err.message);
  if (!m) return err;
  const e = new Error(m[2]);
  e.code = m[1];
  return e;
}

async function call(promise) {
  try {
    return await promise;
  } catch (err) {
    throw fromNative(err);
  }
}

function messageOf(err) {
  if (err instanceof Error) return err.message || err.name;
  try {
    return typeof err === 'string' ? err : JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

// ---- persistence bridge -------------------------------------------------------------------

/** A JSON copy (undefined dropped, toJSON honoured): what napi's JSON conversion accepts. */
const plain = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));

/** The single function Rust calls for every adapter method. It never rejects: it reports
 *  `{ ok: <JSON text>, transcript? }`, `{ error }` (the adapter threw or rejected) or
 *  `{ shapeError }` (the value cannot be JSON). One JSON.stringify is far cheaper than napi
 *  walking the objects; a stored transcript travels beside it as a plain string so its
 *  megabytes are not escaped and unescaped. */
function adapterBridge(adapter) {
  const settle = (value) => {
    try {
      let transcript;
      if (value !== null && typeof value === 'object' && value.rawTranscript != null) {
        let t = value.rawTranscript;
        if (ArrayBuffer.isView(t)) t = Buffer.from(t.buffer, t.byteOffset, t.byteLength).toString('utf8');
        if (typeof t === 'string') {
          transcript = t;
          value = { ...value, rawTranscript: undefined };
        }
      }
      const ok = JSON.stringify(value) ?? 'null';
      return transcript === undefined ? { ok } : { ok, transcript };
    } catch (err) {
      return { shapeError: err.message };
    }
  };
  return (method, args) => {
    let result;
    try {
      result = adapter[method](...args);
    } catch (err) {
      return Promise.resolve({ error: messageOf(err) });
    }
    return Promise.resolve(result).then(settle, (err) => ({ error: messageOf(err) }));
  };
}

function validateConfig(config) {
  if (config === null || typeof config !== 'object') {
    throw new TypeError('createAgentRuntime: config must be an object');
  }
  const p = config.persistence;
  if (p === null || typeof p !== 'object') {
    throw new TypeError('createAgentRuntime: config.persistence must be a PersistenceAdapter object');
  }
  for (const m of ADAPTER_METHODS) {
    if (typeof p[m] !== 'function') {
      throw new TypeError(`createAgentRuntime: config.persistence.${m} must be a function (got ${typeof p[m]})`);
    }
  }
  if (config.modal !== undefined && (config.modal === null || typeof config.modal !== 'object')) {
    throw new TypeError('createAgentRuntime: config.modal must be an object');
  }
}

// ---- sessions -----------------------------------------------------------------------------

function notLoaded(id) {
  const e = new Error(`Session ${id} is not loaded`);
  e.code = 'SESSION_NOT_FOUND';
  return e;
}

/** Parsed conversations of recently read sessions, keyed by id, valid while their version
 *  matches: a repeated getState() of a big session then costs no JSON.parse. Bounded. */
class ConversationCache {
  #entries = new Map();
  get(n, id, version) {
    let c = this.#entries.get(id);
    if (!c || c.version !== version) {
      const text = n.sessionConversation(id);
      if (text == null) throw notLoaded(id);
      c = JSON.parse(text);
      this.#entries.delete(id);
      this.#entries.set(id, c);
      if (this.#entries.size > 16) this.#entries.delete(this.#entries.keys().next().value);
    }
    return c;
  }
}

class AgentSession {
  #n;
  #cache;
  constructor(nativeRuntime, sessionId, cache) {
    this.#n = nativeRuntime;
    this.#cache = cache;
    Object.defineProperty(this, 'sessionId', { value: sessionId, enumerable: true });
  }
  #json(text) {
    if (text == null) throw notLoaded(this.sessionId);
    return JSON.parse(text);
  }
  getState() {
    const { conversationVersion, ...state } = this.#json(this.#n.sessionStateMeta(this.sessionId));
    const c = this.#cache.get(this.#n, this.sessionId, conversationVersion);
    state.blocks = c.blocks;
    state.subagents = c.subagents;
    return state;
  }
  getRuntimeState() {
    return this.#json(this.#n.sessionRuntimeState(this.sessionId));
  }
  getPersistedListData() {
    return this.#json(this.#n.sessionListData(this.sessionId));
  }
  async updateSessionOptions(options) {
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw new TypeError('updateSessionOptions: options must be an object');
    }
    return call(this.#n.updateSessionOptions(this.sessionId, plain(options)));
  }
  async syncSessionStateToStorage() {
    return call(this.#n.syncSession(this.sessionId));
  }
  async destroy() {
    return call(this.#n.destroySession(this.sessionId));
  }
  async sendMessage(message, options) {
    if (typeof message !== 'string') throw new TypeError('sendMessage: message must be a string');
    const mode = options?.mode;
    if (mode !== undefined && typeof mode !== 'string') throw new TypeError('sendMessage: options.mode must be a string');
    let sent;
    try {
      sent = this.#n.sendMessage(this.sessionId, message, mode);
    } catch (err) {
      throw fromNative(err); // refused at once (queue full, budget spent): keep its code
    }
    return call(sent);
  }
  /** Stop the running turn; resolves to whether one was running. */
  async interrupt(options) {
    return sync(() => this.#n.interrupt(this.sessionId, options?.clearQueue === true));
  }
  /** Messages waiting for their turn. */
  getQueue() {
    return this.#json(this.#n.sessionStateMeta(this.sessionId)).runtime.queue;
  }
  /** Tool calls and questions waiting for a person. */
  getPendingRequests() {
    return this.#json(this.#n.sessionStateMeta(this.sessionId)).runtime.pendingRequests;
  }
  async removeQueuedMessage(messageId) {
    return sync(() => this.#n.removeQueuedMessage(this.sessionId, String(messageId)));
  }
  async respondToPermission(requestId, answer) {
    return sync(() => this.#n.respondPermission(this.sessionId, String(requestId), plain(answer)));
  }
  async answerQuestion(requestId, answers) {
    return sync(() => this.#n.answerQuestion(this.sessionId, String(requestId), plain(answers)));
  }
}

/** A synchronous native call, its error given back its `code`. */
function sync(f) {
  try {
    return f();
  } catch (err) {
    throw fromNative(err);
  }
}

const INTERNAL = Symbol('agent-runtime-native internal');

class SessionManager {
  #n;
  #cache = new ConversationCache();
  constructor(token, nativeRuntime) {
    if (token !== INTERNAL) {
      throw new TypeError('SessionManager is created by createAgentRuntime(); use runtime.sessionManager');
    }
    this.#n = nativeRuntime;
  }
  #session(id) {
    return new AgentSession(this.#n, id, this.#cache);
  }
  /** @internal the native runtime, for the standalone createRestServer. */
  static native(manager) {
    return manager.#n;
  }
  async initialize() {
    await this.getAllSessions();
  }
  async createSession(args) {
    if (args === null || typeof args !== 'object') throw new TypeError('createSession: args must be an object');
    if (typeof args.agentProfileRef !== 'string') throw new TypeError('createSession: args.agentProfileRef must be a string');
    if (args.architecture !== 'claude-agent-sdk' && args.architecture !== 'opencode') {
      throw new TypeError(
        `createSession: args.architecture must be "claude-agent-sdk" or "opencode" (got ${JSON.stringify(args.architecture)})`,
      );
    }
    const id = await call(this.#n.createSession(plain(args)));
    return this.#session(id);
  }
  async loadSession(sessionId) {
    if (typeof sessionId !== 'string') throw new TypeError('loadSession: sessionId must be a string');
    const id = await call(this.#n.loadSession(sessionId));
    return this.#session(id);
  }
  getSession(sessionId) {
    return this.#n.isLoaded(sessionId) ? this.#session(sessionId) : undefined;
  }
  isSessionLoaded(sessionId) {
    return this.#n.isLoaded(sessionId);
  }
  async unloadSession(sessionId) {
    if (!this.#n.isLoaded(sessionId)) return; // the reference's no-op
    return call(this.#n.unloadSession(sessionId));
  }
  async getAllSessions() {
    return JSON.parse(await call(this.#n.getAllSessions()));
  }
  getLoadedSessions() {
    return this.#n.loadedIds().map((id) => this.#session(id));
  }
  getLoadedSessionIds() {
    return this.#n.loadedIds();
  }
  getLoadedSessionCount() {
    return this.#n.loadedIds().length;
  }
  isHealthy() {
    return this.#n.isHealthy();
  }
  async shutdown() {
    return call(this.#n.shutdown());
  }
}

// ---- REST ---------------------------------------------------------------------------------

/** Read a request body, stopping once it passes `limit` bytes. */
async function readBody(request, limit) {
  const declared = Number(request.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) return { body: null, oversized: true };
  const reader = request.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return { body: null, oversized: true };
    }
    chunks.push(value);
  }
  return { body: Buffer.concat(chunks, size), oversized: false };
}

const NO_BODY_STATUS = new Set([101, 204, 205, 304]);

/** A native streaming body as a web `ReadableStream`: a chunk is read from Rust only when the
 *  consumer asks for one (so a slow reader is seen as slow), and cancelling the stream or
 *  aborting the request releases the server side. */
function webStream(native, signal) {
  const stop = () => native.close();
  if (signal?.aborted) stop();
  else signal?.addEventListener('abort', stop, { once: true });
  return new ReadableStream(
    {
      async pull(controller) {
        const chunk = await native.next();
        if (chunk) return controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        signal?.removeEventListener('abort', stop);
        controller.close();
      },
      cancel: stop,
    },
    { highWaterMark: 0 },
  );
}

function restServer(nativeRuntime, apiKey, maxBufferedBytes) {
  if (typeof apiKey !== 'string' || apiKey.length === 0) {
    throw new TypeError('createRestServer: apiKey must be a non-empty string');
  }
  if (maxBufferedBytes !== undefined && !(typeof maxBufferedBytes === 'number' && Number.isFinite(maxBufferedBytes) && maxBufferedBytes >= 1)) {
    throw new TypeError('createRestServer: maxBufferedBytes must be a positive number');
  }
  const server = nativeRuntime.restServer(apiKey, maxBufferedBytes);
  const limit = server.maxBody;
  // Never rejects: a server built like the seed example has no catch around fetch().
  const fetch = async (request) => {
    try {
      return await answer(request);
    } catch (err) {
      const body = JSON.stringify({ error: `Internal server error: ${messageOf(err)}`, code: 'INTERNAL_ERROR' });
      return new Response(body, { status: 500, headers: { 'content-type': 'application/json' } });
    }
  };
  const answer = async (request) => {
    const headers = [];
    request.headers.forEach((value, name) => headers.push(name, value));
    let body = null;
    let oversized = false;
    if (request.body && request.method !== 'GET' && request.method !== 'HEAD') {
      ({ body, oversized } = await readBody(request, limit));
    }
    const res = await server.handle(request.method, request.url, headers, body, oversized);
    const out = new Headers();
    for (let i = 0; i < res.headers.length; i += 2) out.append(res.headers[i], res.headers[i + 1]);
    const payload = res.stream ? webStream(res.stream, request.signal) : res.body;
    return new Response(NO_BODY_STATUS.has(res.status) ? null : payload, { status: res.status, headers: out });
  };
  /** Event streams (`/events/stream`) open now. */
  const openStreams = () => server.openStreams();
  return { fetch, openStreams };
}

function createRestServer({ sessionManager, config } = {}) {
  if (!(sessionManager instanceof SessionManager)) {
    throw new TypeError('createRestServer: sessionManager must be runtime.sessionManager');
  }
  return restServer(SessionManager.native(sessionManager), config && config.apiKey, config && config.maxBufferedBytes);
}

function errorResponse(message, code) {
  return code ? { error: message, code } : { error: message };
}

// ---- Socket.IO ----------------------------------------------------------------------------

const DEFAULT_CORS_ORIGINS = ['http://localhost:3000', 'http://localhost:3001', 'http://localhost:5173'];

/** The single function Rust calls to ask the user's `authorize` / `authorizeList`. It never
 *  rejects: `{ allow }`, or `{ error }` when the callback threw, rejected or answered something
 *  that is not a boolean (Rust logs it and denies). Without `authorizeList`, a server that has an
 *  `authorize` sends the session list to nobody: the list names every tenant's sessions. */
function authorizeBridge(authorize, authorizeList) {
  if (!authorize && !authorizeList) return undefined;
  return (kind, handshakeJson, sessionId) => {
    const fn = kind === 'join' ? authorize : authorizeList;
    if (!fn) return Promise.resolve({ allow: kind === 'join' ? true : !authorize });
    let result;
    try {
      const handshake = JSON.parse(handshakeJson);
      result = kind === 'join' ? fn(handshake, sessionId) : fn(handshake);
    } catch (err) {
      return Promise.resolve({ error: messageOf(err) });
    }
    return Promise.resolve(result).then(
      (v) => (typeof v === 'boolean' ? { allow: v } : { error: `${kind === 'join' ? 'authorize' : 'authorizeList'} returned ${typeof v}, expected a boolean` }),
      (err) => ({ error: messageOf(err) }),
    );
  };
}

/** Check the access options shared by createWebSocketServer and listen; returns what Rust takes. */
function socketOptions(where, options) {
  const { authorize, authorizeList, allowedOrigins, authorizeTimeoutMs, maxBufferedBytes } = options;
  for (const [name, fn] of [['authorize', authorize], ['authorizeList', authorizeList]]) {
    if (fn !== undefined && typeof fn !== 'function') throw new TypeError(`${where}: options.${name} must be a function`);
  }
  if (allowedOrigins !== undefined) {
    if (!Array.isArray(allowedOrigins) || allowedOrigins.some((o) => typeof o !== 'string' || !/^[a-z][a-z0-9+.-]*:\/\/[^/\s]+$/i.test(o))) {
      throw new TypeError(`${where}: options.allowedOrigins must be an array of origins like "https://app.example.com" (scheme://host[:port], no path)`);
    }
  }
  for (const [name, v] of [['authorizeTimeoutMs', authorizeTimeoutMs], ['maxBufferedBytes', maxBufferedBytes]]) {
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= 1)) {
      throw new TypeError(`${where}: options.${name} must be a positive number`);
    }
  }
  const native = {};
  if (allowedOrigins) native.allowedOrigins = allowedOrigins;
  if (authorizeTimeoutMs !== undefined) native.authorizeTimeoutMs = authorizeTimeoutMs;
  if (maxBufferedBytes !== undefined) native.maxBufferedBytes = maxBufferedBytes;
  return { native, bridge: authorizeBridge(authorize, authorizeList) };
}

/** Attach the native Socket.IO server to a Node http(s).Server the way socket.io does: it answers
 *  requests under `path` and leaves every other request and upgrade to the user's handlers. */
function attachRealtime(n, eventBus, httpServer, options = {}) {
  if (!httpServer || typeof httpServer.on !== 'function' || typeof httpServer.listeners !== 'function') {
    throw new TypeError('createWebSocketServer: expected a Node http.Server or https.Server');
  }
  const path = (options.path ?? '/socket.io').replace(/\/$/, '');
  const maxBody = options.maxHttpBufferSize ?? 1e6;
  if (options.apiKey !== undefined && (typeof options.apiKey !== 'string' || !options.apiKey)) {
    throw new TypeError('createWebSocketServer: options.apiKey must be a non-empty string');
  }
  const { native: nativeOptions, bridge } = socketOptions('createWebSocketServer', options);
  // Long-polling CORS: the allowed origins when given, else the configured (or reference) list.
  // An origin is echoed with credentials only when it is listed; "*" / true never echo one.
  const origins = options.allowedOrigins ?? options.cors?.origin ?? DEFAULT_CORS_ORIGINS;
  const anyOrigin = origins === '*' || origins === true;
  const server = n.realtimeServer({ ...nativeOptions, path, apiKey: options.apiKey, maxHttpBufferSize: maxBody }, bridge);
  const publish = (name, json) => server.publish(name, json);
  (eventBus[PUBLISHERS] ??= new Set()).add(publish);
  const ours = (url = '') => url === path || url.startsWith(path + '/') || url.startsWith(path + '?');
  const corsFor = (origin) => {
    if (!origin) return {};
    if (anyOrigin) return { 'access-control-allow-origin': '*', vary: 'Origin' };
    if ([].concat(origins).includes(origin)) {
      return { 'access-control-allow-origin': origin, 'access-control-allow-credentials': 'true', vary: 'Origin' };
    }
    return {};
  };

  async function onPolling(req, res) {
    const cors = corsFor(req.headers.origin);
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...cors, 'access-control-allow-methods': 'GET,POST', 'access-control-allow-headers': req.headers['access-control-request-headers'] ?? '' });
      return res.end();
    }
    const chunks = [];
    let size = 0;
    for await (const c of req) {
      size += c.length;
      if (size > maxBody) {
        res.writeHead(413, cors).end('Payload too large');
        return req.destroy();
      }
      chunks.push(c);
    }
    const out = await server.handle(req.method, req.url, req.rawHeaders, chunks.length ? Buffer.concat(chunks) : null, req.socket.remoteAddress);
    const headers = { ...cors };
    for (let i = 0; i < out.headers.length; i += 2) headers[out.headers[i]] = out.headers[i + 1];
    res.writeHead(out.status, headers).end(out.body);
  }

  // Requests: socket.io's approach, so the seed's catch-all handler keeps working.
  const previous = httpServer.listeners('request').slice();
  httpServer.removeAllListeners('request');
  const onRequest = (req, res) => {
    if (ours(req.url)) {
      onPolling(req, res).catch((err) => {
        if (!res.headersSent) res.writeHead(500);
        res.end(String(err?.message ?? err));
      });
      return;
    }
    for (const l of previous) l.call(httpServer, req, res);
  };
  httpServer.on('request', onRequest);

  // Upgrades: only ours; every other upgrade is left to its own listeners.
  const onUpgrade = (req, socket, head) => {
    if (!ours(req.url)) return;
    const fd = socket._handle?.fd;
    if (socket.encrypted || typeof fd !== 'number' || fd < 0 || head?.length) {
      // TLS (or bytes Node already read) stays in Node: pipe the bytes through instead.
      const pipe = server.pipe(req.url, req.rawHeaders, socket.remoteAddress, (chunk) => {
        if (chunk === null) return void socket.end();
        const ok = socket.write(chunk);
        if (!ok) socket.once('drain', () => pipe.drained());
        return ok;
      });
      // write() is false once the engine is too far behind this client's input: drop it.
      const feed = (c) => pipe.write(c) || socket.destroy();
      if (head?.length) feed(head);
      socket.on('data', feed);
      socket.on('end', () => pipe.end());
      socket.on('error', () => pipe.end());
      socket.on('close', () => pipe.end());
      return;
    }
    socket._handle.readStop();
    try {
      server.adopt(fd, req.url, req.rawHeaders);
    } finally {
      socket.destroy(); // closes Node's descriptor only; the connection lives on in Rust
    }
  };
  httpServer.on('upgrade', onUpgrade);

  return {
    get clientsCount() {
      return server.clientsCount;
    },
    /** Rooms with at least one client, e.g. `session:<id>`. */
    rooms: () => server.rooms(),
    close(callback) {
      eventBus[PUBLISHERS].delete(publish);
      httpServer.off('request', onRequest);
      httpServer.off('upgrade', onUpgrade);
      for (const l of previous) httpServer.on('request', l);
      try {
        server.close();
      } catch (err) {
        return void callback?.(err);
      }
      callback?.();
    },
  };
}

// ---- web console --------------------------------------------------------------------------

/** The console's files: request name → [file, content type]. Nothing else is ever served. */
const CONSOLE_FILES = {
  '': ['index.html', 'text/html; charset=utf-8'],
  'index.html': ['index.html', 'text/html; charset=utf-8'],
  'app.js': ['app.js', 'text/javascript; charset=utf-8'],
  'style.css': ['style.css', 'text/css; charset=utf-8'],
  'socket.io.min.js': [null, 'text/javascript; charset=utf-8'],
};

const CONSOLE_HEADERS = {
  'cache-control': 'no-cache',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  // Scripts and styles only from the console itself; the API may live on another origin.
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src * ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};

/** The browser build of socket.io-client, from this package's dependencies. */
function socketIoClientFile() {
  const pkg = require.resolve('socket.io-client/package.json');
  return path.join(path.dirname(pkg), 'dist', 'socket.io.min.js');
}

/** The web console's pages under `basePath`: path → { status, headers, body }. The one table
 *  both the fetch handler and `runtime.listen({ console })` serve. */
function consolePages(options = {}, who = 'createConsole') {
  if (options === null || typeof options !== 'object') throw new TypeError(`${who}: options must be an object`);
  const { basePath = '/console' } = options;
  if (typeof basePath !== 'string' || !/^(\/[A-Za-z0-9._~-]+)*\/?$/.test(basePath)) {
    throw new TypeError(`${who}: basePath must be a path like "/console"`);
  }
  const base = basePath.replace(/\/$/, '');
  const fs = require('node:fs');
  const pages = new Map();
  // The page's relative URLs need the trailing slash.
  if (base) pages.set(base, { status: 308, headers: { location: `${base}/` }, body: Buffer.alloc(0) });
  for (const [name, [file, type]] of Object.entries(CONSOLE_FILES)) {
    const body = fs.readFileSync(file ? path.join(__dirname, 'console', file) : socketIoClientFile());
    pages.set(`${base}/${name}`, { status: 200, headers: { ...CONSOLE_HEADERS, 'content-type': type, 'content-length': String(body.length) }, body });
  }
  return { base, pages };
}

/** A fetch handler serving the web console (static files in `console/`) under `basePath`. */
function createConsole(options = {}) {
  const { base, pages } = consolePages(options);
  const plain = (status, text, extra = {}) =>
    new Response(text, { status, headers: { 'content-type': 'text/plain; charset=utf-8', ...extra } });
  const fetch = async (request) => {
    const page = pages.get(new URL(request.url, 'http://localhost').pathname);
    if (!page) return plain(404, '404 Not Found');
    if (request.method !== 'GET' && request.method !== 'HEAD') return plain(405, '405 Method Not Allowed', { allow: 'GET, HEAD' });
    const body = request.method === 'HEAD' || page.status !== 200 ? null : page.body;
    return new Response(body, { status: page.status, headers: page.headers });
  };
  return { fetch, basePath: base };
}

// ---- runtime ------------------------------------------------------------------------------

const BRIDGE_EVENTS = new Set(['newListener', 'removeListener']);

/** What the native core needs to know about this host to run agents locally. */
function hostInfo() {
  let claudeSdkEntry;
  try {
    claudeSdkEntry = require.resolve('@anthropic-ai/claude-agent-sdk');
  } catch {
    // Not installed next to us: the runner then imports it by name inside the sandbox.
  }
  // OpenCode (optional): the node_modules folder holding opencode-ai and @opencode-ai/sdk.
  let openCodeModules;
  try {
    openCodeModules = path.resolve(path.dirname(require.resolve('opencode-ai/package.json')), '..');
  } catch {
    // Not installed: OpenCode turns fail with a message saying what to install.
  }
  const env = {};
  for (const k of ['ANTHROPIC_API_KEY', 'ANTHROPIC_BASE_URL']) if (process.env[k]) env[k] = process.env[k];
  return { node: process.execPath, runnerDir: path.join(__dirname, 'sandbox'), claudeSdkEntry, openCodeModules, env, tmpDir: os.tmpdir() };
}

async function createAgentRuntime(config) {
  validateConfig(config);
  const { persistence, ...rest } = config;
  rest.__host = hostInfo();
  const eventBus = new EventBus();
  const onEvent = (name, json) => {
    try {
      if (json) emitLocal.call(eventBus, name, JSON.parse(json));
      else emitLocal.call(eventBus, name);
    } catch (err) {
      // A throwing listener must not take the process down from inside a native callback.
      console.error(`[agent-runtime-native] a listener of "${name}" threw:`, err);
    }
  };
  let n;
  try {
    n = native.NativeRuntime.create(plain(rest) ?? {}, adapterBridge(persistence), onEvent);
  } catch (err) {
    if (err && err.code === 'InvalidArg') throw new TypeError(`createAgentRuntime: ${err.message}`);
    throw fromNative(err);
  }
  // Forward events only while someone listens: with no listener an event costs Rust one atomic load.
  const refresh = () => n.setEventForwarding(eventBus.eventNames().some((e) => !BRIDGE_EVENTS.has(e)));
  eventBus.on('newListener', (name) => {
    if (!BRIDGE_EVENTS.has(name)) n.setEventForwarding(true);
  });
  eventBus.on('removeListener', refresh);

  // Sandbox processes must not outlive this process.
  const kill = () => n.killSandboxes();
  process.once('exit', kill);

  const listeners = new Set();
  const sessionManager = new SessionManager(INTERNAL, n);
  return {
    sessionManager,
    eventBus,
    start: () => call(n.start()),
    shutdown: () => {
      for (const l of listeners) l.close();
      listeners.clear();
      return call(n.shutdown());
    },
    isHealthy: () => n.isHealthy(),
    /** Prometheus metrics as text (what `GET /metrics` serves when `metrics` is on). */
    metrics: () => n.metrics(),
    createRestServer: (options = {}) => restServer(n, options.apiKey, options.maxBufferedBytes),
    createWebSocketServer: (httpServer, options) => attachRealtime(n, eventBus, httpServer, options),
    /** The web console (static files, same-origin REST and Socket.IO) as a fetch handler. */
    createConsole: (options) => createConsole(options),
    /** The fast path: REST and Socket.IO served by Rust on its own port, no JS in the data path.
     *  Loopback unless `host` says otherwise; Socket.IO needs the same key (`auth: { token }`)
     *  unless `socketApiKey` names another one or is `false` (the reference's open server). */
    listen: async (options = {}) => {
      const { port = 0, host = '127.0.0.1', apiKey, socketApiKey = apiKey } = options;
      if (typeof apiKey !== 'string' || !apiKey) throw new TypeError('listen: apiKey must be a non-empty string');
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError('listen: port must be 0..65535');
      if (typeof host !== 'string' || !host) throw new TypeError('listen: host must be a non-empty string');
      if (socketApiKey !== false && socketApiKey !== null && (typeof socketApiKey !== 'string' || !socketApiKey)) {
        throw new TypeError('listen: socketApiKey must be a non-empty string, or false for an open Socket.IO server');
      }
      const { native: nativeOptions, bridge } = socketOptions('listen', options);
      if (typeof socketApiKey === 'string') nativeOptions.apiKey = socketApiKey;
      // `console: true` or `{ basePath }`: the web console's pages, served by Rust as given.
      let pages;
      if (options.console !== undefined && options.console !== false) {
        const { pages: table } = consolePages(options.console === true ? {} : options.console, 'listen: console');
        pages = [...table].map(([p, { status, headers, body }]) => ({ path: p, status, headers: Object.entries(headers).flat(), body }));
      }
      const l = await call(n.listen(host, port, apiKey, nativeOptions, bridge, pages));
      listeners.add(l);
      return {
        port: l.port,
        host: l.host,
        close: () => (listeners.delete(l), l.close()),
      };
    },
  };
}

module.exports = {
  createAgentRuntime,
  createRestServer,
  createConsole,
  errorResponse,
  EventBus,
  SessionManager,
  AgentSession,
  ...require('./types.js'),
};
