// The Modal provider against the fake control plane (crate fake-modal), offline: the official
// SDK accepts the fake, and a real Claude conversation runs in a "Modal" sandbox end to end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startFakeModal, fakeModalBin } from './helpers/fake-modal.mjs';
import { agentRuntime, claudeConversation } from './helpers/agent.mjs';
import { summarize, departures } from './modal/golden.mjs';
import { REPO, makeConsumer, compileSeed, runSeed, stop } from '../examples/seed-app.mjs';
import { startFakeAnthropic } from '../fake-model/fake-anthropic.mjs';
import { client } from './helpers/http.mjs';
import { io } from 'socket.io-client';

const GOLDEN = path.join(REPO, '__test__/modal/golden-official-0.5.4.json');
const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };
const TOKENS = { tokenId: 'ak-test', tokenSecret: 'as-test-secret', appName: 'arn-test' };

const runNode = (script, env) => runBinary(process.execPath, [script], env);

/** Run a program that prints one JSON line last; resolves with it. */
function runBinary(file, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop())) : reject(new Error(`${file} ${args.join(' ')} exited ${code}:\n${err}`))));
  });
}

/** A runtime on the Modal provider, pointed at `fake` (MODAL_SERVER_URL is read at creation). */
async function modalRuntime(fake, options = {}, tokens = TOKENS) {
  process.env.MODAL_SERVER_URL = fake.url;
  try {
    return await agentRuntime({ modal: tokens, sandbox: { provider: 'modal' }, ...options });
  } finally {
    delete process.env.MODAL_SERVER_URL;
  }
}

test('the official modal@0.5.4 SDK runs the reference sequence against the fake, as recorded in the golden file', { timeout: 600_000 }, async () => {
  const record = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'arn-rec-')), 'calls.jsonl');
  const fake = await startFakeModal({ record, faults: { image_build_ms: 50 } });
  try {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-home-'));
    const out = await runNode(path.join(REPO, '__test__/modal/official-scenario.mjs'), { MODAL_SERVER_URL: fake.url, HOME: home });
    assert.match(out.sandboxId, /^sb-[0-9A-Za-z]{22}$/);
    assert.deepEqual(
      { mkdir: out.mkdir, read: out.read, missing: out.missing, stdout: out.stdout, stderr: out.stderr, code: out.code, ls: out.ls },
      { mkdir: 0, read: 'hello ✓', missing: 'SandboxFilesystemError', stdout: 'in', stderr: 'err\n', code: 3, ls: 'a.txt' },
    );
    assert.equal(out.pollBefore, null);
    assert.equal(out.pollAfter, 137);
    const calls = fs.readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const summary = summarize(calls);
    if (process.env.UPDATE_GOLDEN) fs.writeFileSync(GOLDEN, JSON.stringify(summary, null, 2) + '\n');
    assert.deepEqual(summary, JSON.parse(fs.readFileSync(GOLDEN, 'utf8')), 'the official client sends what the golden file says');
  } finally {
    await fake.stop();
  }
});

test('the Rust client makes the calls of the official client, with the same request bodies and headers', { timeout: 120_000 }, async () => {
  const record = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'arn-rec-')), 'calls.jsonl');
  const fake = await startFakeModal({ record, faults: { image_build_ms: 50 } });
  try {
    const out = await runBinary(fakeModalBin('modal-scenario'), ['scenario'], { MODAL_SERVER_URL: fake.url });
    assert.deepEqual(
      { read: out.read, missing: out.missing, stdout: out.stdout, stderr: out.stderr, code: out.code, ls: out.ls, pollBefore: out.pollBefore, pollAfter: out.pollAfter },
      { read: 'hello ✓', missing: true, stdout: 'in', stderr: 'err\n', code: 3, ls: 'a.txt', pollBefore: null, pollAfter: 137 },
    );
    const ours = summarize(fs.readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l)));
    const golden = JSON.parse(fs.readFileSync(GOLDEN, 'utf8'));
    // SandboxGetLogs is a side effect of the JS SDK's Sandbox object (stdout of the entrypoint),
    // never read. TaskGetCommandRouterAccess is our probe for the newer exec path (this fake
    // offers no router, so the classic calls follow, as modal-js 0.5.4 makes them).
    // Reads deliberately do not use the file API (it follows links, blocks on FIFOs and returns
    // whole files): they are one bounded exec instead, so the file API's read calls are absent.
    const fileApiRead = (m, r) =>
      m === 'ContainerFilesystemExec' && (r.file_read_request !== null || r.file_open_request?.mode === 'r');
    assert.deepEqual(
      departures(golden, ours, { ignoreMethods: ['SandboxGetLogs'], extraMethods: ['TaskGetCommandRouterAccess'], ignoreRequests: fileApiRead }),
      [],
    );
    assert.deepEqual(ours.headers, golden.headers);
  } finally {
    await fake.stop();
  }
});

