// Keys stay outside the sandbox: sandboxes reach the model API through the runtime's proxy with
// a per-session token; the proxy puts the real key on, counts every call's usage and holds
// sessions to their budgets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { agentRuntime, eventually } from './helpers/agent.mjs';
import { client, API_KEY } from './helpers/http.mjs';
import { startFakeModal } from './helpers/fake-modal.mjs';

const REAL_KEY = 'sk-ant-REAL-KEY-never-in-a-sandbox-7f3a';
const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };

/** Environments of every process that has `needle` in its environment (only those whose
 *  command line names `under`, when given: this test's sandboxes, not another runtime's). */
function processesWith(needle, under) {
  const found = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const env = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
      if (!env.includes(needle)) continue;
      if (under && !fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(under)) continue;
      found.push({ pid, env: env.split('\0') });
    } catch {}
  }
  return found;
}

/** Files under `dir` whose bytes contain `needle`. */
function filesWith(dir, needle) {
  const hits = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        try {
          if (fs.readFileSync(p).includes(needle)) hits.push(p);
        } catch {}
      }
    }
  };
  walk(dir);
  return hits;
}

const sum = (calls, k) => calls.reduce((n, c) => n + c[k], 0);

test('the real key never reaches a sandbox; every call is counted and priced', { timeout: 240_000 }, async () => {
  const h = await agentRuntime({ extraSandboxEnv: { ANTHROPIC_API_KEY: REAL_KEY } });
  try {
    // A model the built-in price list knows (the SDK's default may be newer than the table).
    const s = await h.rt.sessionManager.createSession({ ...CLAUDE, sessionOptions: { model: 'claude-sonnet-4-5-20250929' } });
    const id = s.sessionId;
    // A turn that is still running while we look: a Bash call that sleeps.
    const running = h.waitFor((n, p) => n === 'session:block:start' && p.sessionId === id && p.block?.type === 'tool_use', 60_000, 'the tool call');
    await s.sendMessage('run: echo start; sleep 3; echo done');
    await running;
    const sandboxProcs = processesWith('ANTHROPIC_BASE_URL=http://127.0.0.1:', h.root);
    assert.ok(sandboxProcs.length > 0, 'the agent processes point at the proxy');
    const token = sandboxProcs[0].env.find((v) => v.startsWith('ANTHROPIC_API_KEY=')).split('=')[1];
    assert.match(token, /^arn-[0-9a-f]{48}$/, 'the sandbox has a token for its key');
    assert.deepEqual(processesWith(REAL_KEY).map((p) => p.pid), [], 'no process environment holds the real key');
    assert.deepEqual(filesWith(h.root, REAL_KEY), [], 'no sandbox file holds it');
    await h.turnEnd(id);
    // The upstream saw the real key on every call, and only from the proxy.
    const calls = h.fake.requests.filter((r) => r.path === '/v1/messages' && r.method === 'POST');
    assert.ok(calls.length >= 2, `${calls.length} model calls`);
    for (const c of calls) assert.equal(c.headers['x-api-key'], REAL_KEY);
    // Usage: one session:usage per call, exactly what the fake reported.
    await eventually(() => h.of(id, 'session:usage').length === calls.length, 10_000, 'a usage event per call');
    const usage = h.of(id, 'session:usage');
    const reported = calls.map((c) => c.reported);
    const tokens = usage.map((u) => u.call);
    for (const [ours, theirs] of [['inputTokens', 'input_tokens'], ['outputTokens', 'output_tokens'], ['cacheReadTokens', 'cache_read_input_tokens'], ['cacheWriteTokens', 'cache_creation_input_tokens']]) {
      assert.equal(sum(tokens, ours), sum(reported, theirs), ours);
    }
    const last = usage.at(-1);
    assert.equal(last.total.calls, calls.length);
    assert.equal(last.total.inputTokens, sum(reported, 'input_tokens'));
    // Priced from the table: the model Claude Code asked for.
    const model = tokens[0].model;
    assert.equal(model, 'claude-sonnet-4-5-20250929');
    assert.equal(tokens[0].costUsd, (tokens[0].inputTokens * 3 + tokens[0].outputTokens * 15 + tokens[0].cacheReadTokens * 0.3 + tokens[0].cacheWriteTokens * 3.75) / 1e6);
    assert.ok(last.costUsd > 0 && Math.abs(last.costUsd - sum(tokens, 'costUsd')) < 1e-12, `${last.costUsd}`);
    assert.equal(typeof last.eventId, 'string', 'numbered like every session event');
    // In the state, and kept across an unload and reload.
    const before = h.rt.sessionManager.getSession(id).getState().runtime.usage;
    assert.equal(before.calls, calls.length);
    await h.rt.sessionManager.unloadSession(id);
    // The token died with the session.
    const refused = await fetch(`${sandboxProcs[0].env.find((v) => v.startsWith('ANTHROPIC_BASE_URL=')).split('=')[1]}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': token, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(refused.status, 401);
    assert.equal((await refused.json()).error.type, 'authentication_error');
    const again = (await h.rt.sessionManager.loadSession(id)).getState().runtime.usage;
    // Sandbox time kept counting until the sandbox stopped at the unload.
    assert.ok(again.sandboxSeconds >= before.sandboxSeconds && again.sandboxSeconds < before.sandboxSeconds + 30);
    assert.deepEqual({ ...again, sandboxSeconds: 0 }, { ...before, sandboxSeconds: 0 });
  } finally {
    await h.close();
  }
});

test('a subagent\'s calls are counted under its own conversation', { timeout: 240_000 }, async () => {
  const h = await agentRuntime({ extraSandboxEnv: { ANTHROPIC_API_KEY: REAL_KEY } });
  try {
    const s = await h.rt.sessionManager.createSession({ ...CLAUDE, sessionOptions: { model: 'claude-sonnet-4-5-20250929' } });
    await s.sendMessage('ask the helper subagent to check the plan');
    await h.turnEnd(s.sessionId);
    const calls = h.fake.requests.filter((r) => r.path === '/v1/messages' && r.method === 'POST');
    const sub = calls.filter((c) => c.headers['x-claude-code-agent-id']);
    assert.ok(sub.length >= 1, 'the subagent called the model');
    await eventually(() => h.of(s.sessionId, 'session:usage').length === calls.length, 10_000, 'a usage event per call');
    const usage = s.getState().runtime.usage;
    const subIds = Object.keys(usage.byConversation).filter((k) => k !== 'main');
    assert.equal(subIds.length, 1, JSON.stringify(usage.byConversation));
    assert.equal(usage.byConversation[subIds[0]].calls, sub.length);
    assert.equal(usage.byConversation.main.calls, calls.length - sub.length);
  } finally {
    await h.close();
  }
});

test('the proxy refuses missing and unknown tokens and oversized bodies', { timeout: 120_000 }, async () => {
  const h = await agentRuntime({ extraSandboxEnv: { ANTHROPIC_API_KEY: REAL_KEY } });
  try {
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    await s.sendMessage('hello');
    await h.turnEnd(s.sessionId);
    const base = processesWith('ANTHROPIC_BASE_URL=http://127.0.0.1:', h.root)[0].env.find((v) => v.startsWith('ANTHROPIC_BASE_URL=')).split('=')[1];
    const post = (headers, body = '{}') => fetch(`${base}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    assert.equal((await post({})).status, 401, 'no token');
    assert.equal((await post({ 'x-api-key': 'arn-' + '0'.repeat(48) })).status, 401, 'unknown token');
    assert.equal((await post({ 'x-api-key': REAL_KEY })).status, 401, 'the real key is not a token');
    const token = processesWith('ANTHROPIC_BASE_URL=http://127.0.0.1:', h.root)[0].env.find((v) => v.startsWith('ANTHROPIC_API_KEY=')).split('=')[1];
    // A body over the upstream's 32 MB limit is refused before it is read.
    const big = await new Promise((resolve, reject) => {
      const req = http.request(`${base}/v1/messages`, { method: 'POST', headers: { 'x-api-key': token, 'content-length': 200 * 1024 * 1024 } }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c)).on('end', () => resolve({ status: res.statusCode, body: JSON.parse(body) }));
      });
      req.on('error', reject);
      req.write('{');
    });
    assert.equal(big.status, 413);
    assert.equal(big.body.error.type, 'request_too_large');
  } finally {
    await h.close();
  }
});

