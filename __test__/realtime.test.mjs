// Socket.IO in Rust behind the user's Node server, driven by the official socket.io-client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { createAgentRuntime } from '../index.mjs';
import { recordingAdapter } from './helpers/adapter.mjs';
import { agentRuntime } from './helpers/agent.mjs';
import { client, API_KEY } from './helpers/http.mjs';

const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };
const once = (emitter, name) => new Promise((resolve) => emitter.once(name, resolve));

/** A seed-style server: the user's own handler answers everything that is not Socket.IO. */
async function serve(rt, { secure } = {}) {
  const app = rt.createRestServer({ apiKey: API_KEY });
  const handler = async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const response = await app.fetch(
      new Request(`http://${req.headers.host}${req.url}`, {
        method: req.method,
        headers: req.headers,
        body: req.method !== 'GET' && req.method !== 'HEAD' ? Buffer.concat(chunks) : undefined,
      }),
    );
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  };
  const server = secure ? https.createServer(secure, handler) : http.createServer(handler);
  const ws = rt.createWebSocketServer(server);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `${secure ? 'https' : 'http'}://127.0.0.1:${server.address().port}`;
  return { server, ws, url, rest: client(app.fetch), close: () => (ws.close(), new Promise((r) => server.close(r))) };
}

async function connect(url, opts = {}) {
  const c = io(url, { reconnection: false, ...opts });
  await new Promise((resolve, reject) => {
    c.once('connect', resolve);
    c.once('connect_error', reject);
  });
  return c;
}

test('join, leave, unknown sessions and room isolation over both transports', { timeout: 240_000 }, async () => {
  const rec = recordingAdapter();
  const rt = await createAgentRuntime({ persistence: rec.adapter, logLevel: 'error' });
  const srv = await serve(rt);
  try {
    const a = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    const b = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    for (const transports of [['websocket', 'polling'], ['polling']]) {
      const ca = await connect(srv.url, { transports });
      const cb = await connect(srv.url, { transports });
      assert.equal(ca.io.engine.transport.name, transports[0]);
      const status = once(ca, 'session:status');
      assert.deepEqual(await ca.emitWithAck('session:join', a), { success: true });
      assert.deepEqual((await status).runtime, { isLoaded: true, sandbox: null });
      assert.deepEqual(await cb.emitWithAck('session:join', b), { success: true });
      assert.deepEqual(await cb.emitWithAck('session:join', 'no-such-session'), { success: false, error: 'Session not found' });

      const seenByB = [];
      cb.on('session:options:update', (p) => seenByB.push(p.sessionId));
      const gotA = once(ca, 'session:options:update');
      await srv.rest('PATCH', `/api/sessions/${a}/options`, { sessionOptions: { model: 'a' } });
      assert.equal((await gotA).sessionId, a);
      const gotB = once(cb, 'session:options:update');
      await srv.rest('PATCH', `/api/sessions/${b}/options`, { sessionOptions: { model: 'b' } });
      await gotB;
      assert.deepEqual(seenByB, [b], "A's events never reach B's client");

      assert.deepEqual(await ca.emitWithAck('session:leave', a), { success: true });
      ca.close();
      cb.close();
    }
    // The user's own handler still serves everything else on the same server.
    assert.deepEqual((await (await fetch(`${srv.url}/health`)).json()), { status: 'ok' });
  } finally {
    await srv.close();
    await rt.shutdown();
  }
});

test('sessions:list on create and unload; reconnect and rejoin', { timeout: 240_000 }, async () => {
  const rec = recordingAdapter();
  const rt = await createAgentRuntime({ persistence: rec.adapter, logLevel: 'error' });
  const srv = await serve(rt);
  try {
    const c = await connect(srv.url, { transports: ['websocket', 'polling'], reconnection: true, reconnectionDelay: 50 });
    let list = once(c, 'sessions:list');
    const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    assert.ok((await list).some((s) => s.sessionId === id));
    assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });

    // Drop the connection under the client: it reconnects, and a rejoin works.
    const back = once(c, 'connect');
    c.io.engine.close();
    await back;
    assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });
    const got = once(c, 'session:options:update');
    await srv.rest('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { model: 'm' } });
    assert.equal((await got).sessionId, id);

    list = once(c, 'sessions:list');
    await srv.rest('DELETE', `/api/sessions/${id}`);
    const after = await list;
    assert.equal(after.find((s) => s.sessionId === id).runtime.isLoaded, false);
    c.close();
  } finally {
    await srv.close();
    await rt.shutdown();
  }
});