test('a Claude conversation on the Modal provider (fake control plane): same end-to-end behaviour as local', { timeout: 300_000 }, async () => {
  const fake = await startFakeModal();
  const h = await modalRuntime(fake);
  try {
    await claudeConversation(h);
    const sandboxes = h.of(h.log.find(([n]) => n === 'session:status')[1].sessionId, 'session:status')
      .map((p) => p.runtime.sandbox?.sandboxId)
      .filter(Boolean);
    assert.ok(sandboxes.every((id) => /^sb-[0-9A-Za-z]{22}$/.test(id)), `Modal sandbox ids: ${sandboxes}`);
  } finally {
    await h.close();
    await fake.stop();
  }
});

test('a Claude conversation on Modal through the task command router (the newer exec path)', { timeout: 300_000 }, async () => {
  const record = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'arn-rec-')), 'calls.jsonl');
  const fake = await startFakeModal({ faults: { router: true }, record });
  const h = await modalRuntime(fake);
  try {
    await claudeConversation(h);
    const methods = fs.readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l).method);
    assert.ok(methods.includes('TaskExecStart'), 'commands ran through the router');
    assert.ok(!methods.includes('ContainerExec'), 'and not through ContainerExec');
  } finally {
    await h.close();
    await fake.stop();
  }
});

