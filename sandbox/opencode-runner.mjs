// Runs inside a sandbox, in the workspace. Two modes:
//
//   node opencode-runner.mjs            one turn: reads { prompt, sessionId, model, maxRetries? }
//                                       from stdin, starts an OpenCode server on a free port,
//                                       creates (or restores, or resumes) the session with that id,
//                                       sends the prompt and prints every OpenCode event as one JSON
//                                       line until the session is idle.
//   node opencode-runner.mjs export ID  prints OpenCode's export of session ID (the transcript).
//
// A failure is one line { type: "system", subtype: "error", error: { message, name } } and exit 1.
// OpenCode and its SDK come from AGENT_RUNTIME_NODE_MODULES (local sandboxes: the host's
// node_modules) or from node_modules beside this file (the Modal image).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
class RunnerError extends Error {}
const fail = (err) => {
  emit({ type: 'system', subtype: 'error', error: { message: err?.message ?? String(err), name: err?.name ?? 'Error' }, timestamp: Date.now() });
  process.exitCode = 1;
};
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(sig, () => {
    process.stderr.write(JSON.stringify({ type: sig === 'SIGINT' ? 'interrupted' : 'terminated', timestamp: Date.now() }) + '\n');
    process.exit(code);
  });
}

const here = dirname(fileURLToPath(import.meta.url));
const modules = process.env.AGENT_RUNTIME_NODE_MODULES || join(here, 'node_modules');
/** Where a stored transcript waits to be imported (written by the host before the first turn). */
const restoreFile = (sessionId) => join(here, 'restore', `${sessionId}.json`);

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

async function readRequest() {
  let text = '';
  for await (const chunk of process.stdin) text += chunk;
  const req = JSON.parse(text);
  if (typeof req.prompt !== 'string' || typeof req.sessionId !== 'string') {
    throw new RunnerError('runner request needs string "prompt" and "sessionId"');
  }
  const model = req.model ?? 'opencode/gemini-3-pro';
  const parts = typeof model === 'string' ? model.split('/') : [];
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new RunnerError(`model must be "provider/model" (e.g. "anthropic/claude-sonnet-4-5"), got ${JSON.stringify(model)}`);
  }
  return { ...req, providerID: parts[0], modelID: parts[1] };
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
function startServer(env) {
  const proc = spawn('opencode', ['serve', '--hostname=127.0.0.1', '--port=0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d) => (output = (output + d).slice(-4000));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new RunnerError(`opencode serve did not start within 30 s: ${output.trim()}`)), 30_000);
    proc.stderr.on('data', keep);
    proc.stdout.on('data', (d) => {
      keep(d);
      const url = /opencode server listening on (https?:\/\/\S+)/.exec(output)?.[1];
      if (url) {
        clearTimeout(timer);
        resolve({ url, close: () => proc.kill() });
      }
    });
    proc.on('error', (e) => reject(new RunnerError(`opencode serve could not start: ${e.message}`)));
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      const said = output.replace(/^opencode server listening.*$/m, '').trim();
      const err = new RunnerError(`OpenCode exited early (${signal ?? `code ${code}`})${said ? `: ${said.slice(-500)}` : ''}`);
      reject(err);
      if (!closing) {
        fail(err);
        process.exit();
      }
    });
  });
}
let closing = false;

async function turn() {
  const req = await readRequest();
  const env = openCodeEnv();
  const { createOpencodeClient } = await import(pathToFileURL(join(modules, '@opencode-ai/sdk/dist/client.js')).href);
  const server = await startServer(env);
  try {
    const client = createOpencodeClient({ baseUrl: server.url });
    await ensureSession(client, req.sessionId, env);
    const events = await client.event.subscribe();
    const fromEnv = Number.parseInt(process.env.AGENT_RUNTIME_OPENCODE_MAX_RETRIES ?? '', 10);
    const maxRetries = Number.isInteger(req.maxRetries) ? req.maxRetries : Number.isInteger(fromEnv) ? fromEnv : 3;
    let retries = 0;
    let failure;
    const prompt = client.session
      .prompt({ path: { id: req.sessionId }, body: { model: { providerID: req.providerID, modelID: req.modelID }, parts: [{ type: 'text', text: req.prompt }] } })
      .then((r) => {
        if (r.error) failure ??= new RunnerError(`OpenCode refused the prompt: ${JSON.stringify(r.error).slice(0, 500)}`);
      }, (e) => (failure ??= e));
    for await (const ev of events.stream) {
      emit(ev);
      const p = ev.properties ?? {};
      if (ev.type === 'session.error' && (!p.sessionID || p.sessionID === req.sessionId)) {
        failure ??= new RunnerError(p.error?.data?.message ?? p.error?.name ?? 'OpenCode reported a session error');
      }
      // OpenCode retries a failing model API forever; bound it.
      if (ev.type === 'session.status' && p.sessionID === req.sessionId && p.status?.type === 'retry' && ++retries > maxRetries) {
        failure ??= new RunnerError(`the model API kept failing (${retries - 1} retries): ${p.status.message ?? 'unknown error'}`);
        await client.session.abort({ path: { id: req.sessionId } }).catch(() => {});
      }
      if (ev.type === 'session.idle' && p.sessionID === req.sessionId) break;
    }
    await prompt;
    if (failure) throw failure;
  } finally {
    closing = true;
    server.close();
  }
}

function exportSession(id) {
  const r = opencode(['export', id], openCodeEnv());
  if (r.status !== 0) throw new RunnerError(`opencode export failed (exit ${r.status}): ${(r.stderr || '').trim().slice(-500)}`);
  process.stdout.write(r.stdout);
}

try {
  if (process.argv[2] === 'export') exportSession(process.argv[3]);
  else await turn();
} catch (err) {
  fail(err);
}
process.exit();
