// A runtime that runs the real Claude Agent SDK in local sandboxes against the bundled fake
// Messages API, with a recording adapter and an event log that tests can wait on.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAgentRuntime } from '../../index.mjs';
import { startFakeAnthropic } from '../../fake-model/fake-anthropic.mjs';
import { recordingAdapter } from './adapter.mjs';
import { client, API_KEY } from './http.mjs';
import assert from 'node:assert/strict';

export const EVENTS = [
  'session:status', 'session:block:start', 'session:block:delta', 'session:block:update', 'session:block:complete',
  'session:metadata:update', 'session:file:created', 'session:file:modified', 'session:file:deleted',
  'session:subagent:discovered', 'session:subagent:completed', 'session:error', 'session:transcript:changed',
  'session:queue:changed', 'session:permission:requested', 'session:permission:resolved',
  'session:question:requested', 'session:question:resolved', 'session:usage',
];

export const AGENT_PROFILE = {
  id: 'default',
  name: 'Default Agent',
  tools: ['Read', 'Write', 'Edit', 'Bash', 'Agent'],
  subagents: [{ name: 'helper', description: 'Checks things for the main agent', prompt: 'You help.' }],
};

export async function agentRuntime(options = {}) {
  const { sandbox: sandboxOptions = {}, profiles = [AGENT_PROFILE], extraSandboxEnv = {}, ...rest } = options;
  const fake = await startFakeAnthropic();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-sandboxes-'));
  const rec = recordingAdapter({ profiles });
  const rt = await createAgentRuntime({
    persistence: rec.adapter,
    logLevel: process.env.TEST_LOG_LEVEL ?? 'warn',
    ...rest,
    sandbox: {
      provider: 'local',
      root,
      env: { ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'fake-key', CLAUDE_CODE_MAX_RETRIES: '0', API_TIMEOUT_MS: '30000', ...extraSandboxEnv },
      ...sandboxOptions,
    },
  });
  const log = [];
  const waiters = [];
  for (const name of EVENTS) {
    rt.eventBus.on(name, (payload) => {
      log.push([name, payload]);
      for (const w of [...waiters]) {
        if (w.match(name, payload)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve([name, payload]);
        }
      }
    });
  }
  /** Resolves with the first event (already seen or future) matching; rejects after `ms`. */
  const waitFor = (match, ms = 60_000, what = 'event') => {
    const seen = log.find(([n, p]) => match(n, p));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = { match, resolve };
      waiters.push(w);
      setTimeout(() => {
        const i = waiters.indexOf(w);
        if (i >= 0) {
          waiters.splice(i, 1);
          reject(new Error(`timed out waiting for ${what}`));
        }
      }, ms).unref();
    });
  };
  const of = (sessionId, name) => log.filter(([n, p]) => n === name && p.sessionId === sessionId).map(([, p]) => p);
  const turnEnd = (sessionId, count = 1) =>
    waitFor((n, p) => n === 'session:transcript:changed' && p.sessionId === sessionId && --count <= 0, 60_000, 'end of turn');
  const close = async () => {
    await rt.shutdown();
    await fake.close();
    fs.rmSync(root, { recursive: true, force: true });
  };
  return { rt, rec, fake, root, log, waitFor, of, turnEnd, close };
}

/** Resolves once `check()` is true (re-checked every 20 ms), for effects that carry no event
 *  (an adapter call made after an event); rejects after `ms`. */
