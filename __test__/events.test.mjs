// The per-session event log: every session event is numbered (`seq`, `eventId`) and what a
// client missed can be read back over REST.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { agentRuntime, eventually } from './helpers/agent.mjs';
import { serve, connect } from './helpers/server.mjs';
import { API_KEY } from './helpers/http.mjs';
import { createAgentRuntime } from '../index.mjs';

const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };

test('session events are numbered and can be read back after any eventId', { timeout: 240_000 }, async () => {
  const h = await agentRuntime({ eventLog: { maxEvents: 50 } });
  const srv = await serve(h.rt);
  try {
    const { rest } = srv;
    const id = (await rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    assert.equal((await rest('GET', `/api/sessions/${id}`)).body.lastEventId, null, 'nothing happened yet');
    const done = h.waitFor((n, p) => n === 'session:transcript:changed' && p.sessionId === id);
    await rest('POST', `/api/sessions/${id}/messages`, { content: 'hello there' });
    await done;
    // What the bus delivered, in order, numbered 1, 2, 3, … without gaps.
    const live = h.log.filter(([n, p]) => p?.sessionId === id && n !== 'session:transcript:changed').map(([n, p]) => [n, p]);
    assert.deepEqual(live.map(([, p]) => p.seq), live.map((_, i) => i + 1));
    const all = (await rest('GET', `/api/sessions/${id}/events`)).body;
    assert.equal(all.reset, false);
    assert.equal(all.lastEventId, live.at(-1)[1].eventId);
    assert.equal((await rest('GET', `/api/sessions/${id}`)).body.lastEventId, all.lastEventId, 'state says where it stands');
    // The log holds the same events the bus delivered (within its bound of 50).
    const tail = live.slice(-all.events.length);
    assert.deepEqual(all.events.map((e) => [e.event, e.seq, e.payload]), tail.map(([n, p]) => [n, p.seq, p]));
    const mid = all.events[Math.floor(all.events.length / 2)];
    const after = (await rest('GET', `/api/sessions/${id}/events?since=${encodeURIComponent(mid.eventId)}&limit=3`)).body;
    assert.deepEqual(after.events.map((e) => e.seq), [mid.seq + 1, mid.seq + 2, mid.seq + 3]);
    // Unknown, foreign and too-old ids reset; bad limits are 400.
    for (const since of ['garbage', 'abc-1', live[0][1].seq < all.events[0].seq ? live[0][1].eventId : 'x-0']) {
      const r = (await rest('GET', `/api/sessions/${id}/events?since=${encodeURIComponent(since)}`)).body;
      assert.deepEqual([r.reset, r.events.length], [true, 0], since);
    }
    for (const limit of ['0', '-1', 'many', '1.5']) {
      const r = await rest('GET', `/api/sessions/${id}/events?limit=${limit}`);
      assert.equal(r.status, 400, limit);
      assert.match(r.body.error, /limit/);
    }
    assert.equal((await rest('GET', `/api/sessions/${id}/events?limit=100000`)).body.events.length <= 1000, true, 'capped');
    assert.equal((await rest('GET', `/api/sessions/${id}/events?since=`)).status, 400);
    assert.equal((await rest('GET', '/api/sessions/00000000-0000-4000-8000-000000000000/events')).status, 404);
    // After an unload (or a restart) the old ids are unknown: reset.
    await rest('DELETE', `/api/sessions/${id}`);
    const again = (await rest('GET', `/api/sessions/${id}/events?since=${encodeURIComponent(all.lastEventId)}`)).body;
    assert.equal(again.reset, true);
  } finally {
    await srv.close();
    await h.close();
  }
});

/** A socket that records every numbered session event it receives. */
async function recorder(url, transports) {
  const s = await connect(url, { transports });
  const got = [];
  s.onAny((name, p) => p && typeof p.seq === 'number' && got.push([name, p.seq, JSON.stringify(p)]));
  return { s, got };
}

for (const transports of [['websocket'], ['polling']]) {
  test(`Socket.IO (${transports[0]}): a client that drops mid-turn and rejoins with since ends with exactly the events of one that stayed`, { timeout: 240_000 }, async () => {
    const h = await agentRuntime();
    const srv = await serve(h.rt);
    const sockets = [];
    try {
      const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
      const stays = await recorder(srv.url, transports);
      const drops = await recorder(srv.url, transports);
      sockets.push(stays.s, drops.s);
      assert.deepEqual(await stays.s.emitWithAck('session:join', id), { success: true }, 'the reference form is unchanged');
      assert.deepEqual(await drops.s.emitWithAck('session:join', { sessionId: id }), { success: true, lastEventId: null, replayed: 0 });
      const ended = h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.metadata?.stopReason);
      await srv.rest('POST', `/api/sessions/${id}/messages`, { content: 'tell me a story slowly 25ms' });
      await eventually(() => drops.got.filter(([n]) => n === 'session:block:delta').length >= 8, 30_000, 'deltas');
      drops.s.io.engine.close(); // the connection is lost mid-turn
      const lastSeen = JSON.parse(drops.got.at(-1)[2]).eventId;
      await eventually(() => stays.got.filter(([n]) => n === 'session:block:delta').length >= 20, 30_000, 'more deltas');
      const back = await recorder(srv.url, transports);
      sockets.push(back.s);
      const ack = await back.s.emitWithAck('session:join', { sessionId: id, since: lastSeen });
      assert.equal(ack.success, true);
      assert.ok(ack.replayed > 0, 'it missed events while away');
      await ended;
      const [, end] = await ended;
      await eventually(() => back.got.some(([, seq]) => seq === end.seq) && stays.got.some(([, seq]) => seq === end.seq), 30_000, 'the end block everywhere');
      const combined = [...drops.got, ...back.got];
      assert.deepEqual(combined, stays.got, 'same events, same order, no gap, no repeat');
      // An id the log does not know: reset, nothing replayed.
      const fresh = await recorder(srv.url, transports);
      sockets.push(fresh.s);
      const r = await fresh.s.emitWithAck('session:join', { sessionId: id, since: 'stale-42' });
      assert.deepEqual([r.success, r.reset, r.replayed], [true, true, 0]);
      assert.equal((await fresh.s.emitWithAck('session:join', { sessionId: id, since: 5 })).success, false);
    } finally {
      for (const s of sockets) s.close();
      await srv.close();
      await h.close();
    }
  });
}

