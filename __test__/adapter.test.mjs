// The JS PersistenceAdapter bridge: every failure mode ends as a clear error naming the method,
// over REST and from the JS API, and the process stays up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAgentRuntime } from '../index.mjs';
import { recordingAdapter } from './helpers/adapter.mjs';
import { client, API_KEY } from './helpers/http.mjs';

async function setup(opts = {}) {
  const rec = recordingAdapter();
  const rt = await createAgentRuntime({ persistence: rec.adapter, logLevel: 'error', persistenceTimeoutMs: 300, ...opts });
  const http = client(rt.createRestServer({ apiKey: API_KEY }).fetch);
  return { rec, rt, http };
}

const CREATE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };

test('a throwing adapter method: 500 naming method and message', { timeout: 240_000 }, async () => {
  const { rec, rt, http } = await setup();
  rec.faults.createSessionRecord = 'throw';
  const res = await http('POST', '/api/sessions', CREATE);
  assert.equal(res.status, 500);
  assert.equal(res.body.code, 'SESSION_CREATE_FAILED');
  assert.equal(res.body.error, 'Failed to create session: persistence.createSessionRecord failed: createSessionRecord exploded');
  await assert.rejects(rt.sessionManager.createSession(CREATE), (e) => {
    assert.equal(e.code, 'PERSISTENCE_FAILED');
    assert.match(e.message, /persistence\.createSessionRecord failed: createSessionRecord exploded/);
    return true;
  });
  await rt.shutdown();
});

test('a rejecting adapter method (also with a non-Error reason)', { timeout: 240_000 }, async () => {
  const { rec, rt, http } = await setup();
  rec.faults.listAllSessions = 'reject';
  const res = await http('GET', '/api/sessions');
  assert.equal(res.status, 500);
  assert.equal(res.body.code, 'SESSION_LIST_FAILED');
  assert.match(res.body.error, /persistence\.listAllSessions failed: listAllSessions rejected/);
  rec.faults.loadSession = () => Promise.reject('plain string reason');
  const load = await http('GET', '/api/sessions/abc');
  assert.equal(load.status, 500);
  assert.match(load.body.error, /persistence\.loadSession failed: plain string reason/);
  await rt.shutdown();
});

test('a wrong shape names method and field', { timeout: 240_000 }, async () => {
  const { rec, rt, http } = await setup();
  rec.faults.loadSession = () => ({ sessionId: 5, type: 'claude-agent-sdk', agentProfileReference: 'default' });
  const res = await http('GET', '/api/sessions/abc');
  assert.equal(res.status, 500);
  assert.match(res.body.error, /persistence\.loadSession returned an invalid value: sessionId: invalid type: integer `5`, expected a string/);
  await assert.rejects(rt.sessionManager.loadSession('abc'), { code: 'PERSISTENCE_WRONG_SHAPE' });

  rec.faults.listAllSessions = () => [{ sessionId: 'a', type: 'claude-agent-sdk' }];
  assert.match((await http('GET', '/api/sessions')).body.error, /listAllSessions returned an invalid value: \[0\]: missing field `agentProfileReference`/);
  rec.faults.loadAgentProfile = () => 'default';
  assert.match((await http('POST', '/api/sessions', CREATE)).body.error, /loadAgentProfile returned an invalid value: invalid type: string "default", expected struct AgentProfile/);
  rec.faults.listAgentProfiles = () => ({ id: 1n });
  assert.match((await http('GET', '/agent-profiles')).body.error, /listAgentProfiles returned an invalid value: .*BigInt/);
  await rt.shutdown();
});

test('a hanging adapter call times out instead of hanging the request or shutdown', { timeout: 240_000 }, async () => {
  // Shutdown keeps trying to store the session for shutdownTimeoutMs, then gives up.
  const { rec, rt, http } = await setup({ shutdownTimeoutMs: 1500 });
  const created = await http('POST', '/api/sessions', CREATE);
  rec.faults.updateSessionRecord = 'hang';
  rec.faults.saveTranscript = 'hang';
  const res = await http('PATCH', `/api/sessions/${created.body.sessionId}/options`, { sessionOptions: {} });
  assert.equal(res.status, 500);
  assert.match(res.body.error, /persistence\.updateSessionRecord did not settle within 300 ms/);
  rec.faults.listAllSessions = 'hang';
  await assert.rejects(rt.start(), { code: 'PERSISTENCE_TIMEOUT' });
  await rt.shutdown(); // must return
  assert.equal(rt.isHealthy(), false);
});

