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
import { serve, connect } from './helpers/server.mjs';

const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };
const once = (emitter, name) => new Promise((resolve) => emitter.once(name, resolve));

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

// The client reads in another process: the producer's thread is the one that waits.
const SLOW_READER = `
  import { io } from 'socket.io-client';
  const [url, id, want] = process.argv.slice(1);
  const c = io(url, { transports: ['websocket'], reconnection: false });
  let got = 0, inOrder = true, told = null;
  const done = (why) => { console.log(JSON.stringify({ got, inOrder, told, why })); process.exit(0); };
  c.on('error', (e) => { told = e; });
  c.on('disconnect', (r) => done(r));
  c.on('session:block:delta', (p) => {
    if (Number(p.delta.split('|')[0]) !== got) inOrder = false;
    got += 1;
    const until = performance.now() + 0.05; // a client slower than the producer
    while (performance.now() < until);
    if (got === Number(want)) done('all');
  });
  c.on('connect', async () => { await c.emitWithAck('session:join', id); console.log('joined'); });
`;

test('a burst user code emits is paced to a slower client instead of cutting it off', { timeout: 240_000 }, async () => {
  const rt = await createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error' });
  // 16 bursts' worth of this limit: without pacing the client would be cut as too slow at once.
  const srv = await serve(rt, { ws: { maxBufferedBytes: 256 * 1024 } });
  const { spawn } = await import('node:child_process');
  try {
    const id = (await rt.sessionManager.createSession(CLAUDE)).sessionId;
    const N = 4000;
    const child = spawn(process.execPath, ['--input-type=module', '-e', SLOW_READER, srv.url, id, String(N)], {
      cwd: path.dirname(new URL(import.meta.url).pathname),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const joined = new Promise((resolve) => child.stdout.on('data', (d) => { out += d; if (out.includes('joined')) resolve(); }));
    const exited = once(child, 'exit');
    await joined;
    const pad = 'x'.repeat(1000);
    for (let i = 0; i < N; i++) {
      rt.eventBus.emit('session:block:delta', { sessionId: id, conversationId: 'main', blockId: 'b', delta: `${i}|${pad}` });
    }
    await exited;
    const report = JSON.parse(out.trim().split('\n').at(-1));
    assert.deepEqual(report, { got: N, inOrder: true, told: null, why: 'all' }, 'every event, in order, no slow_consumer');
  } finally {
    await srv.close();
    await rt.shutdown();
  }
});

test('runtime.listen: REST and Socket.IO natively on one port, loopback, Socket.IO behind the same key', { timeout: 240_000 }, async () => {
  const rt = await createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error' });
  const l = await rt.listen({ port: 0, apiKey: API_KEY });
  const open = await rt.listen({ port: 0, apiKey: API_KEY, socketApiKey: false });
  try {
    assert.equal(l.host, '127.0.0.1', 'loopback unless a host is given');
    const url = `http://127.0.0.1:${l.port}`;
    const http2 = client(fetch, url);
    assert.deepEqual((await http2('GET', '/health', undefined, {})).body, { status: 'ok' });
    const id = (await http2('POST', '/api/sessions', CLAUDE)).body.sessionId;
    for (const transports of [['websocket', 'polling'], ['polling']]) {
      await assert.rejects(connect(url, { transports }), /Missing auth token/);
      await assert.rejects(connect(url, { transports, auth: { token: 'wrong' } }), /Invalid API key/);
      const c = await connect(url, { transports, auth: { token: API_KEY } });
      assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });
      const got = once(c, 'session:options:update');
      await http2('PATCH', `/api/sessions/${id}/options`, { sessionOptions: { model: 'n' } });
      assert.equal((await got).sessionId, id);
      c.close();
    }
    // socketApiKey: false is the reference's open server, explicitly.
    const c = await connect(`http://127.0.0.1:${open.port}`, { transports: ['websocket'] });
    assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });
    c.close();
    await assert.rejects(rt.listen({ apiKey: '' }), /apiKey must be a non-empty string/);
  } finally {
    l.close();
    open.close();
    await rt.shutdown();
  }
});

