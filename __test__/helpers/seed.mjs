// Test side of the seed example: the shared build/run code plus a walk over every REST route.
import assert from 'node:assert/strict';
import { client } from './http.mjs';
import { io } from 'socket.io-client';

export * from '../../examples/seed-app.mjs';

/** Drive every REST route of a running seed server (port 3001, key "your-api-key"). */
const KEY = { Authorization: 'Bearer your-api-key', 'Content-Type': 'application/json' };

export async function exerciseSeedServer() {
  const http = client(fetch, 'http://127.0.0.1:3001');
  const req = (m, p, b) => http(m, p, b, KEY);

  assert.deepEqual((await http('GET', '/health', undefined, {})).body, { status: 'ok' });
  assert.equal((await http('GET', '/api/sessions', undefined, {})).status, 401);

  const created = await req('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
  assert.equal(created.status, 201);
  const id = created.body.sessionId;
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.deepEqual(created.body.runtime, { isLoaded: true, sandbox: null });

  const list = await req('GET', '/api/sessions');
  assert.equal(list.status, 200);
  assert.ok(Array.isArray(list.body.sessions));

  const state = await req('GET', `/api/sessions/${id}`);
  assert.equal(state.status, 200);
  assert.equal(state.body.sessionId, id);
  assert.deepEqual(state.body.blocks, []);

  const opts = await req('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { model: 'claude-sonnet-4-5' } });
  assert.deepEqual(opts.body, { success: true, sessionId: id, sessionOptions: { model: 'claude-sonnet-4-5' } });
  assert.equal((await req('POST', `/api/sessions/${id}/sync`)).status, 200);

  // The seed's documented routes.
  const doc = await req('POST', '/sessions/create', { agentProfileRef: 'default', architecture: 'opencode' });
  assert.equal(doc.status, 201);
  assert.match(doc.body.sessionId, /^ses_[0-9a-f]{12}_[0-9a-z]+$/);
  assert.equal((await req('GET', '/sessions')).status, 200);
  assert.equal((await req('GET', `/sessions/${doc.body.sessionId}`)).body.type, 'opencode');
  assert.deepEqual((await req('GET', '/agent-profiles')).body, { profiles: [{ id: 'default', name: 'Default Agent' }] });

  // Socket.IO through the seed's own createWebSocketServer(httpServer), both transports.
  for (const transports of [['websocket', 'polling'], ['polling']]) {
    const socket = io('http://127.0.0.1:3001', { transports, reconnection: false });
    await new Promise((resolve, reject) => (socket.once('connect', resolve), socket.once('connect_error', reject)));
    assert.deepEqual(await socket.emitWithAck('session:join', id), { success: true });
    const list = new Promise((resolve) => socket.once('sessions:list', resolve));
    await req('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
    assert.ok(Array.isArray(await list), 'sessions:list after a create');
    socket.close();
  }

  assert.deepEqual((await req('DELETE', `/api/sessions/${id}`)).body, { success: true, sessionId: id });
  // The seed's adapter stores nothing, so an unloaded session is gone for good.
  assert.equal((await req('GET', `/api/sessions/${id}`)).status, 404);
}

