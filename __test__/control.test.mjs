// Controlling a running agent, end to end with the real Claude Agent SDK against the bundled
// fake model on local sandboxes: interrupt, the queue (order, DELETE, steer, mode interrupt),
// approvals and questions over REST and socket.io-client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentRuntime, eventually, pidsMentioning } from './helpers/agent.mjs';
import { serve, connect } from './helpers/server.mjs';
import { startFakeModal } from './helpers/fake-modal.mjs';

const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };
const OPENCODE = { agentProfileRef: 'default', architecture: 'opencode', sessionOptions: { model: 'anthropic/claude-sonnet-4-5' } };
const OPENCODE_RUNTIME = {
  extraSandboxEnv: { AGENT_RUNTIME_OPENCODE_MAX_RETRIES: '0' },
  profiles: [{ id: 'default', name: 'Default Agent', tools: ['read', 'write', 'edit', 'bash'] }],
};
const GRACE = 1500;

/** A runtime behind a seed-style server (`provider`: "local" or "modal", the latter against
 *  the fake control plane); `rest` drives it. */
async function setup({ provider = 'local', ...options } = {}) {
  let fake;
  let h;
  if (provider === 'modal') {
    fake = await startFakeModal();
    process.env.MODAL_SERVER_URL = fake.url;
    try {
      h = await agentRuntime({ interruptGraceMs: GRACE, modal: { tokenId: 'ak-test', tokenSecret: 'as-test', appName: 'control' }, sandbox: { provider: 'modal' }, ...options });
    } finally {
      delete process.env.MODAL_SERVER_URL;
    }
  } else {
    h = await agentRuntime({ interruptGraceMs: GRACE, ...options });
  }
  const srv = await serve(h.rt);
  return { h, srv, rest: srv.rest, close: async () => (await srv.close(), await h.close(), await fake?.stop()) };
}

