// Session lifecycle under failure and load, with the real SDK against the fake model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { agentRuntime, eventually, pidsMentioning, pidsWorkingIn } from './helpers/agent.mjs';

const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };

async function readyRunner(h, s) {
  // The runner's argv names the sandbox directory, which is <root>/<sandboxId>.
  const [, status] = await h.waitFor((n, p) => n === 'session:status' && p.sessionId === s.sessionId && p.runtime.sandbox?.status === 'ready');
  const dir = path.join(h.root, status.runtime.sandbox.sandboxId);
  await h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === s.sessionId && p.block.type === 'user_message');
  return dir;
}

test('a sandbox killed mid-turn ends the turn with an error; the session keeps working', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  try {
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    const turn = s.sendMessage('wait 4000ms, then answer');
    const outcome = turn.then(() => null, (e) => e);
    const dir = await readyRunner(h, s);
    // The model call is pending (the fake holds it): kill every process of the sandbox.
    await h.fake.waitForRequest((r) => JSON.stringify(r.body.messages ?? []).includes('wait 4000ms'));
    // (Killing one may already have taken others with it.)
    for (const pid of pidsMentioning(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (e) {
        if (e.code !== 'ESRCH') throw e;
      }
    }
    const failure = await outcome;
    assert.equal(failure?.code, 'AGENT_RUN_FAILED');
    assert.match(failure.message, /killed|exited/);
    const [, err] = await h.waitFor((n, p) => n === 'session:error' && p.sessionId === s.sessionId);
    assert.match(err.error.message, /killed|exited/);
    assert.ok(h.rt.sessionManager.isSessionLoaded(s.sessionId));
    await s.sendMessage('hello after the crash');
    const prompts = h.of(s.sessionId, 'session:block:complete').filter((p) => p.block.type === 'assistant_text').map((p) => p.block.content);
    assert.ok(prompts.some((t) => t.includes('hello after the crash')));
  } finally {
    await h.close();
  }
});

test('health polling sees a dead sandbox; the next message starts a new one', { timeout: 240_000 }, async () => {
  const h = await agentRuntime({ healthCheckIntervalMs: 100 });
  try {
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    await s.sendMessage('hello');
    const first = s.getRuntimeState().sandbox;
    assert.equal(first.restartCount, 0);
    // Destroy it from outside.
    const dir = path.join(h.root, first.sandboxId);
    // Everything that runs there: named on its command line, or working inside (the agent CLI,
    // which would otherwise still write its session files while the folder goes).
    const inside = () => [...new Set([...pidsMentioning(dir), ...pidsWorkingIn(dir)])];
    await eventually(() => {
      // (Killing one may already have taken others with it.)
      for (const pid of inside()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch (e) {
          if (e.code !== 'ESRCH') throw e;
        }
      }
      return inside().length === 0;
    }, 15_000, () => `processes still in ${dir}: ${inside().join(', ')}`);
    fs.rmSync(dir, { recursive: true, force: true });
    const [, dead] = await h.waitFor((n, p) => n === 'session:status' && p.sessionId === s.sessionId && p.runtime.sandbox?.status === 'terminated');
    assert.match(dead.runtime.sandbox.statusMessage, /Sandbox stopped/);
    assert.ok(h.rt.sessionManager.isSessionLoaded(s.sessionId));
    await s.sendMessage('hello again');
    const second = s.getRuntimeState().sandbox;
    assert.notEqual(second.sandboxId, first.sandboxId);
    assert.equal(second.restartCount, 1);
    assert.equal(second.status, 'ready');
    const texts = s.getState().blocks.filter((b) => b.type === 'user_message').map((b) => b.content);
    assert.deepEqual(texts, ['hello', 'hello again'], 'the conversation carried over');
  } finally {
    await h.close();
  }
});

test('saveTranscript failing twice then recovering loses nothing', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  try {
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    let failures = 0;
    h.rec.faults.saveTranscript = (id, raw) => {
      if (failures++ < 2) throw new Error('database is down');
      h.rec.sessions.get(id).rawTranscript = raw;
    };
    await s.sendMessage('remember the word pineapple');
    await h.turnEnd(s.sessionId);
    assert.ok(failures >= 3, `retried (${failures} attempts)`);
    assert.ok(h.rec.sessions.get(s.sessionId).rawTranscript.includes('pineapple'));
  } finally {
    await h.close();
  }
});

test('an idle session is synced, its sandbox stopped, and it is unloaded', { timeout: 240_000 }, async () => {
  const h = await agentRuntime({ idleTimeoutMs: 1500 });
  try {
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    await s.sendMessage('write notes.md containing idle test');
    const dir = path.join(h.root, s.getRuntimeState().sandbox.sandboxId);
    h.rec.calls.length = 0;
    await h.waitFor((n, p) => n === 'session:status' && p.sessionId === s.sessionId && p.runtime.isLoaded === false, 30_000, 'idle unload');
    assert.equal(h.rt.sessionManager.isSessionLoaded(s.sessionId), false);
    assert.ok(h.rec.names().includes('saveTranscript'), 'synced before unloading');
    assert.ok(!fs.existsSync(dir), 'sandbox removed');
    assert.deepEqual(h.rec.sessions.get(s.sessionId).workspaceFiles.map((f) => f.path), ['notes.md']);
  } finally {
    await h.close();
  }
});