test('joining (Socket.IO) or streaming (SSE) with since while events stream loses and repeats nothing', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  const srv = await serve(h.rt);
  const sockets = [];
  const readers = [];
  try {
    const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    const ended = h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.metadata?.stopReason);
    await srv.rest('POST', `/api/sessions/${id}/messages`, { content: 'tell me a story slowly 2ms' });
    const joins = [];
    // Join again and again while the deltas come, each from the log's newest id at that moment.
    for (let i = 0; i < 12; i++) {
      const since = (await srv.rest('GET', `/api/sessions/${id}/events?limit=1`)).body.lastEventId;
      if (!since) continue;
      const from = Number(since.split('-').pop());
      const r = await recorder(srv.url, ['websocket']);
      sockets.push(r.s);
      const ack = await r.s.emitWithAck('session:join', { sessionId: id, since });
      assert.equal(ack.success, true);
      joins.push({ seqs: () => r.got.map(([, seq]) => seq), from });
      const e = await sse(`${srv.url}/api/sessions/${id}/events/stream?since=${encodeURIComponent(since)}`);
      readers.push(e);
      joins.push({ seqs: () => e.frames.filter((f) => f.id).map((f) => Number(f.id.split('-').pop())), from });
    }
    const [, end] = await ended;
    for (const { seqs, from } of joins) {
      await eventually(() => seqs().includes(end.seq), 30_000, 'the end block');
      assert.deepEqual(seqs(), seqs().map((_, k) => from + 1 + k), `contiguous from ${from + 1}`);
    }
    assert.ok(joins.length >= 10, `joined ${joins.length} times during the turn`);
  } finally {
    for (const s of sockets) s.close();
    for (const r of readers) r.close();
    await srv.close();
    await h.close();
  }
});

/** Read a Server-Sent Events response: every frame as `{ id, event, data }` (comments kept
 *  apart), parsed as a browser's EventSource would. */