/** The end block of the next turn of `id` to end (after `after` end blocks). */
function endBlock(h, id, after = 0) {
  let seen = 0;
  return h.waitFor(
    (n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.metadata?.stopReason && ++seen > after,
    60_000,
    'an end block',
  );
}

const ends = (h, id) => h.of(id, 'session:block:complete').filter((p) => p.block.metadata?.stopReason);
// The agent's own requests (not subagents', not OpenCode's title requests, which have no tools).
const modelRequests = (h) => h.fake.requests.filter((r) => r.path === '/v1/messages' && !r.headers['x-claude-code-agent-id'] && r.body.tools?.length);
const lastRequestText = (h) => JSON.stringify(modelRequests(h).at(-1).body.messages);
/** The newest user message of a model request (Claude Code appends a system note after it). */
const lastUserMessage = (r) => r.body.messages.filter((m) => m.role === 'user').at(-1);

/** Resolves when the next turn of `id` has ended and its transcript is stored and announced. */
function nextTurn(h, id) {
  const endsBefore = ends(h, id).length;
  const transcriptsBefore = h.of(id, 'session:transcript:changed').length;
  return Promise.all([
    endBlock(h, id, endsBefore),
    h.waitFor((n, p) => n === 'session:transcript:changed' && p.sessionId === id && h.of(id, n).length > transcriptsBefore, 60_000, 'the transcript'),
  ]).then(([end]) => end);
}

async function interrupts(t, { h, rest, close }, create = CLAUDE) {
  try {
    const id = (await rest('POST', '/api/sessions', create)).body.sessionId;

    await t.test('nothing running: harmless', async () => {
      assert.deepEqual((await rest('POST', `/api/sessions/${id}/interrupt`)).body, { success: true, sessionId: id, interrupted: false });
      const missing = await rest('POST', '/api/sessions/00000000-0000-4000-8000-000000000000/interrupt');
      assert.equal(missing.status, 404);
      assert.equal((await rest('POST', `/api/sessions/${id}/interrupt`, { clearQueue: 'yes' })).status, 400);
    });

    await t.test('during sandbox start-up', async () => {
      const ended = endBlock(h, id);
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'hello there' });
      const asked = Date.now();
      assert.equal((await rest('POST', `/api/sessions/${id}/interrupt`)).body.interrupted, true);
      const [, end] = await ended;
      assert.equal(end.block.metadata.stopReason, 'interrupted');
      assert.ok(Date.now() - asked < GRACE + 2000, `ended in ${Date.now() - asked} ms`);
      // The start-up finished by itself: a whole sandbox, not half of one.
      await h.waitFor((n, p) => n === 'session:status' && p.sessionId === id && p.runtime.sandbox?.status === 'ready');
    });

    await t.test('mid-text: the partial answer stays and the model sees it next turn', async () => {
      const before = ends(h, id).length;
      const ended = endBlock(h, id, before);
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'tell me a story slowly 200ms' });
      const [, delta] = await h.waitFor((n, p) => n === 'session:block:delta' && p.sessionId === id && p.delta.trim() === 'Once');
      await h.waitFor((n, p) => n === 'session:block:delta' && p.blockId === delta.blockId && h.of(id, 'session:block:delta').filter((d) => d.blockId === delta.blockId).length >= 3);
      const asked = Date.now();
      assert.equal((await rest('POST', `/api/sessions/${id}/interrupt`)).body.interrupted, true);
      assert.equal((await rest('POST', `/api/sessions/${id}/interrupt`)).status, 200, 'twice is harmless');
      const [, end] = await ended;
      assert.equal(end.block.metadata.stopReason, 'interrupted');
      assert.ok(Date.now() - asked < GRACE + 2000, `ended in ${Date.now() - asked} ms`);
      const streamed = h.of(id, 'session:block:delta').filter((d) => d.blockId === delta.blockId).map((d) => d.delta).join('');
      const done = h.of(id, 'session:block:complete').find((p) => p.blockId === delta.blockId);
      assert.ok(done, 'the started text block was completed');
      assert.ok(done.block.content.startsWith(streamed.trim().split(' ')[0]), `partial text kept: ${done.block.content}`);
      assert.ok(!h.of(id, 'session:error').length, 'no error event for an interrupt');
      const ended2 = endBlock(h, id, before + 1);
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'what were you saying?' });
      const [, end2] = await ended2;
      assert.equal(end2.block.metadata.stopReason, 'completed');
      assert.ok(lastRequestText(h).includes('Once'), 'the model saw its partial answer');
    });

    await t.test('mid-tool: the tool is marked failed and its process is gone', async () => {
      const before = ends(h, id).length;
      const ended = endBlock(h, id, before);
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'run: echo start; sleep 731; echo done' });
      await eventually(() => pidsMentioning('sleep 731').length > 0, 30_000, 'the tool to run');
      // (OpenCode completes a tool's block only when the tool ends: its start is enough here.)
      const [, tool] = await h.waitFor((n, p) => (n === 'session:block:start' || n === 'session:block:complete') && p.sessionId === id && p.block.type === 'tool_use' && p.block.toolName.toLowerCase() === 'bash');
      const toolId = tool.block.id;
      const asked = Date.now();
      await rest('POST', `/api/sessions/${id}/interrupt`);
      const [, end] = await ended;
      assert.equal(end.block.metadata.stopReason, 'interrupted');
      assert.ok(Date.now() - asked < GRACE + 2000, `ended in ${Date.now() - asked} ms`);
      const failed = [...h.of(id, 'session:block:update'), ...h.of(id, 'session:block:complete')].some(
        (p) => p.blockId === toolId && (p.updates?.status === 'error' || p.block?.status === 'error'),
      );
      assert.ok(failed, 'the running tool ended as failed');
      await eventually(() => pidsMentioning('sleep 731').length === 0, 10_000, 'no process of the turn left');
      // The partial turn reaches the adapter.
      await eventually(() => h.rec.calls.some(([m, sid, raw]) => m === 'saveTranscript' && sid === id && raw.includes('sleep 731')), 15_000, 'the transcript stored');
    });
  } finally {
    await close();
  }
}

