// The per-session event log: every session event is numbered (`seq`, `eventId`) and what a
// client missed can be read back over REST.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentRuntime, eventually } from './helpers/agent.mjs';
import { serve, connect } from './helpers/server.mjs';

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

test('joining with since while events stream loses and repeats nothing', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  const srv = await serve(h.rt);
  const sockets = [];
  try {
    const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    const ended = h.waitFor((n, p) => n === 'session:block:complete' && p.sessionId === id && p.block.metadata?.stopReason);
    await srv.rest('POST', `/api/sessions/${id}/messages`, { content: 'tell me a story slowly 2ms' });
    const joins = [];
    // Join again and again while the deltas come, each from the log's newest id at that moment.
    for (let i = 0; i < 12; i++) {
      const since = (await srv.rest('GET', `/api/sessions/${id}/events?limit=1`)).body.lastEventId;
      if (!since) continue;
      const r = await recorder(srv.url, ['websocket']);
      sockets.push(r.s);
      const ack = await r.s.emitWithAck('session:join', { sessionId: id, since });
      assert.equal(ack.success, true);
      joins.push({ r, from: Number(since.split('-').pop()) });
    }
    const [, end] = await ended;
    for (const { r, from } of joins) {
      await eventually(() => r.got.some(([, seq]) => seq === end.seq), 30_000, 'the end block');
      const seqs = r.got.map(([, seq]) => seq);
      assert.deepEqual(seqs, seqs.map((_, k) => from + 1 + k), `contiguous from ${from + 1}`);
    }
    assert.ok(joins.length >= 5, `joined ${joins.length} times during the turn`);
  } finally {
    for (const s of sockets) s.close();
    await srv.close();
    await h.close();
  }
});