async function sse(url, headers = {}, { auth = true } = {}) {
  const ac = new AbortController();
  const res = await fetch(url, { headers: { ...(auth && { Authorization: `Bearer ${API_KEY}` }), ...headers }, signal: ac.signal });
  const frames = [];
  const comments = [];
  const ended = (async () => {
    if (!res.ok) return;
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += decoder.decode(chunk, { stream: true });
        for (let i; (i = buf.indexOf('\n\n')) >= 0; ) {
          const f = {};
          for (const line of buf.slice(0, i).split('\n')) {
            if (line.startsWith(':')) comments.push(line);
            else {
              const c = line.indexOf(':');
              f[line.slice(0, c)] = line.slice(c + 1).replace(/^ /, '');
            }
          }
          buf = buf.slice(i + 2);
          if (f.event) frames.push(f);
        }
      }
    } catch (e) {
      if (e.name !== 'AbortError') throw e;
    }
  })();
  return { res, frames, comments, ended, close: () => ac.abort() };
}

/** The numbered frames of a reader, as comparable strings. */
const numbered = (r) => r.frames.filter((f) => f.id).map((f) => `${f.id} ${f.event} ${f.data}`);

for (const via of ['fetch', 'listen']) {
  test(`SSE (${via}): a stream dropped mid-turn and resumed with Last-Event-ID ends with exactly the events of one that stayed`, { timeout: 240_000 }, async () => {
    const h = await agentRuntime();
    const srv = await serve(h.rt);
    const listener = via === 'listen' ? await h.rt.listen({ apiKey: API_KEY }) : null;
    const base = listener ? `http://127.0.0.1:${listener.port}` : srv.url;
    const readers = [];
    try {
      const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
      const url = `${base}/api/sessions/${id}/events/stream`;
      const stays = await sse(url);
      const drops = await sse(`${url}?token=${API_KEY}`, {}, { auth: false }); // EventSource's way
      readers.push(stays, drops);
      assert.equal(stays.res.status, 200);
      assert.match(stays.res.headers.get('content-type'), /^text\/event-stream/);
      const ended = h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.metadata?.stopReason);
      await srv.rest('POST', `/api/sessions/${id}/messages`, { content: 'tell me a story slowly 25ms' });
      await eventually(() => drops.frames.filter((f) => f.event === 'session:block:delta').length >= 8, 30_000, 'deltas');
      drops.close(); // the connection is lost mid-turn
      await drops.ended;
      const lastSeen = drops.frames.filter((f) => f.id).at(-1).id;
      if (!listener) await eventually(() => srv.app.openStreams() === 1, 10_000, 'the dropped stream released');
      await eventually(() => stays.frames.filter((f) => f.event === 'session:block:delta').length >= 20, 30_000, 'more deltas');
      // Reconnecting the way EventSource does: same URL, Last-Event-ID header (wins over ?since).
      const back = await sse(`${url}?since=ignored-1`, { 'Last-Event-ID': lastSeen });
      readers.push(back);
      const [, end] = await ended;
      await eventually(() => [back, stays].every((r) => r.frames.some((f) => f.id === end.eventId)), 30_000, 'the end block everywhere');
      assert.ok(numbered(back).length > 0 && !back.frames.some((f) => f.event === 'reset'), 'it missed events while away');
      assert.deepEqual([...numbered(drops), ...numbered(back)], numbered(stays), 'same events, same order, no gap, no repeat');
      assert.deepEqual(
        numbered(stays).map((f) => Number(f.split(' ')[0].split('-').pop())),
        numbered(stays).map((_, i) => i + 1),
        'numbered from the first event on',
      );
      // Each frame's data is the event's payload, numbered.
      const first = stays.frames.find((f) => f.id);
      assert.equal(JSON.parse(first.data).eventId, first.id);
      // An unknown id: a reset event, then live events.
      const stale = await sse(url, { 'Last-Event-ID': 'stale-42' });
      readers.push(stale);
      await eventually(() => stale.frames.length > 0, 10_000, 'reset');
      assert.equal(stale.frames[0].event, 'reset');
      assert.deepEqual(JSON.parse(stale.frames[0].data), { sessionId: id, reset: true, lastEventId: end.eventId });
      // Bad input: clear 400s, the key is required.
      for (const [q, hdrs, status] of [
        ['?since=', {}, 400],
        ['?bogus=1', {}, 400],
        ['', { 'Last-Event-ID': 'x'.repeat(300) }, 400],
        ['', { Authorization: 'Bearer nope' }, 401],
      ]) {
        const r = await sse(url + q, hdrs);
        assert.equal(r.res.status, status, `${q} ${JSON.stringify(hdrs).slice(0, 40)}`);
        if (status === 400) assert.match((await r.res.json()).error, /since|bogus|Last-Event-ID/);
      }
      assert.equal((await sse(`${url}?token=nope`, {}, { auth: false })).res.status, 401);
      assert.equal((await sse(url, {}, { auth: false })).res.status, 401);
      assert.equal((await sse(`${base}/api/sessions/00000000-0000-4000-8000-000000000000/events/stream`)).res.status, 404);
      // Unloading the session ends its streams (their ids then read as unknown).
      await srv.rest('DELETE', `/api/sessions/${id}`);
      await Promise.all([stays.ended, back.ended, stale.ended]);
      assert.equal(JSON.parse(stays.frames.at(-1).data).runtime.isLoaded, false, 'the unload is the last event');
      if (!listener) assert.equal(srv.app.openStreams(), 0, 'nothing left open');
    } finally {
      for (const r of readers) r.close();
      listener?.close();
      await srv.close();
      await h.close();
    }
  });
}