async function queue(t, { h, rest, close }, create = CLAUDE) {
  try {
    const id = (await rest('POST', '/api/sessions', create)).body.sessionId;
    const warm = nextTurn(h, id);
    await rest('POST', `/api/sessions/${id}/messages`, { content: 'warm up' });
    await warm;

    await t.test('three queued, the middle one removed', async () => {
      const count = ends(h, id).length;
      const first = await rest('POST', `/api/sessions/${id}/messages`, { content: 'wait 1500ms then answer' });
      const sent = [];
      for (const word of ['alpha', 'bravo', 'charlie']) sent.push((await rest('POST', `/api/sessions/${id}/messages`, { content: `say ${word}` })).body);
      assert.deepEqual(sent.map((s) => [s.queued, s.position]), [[true, 1], [true, 2], [true, 3]]);
      const state = (await rest('GET', `/api/sessions/${id}`)).body;
      assert.deepEqual(state.runtime.queue.map((q) => [q.messageId, q.mode, q.preview]), sent.map((s, i) => [s.messageId, 'queue', `say ${['alpha', 'bravo', 'charlie'][i]}`]));
      assert.equal((await rest('DELETE', `/api/sessions/${id}/messages/${sent[1].messageId}`)).status, 200);
      assert.equal((await rest('DELETE', `/api/sessions/${id}/messages/${sent[1].messageId}`)).status, 404);
      assert.equal((await rest('DELETE', `/api/sessions/${id}/messages/${first.body.messageId}`)).status, 404, 'it already started');
      const changed = h.of(id, 'session:queue:changed').at(-1);
      assert.deepEqual(changed.queue.map((q) => q.messageId), [sent[0].messageId, sent[2].messageId]);
      await endBlock(h, id, count + 2);
      const prompts = modelRequests(h).map((r) => JSON.stringify(lastUserMessage(r)));
      const order = ['alpha', 'bravo', 'charlie'].filter((w) => prompts.some((p) => p.includes(`say ${w}`)));
      assert.deepEqual(order, ['alpha', 'charlie']);
      assert.equal((await rest('POST', `/api/sessions/${id}/messages`, { content: 'x', mode: 'later' })).status, 400);
    });

    await t.test('steer reaches the running turn before its next step', async () => {
      const count = ends(h, id).length;
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'run: echo start; sleep 2.5; echo done' });
      await eventually(() => pidsMentioning('sleep 2.5').length > 0, 30_000, 'the tool to run');
      const steer = await rest('POST', `/api/sessions/${id}/messages`, { content: 'also mention bananas', mode: 'steer' });
      assert.equal(steer.status, 200);
      assert.equal(steer.body.steered, true);
      assert.equal(steer.body.queued, false);
      await endBlock(h, id, count);
      // The request after the tool's result carries the steered text (Claude Code folds it into
      // the result's message; OpenCode adds a message after it).
      const text = JSON.stringify(modelRequests(h).at(-1).body.messages.slice(-3));
      assert.ok(text.includes('tool_result') && text.includes('also mention bananas'), `steer read with the tool result: ${text}`);
      assert.ok(h.of(id, 'session:block:complete').some((p) => p.block.type === 'user_message' && p.block.content === 'also mention bananas'));
      assert.equal(ends(h, id).length, count + 1, 'no extra turn for the steered message');
    });

    await t.test('mode interrupt stops the running turn and runs first', async () => {
      const count = ends(h, id).length;
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'wait 8000ms please' });
      await h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.type === 'user_message' && p.block.content === 'wait 8000ms please');
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'say delta' });
      const now = await rest('POST', `/api/sessions/${id}/messages`, { content: 'say urgent', mode: 'interrupt' });
      assert.equal(now.body.position, 1);
      const [, end] = await endBlock(h, id, count);
      assert.equal(end.block.metadata.stopReason, 'interrupted');
      await endBlock(h, id, count + 2);
      const prompts = modelRequests(h).map((r) => JSON.stringify(lastUserMessage(r)));
      const urgent = prompts.findIndex((p) => p.includes('say urgent'));
      const delta = prompts.findIndex((p) => p.includes('say delta'));
      assert.ok(urgent >= 0 && delta > urgent, 'urgent ran before the message queued earlier');
    });
  } finally {
    await close();
  }
}