test('synchronous adapter methods and undefined fields are accepted', { timeout: 240_000 }, async () => {
  const store = new Map();
  const persistence = {
    listAllSessions: () => [...store.values()].map((s) => ({ ...s, name: undefined })),
    loadSession: (id) => (store.has(id) ? { ...store.get(id), rawTranscript: undefined, workspaceFiles: undefined } : null),
    createSessionRecord: (s) => void store.set(s.sessionId, s),
    updateSessionRecord: () => undefined,
    saveTranscript: () => {},
    saveWorkspaceFile: () => {},
    deleteSessionFile: () => {},
    listAgentProfiles: () => [],
    loadAgentProfile: (id) => ({ id, name: 'Sync', tools: undefined, createdAt: new Date(0) }),
  };
  const rt = await createAgentRuntime({ persistence, logLevel: 'error' });
  const s = await rt.sessionManager.createSession({ agentProfileRef: 'p', architecture: 'opencode' });
  await rt.sessionManager.unloadSession(s.sessionId);
  const again = await rt.sessionManager.loadSession(s.sessionId);
  assert.deepEqual(again.getState().workspaceFiles, []);
  assert.equal((await rt.sessionManager.getAllSessions())[0].runtime.isLoaded, true);
  await rt.shutdown();
});

test('invalid config is a TypeError naming the field', { timeout: 240_000 }, async () => {
  const rec = recordingAdapter();
  await assert.rejects(createAgentRuntime({}), { name: 'TypeError', message: /config\.persistence must be/ });
  const { saveTranscript, ...partial } = rec.adapter;
  await assert.rejects(createAgentRuntime({ persistence: partial }), {
    name: 'TypeError',
    message: /config\.persistence\.saveTranscript must be a function/,
  });
  await assert.rejects(createAgentRuntime({ persistence: rec.adapter, idleTimeoutMs: 'soon' }), {
    name: 'TypeError',
    message: /idleTimeoutMs/,
  });
  await assert.rejects(createAgentRuntime({ persistence: rec.adapter, modal: { tokenId: 42 } }), {
    name: 'TypeError',
    message: /modal\.tokenId/,
  });
  await assert.rejects(createAgentRuntime({ persistence: rec.adapter, logLevel: 'loud' }), { name: 'TypeError' });
  const rt = await createAgentRuntime({ persistence: rec.adapter, logLevel: 'error' });
  assert.throws(() => rt.createRestServer({}), { name: 'TypeError', message: /apiKey/ });
  await assert.rejects(rt.sessionManager.createSession({ agentProfileRef: 'default', architecture: 'nope' }), {
    name: 'TypeError',
    message: /architecture/,
  });
  await rt.shutdown();
});

test('domain events reach the EventBus with the reference payloads', { timeout: 240_000 }, async () => {
  const { rt, http } = await setup();
  const seen = [];
  for (const name of ['sessions:changed', 'session:status', 'session:options:update']) {
    rt.eventBus.on(name, (p) => seen.push([name, p]));
  }
  const created = await http('POST', '/api/sessions', CREATE);
  const id = created.body.sessionId;
  await http('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { model: 'm' } });
  await http('DELETE', `/api/sessions/${id}`);
  await new Promise((r) => setImmediate(r)); // events are queued to the JS thread
  // The reference's payloads, plus each session event's place in the session's log.
  const ids = seen.filter(([, p]) => p).map(([, p]) => p.eventId);
  assert.deepEqual(seen.filter(([, p]) => p).map(([, p]) => p.seq), [1, 2]);
  assert.ok(ids.every((e) => typeof e === 'string' && e.length > 0) && ids[0] !== ids[1]);
  assert.deepEqual(seen, [
    ['sessions:changed', undefined],
    ['session:options:update', { sessionId: id, options: { model: 'm' }, eventId: ids[0], seq: 1 }],
    ['session:status', { sessionId: id, runtime: { isLoaded: false, sandbox: null }, eventId: ids[1], seq: 2 }],
    ['sessions:changed', undefined],
  ]);
  await rt.shutdown();
});

test('a throwing event listener does not take the process down', { timeout: 240_000 }, async () => {
  const { rt, http } = await setup();
  let called = 0;
  rt.eventBus.on('sessions:changed', () => {
    called++;
    throw new Error('listener bug');
  });
  const errors = [];
  const orig = console.error;
  console.error = (...a) => errors.push(a.join(' '));
  try {
    assert.equal((await http('POST', '/api/sessions', CREATE)).status, 201);
    await new Promise((r) => setImmediate(r));
  } finally {
    console.error = orig;
  }
  assert.equal(called, 1);
  assert.match(errors.join('\n'), /a listener of "sessions:changed" threw/);
  await rt.shutdown();
});