test('the seed example server, with Modal tokens and MODAL_SERVER_URL at the fake, runs a conversation in a Modal sandbox', { timeout: 300_000 }, async () => {
  const fake = await startFakeModal();
  const model = await startFakeAnthropic();
  const dir = makeConsumer(REPO);
  const server = runSeed(compileSeed(dir), {
    MODAL_TOKEN_ID: 'ak-seed',
    MODAL_TOKEN_SECRET: 'as-seed',
    MODAL_SERVER_URL: fake.url,
    ANTHROPIC_BASE_URL: model.url,
    ANTHROPIC_API_KEY: 'fake-key',
  });
  try {
    await server.ready;
    const KEY = { Authorization: 'Bearer your-api-key', 'Content-Type': 'application/json' };
    const http = client(fetch, 'http://127.0.0.1:3001');
    const rest = (m, p, b) => http(m, p, b, KEY);
    const id = (await rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    const socket = io('http://127.0.0.1:3001', { transports: ['websocket'], reconnection: false });
    await new Promise((resolve, reject) => (socket.once('connect', resolve), socket.once('connect_error', reject)));
    assert.deepEqual(await socket.emitWithAck('session:join', id), { success: true });
    const events = [];
    for (const name of ['session:block:start', 'session:block:complete', 'session:file:created', 'session:status']) socket.on(name, (p) => events.push([name, p]));
    const done = new Promise((resolve) => socket.on('session:block:complete', (p) => p.block.subtype === 'session_end' && resolve()));
    await rest('POST', `/api/sessions/${id}/messages`, { content: 'think, then write haiku.txt' });
    await done;
    const sandboxId = events.find(([n, p]) => n === 'session:status' && p.runtime.sandbox?.sandboxId)[1].runtime.sandbox.sandboxId;
    assert.match(sandboxId, /^sb-[0-9A-Za-z]{22}$/, 'a Modal sandbox');
    const completes = events.filter(([n]) => n === 'session:block:complete').map(([, p]) => p.block);
    const started = events.filter(([n]) => n === 'session:block:start').map(([, p]) => p.block.id);
    for (const b of completes.filter((b) => ['thinking', 'assistant_text', 'tool_use'].includes(b.type))) assert.ok(started.includes(b.id), `${b.id} started before it completed`);
    assert.equal(completes.find((b) => b.type === 'tool_use').toolName, 'Write');
    // After the turn the transcript is read back and parsed: GET then shows the live ids.
    const live = completes.filter((b) => ['thinking', 'assistant_text', 'tool_use'].includes(b.type)).map((b) => b.id);
    const state = await eventuallyValue(async () => {
      const s = (await rest('GET', `/api/sessions/${id}`)).body;
      const ids = new Set(s.blocks.map((b) => b.id));
      return s.workspaceFiles.length && live.every((i) => ids.has(i)) ? s : null;
    });
    assert.deepEqual(state.workspaceFiles, [{ path: 'haiku.txt', content: 'Old pond\nfrog jumps in\nsound of water\n' }]);
    socket.close();
  } finally {
    const code = await stop(server.child);
    assert.equal(code, 0, `SIGTERM should shut down cleanly:\n${server.output()}`);
    await model.close();
    await fake.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

async function eventuallyValue(get, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a Modal sandbox terminated from outside is noticed and replaced on the next message', { timeout: 240_000 }, async () => {
  const fake = await startFakeModal();
  const h = await modalRuntime(fake, { healthCheckIntervalMs: 200 });
  try {
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    await s.sendMessage('hello');
    const first = s.getRuntimeState().sandbox;
    assert.equal(first.restartCount, 0);
    await fake.terminate(first.sandboxId);
    const [, dead] = await h.waitFor((n, p) => n === 'session:status' && p.sessionId === s.sessionId && p.runtime.sandbox?.status === 'terminated');
    assert.match(dead.runtime.sandbox.statusMessage, /Sandbox stopped/);
    await s.sendMessage('hello again');
    const second = s.getRuntimeState().sandbox;
    assert.notEqual(second.sandboxId, first.sandboxId);
    assert.equal(second.restartCount, 1);
    const texts = s.getState().blocks.filter((b) => b.type === 'user_message').map((b) => b.content);
    assert.deepEqual(texts, ['hello', 'hello again'], 'the conversation carried over');
  } finally {
    await h.close();
    await fake.stop();
  }
});

/** Send one message and return the error it fails with (the turn's `error` event). */
async function failingTurn(h) {
  const s = await h.rt.sessionManager.createSession(CLAUDE);
  const failure = await s.sendMessage('hello').then(() => null, (e) => e);
  assert.ok(failure, 'the message fails');
  const [, ev] = await h.waitFor((n, p) => n === 'session:error' && p.sessionId === s.sessionId);
  // Like every turn, it ends with an end block; here it says why.
  const end = h.of(s.sessionId, 'session:block:complete').find((p) => p.block.metadata?.stopReason);
  assert.equal(end?.block.metadata.stopReason, 'error');
  assert.equal(end.block.message, `Session ended with error: ${ev.error.message}`);
  assert.ok(h.rt.sessionManager.isSessionLoaded(s.sessionId), 'the session stays loaded');
  assert.equal(s.getState().sessionId, s.sessionId);
  return { s, message: ev.error.message };
}

test('Modal errors a user can act on end the turn with an error event and leave the session usable', { timeout: 180_000 }, async (t) => {
  await t.test('bad credentials', async () => {
    const fake = await startFakeModal();
    const h = await modalRuntime(fake, {}, { ...TOKENS, tokenId: 'ak-bad-token-id', tokenSecret: 'as-very-secret' });
    try {
      const { message } = await failingTurn(h);
      assert.match(message, /Modal rejected the credentials for token id ak-bad-t…/);
      assert.ok(!message.includes('as-very-secret'), 'the secret is not in the error');
    } finally {
      await h.close();
      await fake.stop();
    }
  });
  await t.test('image build failure, with the build log tail', async () => {
    const fake = await startFakeModal({ faults: { image_build_fail: 'npm ERR! 404 no such package' } });
    const h = await modalRuntime(fake);
    try {
      const { message } = await failingTurn(h);
      assert.match(message, /Modal image build failed/);
      assert.match(message, /npm ERR! 404 no such package/);
    } finally {
      await h.close();
      await fake.stop();
    }
  });
  await t.test('app creation refused', async () => {
    const fake = await startFakeModal({ faults: { deny_app_create: true } });
    const h = await modalRuntime(fake);
    try {
      const { message } = await failingTurn(h);
      assert.match(message, /Modal app "arn-test" does not exist and could not be created/);
    } finally {
      await h.close();
      await fake.stop();
    }
  });
  await t.test('control plane unreachable', async () => {
    const fake = await startFakeModal();
    const url = fake.url;
    await fake.stop();
    const h = await modalRuntime({ url });
    try {
      const { s, message } = await failingTurn(h);
      assert.match(message, /Modal control plane at http:\/\/127\.0\.0\.1:\d+ is unreachable/);
      // Still usable: the next message fails the same clear way instead of hanging or crashing.
      const again = await s.sendMessage('again').then(() => null, (e) => e);
      assert.match(again.message, /unreachable/);
    } finally {
      await h.close();
    }
  });
});