async function approvals(t, { h, srv, rest, close }, create = CLAUDE) {
  const sockets = [];
  try {
    const options = { ...create.sessionOptions, permissionMode: 'ask', permissionTimeoutMs: 120000 };
    const id = (await rest('POST', '/api/sessions', { ...create, sessionOptions: options })).body.sessionId;
    const a = await connect(srv.url);
    sockets.push(a);
    const seenA = [];
    a.on('session:permission:requested', (p) => seenA.push(p));
    assert.deepEqual(await a.emitWithAck('session:join', id), { success: true });
    const nextEnd = () => endBlock(h, id, ends(h, id).length);
    const request = () => h.waitFor((n, p) => n === 'session:permission:requested' && p.sessionId === id && !h.of(id, 'session:permission:resolved').some((r) => r.requestId === p.requestId));

    await t.test('pauses on Bash; a late tab sees it and allows it over Socket.IO', async () => {
      const ended = nextEnd();
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'run: echo approved-42' });
      const [, req] = await request();
      assert.equal(req.toolName.toLowerCase(), 'bash');
      assert.equal(req.input.command, 'echo approved-42');
      assert.ok(req.requestedAt && req.expiresAt);
      const state = (await rest('GET', `/api/sessions/${id}`)).body;
      assert.deepEqual(state.runtime.pendingRequests.map((r) => [r.type, r.requestId]), [['permission', req.requestId]]);
      assert.ok(!pidsMentioning('approved-42').length, 'the tool waits');
      const b = await connect(srv.url);
      sockets.push(b);
      const late = new Promise((r) => b.once('session:permission:requested', r));
      assert.deepEqual(await b.emitWithAck('session:join', id), { success: true });
      assert.equal((await late).requestId, req.requestId, 'the late tab is told what waits');
      const resolved = new Promise((r) => a.once('session:permission:resolved', r));
      const ack = await b.emitWithAck('session:permission:respond', { sessionId: id, requestId: req.requestId, behavior: 'allow' });
      assert.equal(ack.success, true);
      const { eventId, seq, ...resolvedFields } = await resolved;
      assert.deepEqual(resolvedFields, { requestId: req.requestId, behavior: 'allow', resolvedBy: 'user', sessionId: id });
      const again = await rest('POST', `/api/sessions/${id}/permissions/${req.requestId}`, { behavior: 'deny' });
      assert.equal(again.status, 409);
      assert.equal(again.body.code, 'ALREADY_RESOLVED');
      await ended;
      assert.ok(lastRequestText(h).includes('approved-42'), 'the tool ran and the model saw its output');
      assert.equal(seenA[0].requestId, req.requestId);
    });

    await t.test('bad answers are refused and the request keeps waiting; deny tells the agent why', async () => {
      const ended = nextEnd();
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'run: echo denied-43' });
      const [, req] = await request();
      const url = `/api/sessions/${id}/permissions/${req.requestId}`;
      for (const [body, field] of [[{ behavior: 'maybe' }, 'behavior'], [{ behavior: 'allow', updatedInput: 'x' }, 'updatedInput'], [{ behavior: 'deny', remember: 1 }, 'remember']]) {
        const r = await rest('POST', url, body);
        assert.equal(r.status, 400);
        assert.match(r.body.error, new RegExp(field));
      }
      assert.equal((await rest('POST', `/api/sessions/${id}/permissions/no-such-request`, { behavior: 'allow' })).status, 404);
      const other = (await rest('POST', '/api/sessions', create)).body.sessionId;
      assert.equal((await rest('POST', `/api/sessions/${other}/permissions/${req.requestId}`, { behavior: 'allow' })).status, 404, "another session's request");
      assert.equal((await rest('POST', `/api/sessions/${id}/questions/${req.requestId}`, { answers: {} })).status, 400, 'a permission is not a question');
      assert.equal((await rest('POST', url, '{"behavior":')).status, 400);
      const huge = { behavior: 'allow', updatedInput: { command: 'x'.repeat(11 * 1024 * 1024) } };
      assert.equal((await rest('POST', url, huge)).status, 413);
      assert.equal((await rest('GET', `/api/sessions/${id}`)).body.runtime.pendingRequests.length, 1, 'still waiting');
      assert.equal((await rest('POST', url, { behavior: 'deny', message: 'Not on a Friday, said the user' })).status, 200);
      await ended;
      assert.ok(lastRequestText(h).includes('Not on a Friday, said the user'), 'the agent was told why');
      assert.ok(!pidsMentioning('denied-43').length);
      const end = ends(h, id).at(-1);
      assert.equal(end.block.metadata.stopReason, 'completed', 'a deny is not a failed turn');
    });

    await t.test('remember: the next Bash does not ask', async () => {
      let ended = nextEnd();
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'run: echo first-44' });
      const [, req] = await request();
      assert.equal((await rest('POST', `/api/sessions/${id}/permissions/${req.requestId}`, { behavior: 'allow', remember: true })).status, 200);
      await ended;
      const asked = h.of(id, 'session:permission:requested').length;
      ended = nextEnd();
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'run: echo second-45' });
      await ended;
      assert.equal(h.of(id, 'session:permission:requested').length, asked, 'not asked again');
      assert.ok(lastRequestText(h).includes('second-45'));
    });

    await t.test('timeout denies', async () => {
      await rest('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { ...create.sessionOptions, permissionMode: 'ask', permissionTimeoutMs: 800 } });
      const ended = nextEnd();
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'write timeout-47.txt' });
      const [, req] = await request();
      const [, resolved] = await h.waitFor((n, p) => n === 'session:permission:resolved' && p.requestId === req.requestId);
      assert.deepEqual([resolved.behavior, resolved.resolvedBy], ['deny', 'timeout']);
      await ended;
      assert.ok(lastRequestText(h).includes('No one answered'), 'the agent was told');
    });

    await t.test('interrupt while a request waits', async () => {
      await rest('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { ...create.sessionOptions, permissionMode: 'ask' } });
      const count = ends(h, id).length;
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'write never-46.txt' });
      const [, req] = await request();
      assert.equal(req.toolName.toLowerCase(), 'write');
      assert.deepEqual(await a.emitWithAck('session:interrupt', id), { success: true, interrupted: true });
      const [, resolved] = await h.waitFor((n, p) => n === 'session:permission:resolved' && p.requestId === req.requestId);
      assert.equal(resolved.resolvedBy, 'interrupt');
      const [, end] = await endBlock(h, id, count);
      assert.equal(end.block.metadata.stopReason, 'interrupted');
      assert.ok(!(await rest('GET', `/api/sessions/${id}`)).body.workspaceFiles.some((f) => f.path === 'never-46.txt'), 'the tool did not run');
    });

    await t.test('a question answered from a second socket reaches the model', { skip: create.architecture === 'opencode' && 'OpenCode 1.0.152 has no question tool' }, async () => {
      const b = sockets[1];
      const ended = nextEnd();
      const asked = new Promise((r) => b.once('session:question:requested', r));
      await rest('POST', `/api/sessions/${id}/messages`, { content: 'ask: Which color do you like? [red|blue]' });
      const q = await asked;
      assert.equal(q.questions[0].question, 'Which color do you like?');
      assert.deepEqual(q.questions[0].options.map((o) => o.label), ['red', 'blue']);
      const bad = await b.emitWithAck('session:question:respond', { sessionId: id, requestId: q.requestId, answers: ['red'] });
      assert.equal(bad.success, false);
      assert.match(bad.error, /answers/);
      const ok = await b.emitWithAck('session:question:respond', { sessionId: id, requestId: q.requestId, answers: { 'Which color do you like?': 'blue' } });
      assert.equal(ok.success, true);
      await ended;
      assert.ok(lastRequestText(h).includes('blue'), 'the answer reached the model');
    });
  } finally {
    for (const s of sockets) s.close();
    await close();
  }
}

