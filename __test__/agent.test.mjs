// End to end: the real Claude Agent SDK in local sandboxes against the bundled fake Messages API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentRuntime, eventually } from './helpers/agent.mjs';
import { client, API_KEY } from './helpers/http.mjs';

test('a Claude session over REST: lazy sandbox, streamed blocks with real ids, file, transcript, reload, resume', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  try {
    const http = client(h.rt.createRestServer({ apiKey: API_KEY }).fetch);
    const created = await http('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
    const id = created.body.sessionId;
    assert.equal(created.body.runtime.sandbox, null, 'no sandbox before the first message');

    const sent = await http('POST', `/api/sessions/${id}/messages`, { content: 'think, then write haiku.txt' });
    assert.deepEqual(sent.body, { success: true, sessionId: id });
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
  } finally {
    await h.close();
  }
});

test('a subagent run yields subagent events and a subagent conversation', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  try {
    const s = await h.rt.sessionManager.createSession({ agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
    await s.sendMessage('ask the helper subagent to check the plan');
    const [, discovered] = await h.waitFor((n, p) => n === 'session:subagent:discovered' && p.sessionId === s.sessionId);
    const subId = discovered.subagent.id;
    assert.match(subId, /^agent-/);
    const [, done] = await h.waitFor((n, p) => n === 'session:subagent:completed' && p.subagentId === subId);
    assert.equal(done.status, 'completed');
    await h.turnEnd(s.sessionId);
    const state = s.getState();
    assert.deepEqual(state.subagents.map((x) => x.id), [subId]);
    assert.ok(state.subagents[0].blocks.length >= 2);
    const block = state.blocks.find((b) => b.type === 'subagent');
    assert.equal(block.subagentId, subId);
    assert.equal(block.status, 'success');
  } finally {
    await h.close();
  }
});
