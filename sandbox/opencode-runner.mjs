// Runs inside a sandbox, in the workspace. Two modes:
//
//   node opencode-runner.mjs            the session's long-lived runner (docs/RUNNER.md): the first
//                                       stdin line { type: "start", sessionId, model, maxRetries?,
//                                       ask } starts one OpenCode server on a free port, creates (or
//                                       restores, or resumes) the session with that id and answers
//                                       { type: "runner", event: "ready" }; every { type: "turn" }
//                                       line then sends its prompt and prints every OpenCode event as
//                                       one JSON line until the session is idle, then a turn_end line.
//   node opencode-runner.mjs export ID  prints OpenCode's export of session ID (the transcript).
//
// A failure is one line { type: "system", subtype: "error", error: { message, name } }: at start it
// is followed by exit 1, during a turn by that turn's turn_end with status "error" (the runner stays).
// OpenCode and its SDK come from AGENT_RUNTIME_NODE_MODULES (local sandboxes: the host's
// node_modules) or from node_modules beside this file (the Modal image).
//
// What OpenCode 1.0.152 does, and how the protocol maps onto it:
// - events: every OpenCode event during a turn is printed as it is (as the one-shot runner did);
//   between turns (late title and summary updates) nothing is printed.
// - interrupt: POST /session/{id}/abort. OpenCode marks the session idle at once (session.status +
//   session.idle), then the running step finishes with a session.error MessageAbortedError (only
//   if a model step was under way), the open tool parts become errors ("Tool execution aborted",
//   a running command is killed) and the assistant message is updated with that error. The turn
//   ends ("interrupted", never "error") once the prompt call has returned and those events are
//   printed, so they come before turn_end (and a next prompt cannot race the old loop's clean-up).
//   The abort does not stop a tool that had not started its work yet: its permission request is
//   refused, so a command asked for after the interrupt never runs.
// - steer: stored as a user message without a reply of its own (prompt with noReply); OpenCode's
//   running loop only ends once the newest user message is answered, so it picks the steer up at
//   its next step (after the current tool call or answer). "steered" delivered: true is printed
//   when an assistant message answering it (or a later message) starts; if the loop had already
//   decided to stop, the steer is reverted (removed at the next prompt, so the host's queued turn
//   does not repeat it) and answered delivered: false just before turn_end.
// - permissions: OpenCode asks for bash, edit/write (config `edit`), webfetch/websearch/codesearch
//   (config `webfetch`), plus doom_loop and external_directory when the agent says "ask". The
//   runner always sets bash/edit/webfetch to "ask" (OPENCODE_PERMISSION, which outranks the
//   project's .opencode/opencode.json) and answers "once" itself while the host's policy is
//   ask: false. A deny is OpenCode's "reject" (the tool result says "The user rejected permission
//   to use this specific tool call...", and OpenCode's loop stops); a deny message is then given
//   to the model as a synthetic user text and the loop continues, within the same turn.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const control = (event, fields = {}) => emit({ type: 'runner', event, ...fields });
class RunnerError extends Error {}
const errorLine = (err) =>
  emit({ type: 'system', subtype: 'error', error: { message: err?.message ?? String(err), name: err?.name ?? 'Error' }, timestamp: Date.now() });
const fail = (err) => {
  errorLine(err);
  process.exitCode = 1;
};
let server;
// However the runner ends (an exit, a crash, the host gone: EPIPE on stdout), OpenCode goes too.
process.on('exit', () => server?.close());
process.stdout.on('error', () => process.exit(1));
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(sig, () => {
    process.stderr.write(JSON.stringify({ type: sig === 'SIGINT' ? 'interrupted' : 'terminated', timestamp: Date.now() }) + '\n');
    server?.close();
    process.exit(code);
  });
}

const here = dirname(fileURLToPath(import.meta.url));
const modules = process.env.AGENT_RUNTIME_NODE_MODULES || join(here, 'node_modules');
/** Where a stored transcript waits to be imported (written by the host before the first turn). */
const restoreFile = (sessionId) => join(here, 'restore', `${sessionId}.json`);

/** The tools OpenCode asks about when its config says "ask" (the runner answers while the host
 *  does not want to be asked). */