test('authorize: a denied join gets none of that session\'s events, an allowed one does; failing callbacks deny', { timeout: 240_000 }, async () => {
  const rt = await createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error' });
  const mine = (await rt.sessionManager.createSession(CLAUDE)).sessionId;
  const theirs = (await rt.sessionManager.createSession(CLAUDE)).sessionId;
  const seen = [];
  const srv = http.createServer((req, res) => res.end('mine'));
  const ws = rt.createWebSocketServer(srv, {
    authorizeTimeoutMs: 300,
    authorize: async (handshake, sessionId) => {
      seen.push({ handshake, sessionId });
      switch (handshake.auth?.user) {
        case 'alice':
          return sessionId === mine;
        case 'throws':
          throw new Error('backend exploded');
        case 'rejects':
          return Promise.reject(new Error('db down'));
        case 'hangs':
          return new Promise(() => {});
        case 'truthy':
          return 'yes';
        default:
          return false;
      }
    },
    authorizeList: (handshake) => handshake.auth?.role === 'admin',
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${srv.address().port}`;
  try {
    for (const transports of [['websocket'], ['polling']]) {
      const alice = await connect(url, { transports, auth: { user: 'alice' }, query: { tenant: 't1' } });
      const denied = await alice.emitWithAck('session:join', theirs);
      assert.deepEqual(denied, { success: false, error: 'Not authorized to join this session' });
      assert.deepEqual(await alice.emitWithAck('session:join', mine), { success: true });
      const last = seen.at(-1);
      assert.equal(last.sessionId, mine);
      assert.deepEqual(last.handshake.auth, { user: 'alice' });
      assert.equal(last.handshake.query.tenant, 't1');
      assert.equal(last.handshake.address, '127.0.0.1');
      assert.equal(last.handshake.headers.host, `127.0.0.1:${srv.address().port}`);
      assert.deepEqual(await ws.rooms(), [`session:${mine}`]);

      const leaked = [];
      alice.on('session:options:update', (p) => p.sessionId === theirs && leaked.push(p));
      const lists = [];
      alice.on('sessions:list', (l) => lists.push(l));
      const admin = await connect(url, { transports, auth: { user: 'bob', role: 'admin' } });
      const adminList = once(admin, 'sessions:list');
      await rt.sessionManager.getSession(theirs).updateSessionOptions({ model: 'secret' });
      const got = once(alice, 'session:options:update');
      await rt.sessionManager.getSession(mine).updateSessionOptions({ model: 'ok' });
      assert.equal((await got).sessionId, mine);
      // A list change: the admin gets the list; alice (no authorizeList) does not.
      const third = (await rt.sessionManager.createSession(CLAUDE)).sessionId;
      assert.ok((await adminList).some((x) => x.sessionId === third));
      const after = once(alice, 'session:options:update');
      await rt.sessionManager.getSession(mine).updateSessionOptions({ model: 'after-list' });
      await after;
      assert.deepEqual(leaked, [], "the denied session's events never reached alice");
      assert.deepEqual(lists, [], 'sessions:list only to clients authorizeList allows');
      alice.close();
      admin.close();
    }
    // Throwing, rejecting, hanging or non-boolean callbacks deny; the process carries on.
    for (const user of ['throws', 'rejects', 'hangs', 'truthy']) {
      const c = await connect(url, { transports: ['websocket'], auth: { user } });
      assert.deepEqual(await c.emitWithAck('session:join', mine), { success: false, error: 'Not authorized to join this session' });
      c.close();
    }
    const bad = await connect(url, { transports: ['websocket'] });
    assert.match((await bad.emitWithAck('session:join', '../etc/passwd')).error, /Invalid session id "\.\.\/etc\/passwd"/);
    bad.close();
    assert.throws(() => rt.createWebSocketServer(http.createServer(), { authorize: true }), /options.authorize must be a function/);
  } finally {
    ws.close();
    await new Promise((r) => srv.close(r));
    await rt.shutdown();
  }
});

test('allowedOrigins: another origin is refused on both transports; CORS never echoes an unlisted origin with credentials', { timeout: 240_000 }, async () => {
  const rt = await createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error' });
  const id = (await rt.sessionManager.createSession(CLAUDE)).sessionId;
  const srv = http.createServer((req, res) => res.end('mine'));
  const ws = rt.createWebSocketServer(srv, { allowedOrigins: ['https://app.example'] });
  const l = await rt.listen({ apiKey: API_KEY, socketApiKey: false, allowedOrigins: ['https://app.example'] });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  try {
    for (const url of [`http://127.0.0.1:${srv.address().port}`, `http://127.0.0.1:${l.port}`]) {
      for (const transports of [['websocket'], ['polling']]) {
        await assert.rejects(connect(url, { transports, extraHeaders: { origin: 'https://evil.example' } }));
        const c = await connect(url, { transports, extraHeaders: { origin: 'https://app.example' } });
        assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });
        c.close();
      }
      // The refusals are 403s, before any Engine.IO handshake.
      const poll = await fetch(`${url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: 'https://evil.example' } });
      assert.equal(poll.status, 403);
      const upgrade = new WebSocket(`${url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`, { origin: 'https://evil.example' });
      const status = await new Promise((resolve) => {
        upgrade.once('unexpected-response', (_req, res) => resolve(res.statusCode));
        upgrade.once('open', () => resolve('open'));
      });
      assert.equal(status, 403);
    }
    const url = `http://127.0.0.1:${srv.address().port}`;
    const ok = await fetch(`${url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: 'https://app.example' } });
    assert.equal(ok.headers.get('access-control-allow-origin'), 'https://app.example');
    assert.equal(ok.headers.get('access-control-allow-credentials'), 'true');
  } finally {
    ws.close();
    l.close();
    await new Promise((r) => srv.close(r));
  }
  // cors.origin "*" answers "*", never the caller's origin with credentials.
  const srv2 = http.createServer();
  const ws2 = rt.createWebSocketServer(srv2, { cors: { origin: '*' } });
  await new Promise((r) => srv2.listen(0, '127.0.0.1', r));
  try {
    const res = await fetch(`http://127.0.0.1:${srv2.address().port}/socket.io/?EIO=4&transport=polling`, { headers: { origin: 'https://evil.example' } });
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(res.headers.get('access-control-allow-credentials'), null);
  } finally {
    ws2.close();
    await new Promise((r) => srv2.close(r));
    await rt.shutdown();
  }
});
