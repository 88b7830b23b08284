// The per-session event log: every session event is numbered (`seq`, `eventId`) and what a
// client missed can be read back over REST.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentRuntime } from './helpers/agent.mjs';
import { serve } from './helpers/server.mjs';

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