const ASK = { bash: 'ask', edit: 'ask', webfetch: 'ask' };

/** The environment OpenCode runs with: its binary on PATH and nothing fetched from the network
 *  that a sandbox does not need (default plugins, LSP downloads; with a local model endpoint
 *  also the model list and plugin installs, which would only time out). */
function openCodeEnv() {
  const env = { ...process.env };
  const bin = join(modules, '.bin');
  if (!existsSync(join(bin, 'opencode'))) {
    throw new RunnerError(`OpenCode is not installed: no ${join(bin, 'opencode')} (npm install opencode-ai@1.0.152 @opencode-ai/sdk@1.0.152)`);
  }
  env.PATH = `${bin}:${env.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`;
  if (spawnSync('rg', ['--version'], { env, stdio: 'ignore' }).status !== 0) {
    throw new RunnerError('ripgrep (rg) is not installed in the sandbox; OpenCode needs it (Debian: apt-get install ripgrep)');
  }
  env.OPENCODE_DISABLE_DEFAULT_PLUGINS = '1';
  env.OPENCODE_DISABLE_LSP_DOWNLOAD = '1';
  env.OPENCODE_DISABLE_AUTOUPDATE = '1';
  // Merged last into OpenCode's config (after the project's .opencode/opencode.json).
  env.OPENCODE_PERMISSION = JSON.stringify(ASK);
  const base = env.ANTHROPIC_BASE_URL;
  if (base) {
    // The Claude convention is a base URL without /v1; OpenCode's provider wants it with.
    const baseURL = base.replace(/\/+$/, '').replace(/(\/v1)?$/, '/v1');
    const dir = mkdtempSync(join(env.TMPDIR || tmpdir(), 'opencode-config-'));
    const file = join(dir, 'opencode.json');
    const options = { baseURL, ...(env.ANTHROPIC_API_KEY ? { apiKey: env.ANTHROPIC_API_KEY } : {}) };
    writeFileSync(file, JSON.stringify({ provider: { anthropic: { options } } }));
    env.OPENCODE_CONFIG = file;
    if (/^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(base)) {
      const dead = 'http://127.0.0.1:9';
      Object.assign(env, { NPM_CONFIG_REGISTRY: `${dead}/`, HTTPS_PROXY: dead, https_proxy: dead, NO_PROXY: '127.0.0.1,localhost', no_proxy: '127.0.0.1,localhost' });
    }
  }
  return env;
}

function opencode(args, env) {
  const r = spawnSync('opencode', args, { env, encoding: 'utf8', maxBuffer: 512 << 20 });
  if (r.error) throw new RunnerError(`opencode ${args[0]} could not start: ${r.error.message}`);
  return r;
}

function parseStart(req) {
  if (req?.type !== 'start') throw new RunnerError(`the runner's first line must be {"type":"start",...}, got ${JSON.stringify(req?.type)}`);
  if (typeof req.sessionId !== 'string') throw new RunnerError('the start line needs a string "sessionId"');
  const model = req.model ?? 'opencode/gemini-3-pro';
  const parts = typeof model === 'string' ? model.split('/') : [];
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new RunnerError(`model must be "provider/model" (e.g. "anthropic/claude-sonnet-4-5"), got ${JSON.stringify(model)}`);
  }
  const fromEnv = Number.parseInt(process.env.AGENT_RUNTIME_OPENCODE_MAX_RETRIES ?? '', 10);
  const maxRetries = Number.isInteger(req.maxRetries) ? req.maxRetries : Number.isInteger(fromEnv) ? fromEnv : 3;
  return { sessionId: req.sessionId, providerID: parts[0], modelID: parts[1], maxRetries, ask: req.ask === true };
}

/** Make the session exist: resume it, restore it from the stored transcript, or create it with
 *  the id the runtime chose (OpenCode has no "create with id", so a minimal export is imported). */
