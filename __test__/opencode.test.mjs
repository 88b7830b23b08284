// End to end: the real OpenCode (opencode-ai 1.0.152) in sandboxes against the bundled fake
// Messages API, over REST and socket.io-client, on the local provider and on the Modal provider
// (fake control plane).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { io } from 'socket.io-client';
import { agentRuntime, eventually } from './helpers/agent.mjs';
import { client, API_KEY } from './helpers/http.mjs';
import { startFakeModal } from './helpers/fake-modal.mjs';

const MODEL = 'anthropic/claude-sonnet-4-5';
const OPENCODE = { agentProfileRef: 'default', architecture: 'opencode', sessionOptions: { model: MODEL } };
const RULE = 'RULE-MARKER-42: answer briefly.';
const PROFILE = { id: 'default', name: 'Default Agent', agentMDFile: RULE, tools: ['write', 'bash'] };
const SANDBOX_ENV = { AGENT_RUNTIME_OPENCODE_MAX_RETRIES: '0' };

async function served(h) {
  const l = await h.rt.listen({ apiKey: API_KEY });
  const url = `http://127.0.0.1:${l.port}`;
  return { url, http: client(fetch, url), close: () => l.close() };
}

async function joined(url, id) {
  const socket = io(url, { transports: ['websocket'], reconnection: false, auth: { token: API_KEY } });
  await new Promise((resolve, reject) => (socket.once('connect', resolve), socket.once('connect_error', reject)));
  assert.deepEqual(await socket.emitWithAck('session:join', id), { success: true });
  const events = [];
  for (const name of ['session:block:start', 'session:block:delta', 'session:block:update', 'session:block:complete', 'session:file:created', 'session:metadata:update', 'session:subagent:discovered', 'session:subagent:completed', 'session:error']) {
    socket.on(name, (p) => events.push([name, p]));
  }
  const turnEnd = (n = 1) =>
    new Promise((resolve) => {
      const check = () => events.filter(([e, p]) => e === 'session:block:complete' && p.block.subtype === 'session_end').length >= n && resolve();
      check();
      socket.on('session:block:complete', check);
    });
  return { socket, events, turnEnd };
}

/** The conversation every provider must carry: streamed blocks with real ids, a file, usage,
 *  a task subagent, reload from the adapter, and a resumed turn that remembers. */