test('shutdown during a running turn returns, syncs and leaves no sandbox process', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  const s = await h.rt.sessionManager.createSession(CLAUDE);
  const outcome = s.sendMessage('wait 5000ms please').then(() => null, (e) => e);
  const dir = await readyRunner(h, s);
  await h.fake.waitForRequest((r) => JSON.stringify(r.body.messages ?? []).includes('wait 5000ms'));
  h.rec.calls.length = 0;
  await h.rt.shutdown();
  assert.ok((await outcome) instanceof Error, 'the running turn ends with an error');
  assert.ok(h.rec.names().includes('saveTranscript'), 'flushed at shutdown');
  assert.deepEqual(pidsMentioning(dir), []);
  assert.ok(!fs.existsSync(dir));
  await h.close();
});

test('a second message waits for the running turn; many sessions run in parallel', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  try {
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    await Promise.all([s.sendMessage('first message'), s.sendMessage('second message')]);
    const seq = h.log
      .filter(([n, p]) => p?.sessionId === s.sessionId && n === 'session:block:complete')
      .map(([, p]) => (p.block.type === 'user_message' ? `user:${p.block.content}` : p.block.subtype === 'session_end' ? 'end' : null))
      .filter(Boolean);
    assert.deepEqual(seq, ['user:first message', 'end', 'user:second message', 'end']);

    const many = await Promise.all([1, 2, 3, 4].map(() => h.rt.sessionManager.createSession(CLAUDE)));
    await Promise.all(many.map((m, i) => m.sendMessage(`write file${i}.txt containing number ${i}`)));
    // File events settle briefly after the write; wait for each rather than racing the watcher.
    await Promise.all(many.map((m) => h.waitFor((n, p) => n === 'session:file:created' && p.sessionId === m.sessionId)));
    many.forEach((m, i) => {
      const files = m.getState().workspaceFiles;
      assert.deepEqual(files, [{ path: `file${i}.txt`, content: `number ${i}` }]);
    });
    const sandboxes = new Set(many.map((m) => m.getRuntimeState().sandbox.sandboxId));
    assert.equal(sandboxes.size, 4);
  } finally {
    await h.close();
  }
});

/** Sandbox ids under `root` that have a live process (argv names <root>/<sandboxId>). */
function liveSandboxes(root) {
  const ids = new Set();
  for (const pid of pidsMentioning(root)) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const m = argv.match(new RegExp(`${root.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/([^/\\0]+)`));
      if (m) ids.add(m[1]);
    } catch {}
  }
  return ids;
}

test('warmPool: a new session starts with its sandbox and agent already running, and is stored only once taken', { timeout: 240_000 }, async () => {
  const h = await agentRuntime({ warmPool: [{ architecture: 'claude-agent-sdk', agentProfileRef: 'default' }] });
  try {
    await h.rt.start();
    await eventually(() => liveSandboxes(h.root).size === 1, 60_000, 'the waiting session to start');
    const [waiting] = liveSandboxes(h.root);
    assert.deepEqual(await h.rec.adapter.listAllSessions(), [], 'nothing is stored while it waits');
    assert.deepEqual(h.log, [], 'and nothing is emitted');

    const before = Date.now();
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    const state = s.getState();
    assert.equal(state.runtime.sandbox?.sandboxId, waiting, 'the new session got the waiting sandbox');
    const stored = (await h.rec.adapter.listAllSessions()).find((r) => r.sessionId === s.sessionId);
    assert.ok(stored, 'stored when taken');
    assert.ok(stored.createdAt >= before, 'created when taken, not when it started waiting');
    await eventually(() => liveSandboxes(h.root).size === 2, 60_000, 'another session to take its place');

    // It is an ordinary session from here on: a turn, its transcript and file stored.
    await s.sendMessage('write warm.txt containing ready');
    await h.turnEnd(s.sessionId);
    const saved = h.rec.sessions.get(s.sessionId);
    assert.match(saved.rawTranscript, /warm\.txt/);
    await eventually(() => h.rec.sessions.get(s.sessionId).workspaceFiles.some((f) => f.path === 'warm.txt' && f.content === 'ready'));

    // One that asks for options of its own is made the usual way (no sandbox before a message).
    const other = await h.rt.sessionManager.createSession({ ...CLAUDE, sessionOptions: { model: 'claude-haiku-4-5' } });
    assert.equal(other.getState().runtime.sandbox, null);
  } finally {
    await h.rt.shutdown();
    assert.deepEqual([...liveSandboxes(h.root)], [], 'shutdown stops waiting sessions too');
    await h.close();
  }
});
