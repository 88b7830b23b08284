// Cluster mode (issue #15): several node processes over one Redis and one shared store, each
// serving REST and Socket.IO; any node answers for any session (the owner's answer, forwarded),
// events reach clients on every node, and sessions survive their owner being killed, stopped or
// restarted. Nodes are child processes (helpers/cluster-node.mjs) so they can be SIGKILLed and
// SIGSTOPped; the fake model runs in this process, so the tests see every model request.
//
// Leases are short (CLUSTER_TEST_LEASE_TTL_MS, default 2500) to keep failover quick. Waits are on
// events and conditions; where a lease has to expire, requests are retried with a deadline.
// Without redis-server these tests fail (naming the install command), they do not skip.
// CLUSTER_TEST_LOGS=1 streams the nodes' stderr.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { createAgentRuntime } from '../index.mjs';
import { recordingAdapter } from './helpers/adapter.mjs';
import { pidsMentioning } from './helpers/agent.mjs';
import {
  comparableState,
  errorCode,
  fromLog,
  fromWire,
  isTurnEnd,
  poll,
  promptOf,
  readLog,
  request,
  turnRequests,
  untilNot503,
  userMessages,
  withCluster,
} from './helpers/cluster.mjs';
import { findRedisServer, freePort } from './helpers/redis.mjs';
import { readWrites, sharedStore, writeRuns } from './helpers/shared-store.mjs';

const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };
const TTL = Number(process.env.CLUSTER_TEST_LEASE_TTL_MS ?? 2500);
// Digits only: the fake model reacts to words (write, read, think, helper, slowly, wait, ...).
const nonce = () => String(Math.floor(Math.random() * 1e9));
const count = (list, x) => list.filter((y) => y === x).length;

async function createSession(c, node) {
  const r = await c.api(node)('POST', '/api/sessions', CLAUDE);
  assert.equal(r.status, 201, `create on ${node}: ${JSON.stringify(r.body)}`);
  return r.body.sessionId;
}

const send = (c, node, id, content, opts) => c.api(node)('POST', `/api/sessions/${id}/messages`, { content }, opts);

/** Send through `node`, retrying while the cluster answers 503 (an owner being replaced). */
async function sendRetrying(c, node, id, content, deadlineMs = TTL + 20_000) {
  const r = await untilNot503(() => send(c, node, id, content, { timeoutMs: TTL + 10_000 }), { deadlineMs, what: `POST "${content}" via ${node}` });
  assert.equal(r.status, 200, `POST "${content}" via ${node}: ${r.status} ${JSON.stringify(r.body)}`);
  return r;
}

/** A session created on `owner`, a watcher on `on`, and one turn the watcher saw end and the
 *  store holds (so any node that loads the session gets it). */
async function sessionWithTurn(c, { owner = 'A', on }) {
  const id = await createSession(c, owner);
  const w = await c.watch(on, id);
  const first = `first message ${nonce()}`;
  assert.equal((await send(c, owner, id, first)).status, 200);
  await w.waitReply(first);
  await stored(c, id, first);
  return { id, w, first };
}

/** [sessionWithTurn], then a story streaming slowly (`ms` per delta) that the watcher has seen
 *  start (`mark`: its event count before the story). */
async function storyStreaming(c, { owner = 'A', on, ms }) {
  const { id, w, first } = await sessionWithTurn(c, { owner, on });
  const mark = w.events.length;
  assert.equal((await send(c, owner, id, `tell me a story slowly ${ms}ms ${nonce()}`)).status, 200);
  await w.waitFor(() => deltasSince(w, mark).length >= 3, 60_000, `the story streaming to ${on}`);
  return { id, w, first, mark };
}