async function openCodeConversation(h) {
  const srv = await served(h);
  try {
    const created = await srv.http('POST', '/api/sessions', OPENCODE, { Authorization: `Bearer ${API_KEY}` });
    assert.equal(created.status, 201);
    const id = created.body.sessionId;
    assert.match(id, /^ses_[0-9a-f]{12}_/);
    const c = await joined(srv.url, id);
    const rest = (m, p, b) => srv.http(m, p, b, { Authorization: `Bearer ${API_KEY}` });
    assert.equal((await rest('POST', `/api/sessions/${id}/messages`, { content: 'think, then write haiku.txt' })).status, 200);
    await c.turnEnd(1);
    await h.turnEnd(id, 1);

    // Ordered blocks with real ids: every delta and completion belongs to a started block.
    const mine = c.events.filter(([, p]) => p.conversationId === 'main' || p.sessionId === id);
    const started = new Set();
    for (const [name, p] of mine) {
      if (name === 'session:block:start') started.add(p.block.id);
      if (name === 'session:block:delta' || name === 'session:block:update') assert.ok(started.has(p.blockId), `${name} for a started block ${p.blockId}`);
      if (name === 'session:block:complete') assert.equal(p.blockId, p.block.id, 'blockId and block id agree');
    }
    const completes = mine.filter(([n]) => n === 'session:block:complete').map(([, p]) => p.block);
    for (const sid of started) assert.equal(completes.filter((b) => b.id === sid).length, 1, `${sid} completes once`);
    const types = completes.map((b) => b.type);
    for (const t of ['user_message', 'thinking', 'assistant_text', 'tool_use', 'tool_result']) assert.ok(types.includes(t), `${t} in ${types}`);
    assert.ok(!completes.some((b) => b.type === 'assistant_text' && b.content === 'think, then write haiku.txt'), 'the prompt is not an assistant block');
    const tool = completes.find((b) => b.type === 'tool_use');
    assert.equal(tool.toolName, 'write');
    assert.equal(tool.status, 'success');
    assert.match(tool.id, /^prt_/);
    const usage = c.events.filter(([n]) => n === 'session:metadata:update').map(([, p]) => p.metadata);
    assert.ok(usage.some((m) => m.usage?.inputTokens > 0 && typeof m.costUSD === 'number'), 'usage and cost');

    // The file the agent wrote: an event and an adapter write; OpenCode's own files are not workspace files.
    const file = c.events.find(([n, p]) => n === 'session:file:created' && p.file.path === 'haiku.txt');
    assert.ok(file, 'session:file:created for haiku.txt');
    await eventually(() => h.rec.calls.some(([m, sid, f]) => m === 'saveWorkspaceFile' && sid === id && f.path === 'haiku.txt'), 15_000, 'saveWorkspaceFile');
    assert.ok(!h.rec.calls.some(([m, , f]) => m === 'saveWorkspaceFile' && f.path.startsWith('.opencode/')), 'no .opencode bookkeeping files');

    // The profile's AGENTS.md reached the model.
    const first = h.fake.requests.find((r) => r.path === '/v1/messages' && (r.body.tools ?? []).some((t) => t.name === 'write'));
    assert.ok(JSON.stringify(first.body.system).includes('RULE-MARKER-42'), 'AGENTS.md is read by OpenCode');

    // A task subagent: discovered and completed events, and its conversation.
    await rest('POST', `/api/sessions/${id}/messages`, { content: 'ask the helper subagent to check the plan' });
    await c.turnEnd(2);
    await h.turnEnd(id, 2);
    const discovered = c.events.find(([n]) => n === 'session:subagent:discovered');
    assert.ok(discovered, 'subagent discovered');
    const child = discovered[1].subagent.id;
    assert.match(child, /^ses_/);
    assert.ok(c.events.some(([n, p]) => n === 'session:subagent:completed' && p.subagentId === child && p.status === 'completed'));
    assert.ok(c.events.some(([n, p]) => n === 'session:block:complete' && p.conversationId === child), "the child's blocks go to its conversation");

    const state = (await rest('GET', `/api/sessions/${id}`)).body;
    const sub = state.blocks.find((b) => b.type === 'subagent');
    assert.equal(sub.subagentId, child);
    assert.equal(sub.status, 'success');
    const conv = state.subagents.find((s) => s.id === child);
    assert.ok(conv?.blocks.some((b) => b.type === 'assistant_text' && b.content.includes('Helper here')), 'subagent conversation');
    const ids = new Set(state.blocks.map((b) => b.id));
    for (const b of completes.filter((b) => ['thinking', 'assistant_text', 'tool_use', 'tool_result'].includes(b.type))) {
      assert.ok(ids.has(b.id), `live id ${b.id} (${b.type}) is in GET blocks`);
    }

    // Unload, reload from the adapter, message again: the agent remembers the first turn.
    assert.equal((await rest('DELETE', `/api/sessions/${id}`)).status, 200);
    const reloaded = (await rest('GET', `/api/sessions/${id}`)).body;
    assert.deepEqual(reloaded.blocks, state.blocks);
    c.socket.close();
    const c2 = await joined(srv.url, id);
    await rest('POST', `/api/sessions/${id}/messages`, { content: 'and now say hello' });
    await c2.turnEnd(1);
    await h.turnEnd(id, 3);
    const last = h.fake.requests.filter((r) => r.path === '/v1/messages' && (r.body.tools ?? []).some((t) => t.name === 'task')).pop();
    assert.ok(JSON.stringify(last.body.messages).includes('think, then write haiku.txt'), 'the earlier turn was sent to the model');
    const after = (await rest('GET', `/api/sessions/${id}`)).body;
    assert.deepEqual(after.blocks.filter((b) => b.type === 'user_message').map((b) => b.content), ['think, then write haiku.txt', 'ask the helper subagent to check the plan', 'and now say hello']);
    c2.socket.close();
  } finally {
    srv.close();
  }
}