test('interrupt (Claude, local): mid-text, mid-tool and during start-up end the turn as interrupted; the conversation goes on', { timeout: 300_000 }, async (t) => {
  await interrupts(t, await setup());
});

test('the queue (Claude, local): order, DELETE, steer into a running turn, and mode interrupt', { timeout: 300_000 }, async (t) => {
  await queue(t, await setup());
});

test('approvals and questions (Claude, local): ask mode, a late second tab, allow, deny, remember, timeout, interrupt', { timeout: 300_000 }, async (t) => {
  await approvals(t, await setup());
});

test('interrupt on the Modal provider (fake control plane)', { timeout: 300_000 }, async (t) => {
  await interrupts(t, await setup({ provider: 'modal' }));
});

test('approvals and questions on the Modal provider (fake control plane)', { timeout: 300_000 }, async (t) => {
  await approvals(t, await setup({ provider: 'modal' }));
});

test('interrupt (OpenCode, local)', { timeout: 300_000 }, async (t) => {
  await interrupts(t, await setup(OPENCODE_RUNTIME), OPENCODE);
});

test('the queue (OpenCode, local): order, DELETE, steer, mode interrupt', { timeout: 300_000 }, async (t) => {
  await queue(t, await setup(OPENCODE_RUNTIME), OPENCODE);
});

