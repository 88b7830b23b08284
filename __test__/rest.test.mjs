// The REST API through createRestServer().fetch, in process, against a recording JS adapter.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createAgentRuntime } from '../index.mjs';
import { recordingAdapter } from './helpers/adapter.mjs';
import { client, API_KEY, AUTH } from './helpers/http.mjs';

let rt;
let rec;
let http;
let app;

before(async () => {
  rec = recordingAdapter({
    profiles: [
      {
        id: 'default',
        name: 'Default Agent',
        defaultWorkspaceFiles: [{ path: 'notes/README.md', content: '# hello' }],
      },
    ],
  });
  rt = await createAgentRuntime({ persistence: rec.adapter, logLevel: 'error', maxBodyBytes: 64 * 1024 });
  await rt.start();
  app = rt.createRestServer({ apiKey: API_KEY });
  http = client(app.fetch); // detached: fetch must not need `this`
});

after(() => rt.shutdown());

test('every /api route, with the adapter called in the reference order', { timeout: 240_000 }, async () => {
  rec.calls.length = 0;
  const created = await http('POST', '/api/sessions', {
    agentProfileRef: 'default',
    architecture: 'claude-agent-sdk',
    sessionOptions: { model: 'claude-sonnet-4-5' },
  });
  assert.equal(created.status, 201);
  const id = created.body.sessionId;
  assert.deepEqual(created.body.sessionOptions, { model: 'claude-sonnet-4-5' });
  assert.equal(typeof created.body.createdAt, 'number');
  assert.deepEqual(rec.names(), [
    'loadAgentProfile',
    'createSessionRecord',
    'saveTranscript',
    'saveWorkspaceFile',
    'updateSessionRecord',
  ]);
  assert.deepEqual(rec.calls[1][1], {
    sessionId: id,
    type: 'claude-agent-sdk',
    agentProfileReference: 'default',
    createdAt: created.body.createdAt,
    sessionOptions: { model: 'claude-sonnet-4-5' },
  });
  assert.deepEqual(rec.calls[2], ['saveTranscript', id, '']);
  assert.deepEqual(rec.calls[3], ['saveWorkspaceFile', id, { path: 'notes/README.md', content: '# hello' }]);

  rec.calls.length = 0;
  const list = await http('GET', '/api/sessions');
  assert.equal(list.status, 200);
  const item = list.body.sessions.find((s) => s.sessionId === id);
  assert.deepEqual(item.runtime, { isLoaded: true, sandbox: null });
  assert.deepEqual(rec.names(), ['listAllSessions']);

  const state = await http('GET', `/api/sessions/${id}`);
  assert.equal(state.status, 200);
  for (const k of ['sessionId', 'type', 'agentProfileReference', 'sessionOptions', 'lastActivity', 'createdAt', 'runtime', 'blocks', 'workspaceFiles', 'subagents']) {
    assert.ok(k in state.body, `getState has ${k}`);
  }
  assert.deepEqual(state.body.workspaceFiles, [{ path: 'notes/README.md', content: '# hello' }]);

  rec.calls.length = 0;
  const patched = await http('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { model: 'x' } });
  assert.deepEqual(patched.body, { success: true, sessionId: id, sessionOptions: { model: 'x' } });
  assert.deepEqual(rec.calls, [['updateSessionRecord', id, { sessionOptions: { model: 'x' } }]]);

  rec.calls.length = 0;
  assert.deepEqual((await http('POST', `/api/sessions/${id}/sync`)).body, { success: true, sessionId: id });
  assert.deepEqual(rec.names(), ['saveTranscript', 'saveWorkspaceFile', 'updateSessionRecord']);

  rec.calls.length = 0;
  assert.deepEqual((await http('DELETE', `/api/sessions/${id}`)).body, { success: true, sessionId: id });
  assert.deepEqual(rec.names(), [], 'a session without a sandbox unloads without adapter calls');
  assert.equal(rt.sessionManager.isSessionLoaded(id), false);

  // Loaded again from the adapter on GET.
  rec.calls.length = 0;
  const again = await http('GET', `/api/sessions/${id}`);
  assert.equal(again.status, 200);
  assert.deepEqual(again.body.sessionOptions, { model: 'x' });
  assert.deepEqual(rec.names(), ['loadSession', 'loadAgentProfile']);

});

test('the seed-documented routes share handlers and auth', { timeout: 240_000 }, async () => {
  assert.equal((await http('GET', '/sessions', undefined, {})).status, 401);
  const created = await http('POST', '/sessions/create', { agentProfileRef: 'default', architecture: 'opencode' });
  assert.equal(created.status, 201);
  const id = created.body.sessionId;
  assert.ok((await http('GET', '/sessions')).body.sessions.some((s) => s.sessionId === id));
  assert.equal((await http('GET', `/sessions/${id}`)).body.sessionId, id);
  assert.equal((await http('POST', '/sessions/ses_000000000000_nosuchsession/message', { content: 'hi' })).status, 404);
  const profiles = await http('GET', '/agent-profiles');
  assert.deepEqual(profiles.body, { profiles: [{ id: 'default', name: 'Default Agent' }] });
  assert.deepEqual((await http('GET', '/api/agent-profiles')).body, profiles.body);
});

test('health, auth forms, CORS', { timeout: 240_000 }, async () => {
  const health = await http('GET', '/health', undefined, {});
  assert.deepEqual(health.body, { status: 'ok' });
  assert.equal(health.headers.get('access-control-allow-origin'), '*');
  assert.deepEqual((await http('GET', '/api/sessions', undefined, {})).body, {
    error: 'Missing Authorization header',
    code: 'AUTH_REQUIRED',
  });
  assert.equal((await http('GET', '/api/sessions', undefined, { Authorization: 'Bearer nope' })).body.code, 'INVALID_API_KEY');
  assert.equal((await http('GET', '/api/sessions', undefined, { Authorization: API_KEY })).status, 200, 'bare key');
  assert.equal((await http('GET', '/api/sessions', undefined, { Authorization: `bearer ${API_KEY}` })).status, 401);
  const pre = await app.fetch(
    new Request('http://localhost/api/sessions', {
      method: 'OPTIONS',
      headers: { Origin: 'http://a.test', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type' },
    }),
  );
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-headers'), 'authorization,content-type');
  assert.equal(pre.headers.get('access-control-allow-methods'), 'GET,HEAD,PUT,POST,DELETE,PATCH');
  const unknown = await http('GET', '/nope', undefined, {});
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body, '404 Not Found');
});

test('bad input gets a 400/404/413 that names the problem', { timeout: 240_000 }, async () => {
  const bad = await http('POST', '/api/sessions', '{"agentProfileRef": ');
  assert.equal(bad.status, 400);
  assert.equal(bad.body.code, 'INVALID_REQUEST');
  assert.match(bad.body.error, /^Malformed JSON in request body/);

  const missing = await http('POST', '/api/sessions', { architecture: 'claude-agent-sdk' });
  assert.equal(missing.status, 400);
  assert.match(missing.body.error, /missing field `agentProfileRef`/);

  const wrongType = await http('POST', '/api/sessions', { agentProfileRef: 7, architecture: 'claude-agent-sdk' });
  assert.match(wrongType.body.error, /agentProfileRef: invalid type: integer `7`, expected a string/);

  const arch = await http('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'gemini' });
  assert.equal(arch.status, 400);
  assert.match(arch.body.error, /architecture: unknown variant `gemini`/);

  const profile = await http('POST', '/api/sessions', { agentProfileRef: 'ghost', architecture: 'opencode' });
  assert.equal(profile.status, 400);
  assert.equal(profile.body.code, 'AGENT_PROFILE_NOT_FOUND');

  const notObject = await http('PATCH', '/api/sessions/x/options', '[1]');
  assert.match(notObject.body.error, /expected a JSON object/);
  const msg = await http('POST', '/api/sessions/whatever/messages', { content: ['x'] });
  assert.equal(msg.status, 400);

  const unknown = await http('GET', '/api/sessions/does-not-exist');
  assert.deepEqual(unknown.body, { error: 'Session not found', code: 'SESSION_NOT_FOUND' });
  assert.equal((await http('DELETE', '/api/sessions/does-not-exist')).status, 404);
  assert.equal((await http('POST', '/api/sessions/does-not-exist/sync')).status, 404);
  assert.equal((await http('PATCH', '/api/sessions/does-not-exist/options', { sessionOptions: {} })).status, 404);

  const huge = JSON.stringify({ content: 'x'.repeat(100 * 1024) });
  const big = await http('POST', '/api/sessions/x/messages', huge);
  assert.equal(big.status, 413);
  assert.equal(big.body.code, 'PAYLOAD_TOO_LARGE');
  // Streamed without a content-length: still cut off.
  const stream = new ReadableStream({
    start(c) {
      for (let i = 0; i < 20; i++) c.enqueue(new TextEncoder().encode('x'.repeat(8192)));
      c.close();
    },
  });
  const res = await app.fetch(new Request('http://localhost/api/sessions', { method: 'POST', headers: AUTH, body: stream, duplex: 'half' }));
  assert.equal(res.status, 413);
});

test('serves through @hono/node-server with app.fetch', { timeout: 240_000 }, async () => {
  const { serve } = await import('@hono/node-server');
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  try {
    const { port } = server.address();
    const res = await fetch(`http://127.0.0.1:${port}/api/sessions`, { headers: AUTH });
    assert.equal(res.status, 200);
    assert.ok(Array.isArray((await res.json()).sessions));
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test('session ids outside [A-Za-z0-9._:-]{1,256} are 400 INVALID_REQUEST naming the id; generated ids stay valid', { timeout: 240_000 }, async () => {
  for (const [method, path] of [
    ['GET', '/api/sessions/a%20b'],
    ['DELETE', `/api/sessions/${'x'.repeat(257)}`],
    ['POST', '/api/sessions/%2E%2E%2Fetc/sync'],
    ['PATCH', '/api/sessions/%C3%A9/options'],
    ['POST', '/sessions/a%22b/message'],
  ]) {
    const res = await http(method, path, method === 'GET' || method === 'DELETE' ? undefined : { content: 'x', sessionOptions: {} });
    assert.equal(res.status, 400, `${method} ${path}`);
    assert.equal(res.body.code, 'INVALID_REQUEST');
    assert.match(res.body.error, /^Invalid session id "/);
  }
  const created = await http('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'opencode' });
  assert.match(created.body.sessionId, /^ses_/);
  assert.equal((await http('GET', `/api/sessions/${created.body.sessionId}`)).status, 200);
});

test('an empty API key is a configuration error (TypeError)', () => {
  assert.throws(() => rt.createRestServer({ apiKey: '' }), { name: 'TypeError', message: /apiKey must be a non-empty string/ });
});