export async function eventually(check, ms = 15_000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === "function" ? what() : what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Pids of processes whose working directory is `dir` or inside it. */
export function pidsWorkingIn(dir) {
  const out = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/cwd`).startsWith(dir)) out.push(Number(pid));
    } catch {}
  }
  return out;
}

/** Pids of processes whose command line mentions `needle`. */
export function pidsMentioning(needle) {
  const out = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle)) out.push(Number(pid));
    } catch {}
  }
  return out;
}

/** The end-to-end conversation every sandbox provider must pass: REST create, a turn with
 *  streamed blocks and a written file, transcript saved, unload and reload, a resumed turn. */
export async function claudeConversation(h) {
  const http = client(h.rt.createRestServer({ apiKey: API_KEY }).fetch);
  const created = await http('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
  const id = created.body.sessionId;
  assert.equal(created.body.runtime.sandbox, null, 'no sandbox before the first message');

  const sent = await http('POST', `/api/sessions/${id}/messages`, { content: 'think, then write haiku.txt' });
  const { messageId, ...sentRest } = sent.body;
  assert.deepEqual(sentRest, { success: true, sessionId: id, queued: false, position: 0 });
  assert.match(messageId, /^[0-9a-f-]{36}$/);
  await h.turnEnd(id);

  const statuses = h.of(id, 'session:status').map((p) => p.runtime.sandbox && [p.runtime.sandbox.status, p.runtime.sandbox.statusMessage]);
  assert.deepEqual(statuses.slice(0, 5), [
    ['starting', 'Preparing...'],
    ['starting', 'Creating sandbox container...'],
    ['starting', 'Setting up session files...'],
    ['starting', 'Initializing file watchers...'],
    ['ready', 'Ready'],
  ]);

  // Block events: the user's block first, then every block starts, streams and completes once.
  const blockEvents = h.log.filter(([n, p]) => n.startsWith('session:block:') && p.sessionId === id);
  assert.equal(blockEvents[0][1].block.type, 'user_message');
  assert.equal(blockEvents[0][1].block.content, 'think, then write haiku.txt');
  const started = new Set(blockEvents.filter(([n]) => n === 'session:block:start').map(([, p]) => p.block.id));
  for (const [n, p] of blockEvents) {
    if (n === 'session:block:delta') assert.ok(started.has(p.blockId), `delta for a started block (${p.blockId})`);
  }
  const completes = blockEvents.filter(([n]) => n === 'session:block:complete').map(([, p]) => p.block);
  for (const sid of started) assert.equal(completes.filter((b) => b.id === sid).length, 1, `${sid} completes once`);
  const types = completes.map((b) => b.type);
  for (const t of ['user_message', 'thinking', 'assistant_text', 'tool_use', 'tool_result']) assert.ok(types.includes(t), t);
  const tool = completes.find((b) => b.type === 'tool_use');
  assert.equal(tool.toolName, 'Write');
  assert.equal(tool.input.file_path, 'haiku.txt');

  // The Write tool's file: an event, and saved through the adapter.
  const [, file] = await h.waitFor((n, p) => n === 'session:file:created' && p.sessionId === id && p.file.path === 'haiku.txt');
  assert.equal(file.file.content, 'Old pond\nfrog jumps in\nsound of water\n');
  await eventually(() => h.rec.calls.some(([m, sid, f]) => m === 'saveWorkspaceFile' && sid === id && f.path === 'haiku.txt'), 15_000, 'saveWorkspaceFile');
  const stored = h.rec.sessions.get(id);
  const combined = JSON.parse(stored.rawTranscript);
  assert.ok(combined.main.includes('think, then write haiku.txt'));

  // GET shows the transcript's blocks, with the same ids the live stream used.
  const state = (await http('GET', `/api/sessions/${id}`)).body;
  const ids = new Set(state.blocks.map((b) => b.id));
  for (const b of completes.filter((b) => ['thinking', 'assistant_text', 'tool_use'].includes(b.type))) {
    assert.ok(ids.has(b.id), `live id ${b.id} is in GET blocks`);
  }
  assert.deepEqual(state.workspaceFiles, [{ path: 'haiku.txt', content: 'Old pond\nfrog jumps in\nsound of water\n' }]);

  // Unload (sync + terminate), load again from the adapter: the same conversation.
  assert.equal((await http('DELETE', `/api/sessions/${id}`)).status, 200);
  const reloaded = (await http('GET', `/api/sessions/${id}`)).body;
  assert.deepEqual(reloaded.blocks, state.blocks);

  // A second message resumes the same Claude conversation in a new sandbox.
  await http('POST', `/api/sessions/${id}/messages`, { content: 'and now say hello' });
  await h.turnEnd(id, 2);
  const last = h.fake.requests.filter((r) => r.path === '/v1/messages').pop();
  assert.ok(JSON.stringify(last.body.messages).includes('think, then write haiku.txt'), 'the history was sent');
  const after = (await http('GET', `/api/sessions/${id}`)).body;
  const prompts = after.blocks.filter((b) => b.type === 'user_message').map((b) => b.content);
  assert.deepEqual(prompts, ['think, then write haiku.txt', 'and now say hello']);
  assert.deepEqual(after.workspaceFiles.map((f) => f.path), ['haiku.txt'], 'the file was put back into the new sandbox and not duplicated');
}