test('attaches to an https.Server (self-signed certificate), WebSocket and long-polling', { timeout: 240_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`, '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
  const rt = await createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error' });
  const srv = await serve(rt, { secure: { key: fs.readFileSync(`${dir}/key.pem`), cert: fs.readFileSync(`${dir}/cert.pem`) } });
  try {
    const id = (await rt.sessionManager.createSession(CLAUDE)).sessionId;
    for (const transports of [['websocket', 'polling'], ['polling']]) {
      const c = await connect(srv.url, { transports, rejectUnauthorized: false });
      assert.equal(c.io.engine.transport.name, transports[0]);
      assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });
      const got = once(c, 'session:options:update');
      await rt.sessionManager.getSession(id).updateSessionOptions({ model: 'tls' });
      assert.equal((await got).sessionId, id);
      c.close();
    }
  } finally {
    await srv.close();
    await rt.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('malformed packets, unknown events, oversized frames and floods leave other clients unaffected', { timeout: 240_000 }, async () => {
  const rt = await createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error' });
  const srv = await serve(rt);
  try {
    const id = (await rt.sessionManager.createSession(CLAUDE)).sessionId;
    const good = await connect(srv.url, { transports: ['websocket'] });
    const wsUrl = srv.url.replace('http', 'ws') + '/socket.io/?EIO=4&transport=websocket';
    const raw = async (frames) => {
      const ws = new WebSocket(wsUrl);
      await once(ws, 'open');
      ws.send('40');
      for (const f of frames) ws.send(f);
      return ws;
    };
    const closed = (ws) => new Promise((r) => (ws.readyState === WebSocket.CLOSED ? r() : ws.once('close', r)));
    const bad = await raw(['4zzz', '42[', '42["no:such:event",1]', '42["session:join",5]']);
    const huge = await raw(['42["session:join","' + 'x'.repeat(2_000_000) + '"]']);
    await closed(huge); // over the payload limit: that client is disconnected
    const flood = await raw(Array.from({ length: 5000 }, (_, i) => `42["session:leave","${i}"]`));
    assert.deepEqual(await good.emitWithAck('session:join', id), { success: true });
    bad.terminate();
    flood.terminate();
    good.close();
    const again = await connect(srv.url, { transports: ['polling'] });
    assert.deepEqual(await again.emitWithAck('session:join', id), { success: true });
    again.close();
  } finally {
    await srv.close();
    await rt.shutdown();
  }
});

test("a real conversation: the client's reconstructed blocks match GET after the turn", { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  const srv = await serve(h.rt);
  try {
    const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    const c = await connect(srv.url, { transports: ['websocket', 'polling'] });
    assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });
    // The reference client's reducer, reduced to what matters here.
    const blocks = [];
    const buffers = {};
    c.on('session:block:start', (p) => (buffers[p.conversationId] = ''));
    c.on('session:block:delta', (p) => (buffers[p.conversationId] = (buffers[p.conversationId] ?? '') + p.delta));
    c.on('session:block:complete', (p) => p.conversationId === 'main' && blocks.push(p.block));
    c.on('session:block:update', (p) => {
      const b = blocks.find((x) => x.id === p.blockId);
      if (b) Object.assign(b, p.updates);
    });
    const done = new Promise((resolve) => c.on('session:block:complete', (p) => p.block.subtype === 'session_end' && resolve()));
    await srv.rest('POST', `/api/sessions/${id}/messages`, { content: 'think, then write haiku.txt' });
    await done;
    await h.turnEnd(id);
    const state = (await srv.rest('GET', `/api/sessions/${id}`)).body;
    const comparable = (list) =>
      list
        .filter((b) => b.type !== 'system')
        .map(({ type, content, input, toolName, status, output, isError }) => ({ type, content, input, toolName, status, output, isError }));
    assert.deepEqual(comparable(blocks), comparable(state.blocks));
    const streamed = (list) => list.filter((b) => ['thinking', 'assistant_text', 'tool_use'].includes(b.type)).map((b) => b.id);
    assert.deepEqual(streamed(blocks), streamed(state.blocks), 'same block ids live and after reload');
    c.close();
  } finally {
    await srv.close();
    await h.close();
  }
});

test('opt-in handshake auth, and events user code emits on the EventBus reach clients', { timeout: 240_000 }, async () => {
  const rt = await createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error' });
  const http1 = http.createServer((req, res) => res.end('mine'));
  const ws = rt.createWebSocketServer(http1, { apiKey: 'sekret' });
  await new Promise((r) => http1.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${http1.address().port}`;
  try {
    await assert.rejects(connect(url, { transports: ['websocket'] }), /Missing auth token/);
    await assert.rejects(connect(url, { transports: ['polling'], auth: { token: 'nope' } }), /Invalid API key/);
    const c = await connect(url, { transports: ['websocket'], auth: { token: 'sekret' } });
    const id = (await rt.sessionManager.createSession(CLAUDE)).sessionId;
    assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });
    assert.equal(ws.clientsCount, 1);
    assert.deepEqual(await ws.rooms(), [`session:${id}`]);
    const got = once(c, 'session:block:delta');
    rt.eventBus.emit('session:block:delta', { sessionId: id, conversationId: 'main', blockId: 'b1', delta: 'hi' });
    assert.deepEqual(await got, { sessionId: id, conversationId: 'main', blockId: 'b1', delta: 'hi' });
    c.close();
  } finally {
    ws.close();
    await new Promise((r) => http1.close(r));
    await rt.shutdown();
  }
});

test('runtime.listen: REST and Socket.IO natively on one port', { timeout: 240_000 }, async () => {
  const rt = await createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error' });
  const l = await rt.listen({ port: 0, apiKey: API_KEY });
  try {
    const url = `http://127.0.0.1:${l.port}`;
    const http2 = client(fetch, url);
    assert.deepEqual((await http2('GET', '/health', undefined, {})).body, { status: 'ok' });
    const id = (await http2('POST', '/api/sessions', CLAUDE)).body.sessionId;
    for (const transports of [['websocket', 'polling'], ['polling']]) {
      const c = await connect(url, { transports });
      assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });
      const got = once(c, 'session:options:update');
      await http2('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { model: 'n' } });
      assert.equal((await got).sessionId, id);
      c.close();
    }
  } finally {
    l.close();
    await rt.shutdown();
  }
});
