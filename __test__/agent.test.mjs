// End to end: the real Claude Agent SDK in local sandboxes against the bundled fake Messages API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentRuntime, claudeConversation } from './helpers/agent.mjs';

test('a Claude session over REST: lazy sandbox, streamed blocks with real ids, file, transcript, reload, resume', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  try {
    await claudeConversation(h);
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