test('an OpenCode session on local sandboxes: blocks, file, usage, subagent, reload, resume', { timeout: 300_000 }, async () => {
  const h = await agentRuntime({ profiles: [PROFILE] });
  try {
    await openCodeConversation(h);
  } finally {
    await h.close();
  }
});

test('OpenCode runner failures end the turn with one error event and leave the session usable', { timeout: 300_000 }, async (t) => {
  const h = await agentRuntime({ profiles: [PROFILE], extraSandboxEnv: SANDBOX_ENV });
  try {
    const errorsOf = (sid) => h.of(sid, 'session:error');
    const expectFailure = async (session, prompt, pattern) => {
      const before = errorsOf(session.sessionId).length;
      const failure = await session.sendMessage(prompt).then(() => null, (e) => e);
      assert.ok(failure, `${prompt} fails`);
      await h.waitFor((n, p) => n === 'session:error' && p.sessionId === session.sessionId && errorsOf(session.sessionId).length > before);
      const errs = errorsOf(session.sessionId).slice(before);
      assert.equal(errs.length, 1, `exactly one error event: ${JSON.stringify(errs)}`);
      assert.match(errs[0].error.message, pattern);
      return errs[0];
    };
    await t.test('a bad model string', async () => {
      const s = await h.rt.sessionManager.createSession({ ...OPENCODE, sessionOptions: { model: 'no-slash' } });
      await expectFailure(s, 'hello', /model must be "provider\/model"/);
      await s.updateSessionOptions({ model: MODEL });
      await s.sendMessage('hello again');
      assert.ok(h.of(s.sessionId, 'session:block:complete').some((p) => p.block.type === 'assistant_text' && p.block.content.includes('hello again')));
    });
    await t.test('the model API answers 500', async () => {
      const s = await h.rt.sessionManager.createSession(OPENCODE);
      await expectFailure(s, 'fail with 500', /model API kept failing|scripted failure/);
      await s.sendMessage('say hello after the failure');
      assert.ok(h.of(s.sessionId, 'session:block:complete').some((p) => p.block.type === 'assistant_text' && p.block.content.includes('say hello after the failure')));
    });
    await t.test('OpenCode exits early', async () => {
      const s = await h.rt.sessionManager.createSession(OPENCODE);
      const turn = s.sendMessage('wait 5000ms, then answer');
      await h.fake.waitForRequest((r) => JSON.stringify(r.body.messages ?? []).includes('wait 5000ms'));
      const killed = killOpenCodeServers(h.root);
      assert.ok(killed > 0, 'an opencode server was running in the sandbox');
      const failure = await turn.then(() => null, (e) => e);
      assert.ok(failure, 'the turn fails');
      await s.sendMessage('hello once more');
      assert.ok(h.of(s.sessionId, 'session:block:complete').some((p) => p.block.type === 'assistant_text' && p.block.content.includes('hello once more')));
    });
  } finally {
    await h.close();
  }
});

/** SIGKILL every `opencode` process whose working directory is under `root`. */
function killOpenCodeServers(root) {
  let n = 0;
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('opencode') && cmd.includes('serve') && fs.readlinkSync(`/proc/${pid}/cwd`).startsWith(root)) {
        process.kill(Number(pid), 'SIGKILL');
        n++;
      }
    } catch {}
  }
  return n;
}

test('an OpenCode session on the Modal provider (fake control plane): the same conversation', { timeout: 300_000 }, async () => {
  const fake = await startFakeModal();
  process.env.MODAL_SERVER_URL = fake.url;
  let h;
  try {
    h = await agentRuntime({ profiles: [PROFILE], modal: { tokenId: 'ak-test', tokenSecret: 'as-test', appName: 'arn-oc' }, sandbox: { provider: 'modal' } });
  } finally {
    delete process.env.MODAL_SERVER_URL;
  }
  try {
    await openCodeConversation(h);
  } finally {
    await h.close();
    await fake.stop();
  }
});