test('approvals (OpenCode, local): bash and edits ask; allow, deny with a reason, remember, timeout, interrupt', { timeout: 300_000 }, async (t) => {
  await approvals(t, await setup(OPENCODE_RUNTIME), OPENCODE);
});

test('a failed turn ends with an error end block and one error event, never "completed" (both agents)', { timeout: 300_000 }, async (t) => {
  for (const [name, create, options] of [['Claude', CLAUDE, {}], ['OpenCode', OPENCODE, OPENCODE_RUNTIME]]) {
    await t.test(name, async () => {
      const { h, rest, close } = await setup(options);
      try {
        const id = (await rest('POST', '/api/sessions', create)).body.sessionId;
        const ended = endBlock(h, id);
        await rest('POST', `/api/sessions/${id}/messages`, { content: 'fail with 500 please' });
        const [, end] = await ended;
        assert.equal(end.block.metadata.stopReason, 'error');
        assert.equal(end.block.subtype, 'error');
        assert.doesNotMatch(end.block.message, /completed/i);
        await h.waitFor((n, p) => n === 'session:error' && p.sessionId === id);
        assert.ok(!ends(h, id).some((p) => /completed/i.test(p.block.message)), 'no "completed" end block');
        const next = endBlock(h, id, 1);
        await rest('POST', `/api/sessions/${id}/messages`, { content: 'hello again' });
        assert.equal((await next)[1].block.metadata.stopReason, 'completed');
        assert.equal(h.of(id, 'session:error').length, 1, 'one error event');
      } finally {
        await close();
      }
    });
  }
});

test('tool inputs keep the key order the model produced, live and from GET', { timeout: 300_000 }, async () => {
  const { h, rest, close } = await setup();
  try {
    const id = (await rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    const ended = nextTurn(h, id);
    await rest('POST', `/api/sessions/${id}/messages`, { content: 'write ordered.txt containing keys' });
    await ended;
    const live = h.of(id, 'session:block:complete').find((p) => p.block.type === 'tool_use' && p.block.toolName === 'Write');
    assert.deepEqual(Object.keys(live.block.input), ['file_path', 'content']);
    const state = (await rest('GET', `/api/sessions/${id}`)).body;
    const stored = state.blocks.find((b) => b.type === 'tool_use' && b.toolName === 'Write');
    assert.deepEqual(Object.keys(stored.input), ['file_path', 'content']);
  } finally {
    await close();
  }
});