async function getState(c, node, id) {
  const r = await c.api(node)('GET', `/api/sessions/${id}`);
  assert.equal(r.status, 200, `GET session via ${node}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function health(c, node) {
  const r = await request(c.nodes[node].url, 'GET', '/health', undefined, { headers: {}, timeoutMs: 10_000 });
  assert.equal(r.status, 200, `GET /health on ${node}`);
  return r.body;
}

/** Resolves once the stored transcript (shared store, as any node would load it) holds every text:
 *  the turn end is emitted before the transcript is saved, so "idle" means this too. */
async function stored(c, id, ...texts) {
  const store = sharedStore({ dir: c.storeDir, node: 'test-reader' });
  await poll(() => {
    const t = store.loadSession(id)?.rawTranscript;
    return typeof t === 'string' && texts.every((x) => t.includes(x));
  }, { ms: 20_000, what: `the stored transcript to hold ${JSON.stringify(texts)}` });
}

/** Deltas a watcher received after its `mark`-th event. */
const deltasSince = (w, mark) => w.events.slice(mark).filter((e) => e.name === 'session:block:delta');

/** Seqs of `events` ({ name, seq }) are 1 step apart: nothing missing, nothing twice. The failure
 *  names the events around the first break. */
function assertContiguous(events, what, log = []) {
  assert.ok(events.length > 0, `${what}: no events`);
  const i = events.findIndex((e, k) => e.seq !== events[0].seq + k);
  if (i < 0) return;
  const around = events.slice(Math.max(0, i - 3), i + 3).map((e) => `#${e.seq} ${e.name}`).join(', ');
  const [a, b] = [events[i - 1]?.seq, events[i].seq];
  const missing = log.filter((e) => e.seq > a && e.seq < b).map((e) => `#${e.seq} ${e.event} ${JSON.stringify(e.payload).slice(0, 200)}`);
  assert.fail(`${what}: seqs not contiguous at #${a} -> #${b} (${around})${missing.length ? `; the shared log has ${missing.join('; ')}` : ''}`);
}

/**
 * writes.log, one session: every node process's writes form one contiguous run (writes of two
 * processes never interleave). For a process that lost the session at a known moment (`lost`:
 * pid → hr of the SIGKILL/SIGSTOP), it wrote nothing after that moment and the next writer only
 * began after it. Returns the runs.
 */
function assertSerialWriters(c, sessionId, { lost = new Map() } = {}) {
  const writes = readWrites(c.storeDir);
  const runs = writeRuns(writes, sessionId);
  const show = runs.map((r) => `${r.node}(pid ${r.pid}) x${r.count}`).join(' -> ');
  assert.ok(runs.length > 0, `no writes at all for ${sessionId}`);
  const pids = runs.map((r) => r.pid);
  assert.equal(new Set(pids).size, pids.length, `writes of two nodes interleaved for ${sessionId}: ${show}`);
  for (const [pid, hr] of lost) {
    const late = writes.filter((w) => w.sessionId === sessionId && w.pid === pid && w.hrn > hr);
    assert.deepEqual(late.map((w) => w.op), [], `pid ${pid} wrote after it lost the session: ${show}`);
    const i = runs.findIndex((r) => r.pid === pid);
    if (i >= 0 && runs[i + 1]) assert.ok(runs[i + 1].first > hr, `${runs[i + 1].node} wrote before ${runs[i].node} was gone: ${show}`);
  }
  return runs;
}

// Not a skip: without Redis the cluster is untested, and that must show.
test('redis-server is installed', () => {
  assert.ok(findRedisServer());
});

test('a client on B sees a turn that runs on A event for event, as a client on A does; sessions:list reaches a client on C', { timeout: 240_000 }, async () => {
  // C takes its Redis URL from AGENT_RUNTIME_REDIS_URL, the others from cluster.redisUrl.
  await withCluster({ viaEnv: ['C'] }, async (c) => {
    const lists = await c.watch('C', null);
    const id = await createSession(c, 'A');
    await lists.waitFor(() => lists.lists.some((l) => Array.isArray(l) && l.some((s) => s.sessionId === id)), 15_000, 'sessions:list on C naming the session created on A');

    const onA = await c.watch('A', id);
    const onB = await c.watch('B', id);
    const sent = await send(c, 'A', id, 'think, then write haiku.txt');
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    for (const w of [onA, onB]) {
      await w.waitFor(() => w.ends() >= 1 && w.events.some((e) => e.name === 'session:file:created'), 90_000, 'the turn end and the file event');
    }
    // The shared log is the reference; wait until both have its newest event, then compare.
    const log = await readLog(c.api('B'), id);
    const last = log.at(-1).seq;
    for (const w of [onA, onB]) await w.waitFor(() => w.seqs().includes(last), 15_000, `seq ${last}`);
    const upTo = (w) => w.events.filter((e) => e.seq <= last).map((e) => [e.name, e.seq, e.p]);
    assert.deepEqual(upTo(onB), upTo(onA), 'the client on B got the same events as the one on A: same names, seqs, payloads, order');
    const comparableUpTo = (w) => w.events.filter((e) => e.seq <= last).map(fromWire);
    assertContiguous(onA.events.filter((e) => e.seq <= last), 'client on A');
    const first = onA.events[0].seq;
    assert.deepEqual(comparableUpTo(onA), log.filter((e) => e.seq >= first).map(fromLog), 'the shared log holds the same');
    const names = new Set(onB.events.map((e) => e.name));
    for (const n of ['session:block:start', 'session:block:delta', 'session:block:complete', 'session:file:created']) assert.ok(names.has(n), `${n} reached B`);

    assert.equal((await getState(c, 'B', id)).runtime.ownerNodeId, 'A');
    for (const [node, owned] of [['A', 1], ['B', 0], ['C', 0]]) {
      const h = await health(c, node);
      assert.equal(h.status, 'ok', `${node}: ${JSON.stringify(h)}`);
      assert.equal(h.cluster?.redis, 'up', `${node}: ${JSON.stringify(h)}`);
      assert.equal(h.cluster.nodeId, node);
      assert.equal(h.cluster.ownedSessions, owned, `${node} owns ${owned}`);
    }
  });
});

test('a message sent to C for a session owned by A runs on A, and C answers what A answers', { timeout: 240_000 }, async () => {
  await withCluster({}, async (c) => {
    const id = await createSession(c, 'A');
    const w = await c.watch('B', id);
    const viaC = await send(c, 'C', id, 'write notes.txt containing forwarded-content');
    assert.equal(viaC.status, 200, JSON.stringify(viaC.body));
    assert.match(viaC.body.messageId, /^[0-9a-f-]{36}$/);
    await w.waitFor(() => w.ends() >= 1, 90_000, 'the forwarded turn to end');

    for (const node of ['A', 'B', 'C']) {
      const s = await getState(c, node, id);
      assert.equal(s.runtime.ownerNodeId, 'A', `the owner, as ${node} tells it`);
      assert.equal(s.runtime.isLoaded, true);
    }
    // The turn ran on A: its sandbox is under A's sandbox root; B and C never started one.
    const { sandboxId } = (await getState(c, 'A', id)).runtime.sandbox ?? {};
    assert.ok(sandboxId, 'the session has a sandbox');
    assert.ok(fs.existsSync(path.join(c.nodes.A.sandboxRoot, sandboxId)), 'its directory is on A');
    for (const node of ['B', 'C']) {
      assert.ok(!fs.existsSync(path.join(c.nodes[node].sandboxRoot, sandboxId)), `not on ${node}`);
      assert.deepEqual(pidsMentioning(c.nodes[node].sandboxRoot), [], `no sandbox process of ${node}`);
    }

    // The same message sent to the owner itself is answered alike (ids aside).
    const direct = await send(c, 'A', id, 'hello directly');
    assert.equal(direct.status, 200, JSON.stringify(direct.body));
    const { messageId: _a, ...fwd } = viaC.body;
    const { messageId: _b, ...own } = direct.body;
    assert.deepEqual(fwd, own, 'the forwarded answer is the owner’s');
    await w.waitReply('hello directly');

    // Reads through C are the owner's answers: state, the file the agent wrote, the list.
    await poll(async () => (await c.api('C')('GET', `/api/sessions/${id}/files/notes.txt`)).body === 'forwarded-content', { what: 'notes.txt through C' });
    await poll(async () => isDeepStrictEqual(comparableState(await getState(c, 'A', id)), comparableState(await getState(c, 'C', id))), {
      ms: 15_000,
      what: 'GET through C to equal GET on A',
    }).catch(async (err) => {
      assert.deepEqual(comparableState(await getState(c, 'C', id)), comparableState(await getState(c, 'A', id)), err.message);
    });
    const listed = await c.api('B')('GET', '/api/sessions');
    assert.equal(listed.status, 200);
    const item = listed.body.sessions.find((s) => s.sessionId === id);
    assert.ok(item, 'listed on B');
    assert.equal(item.runtime.isLoaded, true, 'loaded (on A) as B lists it');
    assert.equal(item.runtime.ownerNodeId, 'A');

    const runs = assertSerialWriters(c, id);
    assert.deepEqual(runs.map((r) => r.node), ['A'], 'only A wrote the session');
  });
});

test('SIGKILL of an idle owner: the next message, through another node, is taken within leaseTtlMs + 2 s; the conversation has both turns', { timeout: 240_000 }, async () => {
  await withCluster({}, async (c) => {
    const { id, w, first } = await sessionWithTurn(c, { on: 'C' });

    const a = c.nodes.A;
    const killedAt = await a.kill('SIGKILL');
    const t0 = Date.now();
    const second = `second message ${nonce()}`;
    const r = await sendRetrying(c, 'B', id, second);
    const took = Date.now() - t0;
    assert.ok(took <= TTL + 2000, `the message was taken ${took} ms after the kill (lease ${TTL} ms; answers ${JSON.stringify(r.tried)})`);
    await w.waitReply(second);

    const s = await getState(c, 'C', id);
    assert.equal(s.runtime.ownerNodeId, 'B', 'B took the session');
    assert.deepEqual(userMessages(s), [first, second]);
    await stored(c, id, first, second);

    const runs = assertSerialWriters(c, id, { lost: new Map([[a.pid, killedAt]]) });
    assert.deepEqual([runs[0].node, runs.at(-1).node], ['A', 'B'], runs.map((x) => x.node).join(' -> '));
  });
});

test('SIGKILL of the owner mid-turn: its queued message runs once on the new owner, the cut one is reported, the next message works', { timeout: 240_000 }, async () => {
  await withCluster({}, async (c) => {
    const { id, w, first } = await sessionWithTurn(c, { on: 'C' });

    // A turn whose model call the fake holds for 5 s, and a message queued behind it.
    const cut = `wait 5000ms then answer ${nonce()}`;
    const queued = `queued message ${nonce()}`;
    assert.equal((await send(c, 'A', id, cut)).status, 200);
    await c.fake.waitForRequest((r) => r.body?.tools?.length && promptOf(r).includes(cut), 60_000);
    const q = await send(c, 'A', id, queued);
    assert.equal(q.status, 200, JSON.stringify(q.body));
    assert.equal(q.body.queued, true, 'it waits behind the running turn');

    const a = c.nodes.A;
    const killedAt = await a.kill('SIGKILL');
    const t0 = Date.now();
    const after = `after the kill ${nonce()}`;
    const r = await sendRetrying(c, 'B', id, after);
    const took = Date.now() - t0;
    assert.ok(took <= TTL + 2000, `taken ${took} ms after the kill (lease ${TTL} ms; answers ${JSON.stringify(r.tried)})`);
    await w.waitReply(after);
    assert.ok(w.replied(queued), 'the queued message ran');

    const users = userMessages(await getState(c, 'C', id));
    assert.equal(count(users, first), 1, JSON.stringify(users));
    assert.ok(count(users, cut) <= 1, `the cut message at most once: ${JSON.stringify(users)}`);
    assert.equal(count(users, queued), 1, `the queued message once: ${JSON.stringify(users)}`);
    assert.equal(count(users, after), 1, JSON.stringify(users));
    assert.ok(users.indexOf(first) < users.indexOf(queued) && users.indexOf(queued) < users.indexOf(after), `in the order accepted: ${JSON.stringify(users)}`);
    assert.equal(turnRequests(c.fake, cut).length, 1, 'the cut turn was not run again');
    assert.equal(turnRequests(c.fake, queued).length, 1, 'the queued message ran exactly once');
    assert.equal(turnRequests(c.fake, after).length, 1);
    const log = await readLog(c.api('C'), id);
    assertContiguous(w.events, 'the client on C', log);
    const errors = log.filter((e) => e.event === 'session:error').map((e) => e.payload.error);
    assert.ok(
      w.events.some((e) => e.name === 'session:error' && errorCode(e.p) === 'MESSAGE_INTERRUPTED'),
      `the cut turn is reported as MESSAGE_INTERRUPTED (session:error in the log: ${JSON.stringify(errors)})`,
    );

    const runs = assertSerialWriters(c, id, { lost: new Map([[a.pid, killedAt]]) });
    assert.deepEqual([runs[0].node, runs.at(-1).node], ['A', 'B'], runs.map((x) => x.node).join(' -> '));
  });
});

test('rolling restart with clients connected: each reconnects to another node with since and sees every event exactly once', { timeout: 420_000 }, async () => {
  await withCluster({}, async (c) => {
    const id = await createSession(c, 'A');
    const since = (await getState(c, 'A', id)).lastEventId ?? undefined;
    const watchers = [];
    for (const node of ['A', 'B', 'C']) watchers.push(await c.watch(node, id, { roam: true, since }));
    const sent = [];
    const turn = async (node, text) => {
      await sendRetrying(c, node, id, text);
      sent.push(text);
    };

    const warm = `before the restarts ${nonce()}`;
    await turn('B', warm);
    for (const w of watchers) await w.waitReply(warm);

    for (const node of ['A', 'B', 'C']) {
      // A turn still streaming when the node goes (its owner's turn is cut when that node is it).
      const via = ['A', 'B', 'C'].find((n) => n !== node);
      const marks = watchers.map((w) => w.events.length);
      await turn(via, `tell me a story slowly 40ms ${nonce()}`);
      await poll(() => watchers.some((w, i) => deltasSince(w, marks[i]).length >= 5), { ms: 60_000, what: 'the story streaming' });
      const { exit } = await c.restart(node);
      assert.deepEqual([exit.code, exit.signal], [0, null], `${node} exits 0 after SIGTERM:\n${c.logs()}`);
      const next = `after restarting ${node} ${nonce()}`;
      await turn(node, next); // through the new process
      for (const w of watchers) await w.waitReply(next);
    }
    const final = `all done ${nonce()}`;
    await turn('C', final);
    for (const w of watchers) await w.waitReply(final);

    const log = await readLog(c.api('B'), id, since);
    const fullLog = await readLog(c.api('B'), id).catch(() => log);
    const last = log.at(-1).seq;
    for (const w of watchers) await w.waitFor(() => w.seqs().includes(last), 30_000, `seq ${last}`);
    const upTo = (w) => w.events.filter((e) => e.seq <= last);
    watchers.forEach((w, i) => {
      assert.ok(w.joins.length >= 2, `client ${i} moved to another node at least once (${w.describe()})`);
      for (const j of w.joins) assert.notEqual(j.ack.reset, true, `client ${i}: a rejoin with since answered reset: ${JSON.stringify(j)}`);
      assertContiguous(upTo(w), `client ${i} (${w.describe()})`, fullLog);
      if (!since) assert.equal(w.events[0].seq, 1, `client ${i} got the session's events from the first`);
      assert.deepEqual(upTo(w).map(fromWire), upTo(watchers[0]).map(fromWire), `client ${i} got what client 0 got`);
    });
    // The shared log, read from any node, holds all of it (eventIds stay valid across owners).
    const got = upTo(watchers[0]);
    assert.equal(log[0].seq, got[0].seq, `the shared log starts at #${log[0].seq}, the clients at #${got[0].seq}: it lost events across the owner changes`);
    assert.deepEqual(log.map(fromLog), got.map(fromWire), "the log's events are the clients'");

    const users = userMessages(await getState(c, 'A', id));
    for (const text of sent) {
      if (text.includes('slowly')) assert.ok(count(users, text) <= 1, `${text} at most once`);
      else assert.equal(count(users, text), 1, `${text} once in ${JSON.stringify(users)}`);
    }
    assertSerialWriters(c, id);
  });
});

test('Redis going away mid-turn: the turn completes, /health says so, and a client on another node gets its events after reconnecting', { timeout: 240_000 }, async () => {
  await withCluster({}, async (c) => {
    const { id, w: onB } = await storyStreaming(c, { on: 'B', ms: 60 });
    await c.redis.stop(); // its data goes with it
    await poll(async () => (await health(c, 'B')).cluster?.redis === 'down', { ms: 15_000, what: 'B to report Redis down' });
    await c.redis.start();
    for (const node of ['A', 'B', 'C']) await poll(async () => (await health(c, node)).cluster?.redis === 'up', { ms: 30_000, what: `${node} to report Redis up again` });

    // Reconnect to B with the last event seen: the rest of the turn comes, none twice.
    const lastSeen = onB.lastEventId();
    onB.close();
    const back = await c.watch('B', id, { since: lastSeen });
    const ack = back.joins[0].ack;
    assert.notEqual(ack.reset, true, `the rejoin after the Redis restart answered reset (the log lost the turn): ${JSON.stringify(ack)}`);
    await back.waitFor(() => back.ends() >= 1, 60_000, 'the end of the story turn');
    const end = back.events.find((e) => isTurnEnd(e.name, e.p));
    assert.equal(end.p.block.metadata.stopReason, 'completed', 'the turn completed');
    const all = [...onB.events, ...back.events];
    assertContiguous(all, 'before and after the restart');
    assert.ok(
      all.some((e) => e.name === 'session:block:complete' && e.p.block?.type === 'assistant_text' && String(e.p.block.content).startsWith('Once upon a time')),
      'the story’s text block completed',
    );

    // The cluster goes on: one owner all agree on, and a message through C runs.
    const after = `after the redis restart ${nonce()}`;
    await sendRetrying(c, 'C', id, after);
    await back.waitReply(after);
    const owners = [];
    for (const node of ['A', 'B', 'C']) owners.push((await getState(c, node, id)).runtime.ownerNodeId);
    assert.equal(new Set(owners).size, 1, `one owner: ${owners}`);
    assertSerialWriters(c, id);
  });
});

test('an owner SIGSTOPped past its lease loses the session: after SIGCONT it writes and publishes nothing more for it', { timeout: 240_000 }, async () => {
  await withCluster({}, async (c) => {
    // Stopped mid-turn: its sandbox keeps streaming into the stopped node's pipe.
    const { id, w: onC, first, mark } = await storyStreaming(c, { on: 'C', ms: 100 });
    const staleBlocks = new Set(deltasSince(onC, mark).map((e) => e.p.blockId));
    const a = c.nodes.A;
    const stoppedAt = a.signal('SIGSTOP');

    // Once A's lease is over, B takes the session (until then: 503 OWNER_UNREACHABLE).
    const got = await untilNot503(() => c.api('B')('GET', `/api/sessions/${id}`, undefined, { timeoutMs: TTL + 10_000 }), {
      deadlineMs: TTL + 20_000,
      what: 'B taking the session over',
    });
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.equal(got.body.runtime.ownerNodeId, 'B');
    const takeover = onC.events.length;
    const after = `after the takeover ${nonce()}`;
    await sendRetrying(c, 'C', id, after);
    await onC.waitReply(after);

    a.signal('SIGCONT');
    // A finds out; from then on it forwards like any other node.
    await poll(async () => (await health(c, 'A')).cluster?.ownedSessions === 0, { ms: 20_000, what: 'A owning nothing after SIGCONT' });
    const viaA = `through the old owner ${nonce()}`;
    await sendRetrying(c, 'A', id, viaA);
    await onC.waitReply(viaA);
    assert.equal((await getState(c, 'A', id)).runtime.ownerNodeId, 'B');

    // Nothing of A's after the stop: no writes...
    const mine = readWrites(c.storeDir).filter((w) => w.sessionId === id && w.pid === a.pid);
    assert.ok(mine.length > 0, 'A wrote the session before');
    assert.deepEqual(mine.filter((w) => w.hrn > stoppedAt).map((w) => w.op), [], 'A wrote after it was stopped');
    assertSerialWriters(c, id, { lost: new Map([[a.pid, stoppedAt]]) });
    // ...and no events: no delta of its cut turn after the takeover, no seq twice, none missing.
    const late = deltasSince(onC, takeover).filter((e) => staleBlocks.has(e.p.blockId));
    assert.deepEqual(late.map((e) => e.seq), [], 'deltas of the stale turn arrived after the takeover');
    const log = await readLog(c.api('C'), id);
    const from = onC.events[0].seq;
    assertContiguous(log.map((e) => ({ name: e.event, seq: e.seq })), 'the shared log');
    assertContiguous(onC.events, 'the client on C', log);
    assert.deepEqual(
      onC.events.map(fromWire),
      log.filter((e) => e.seq >= from && e.seq <= onC.events.at(-1).seq).map(fromLog),
      'what the client got is the shared log',
    );
  });
});

test('Socket.IO controls on a node that does not hold the session reach its holder: an interrupt sent to B stops the turn on A', { timeout: 240_000 }, async () => {
  await withCluster({}, async (c) => {
    const { id, w: onB, mark } = await storyStreaming(c, { on: 'B', ms: 100 });
    const ack = await onB.socket.timeout(15_000).emitWithAck('session:interrupt', id);
    assert.deepEqual(ack, { success: true, interrupted: true });
    await onB.waitFor(() => onB.events.slice(mark).some((e) => isTurnEnd(e.name, e.p)), 30_000, 'the turn end');
    const end = onB.events.slice(mark).find((e) => isTurnEnd(e.name, e.p));
    assert.equal(end.p.block.metadata.stopReason, 'interrupted');
    const state = await getState(c, 'B', id);
    assert.equal(state.runtime.ownerNodeId, 'A', 'still held by A');
    // A request id nobody asked for: the holder's answer (404 NOT_FOUND), through B.
    const answer = await onB.socket.timeout(15_000).emitWithAck('session:permission:respond', { sessionId: id, requestId: 'nope', behavior: 'allow' });
    assert.equal(answer.success, false, JSON.stringify(answer));
    assert.equal(answer.code, 'NOT_FOUND', JSON.stringify(answer));
  });
});

test('two nodes racing to take the same unowned session agree on one owner', { timeout: 240_000 }, async () => {
  await withCluster({}, async (c) => {
    // Unowned sessions: two A stored and released when it shut down, three only in the store.
    const ids = [await createSession(c, 'A'), await createSession(c, 'A')];
    const w = await c.watch('A', ids[0]);
    const hello = `hello ${nonce()}`;
    assert.equal((await send(c, 'A', ids[0], hello)).status, 200);
    await w.waitReply(hello);
    w.close();
    // The turn's blocks reach the state when its transcript is read back, just before it is stored.
    await stored(c, ids[0], hello);
    const before = {};
    for (const id of ids) before[id] = (await getState(c, 'A', id)).blocks;
    const a = c.nodes.A;
    const exit = await a.stop();
    assert.equal(exit.code, 0);
    const seed = sharedStore({ dir: c.storeDir, node: 'seed' });
    for (let i = 0; i < 3; i++) {
      const id = randomUUID();
      seed.createSessionRecord({ sessionId: id, type: 'claude-agent-sdk', agentProfileReference: 'default', createdAt: Date.now(), sessionOptions: {} });
      ids.push(id);
      before[id] = [];
    }

    const owners = {};
    for (const id of ids) {
      const [viaB, viaC] = await Promise.all([c.api('B')('GET', `/api/sessions/${id}`), c.api('C')('GET', `/api/sessions/${id}`)]);
      assert.equal(viaB.status, 200, JSON.stringify(viaB.body));
      assert.equal(viaC.status, 200, JSON.stringify(viaC.body));
      const owner = viaB.body.runtime.ownerNodeId;
      assert.ok(owner === 'B' || owner === 'C', `owner ${owner}`);
      assert.equal(viaC.body.runtime.ownerNodeId, owner, 'both answers name the same owner');
      assert.deepEqual(viaC.body.blocks, viaB.body.blocks, 'both answers show the same conversation');
      assert.deepEqual(viaB.body.blocks, before[id], 'the stored conversation');
      owners[id] = owner;
    }
    const [hb, hc] = [await health(c, 'B'), await health(c, 'C')];
    assert.equal(hb.cluster.ownedSessions + hc.cluster.ownedSessions, ids.length, `each session owned once: B ${hb.cluster.ownedSessions}, C ${hc.cluster.ownedSessions}`);
    for (const id of ids) {
      const runs = assertSerialWriters(c, id);
      const takers = runs.filter((r) => r.pid !== a.pid && r.node !== 'seed');
      assert.ok(takers.length <= 1 && takers.every((r) => r.node === owners[id]), `only the owner wrote after A left: ${runs.map((r) => r.node).join(' -> ')}`);
    }
  });
});

test('a message forwarded to an owner that stops answering gets 503 OWNER_UNREACHABLE; resent once the owner is dead, it runs once', { timeout: 240_000 }, async () => {
  await withCluster({}, async (c) => {
    const { id, w: onC, first } = await sessionWithTurn(c, { on: 'C' });

    const a = c.nodes.A;
    const stoppedAt = a.signal('SIGSTOP');
    const text = `only once ${nonce()}`;
    const r = await send(c, 'B', id, text, { timeoutMs: TTL + 60_000 });
    assert.equal(r.status, 503, `${r.status} ${JSON.stringify(r.body)}`);
    assert.equal(r.body.code, 'OWNER_UNREACHABLE');
    assert.equal(typeof r.body.error, 'string');
    assert.ok(r.ms <= TTL + 5000, `answered after ${Math.round(r.ms)} ms (lease ${TTL} ms)`);

    await a.kill('SIGKILL');
    await sendRetrying(c, 'B', id, text);
    await onC.waitReply(text);
    // One more turn: a second run of the message would have come before it ends.
    const next = `and then ${nonce()}`;
    await sendRetrying(c, 'C', id, next);
    await onC.waitReply(next);

    const users = userMessages(await getState(c, 'C', id));
    assert.equal(count(users, text), 1, `once in the conversation: ${JSON.stringify(users)}`);
    assert.equal(turnRequests(c.fake, text).length, 1, 'the model was asked once');
    assert.deepEqual(users, [first, text, next]);
    assertSerialWriters(c, id, { lost: new Map([[a.pid, stoppedAt]]) });
  });
});

test('start() rejects, naming the Redis URL without its password, when Redis cannot be reached', { timeout: 120_000 }, async () => {
  const port = await freePort(); // nothing listens there
  const secret = 'hunter2-cluster-secret';
  const url = `redis://:${secret}@127.0.0.1:${port}`;
  for (const viaEnv of [false, true]) {
    if (viaEnv) process.env.AGENT_RUNTIME_REDIS_URL = url;
    let rt;
    try {
      const t0 = Date.now();
      await assert.rejects(
        (async () => {
          rt = await createAgentRuntime({
            persistence: recordingAdapter().adapter,
            logLevel: 'error',
            cluster: viaEnv ? { nodeId: 'lonely' } : { redisUrl: url, nodeId: 'lonely', leaseTtlMs: 1000 },
          });
          await rt.start();
        })(),
        (err) => {
          assert.ok(err.message.includes(`127.0.0.1:${port}`), `names the URL (${viaEnv ? 'env' : 'config'}): ${err.message}`);
          assert.ok(!err.message.includes(secret), `the password is in the message: ${err.message}`);
          return true;
        },
      );
      assert.ok(Date.now() - t0 < 60_000, 'it gives up in bounded time');
    } finally {
      if (viaEnv) delete process.env.AGENT_RUNTIME_REDIS_URL;
      await rt?.shutdown().catch(() => {});
    }
  }
  await assert.rejects(
    async () => createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error', cluster: { redisUrl: `redis://127.0.0.1:${port}`, leaseTtlMs: 999 } }),
    /leaseTtlMs/,
    'a lease under 1000 ms is refused, naming the field',
  );
});