async function ensureSession(client, id, env) {
  const got = await client.session.get({ path: { id } });
  if (got.data) return;
  let file = restoreFile(id);
  let seedDir;
  if (!existsSync(file)) {
    seedDir = mkdtempSync(join(env.TMPDIR || tmpdir(), 'opencode-seed-'));
    file = join(seedDir, `${id}.json`);
    const now = Date.now();
    const info = { id, version: '1.0.120', projectID: 'global', directory: process.cwd(), title: 'New Session', time: { created: now, updated: now }, summary: { additions: 0, deletions: 0, files: 0 } };
    writeFileSync(file, JSON.stringify({ info, messages: [] }));
  }
  const r = opencode(['import', file], env);
  if (seedDir) rmSync(seedDir, { recursive: true, force: true });
  if (r.status !== 0) throw new RunnerError(`opencode import failed (exit ${r.status}): ${(r.stderr || r.stdout).trim().slice(-500)}`);
}

/** `opencode serve` on a free port (port 0: sessions side by side never collide). Started here
 *  rather than by the SDK so that the server dying mid-turn fails the turn at once (the SDK's
 *  event stream would wait for it forever). */
function startServer(env, onDeath) {
  const proc = spawn('opencode', ['serve', '--hostname=127.0.0.1', '--port=0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let closing = false;
  const keep = (d) => (output = (output + d).slice(-4000));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new RunnerError(`opencode serve did not start within 30 s: ${output.trim()}`)), 30_000);
    proc.stderr.on('data', keep);
    proc.stdout.on('data', (d) => {
      keep(d);
      const url = /opencode server listening on (https?:\/\/\S+)/.exec(output)?.[1];
      if (url) {
        clearTimeout(timer);
        resolve({ url, pid: proc.pid, close: () => ((closing = true), proc.kill()) });
      }
    });
    proc.on('error', (e) => reject(new RunnerError(`opencode serve could not start: ${e.message}`)));
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      const said = output.replace(/^opencode server listening.*$/m, '').trim();
      const err = new RunnerError(`OpenCode exited early (${signal ?? `code ${code}`})${said ? `: ${said.slice(-500)}` : ''}`);
      reject(err);
      if (!closing) onDeath(err);
    });
  });
}

/** Every live descendant of this process (children first found through /proc's parent links). */
function descendants() {
  const children = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(name));
    } catch {}
  }
  const out = [];
  const walk = (pid) => {
    for (const c of children.get(pid) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(process.pid);
  return out;
}

function killAll() {
  // Stop the tree first so that nothing forks between the walk and the kills, then kill.
  const pids = descendants();
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGSTOP');
    } catch {}
  }
  for (const pid of new Set([...pids, ...descendants()])) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
}

/** The runner: one OpenCode server and event stream for the process, one turn at a time. */
class Runner {
  constructor(cfg, client) {
    Object.assign(this, cfg);
    this.client = client;
    this.turn = undefined;
    this.stdinEnded = false;
    /** Permission requests waiting for the host: id -> { sessionID }. */
    this.pending = new Map();
    /** Tool parts by call id (for the tool name and input of a permission request). */
    this.tools = new Map();
    this.barriers = 0;
    /** Barrier toasts awaited: message -> resolve. */
    this.barrierWaits = new Map();
  }

  body(parts) {
    return { model: { providerID: this.providerID, modelID: this.modelID }, parts };
  }

  // ---- host lines ----