test('SSE: after a runtime restart an old Last-Event-ID gets a reset', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  let srv = await serve(h.rt);
  try {
    const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    await srv.rest('POST', `/api/sessions/${id}/messages`, { content: 'hello there' });
    await h.turnEnd(id);
    const last = (await srv.rest('GET', `/api/sessions/${id}`)).body.lastEventId;
    assert.ok(last);
    await srv.close();
    await h.rt.shutdown();
    const rt2 = await createAgentRuntime({ persistence: h.rec.adapter, logLevel: 'warn', sandbox: { provider: 'local', root: h.root } });
    srv = await serve(rt2);
    try {
      const r = await sse(`${srv.url}/api/sessions/${id}/events/stream`, { 'Last-Event-ID': last });
      await eventually(() => r.frames.length > 0, 10_000, 'reset');
      assert.equal(r.frames[0].event, 'reset');
      assert.equal(JSON.parse(r.frames[0].data).reset, true);
      r.close();
      await r.ended;
    } finally {
      await srv.close();
      await rt2.shutdown();
    }
  } finally {
    await h.close().catch(() => {});
  }
});

// Slow clients: a client that stops reading is ended with a reason once more than its bound
// waits for it, and resumes from its last id without losing anything. What it ends up with is
// compared with the log (which holds the whole turn here); the tests above show the log equals
// what a client that stayed receives.
const FLOOD = 'tell me a story slowly 0ms 30000 words';
const BIG_LOG = { eventLog: { maxEvents: 100_000, maxBytes: 64 << 20 } };

/** Every event the session's log holds, read page by page. */
async function wholeLog(rest, id) {
  const all = [];
  for (let since = ''; ; ) {
    const page = (await rest('GET', `/api/sessions/${id}/events?limit=1000${since}`)).body;
    assert.equal(page.reset, false);
    if (page.events.length === 0) return all;
    all.push(...page.events);
    since = `&since=${encodeURIComponent(page.events.at(-1).eventId)}`;
  }
}