test('a spent budget stops the turn with BUDGET_EXCEEDED, refuses messages with 402, and a raised budget lets the session go on', { timeout: 240_000 }, async () => {
  const h = await agentRuntime({ extraSandboxEnv: { ANTHROPIC_API_KEY: REAL_KEY } });
  try {
    // One call of the fake uses ~40 tokens: the budget runs out after the first call.
    const s = await h.rt.sessionManager.createSession({ ...CLAUDE, sessionOptions: { budget: { maxTokens: 30 } } });
    const id = s.sessionId;
    await s.sendMessage('run: echo hi');
    const [, err] = await h.waitFor((n, p) => n === 'session:error' && p.sessionId === id, 60_000, 'the budget error');
    assert.equal(err.error.code, 'BUDGET_EXCEEDED');
    assert.match(err.error.message, /maxTokens 30/);
    await h.turnEnd(id);
    const callsThen = h.fake.requests.filter((r) => r.path === '/v1/messages').length;
    assert.equal(h.of(id, 'session:error').filter((e) => e.error.code === 'BUDGET_EXCEEDED').length, 1, 'said once');
    await assert.rejects(s.sendMessage('more'), (e) => e.code === 'BUDGET_EXCEEDED');
    // Over REST: 402 naming the code, until PATCH raises the budget.
    const rest = client(h.rt.createRestServer({ apiKey: API_KEY }).fetch);
    const refused = await rest('POST', `/api/sessions/${id}/messages`, { content: 'more' });
    assert.equal(refused.status, 402);
    assert.equal(refused.body.code, 'BUDGET_EXCEEDED');
    assert.equal(h.fake.requests.filter((r) => r.path === '/v1/messages').length, callsThen, 'no further upstream call');
    const state = (await rest('GET', `/api/sessions/${id}`)).body;
    assert.ok(state.runtime.usage.inputTokens + state.runtime.usage.outputTokens >= 30, 'usage in the state');
    assert.equal((await rest('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { budget: { maxTokens: 100_000 } } })).status, 200);
    assert.equal((await rest('POST', `/api/sessions/${id}/messages`, { content: 'hello again' })).status, 200);
    await h.turnEnd(id, 2);
    assert.ok(h.fake.requests.filter((r) => r.path === '/v1/messages').length > callsThen, 'it works again');
    await assert.rejects(s.updateSessionOptions({ budget: { maxTokens: -1 } }), /sessionOptions\.budget\.maxTokens must be a positive number/);
  } finally {
    await h.close();
  }
});

test('maxTurnMs stops a turn that runs too long, the interrupt way', { timeout: 120_000 }, async () => {
  const h = await agentRuntime({ extraSandboxEnv: { ANTHROPIC_API_KEY: REAL_KEY } });
  try {
    const s = await h.rt.sessionManager.createSession({ ...CLAUDE, sessionOptions: { budget: { maxTurnMs: 2000 } } });
    const id = s.sessionId;
    const started = Date.now();
    await s.sendMessage('run: echo start; sleep 60; echo done');
    const [, err] = await h.waitFor((n, p) => n === 'session:error' && p.sessionId === id, 30_000, 'the budget error');
    assert.equal(err.error.code, 'BUDGET_EXCEEDED');
    assert.match(err.error.message, /maxTurnMs 2000/);
    const [, end] = await h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.metadata?.stopReason, 30_000, 'the end');
    assert.equal(end.block.metadata.stopReason, 'interrupted');
    assert.ok(Date.now() - started < 30_000, 'long before the command would have ended');
  } finally {
    await h.close();
  }
});

test('maxSandboxSeconds counts sandbox time: the turn that runs past it stops, later messages get BUDGET_EXCEEDED', { timeout: 120_000 }, async () => {
  const h = await agentRuntime({ extraSandboxEnv: { ANTHROPIC_API_KEY: REAL_KEY } });
  try {
    const s = await h.rt.sessionManager.createSession({ ...CLAUDE, sessionOptions: { budget: { maxSandboxSeconds: 3 } } });
    const id = s.sessionId;
    await s.sendMessage('run: echo start; sleep 60; echo done');
    const [, err] = await h.waitFor((n, p) => n === 'session:error' && p.sessionId === id, 30_000, 'the budget error');
    assert.equal(err.error.code, 'BUDGET_EXCEEDED');
    assert.match(err.error.message, /maxSandboxSeconds 3/);
    await h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.metadata?.stopReason, 30_000, 'the end');
    assert.ok(s.getState().runtime.usage.sandboxSeconds >= 3);
    await assert.rejects(s.sendMessage('more'), (e) => e.code === 'BUDGET_EXCEEDED' && /maxSandboxSeconds/.test(e.message));
  } finally {
    await h.close();
  }
});

test('OpenCode: the key stays out of its sandbox and its calls are counted', { timeout: 240_000 }, async () => {
  const profile = { id: 'default', name: 'Default Agent', tools: ['write', 'bash'] };
  const h = await agentRuntime({ profiles: [profile], extraSandboxEnv: { ANTHROPIC_API_KEY: REAL_KEY, AGENT_RUNTIME_OPENCODE_MAX_RETRIES: '0' } });
  try {
    const s = await h.rt.sessionManager.createSession({ agentProfileRef: 'default', architecture: 'opencode', sessionOptions: { model: 'anthropic/claude-sonnet-4-5' } });
    const id = s.sessionId;
    await s.sendMessage('write haiku.txt');
    await h.turnEnd(id);
    assert.deepEqual(processesWith(REAL_KEY).map((p) => p.pid), [], 'no process environment holds the real key');
    assert.deepEqual(filesWith(h.root, REAL_KEY), [], 'no sandbox file holds it');
    const calls = h.fake.requests.filter((r) => r.path.startsWith('/v1/messages') && r.method === 'POST' && r.reported);
    assert.ok(calls.length >= 1);
    for (const c of calls) assert.equal(c.headers['x-api-key'], REAL_KEY);
    await eventually(() => h.of(id, 'session:usage').length === calls.length, 10_000, 'a usage event per call');
    const last = h.of(id, 'session:usage').at(-1);
    assert.equal(last.total.inputTokens, sum(calls.map((c) => c.reported), 'input_tokens'));
    assert.equal(last.total.outputTokens, sum(calls.map((c) => c.reported), 'output_tokens'));
    assert.ok(last.costUsd > 0, 'priced');
  } finally {
    await h.close();
  }
});

/** A port nobody listens on now. */
async function freePort() {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

for (const publicUrl of [true, false]) {
  test(`Modal (fake control plane) ${publicUrl ? 'with' : 'without'} modelProxy.publicUrl`, { timeout: 240_000 }, async () => {
    const fake = await startFakeModal();
    const port = await freePort();
    process.env.MODAL_SERVER_URL = fake.url;
    let h;
    try {
      h = await agentRuntime({
        modal: { tokenId: 'ak-test', tokenSecret: 'as-test', appName: 'proxy' },
        sandbox: { provider: 'modal' },
        extraSandboxEnv: { ANTHROPIC_API_KEY: REAL_KEY },
        modelProxy: publicUrl ? { port, publicUrl: `http://127.0.0.1:${port}` } : {},
      });
    } finally {
      delete process.env.MODAL_SERVER_URL;
    }
    try {
      const s = await h.rt.sessionManager.createSession({ ...CLAUDE, sessionOptions: { model: 'claude-sonnet-4-5-20250929' } });
      await s.sendMessage('hello there');
      await h.turnEnd(s.sessionId);
      const calls = h.fake.requests.filter((r) => r.path === '/v1/messages' && r.method === 'POST');
      assert.ok(calls.length >= 1);
      for (const c of calls) assert.equal(c.headers['x-api-key'], REAL_KEY);
      if (publicUrl) {
        // The sandbox reached the proxy at its public URL with a token; the key stayed out.
        assert.deepEqual(processesWith(REAL_KEY).map((p) => p.pid), []);
        assert.ok(processesWith(`ANTHROPIC_BASE_URL=http://127.0.0.1:${port}`).length > 0);
        await eventually(() => h.of(s.sessionId, 'session:usage').length === calls.length, 10_000, 'usage');
      } else {
        // No way in from a remote sandbox: the key goes in, as before (and a warning said so).
        assert.ok(processesWith(REAL_KEY).length > 0, 'the runner has the key');
        assert.equal(h.of(s.sessionId, 'session:usage').length, 0, 'not metered');
      }
    } finally {
      await h.close();
      await fake.stop();
    }
  });
}