  line(text) {
    if (!text.trim()) return;
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      process.stderr.write(`opencode-runner: ignoring a line that is not JSON: ${text.slice(0, 200)}\n`);
      return;
    }
    switch (msg?.type) {
      case 'turn':
        return this.startTurn(msg);
      case 'interrupt':
        return this.interrupt();
      case 'kill':
        killAll();
        return process.exit(137);
      case 'steer':
        return this.steer(msg);
      case 'permission':
        return this.decide(msg);
      case 'policy':
        this.ask = msg.ask === true;
        return;
      default:
        process.stderr.write(`opencode-runner: ignoring an unknown line type ${JSON.stringify(msg?.type)}\n`);
    }
  }

  endOfInput() {
    this.stdinEnded = true;
    // Nobody can answer any more: what waits is denied.
    for (const id of [...this.pending.keys()]) this.decide({ requestId: id, behavior: 'deny' });
    if (!this.turn) this.exit(0);
  }

  exit(code) {
    // `opencode` is a launcher: ending it alone left the server it started running (orphaned,
    // holding its port and memory until the sandbox stopped). The whole tree goes, walked
    // while it is intact (a launcher that died first would have orphaned the server).
    killAll();
    process.exit(code);
  }

  // ---- turns ----

  startTurn(msg) {
    if (this.turn) {
      control('turn_end', { turnId: msg.turnId, status: 'error', error: { message: 'a turn is already running' } });
      return;
    }
    if (typeof msg.prompt !== 'string') {
      errorLine(new RunnerError('a turn line needs a string "prompt"'));
      control('turn_end', { turnId: msg.turnId, status: 'error', error: { message: 'a turn line needs a string "prompt"' } });
      return;
    }
    this.turn = { id: msg.turnId, retries: 0, failure: undefined, interrupted: false, steers: [], denied: [] };
    this.tools.clear();
    this.send([{ type: 'text', text: msg.prompt }]);
  }

  /** One prompt call of the current turn (the turn's own, or a deny message's continuation). */
  send(parts) {
    const t = this.turn;
    t.settled = false;
    this.client.session.prompt({ path: { id: this.sessionId }, body: this.body(parts) }).then(
      (r) => {
        if (r.error) t.failure ??= new RunnerError(`OpenCode refused the prompt: ${JSON.stringify(r.error).slice(0, 500)}`);
      },
      (e) => (t.failure ??= e),
    ).finally(() => {
      t.settled = true;
      this.maybeEnd();
    });
  }

  /** The turn is over once its prompt call returned (OpenCode's loop has finished) and every
   *  event OpenCode published before that has been printed (after an abort, the idle comes first
   *  and the step's MessageAbortedError and aborted tool parts after it). */
  maybeEnd() {
    const t = this.turn;
    if (!t || !t.settled || t.ending) return;
    t.ending = true;
    this.barrier().then(() => {
      t.ending = false;
      if (this.turn !== t) return;
      if (t.denied.length && !t.failure && !t.interrupted) {
        // OpenCode stops its loop at a rejected tool call; the deny message goes to the model.
        const text = t.denied.map((d) => `The user denied the ${d.toolName} call: ${d.message}`).join('\n');
        t.denied = [];
        this.send([{ type: 'text', text, synthetic: true }]);
        return;
      }
      this.turn = undefined;
      return this.finishSteers(t).finally(() => {
        if (t.failure && !t.interrupted) {
          errorLine(t.failure);
          control('turn_end', { turnId: t.id, status: 'error', error: { message: t.failure.message ?? String(t.failure) } });
        } else {
          control('turn_end', { turnId: t.id, status: t.interrupted ? 'interrupted' : 'completed' });
        }
        if (this.stdinEnded) this.exit(0);
      });
    });
  }

  /** Resolves once OpenCode's event stream has delivered everything published before now: an
   *  event of our own (a TUI toast, which nothing shows) goes through OpenCode's bus and comes
   *  back after them. */
  barrier() {
    const message = `runner-barrier-${++this.barriers}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => (this.barrierWaits.delete(message), resolve()), 2000);
      this.barrierWaits.set(message, () => (clearTimeout(timer), resolve()));
      this.client.tui.showToast({ body: { message, variant: 'info', duration: 1 } }).catch(() => {});
    });
  }

  interrupt() {
    const t = this.turn;
    if (!t) return;
    t.interrupted = true;
    // A tool waiting for the host would hold the step; it is rejected first.
    for (const [id, p] of this.pending) this.answer(id, p.sessionID, 'reject');
    this.pending.clear();
    this.abort();
  }

  abort() {
    return this.client.session.abort({ path: { id: this.sessionId } }).catch(() => {});
  }

  // ---- steering ----

  /** A steer is stored as a user message without starting a reply of its own (noReply): the
   *  running loop picks it up at its next step (OpenCode's loop only ends once the newest user
   *  message is answered), and nothing can start a second loop beside the turn's. */
  steer(msg) {
    const t = this.turn;
    if (!t || t.interrupted || t.settled || typeof msg.prompt !== 'string') {
      control('steered', { messageId: msg.messageId, delivered: false });
      return;
    }
    const s = { messageId: msg.messageId, userMessage: undefined, answered: false };
    s.stored = this.client.session
      .prompt({ path: { id: this.sessionId }, body: { ...this.body([{ type: 'text', text: msg.prompt }]), noReply: true } })
      .then((r) => {
        s.userMessage = r.data?.info?.id ?? r.data?.id;
        this.checkSteers(t);
      })
      .catch(() => {});
    t.steers.push(s);
  }

  /** Every steer stored before the newest step's user message has reached the model. */
  checkSteers(t) {
    for (const s of t.steers) {
      if (!s.answered && s.userMessage && t.answeredUpTo && s.userMessage <= t.answeredUpTo) {
        s.answered = true;
        control('steered', { messageId: s.messageId, delivered: true });
      }
    }
  }

  /** Steers the turn did not answer (stored after OpenCode's loop had decided to stop): not
   *  delivered; their stored messages are reverted (removed at the next prompt), so the host's
   *  queued turn does not repeat them. */
  async finishSteers(t) {
    await Promise.all(t.steers.map((s) => s.stored));
    this.checkSteers(t);
    const left = t.steers.filter((s) => !s.answered);
    if (!left.length) return;
    const first = left.map((s) => s.userMessage).filter(Boolean).sort()[0];
    if (first) await this.client.session.revert({ path: { id: this.sessionId }, body: { messageID: first } }).catch(() => {});
    for (const s of left) control('steered', { messageId: s.messageId, delivered: false });
  }

  // ---- permissions ----

  async permission(p) {
    // OpenCode's abort does not stop a tool that has not started its work yet (a bash command
    // spawned after the abort would run to its end, and the turn with it): after an interrupt,
    // or outside a turn, whatever asks is refused.
    if (!this.turn || this.turn.interrupted) {
      this.answer(p.id, p.sessionID, 'reject');
      return;
    }
    if (!this.ask) {
      this.answer(p.id, p.sessionID, 'once');
      return;
    }
    // The request can come before the tool part that says which tool and input it is about.
    this.pending.set(p.id, { sessionID: p.sessionID, toolName: p.type });
    if (p.callID && !this.tools.get(p.callID)?.state?.input) await this.barrier();
    if (!this.pending.has(p.id)) return;
    const part = p.callID ? this.tools.get(p.callID) : undefined;
    const toolName = part?.tool ?? (typeof p.metadata?.tool === 'string' ? p.metadata.tool : p.type);
    const input = part?.state?.input ?? p.metadata?.input ?? { ...p.metadata, ...(p.pattern ? { pattern: p.pattern } : {}) };
    this.pending.set(p.id, { sessionID: p.sessionID, toolName });
    control('permission', { requestId: p.id, kind: 'tool', toolName, toolUseId: p.callID ?? p.id, input, title: p.title, permissionType: p.type });
  }

  decide(msg) {
    const p = this.pending.get(msg.requestId);
    if (!p) return;
    this.pending.delete(msg.requestId);
    const allow = msg.behavior === 'allow';
    if (!allow && typeof msg.message === 'string' && msg.message.trim() && this.turn && !this.turn.interrupted) {
      this.turn.denied.push({ toolName: p.toolName, message: msg.message.trim() });
    }
    this.answer(msg.requestId, p.sessionID, allow ? 'once' : 'reject');
  }

  answer(permissionID, sessionID, response) {
    this.client
      .postSessionIdPermissionsPermissionId({ path: { id: sessionID, permissionID }, body: { response } })
      .catch((e) => process.stderr.write(`opencode-runner: answering permission ${permissionID} failed: ${e?.message ?? e}\n`));
  }

  // ---- OpenCode events ----

  event(ev) {
    const t = this.turn;
    const p = ev.properties ?? {};
    if (ev.type === 'tui.toast.show' && this.barrierWaits.has(p.message)) {
      this.barrierWaits.get(p.message)();
      this.barrierWaits.delete(p.message);
      return;
    }
    // Outside a turn (title and summary updates after idle) nothing is printed, as before.
    if (t) emit(ev);
    else if (process.env.AGENT_RUNTIME_RUNNER_DEBUG) process.stderr.write(`between turns: ${JSON.stringify(ev)}\n`);
    switch (ev.type) {
      case 'permission.updated':
        return this.permission(p);
      case 'message.updated':
        if (t && p.info?.sessionID === this.sessionId && p.info.role === 'assistant' && p.info.parentID) {
          if (!t.answeredUpTo || p.info.parentID > t.answeredUpTo) t.answeredUpTo = p.info.parentID;
          this.checkSteers(t);
        }
        return;
      case 'message.part.updated':
        if (p.part?.type === 'tool' && p.part.callID) this.tools.set(p.part.callID, p.part);
        return;
    }
    if (!t) return;
    if (ev.type === 'session.error' && (!p.sessionID || p.sessionID === this.sessionId)) {
      if (p.error?.name === 'MessageAbortedError') {
        // Our interrupt (or the retry bound's abort, which already failed the turn).
        if (!t.failure) t.interrupted = true;
      } else {
        t.failure ??= new RunnerError(p.error?.data?.message ?? p.error?.name ?? 'OpenCode reported a session error');
      }
    }
    if (ev.type === 'session.status' && p.sessionID === this.sessionId) {
      // OpenCode retries a failing model API forever; bound it.
      if (p.status?.type === 'retry' && ++t.retries > this.maxRetries && !t.failure) {
        t.failure = new RunnerError(`the model API kept failing (${t.retries - 1} retries): ${p.status.message ?? 'unknown error'}`);
        this.abort();
      }
      // An interrupt that came before OpenCode's loop started did not stop it.
      if (p.status?.type === 'busy' && t.interrupted) this.abort();
    }
  }
}

async function run() {
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  const queue = [];
  let wake;
  let ended = false;
  lines.on('line', (l) => (queue.push(l), wake?.()));
  lines.on('close', () => ((ended = true), wake?.()));
  const next = async () => {
    while (!queue.length && !ended) await new Promise((r) => (wake = r));
    return queue.shift();
  };

  let cfg;
  let runner;
  const first = await next();
  try {
    if (first === undefined) throw new RunnerError('no start line on stdin');
    cfg = parseStart(JSON.parse(first));
    const env = openCodeEnv();
    const { createOpencodeClient } = await import(pathToFileURL(join(modules, '@opencode-ai/sdk/dist/client.js')).href);
    server = await startServer(env, (err) => {
      errorLine(err);
      const t = runner?.turn;
      if (t) control('turn_end', { turnId: t.id, status: 'error', error: { message: err.message } });
      process.exit(1);
    });
    const client = createOpencodeClient({ baseUrl: server.url });
    await ensureSession(client, cfg.sessionId, env);
    const events = await client.event.subscribe();
    runner = new Runner(cfg, client);
    // The SSE stream connects when first read: ready only once OpenCode says it is connected, so
    // that no event of the first turn is missed.
    let connected;
    const isConnected = new Promise((r) => (connected = r));
    (async () => {
      for await (const ev of events.stream) {
        if (ev.type === 'server.connected') connected();
        else runner.event(ev);
      }
    })().catch((e) => process.stderr.write(`opencode-runner: event stream failed: ${e?.message ?? e}\n`));
    const late = new Promise((_, reject) => setTimeout(() => reject(new RunnerError('OpenCode\'s event stream did not connect within 30 s')), 30_000).unref());
    await Promise.race([isConnected, late]);
  } catch (err) {
    fail(err);
    killAll();
    process.exit();
  }
  control('ready', { pid: process.pid });
  for (;;) {
    const l = await next();
    if (l === undefined) break;
    runner.line(l);
  }
  runner.endOfInput();
}

function exportSession(id) {
  const r = opencode(['export', id], openCodeEnv());
  if (r.status !== 0) throw new RunnerError(`opencode export failed (exit ${r.status}): ${(r.stderr || '').trim().slice(-500)}`);
  process.stdout.write(r.stdout);
}

if (process.argv[2] === 'export') {
  try {
    exportSession(process.argv[3]);
  } catch (err) {
    fail(err);
  }
  process.exit();
} else {
  await run();
}
