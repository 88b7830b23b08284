// Compile the seed's example server verbatim with `tsc --strict` against a package directory
// (the repo itself, or an installed tarball), and run it.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { client } from './http.mjs';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SEED = path.join(REPO, 'examples/seed-server.ts');
const TSC = path.join(REPO, 'node_modules/typescript/bin/tsc');

/** A consumer app dir whose node_modules/@hhopkins/agent-runtime is `pkgDir` (or already installed). */
export function makeConsumer(pkgDir) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-consumer-'));
  fs.mkdirSync(path.join(dir, 'src'));
  fs.mkdirSync(path.join(dir, 'node_modules/@hhopkins'), { recursive: true });
  if (pkgDir) fs.symlinkSync(pkgDir, path.join(dir, 'node_modules/@hhopkins/agent-runtime'), 'dir');
  fs.symlinkSync(path.join(REPO, 'node_modules/@types'), path.join(dir, 'node_modules/@types'), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  return dir;
}

export function compileSeed(dir) {
  fs.copyFileSync(SEED, path.join(dir, 'src/server.ts'));
  fs.writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        outDir: 'dist',
        types: ['node'],
        skipLibCheck: false,
      },
      include: ['src'],
    }),
  );
  const r = spawnSync(process.execPath, [TSC, '-p', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tsc --strict failed:\n${r.stdout}${r.stderr}`);
  return path.join(dir, 'dist/server.js');
}

/** Start the compiled seed; resolves once it prints that it listens. */
export function runSeed(entry, env = {}) {
  const child = spawn(process.execPath, [entry], {
    cwd: path.dirname(entry),
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const ready = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('Server running on http://localhost:3001')) resolve();
    });
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(new Error(`seed server exited early (${code}):\n${out}`)));
  });
  return { child, ready, output: () => out };
}

export function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.on('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

/** Drive every REST route of a running seed server (port 3001, key "your-api-key"). */
const KEY = { Authorization: 'Bearer your-api-key', 'Content-Type': 'application/json' };

export async function exerciseSeedServer() {
  const http = client(fetch, 'http://127.0.0.1:3001');
  const req = (m, p, b) => http(m, p, b, KEY);

  assert.deepEqual((await http('GET', '/health', undefined, {})).body, { status: 'ok' });
  assert.equal((await http('GET', '/api/sessions', undefined, {})).status, 401);

  const created = await req('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
  assert.equal(created.status, 201);
  const id = created.body.sessionId;
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.deepEqual(created.body.runtime, { isLoaded: true, sandbox: null });

  const list = await req('GET', '/api/sessions');
  assert.equal(list.status, 200);
  assert.ok(Array.isArray(list.body.sessions));

  const state = await req('GET', `/api/sessions/${id}`);
  assert.equal(state.status, 200);
  assert.equal(state.body.sessionId, id);
  assert.deepEqual(state.body.blocks, []);

  const opts = await req('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { model: 'claude-sonnet-4-5' } });
  assert.deepEqual(opts.body, { success: true, sessionId: id, sessionOptions: { model: 'claude-sonnet-4-5' } });
  assert.equal((await req('POST', `/api/sessions/${id}/sync`)).status, 200);

  // The seed's documented routes.
  const doc = await req('POST', '/sessions/create', { agentProfileRef: 'default', architecture: 'opencode' });
  assert.equal(doc.status, 201);
  assert.match(doc.body.sessionId, /^ses_[0-9a-f]{12}_[0-9a-z]+$/);
  assert.equal((await req('GET', '/sessions')).status, 200);
  assert.equal((await req('GET', `/sessions/${doc.body.sessionId}`)).body.type, 'opencode');
  assert.deepEqual((await req('GET', '/agent-profiles')).body, { profiles: [{ id: 'default', name: 'Default Agent' }] });

  assert.deepEqual((await req('DELETE', `/api/sessions/${id}`)).body, { success: true, sessionId: id });
  // The seed's adapter stores nothing, so an unloaded session is gone for good.
  assert.equal((await req('GET', `/api/sessions/${id}`)).status, 404);
}