test('Socket.IO: a client too slow for its events is disconnected with slow_consumer and catches up with since', { timeout: 240_000 }, async () => {
  const h = await agentRuntime(BIG_LOG);
  const srv = await serve(h.rt, { ws: { maxBufferedBytes: 256 * 1024 } });
  const sockets = [];
  try {
    const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    const slow = await recorder(srv.url, ['websocket']);
    sockets.push(slow.s);
    assert.equal((await slow.s.emitWithAck('session:join', { sessionId: id })).success, true);
    const told = [];
    slow.s.on('error', (e) => told.push(['error', e]));
    slow.s.on('disconnect', (reason) => told.push(['disconnect', reason]));
    const tcp = slow.s.io.engine.transport.ws._socket;
    tcp.pause(); // stops reading: the server's buffers for it fill
    const ended = h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.metadata?.stopReason, 120_000);
    await srv.rest('POST', `/api/sessions/${id}/messages`, { content: FLOOD });
    const [, end] = await ended;
    tcp.resume();
    await eventually(() => told.some(([k]) => k === 'disconnect'), 30_000, 'the slow client disconnected');
    assert.equal(told.find(([k]) => k === 'error')?.[1]?.code, 'slow_consumer', JSON.stringify(told).slice(0, 300));
    const since = JSON.parse(slow.got.at(-1)[2]).eventId;
    const back = await recorder(srv.url, ['websocket']);
    sockets.push(back.s);
    const backTold = [];
    back.s.on('error', (e) => backTold.push(['error', e]));
    const t0 = Date.now();
    back.s.on('disconnect', (reason) => backTold.push(['disconnect', reason, Date.now() - t0, back.got.length]));
    const ack = await back.s.emitWithAck('session:join', { sessionId: id, since });
    assert.equal(ack.success, true, JSON.stringify(ack));
    assert.ok(!ack.reset && ack.replayed > 0);
    await eventually(() => back.got.some(([, seq]) => seq === end.seq), 60_000, () => `caught up: got ${back.got.length} of ${ack.replayed}, last seq ${back.got.at(-1)?.[1]}, end ${end.seq}, told ${JSON.stringify(backTold)}`);
    const log = await wholeLog(srv.rest, id);
    assert.ok(slow.got.length < log.length, 'it fell behind');
    const got = [...slow.got, ...back.got].map(([n, seq, p]) => [n, seq, JSON.parse(p)]);
    assert.deepEqual(got, log.map((e) => [e.event, e.seq, e.payload]), 'nothing lost, nothing repeated');
  } finally {
    for (const s of sockets) s.close();
    await srv.close();
    await h.close();
  }
});

test('SSE: a stream too slow for its events is ended with slow_consumer and resumes with Last-Event-ID', { timeout: 240_000 }, async () => {
  const h = await agentRuntime(BIG_LOG);
  const srv = await serve(h.rt, { rest: { maxBufferedBytes: 256 * 1024 } });
  const readers = [];
  try {
    const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    const url = `${srv.url}/api/sessions/${id}/events/stream`;
    // A reader that stops reading: a raw request whose response is paused.
    let raw = '';
    const paused = await new Promise((resolve, reject) => {
      http.get(url, { headers: { Authorization: `Bearer ${API_KEY}` } }, resolve).on('error', reject);
    });
    paused.setEncoding('utf8');
    paused.on('data', (c) => (raw += c));
    const slowEnded = new Promise((r) => paused.on('end', r));
    await eventually(() => raw.startsWith('retry:'), 10_000, 'the stream opened');
    paused.pause();
    const ended = h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.metadata?.stopReason, 120_000);
    await srv.rest('POST', `/api/sessions/${id}/messages`, { content: FLOOD });
    const [, end] = await ended;
    paused.resume();
    await slowEnded;
    const slow = { frames: [] };
    for (const block of raw.split('\n\n')) {
      const f = Object.fromEntries(block.split('\n').filter((l) => l && !l.startsWith(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]));
      if (f.event) slow.frames.push(f);
    }
    const last = slow.frames.at(-1);
    assert.equal(last.event, 'error');
    assert.equal(JSON.parse(last.data).code, 'slow_consumer');
    const lastId = slow.frames.filter((f) => f.id).at(-1).id;
    const back = await sse(url, { 'Last-Event-ID': lastId });
    readers.push(back);
    await eventually(() => back.frames.some((f) => f.id === end.eventId), 60_000, 'caught up');
    const log = await wholeLog(srv.rest, id);
    const got = [...slow.frames, ...back.frames].filter((f) => f.id).map((f) => [f.id, f.event, JSON.parse(f.data)]);
    assert.ok(slow.frames.length - 1 < log.length, 'it fell behind');
    assert.deepEqual(got, log.map((e) => [e.eventId, e.event, e.payload]), 'nothing lost, nothing repeated');
  } finally {
    for (const r of readers) r.close();
    await srv.close();
    await h.close();
  }
});
