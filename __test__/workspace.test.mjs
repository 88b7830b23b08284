// Workspace files written by the agent: text saved, binary and oversized files not sent (and
// said so), deletes reach the adapter, and nothing escapes into the session's file list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { agentRuntime, eventually, pidsMentioning } from './helpers/agent.mjs';

const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };

test('text, binary, oversized and deleted workspace files', { timeout: 240_000 }, async () => {
  const h = await agentRuntime({ maxWorkspaceFileBytes: 4096 });
  try {
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    await s.sendMessage('write keep.txt containing hello');
    await s.sendMessage(
      'run: head -c 512 /dev/urandom > blob.bin; head -c 10000 /dev/zero | tr "\\\\0" a > big.txt; mkdir -p sub && echo nested > sub/n.txt; rm keep.txt',
    );
    await h.turnEnd(s.sessionId, 2);
    // Watcher events settle shortly after the writes; wait for the ones we expect.
    await h.waitFor((n, p) => n === 'session:file:created' && p.file.path === 'sub/n.txt');
    await h.waitFor((n, p) => n === 'session:file:deleted' && p.path === 'keep.txt');
    const created = h.of(s.sessionId, 'session:file:created').map((p) => p.file.path);
    assert.ok(created.includes('keep.txt') && created.includes('sub/n.txt'), created.join());
    assert.ok(!created.includes('blob.bin') && !created.includes('big.txt'), 'binary and oversized files are not sent');
    assert.deepEqual(h.of(s.sessionId, 'session:file:deleted').map((p) => p.path), ['keep.txt']);
    await eventually(() => h.rec.calls.some(([m, , p]) => m === 'deleteSessionFile' && p === 'keep.txt'), 15_000, 'deleteSessionFile');
    await s.syncSessionStateToStorage();
    assert.deepEqual(s.getState().workspaceFiles, [{ path: 'sub/n.txt', content: 'nested\n' }]);
    assert.deepEqual(h.rec.sessions.get(s.sessionId).workspaceFiles, [{ path: 'sub/n.txt', content: 'nested\n' }]);
  } finally {
    await h.close();
  }
});

test('links the agent makes out of its workspace are never followed', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  try {
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    await s.sendMessage('run: ln -s /proc/self/environ env.txt; ln -s / root; mkdir d; ln -s / d/up; echo ok > d/ok.txt; echo done > done.txt');
    await h.turnEnd(s.sessionId);
    await h.waitFor((n, p) => n === 'session:file:created' && p.sessionId === s.sessionId && p.file.path === 'done.txt');
    await s.syncSessionStateToStorage();
    const viaLink = (p) => p === 'env.txt' || p === 'root' || p.startsWith('root/') || p.startsWith('d/up');
    const sent = h.log.filter(([n]) => n.startsWith('session:file:')).map(([, p]) => p.file?.path ?? p.path);
    assert.deepEqual(sent.filter(viaLink), [], 'events name files reached through a link');
    const saved = h.rec.calls.filter(([m]) => m === 'saveWorkspaceFile').map(([, , f]) => f.path);
    assert.deepEqual(saved.filter(viaLink), [], 'files reached through a link were persisted');
    const files = s.getState().workspaceFiles.map((f) => f.path).sort();
    assert.deepEqual(files, ['d/ok.txt', 'done.txt']);
    assert.deepEqual(h.rec.sessions.get(s.sessionId).workspaceFiles.map((f) => f.path).sort(), ['d/ok.txt', 'done.txt']);
  } finally {
    await h.close();
  }
});

test('sandbox processes do not outlive the Node process', { timeout: 240_000 }, async () => {
  const script = `
    import { agentRuntime } from './__test__/helpers/agent.mjs';
    const h = await agentRuntime();
    const s = await h.rt.sessionManager.createSession({ agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
    s.sendMessage('wait 20000ms before answering').catch(() => {});
    await h.fake.waitForRequest((r) => JSON.stringify(r.body.messages ?? []).includes('wait 20000ms'));
    console.log('ROOT ' + h.root);
    process.exit(0);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: new URL('..', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  assert.equal(await new Promise((r) => child.on('exit', r)), 0);
  const root = /ROOT (\S+)/.exec(out)[1];
  assert.deepEqual(pidsMentioning(root), [], 'no sandbox process left after exit');
});
