// A contract test for PersistenceAdapter implementations: what agent-runtime-native relies on.
// Call it from your own node:test file:
//
//   import { test } from 'node:test';
//   import { adapterContract } from 'agent-runtime-native/adapters/contract'; // or a copy
//   adapterContract(async ({ profiles }) => createMyAdapter({ profiles }), { test });
//
// `makeAdapter({ profiles })` must return a ready adapter whose profile store holds `profiles`
// (seeded however your adapter seeds them). Sessions may already exist in its store (every test
// uses fresh random ids), so a shared test database is fine. If the adapter has `close()`, it is
// awaited at the end of each test. Options:
//   test      node:test's `test` (or `it`), required
//   profiles  the profiles to seed (default CONTRACT_PROFILES)
//   reopen    optional `async (adapter) => adapter'`: closes the adapter and opens a new one on the
//             same storage; then one more test checks that everything survives it.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

export const CONTRACT_PROFILES = [
  {
    id: 'contract-default',
    name: 'Contract Agent',
    description: 'Used by the adapter contract',
    systemPrompt: 'You are a helpful assistant.',
    tools: ['Read', 'Write', 'Edit', 'Bash'],
    subagents: [{ name: 'helper', description: 'Checks things', prompt: 'You help.', tools: ['Read'] }],
    skills: [{ name: 'haiku', description: 'Writes haiku', skillMd: '# Haiku\n5-7-5', supportingFiles: [{ relativePath: 'a/b.md', content: 'ü' }] }],
    environmentVariables: { MODE: 'contract' },
    defaultWorkspaceFiles: [{ path: 'README.md', content: '# hello\n' }],
  },
  { id: 'contract-minimal', name: 'Minimal' },
];

// Everything a transcript can hold: JSON escapes, every plane of Unicode, combining marks, RTL,
// newlines of every kind; a big one goes past common 1 MiB / 64 KiB column and packet limits.
const TRICKY = 'ascii "quotes" \\backslash\\ \ttab\r\n crlf — ünïcödé 日本語 한국어 עברית 🐸🏳️‍🌈 e\u0301 \u2028\u2029 \uFEFF';

/** Drops keys whose value is undefined or null (adapters may leave absent fields out or as null). */
function clean(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined && v !== null));
}

function sessionRecord(overrides = {}) {
  return {
    sessionId: randomUUID(),
    type: 'claude-agent-sdk',
    agentProfileReference: 'contract-default',
    createdAt: 1_700_000_000_123,
    ...overrides,
  };
}

function sortedFiles(files) {
  return [...files].map(clean).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export function adapterContract(makeAdapter, { test, profiles = CONTRACT_PROFILES, reopen } = {}) {
  if (typeof test !== 'function') throw new TypeError('adapterContract needs { test } (node:test)');
  if (typeof makeAdapter !== 'function') throw new TypeError('adapterContract needs a makeAdapter function');

  /** Runs body(adapter) with a fresh adapter, closing it afterwards even on failure. */
  const withAdapter = (name, body) =>
    test(`adapter contract: ${name}`, async () => {
      const holder = { adapter: await makeAdapter({ profiles }) };
      try {
        await body(holder.adapter, holder);
      } finally {
        await holder.adapter?.close?.();
      }
    });

  withAdapter('unknown ids load as null', async (a) => {
    assert.equal(await a.loadSession(`missing-${randomUUID()}`), null);
    assert.equal(await a.loadAgentProfile(`missing-${randomUUID()}`), null);
    const listed = await a.listAllSessions();
    assert.ok(Array.isArray(listed), 'listAllSessions returns an array');
  });

  withAdapter('create, list and load round trip', async (a) => {
    const full = sessionRecord({
      type: 'opencode',
      name: 'My session ✨',
      lastActivity: 1_700_000_000_999,
      sessionOptions: { model: 'claude-sonnet-4-5', permissionMode: 'ask', permissions: { allow: ['Read'], deny: ['Bash(rm *)'] } },
      metadata: { tag: 'x' },
    });
    // What the runtime itself sends at creation: no name, lastActivity or metadata.
    const minimal = sessionRecord({ sessionOptions: {} });
    await a.createSessionRecord(full);
    await a.createSessionRecord(minimal);

    const listed = await a.listAllSessions();
    const mine = listed.filter((s) => s.sessionId === full.sessionId || s.sessionId === minimal.sessionId);
    assert.equal(mine.length, 2, 'both sessions are listed once');
    assert.deepEqual(clean(mine.find((s) => s.sessionId === full.sessionId)), full);
    assert.deepEqual(clean(mine.find((s) => s.sessionId === minimal.sessionId)), minimal);
    for (const s of mine) {
      assert.equal(s.rawTranscript, undefined, 'list items carry no transcript');
      assert.equal(s.workspaceFiles, undefined, 'list items carry no files');
    }

    const loaded = await a.loadSession(full.sessionId);
    const { rawTranscript, workspaceFiles, subagents, ...record } = loaded;
    assert.deepEqual(clean(record), full);
    assert.equal(rawTranscript ?? undefined, undefined, 'no transcript saved yet');
    assert.deepEqual(workspaceFiles, [], 'workspaceFiles is an array, empty at first');
    assert.equal(typeof loaded.createdAt, 'number', 'createdAt is a number of ms');

    // The runtime saves "" right after creating a session: it must load as "", not be lost.
    await a.saveTranscript(minimal.sessionId, '');
    assert.equal((await a.loadSession(minimal.sessionId)).rawTranscript, '');
  });

  withAdapter('partial updates change only the given fields', async (a) => {
    const rec = sessionRecord({ name: 'before', lastActivity: 10, sessionOptions: { model: 'a' }, metadata: { keep: true } });
    await a.createSessionRecord(rec);
    await a.saveTranscript(rec.sessionId, '{"main":"x"}');
    await a.saveWorkspaceFile(rec.sessionId, { path: 'a.txt', content: 'A' });

    await a.updateSessionRecord(rec.sessionId, { lastActivity: 20 });
    let s = await a.loadSession(rec.sessionId);
    assert.deepEqual(clean({ ...s, rawTranscript: undefined, workspaceFiles: undefined }), { ...rec, lastActivity: 20 });
    assert.equal(s.rawTranscript, '{"main":"x"}', 'an update keeps the transcript');
    assert.deepEqual(sortedFiles(s.workspaceFiles), [{ path: 'a.txt', content: 'A' }], 'an update keeps the files');

    // sessionOptions are replaced as a whole (the runtime sends the complete new options).
    await a.updateSessionRecord(rec.sessionId, { sessionOptions: { permissionMode: 'acceptEdits' } });
    await a.updateSessionRecord(rec.sessionId, { name: 'after' });
    s = await a.loadSession(rec.sessionId);
    assert.deepEqual(s.sessionOptions, { permissionMode: 'acceptEdits' });
    assert.equal(s.name, 'after');
    assert.equal(s.lastActivity, 20);
    assert.equal(s.createdAt, rec.createdAt);
    assert.equal(s.agentProfileReference, rec.agentProfileReference);
    assert.equal(s.type, rec.type);
    assert.deepEqual(s.metadata, { keep: true });
    assert.deepEqual(clean((await a.listAllSessions()).find((x) => x.sessionId === rec.sessionId)), {
      ...rec,
      lastActivity: 20,
      name: 'after',
      sessionOptions: { permissionMode: 'acceptEdits' },
    });
  });

  withAdapter('metadata round trips (nested, typed, unicode) and is replaced by an update', async (a) => {
    const metadata = {
      usage: { inputTokens: 1234, outputTokens: 56, cacheReadTokens: 0, totalTokens: 1290 },
      costUSD: 0.012345,
      model: 'claude-sonnet-4-5',
      flags: [true, false, null, 1.5, -0, 'ü'],
      'clé 🔑': { deep: { deeper: [{ x: 1 }] } },
      empty: {},
      big: 2 ** 53 - 1,
    };
    const rec = sessionRecord({ metadata });
    await a.createSessionRecord(rec);
    assert.deepEqual(JSON.parse(JSON.stringify((await a.loadSession(rec.sessionId)).metadata)), JSON.parse(JSON.stringify(metadata)));
    const next = { usage: { inputTokens: 1, outputTokens: 2, totalTokens: 3 }, note: 'second' };
    await a.updateSessionRecord(rec.sessionId, { metadata: next });
    assert.deepEqual((await a.loadSession(rec.sessionId)).metadata, next);
    assert.deepEqual((await a.listAllSessions()).find((x) => x.sessionId === rec.sessionId).metadata, next);
  });

  withAdapter('transcripts round trip exactly (large, unicode) and the last save wins', async (a) => {
    const rec = sessionRecord();
    await a.createSessionRecord(rec);
    const line = (i) => JSON.stringify({ type: 'assistant', i, text: `${TRICKY} ${i}` });
    const main = Array.from({ length: 40_000 }, (_, i) => line(i)).join('\n') + '\n';
    const big = JSON.stringify({ main, subagents: [{ id: 'agent-1', transcript: line(-1) }] });
    assert.ok(big.length > 4_000_000, 'the big transcript is over 4 MB');
    await a.saveTranscript(rec.sessionId, big);
    const loaded = (await a.loadSession(rec.sessionId)).rawTranscript;
    assert.equal(typeof loaded, 'string');
    assert.equal(loaded.length, big.length, 'same length');
    assert.ok(loaded === big, 'the same characters');

    await a.saveTranscript(rec.sessionId, TRICKY);
    assert.equal((await a.loadSession(rec.sessionId)).rawTranscript, TRICKY, 'a later save replaces the transcript');
    await a.saveTranscript(rec.sessionId, '');
    assert.equal((await a.loadSession(rec.sessionId)).rawTranscript, '', 'an empty save overwrites too');
  });

  withAdapter('workspace files: save, overwrite, delete, per session', async (a) => {
    const one = sessionRecord();
    const two = sessionRecord();
    await a.createSessionRecord(one);
    await a.createSessionRecord(two);
    const files = [
      { path: 'haiku.txt', content: 'Old pond\nfrog jumps in\nsound of water\n' },
      { path: 'src/deep/nested/file.ts', content: 'export const x = 1;\n' },
      { path: 'dossier/ünï 🐸.md', content: TRICKY },
      { path: 'empty.txt', content: '' },
      { path: 'big.log', content: 'line ✓\n'.repeat(200_000) },
    ];
    await Promise.all(files.map((f) => a.saveWorkspaceFile(one.sessionId, f)));
    await a.saveWorkspaceFile(two.sessionId, { path: 'haiku.txt', content: 'other session' });
    assert.deepEqual(sortedFiles((await a.loadSession(one.sessionId)).workspaceFiles), sortedFiles(files));

    await a.saveWorkspaceFile(one.sessionId, { path: 'haiku.txt', content: 'rewritten' });
    let loaded = sortedFiles((await a.loadSession(one.sessionId)).workspaceFiles);
    assert.equal(loaded.filter((f) => f.path === 'haiku.txt').length, 1, 'an overwrite does not duplicate the path');
    assert.equal(loaded.find((f) => f.path === 'haiku.txt').content, 'rewritten');
    assert.equal(loaded.length, files.length);

    await a.deleteSessionFile(one.sessionId, 'src/deep/nested/file.ts');
    await a.deleteSessionFile(one.sessionId, 'never-existed.txt'); // deleting a missing file is not an error
    loaded = sortedFiles((await a.loadSession(one.sessionId)).workspaceFiles);
    assert.deepEqual(loaded.map((f) => f.path), ['big.log', 'dossier/ünï 🐸.md', 'empty.txt', 'haiku.txt']);
    assert.equal(loaded.find((f) => f.path === 'empty.txt').content, '', 'an empty file stays an empty string');
    assert.deepEqual(sortedFiles((await a.loadSession(two.sessionId)).workspaceFiles), [{ path: 'haiku.txt', content: 'other session' }]);
  });

  withAdapter('writes for an unknown session create no session', async (a) => {
    const id = `missing-${randomUUID()}`;
    const attempts = [
      () => a.updateSessionRecord(id, { lastActivity: 1 }),
      () => a.saveTranscript(id, 'x'),
      () => a.saveWorkspaceFile(id, { path: 'a.txt', content: 'x' }),
    ];
    for (const attempt of attempts) {
      try {
        await attempt();
      } catch {
        // Rejecting is fine (and clearer); so is ignoring. Inventing a half session is not.
      }
    }
    assert.equal(await a.loadSession(id), null);
    assert.ok(!(await a.listAllSessions()).some((s) => s.sessionId === id));
  });

  withAdapter('agent profiles: list and load', async (a) => {
    const listed = await a.listAgentProfiles();
    for (const p of profiles) {
      const item = listed.find((x) => x.id === p.id);
      assert.ok(item, `profile ${p.id} is listed`);
      assert.deepEqual(clean(item), clean({ id: p.id, name: p.name, description: p.description }));
      assert.deepEqual(await a.loadAgentProfile(p.id), p);
    }
  });

  withAdapter('concurrent writes to different sessions do not mix', async (a) => {
    const n = 16;
    const recs = Array.from({ length: n }, (_, i) => sessionRecord({ name: `s${i}` }));
    await Promise.all(recs.map((r) => a.createSessionRecord(r)));
    await Promise.all(
      recs.flatMap((r, i) => [
        a.saveTranscript(r.sessionId, `transcript ${i} ${TRICKY}`),
        a.updateSessionRecord(r.sessionId, { lastActivity: 1000 + i }),
        a.updateSessionRecord(r.sessionId, { metadata: { i } }),
        ...Array.from({ length: 4 }, (_, k) => a.saveWorkspaceFile(r.sessionId, { path: `f${k}.txt`, content: `${i}/${k}` })),
      ]),
    );
    const loaded = await Promise.all(recs.map((r) => a.loadSession(r.sessionId)));
    loaded.forEach((s, i) => {
      assert.equal(s.sessionId, recs[i].sessionId);
      assert.equal(s.name, `s${i}`);
      assert.equal(s.rawTranscript, `transcript ${i} ${TRICKY}`);
      assert.equal(s.lastActivity, 1000 + i);
      assert.deepEqual(s.metadata, { i });
      assert.deepEqual(sortedFiles(s.workspaceFiles), Array.from({ length: 4 }, (_, k) => ({ path: `f${k}.txt`, content: `${i}/${k}` })));
    });
    const ids = new Set((await a.listAllSessions()).map((s) => s.sessionId));
    for (const r of recs) assert.ok(ids.has(r.sessionId), `${r.sessionId} is listed`);
  });

  if (reopen) {
    withAdapter('everything survives closing and reopening the store', async (a, holder) => {
      const rec = sessionRecord({ name: 'durable', lastActivity: 5, sessionOptions: { model: 'm' }, metadata: { n: 1 } });
      await a.createSessionRecord(rec);
      await a.saveTranscript(rec.sessionId, TRICKY);
      await a.saveWorkspaceFile(rec.sessionId, { path: 'keep.txt', content: 'kept' });
      await a.saveWorkspaceFile(rec.sessionId, { path: 'gone.txt', content: 'deleted' });
      await a.deleteSessionFile(rec.sessionId, 'gone.txt');
      holder.adapter = null; // reopen closes it
      holder.adapter = await reopen(a);
      const s = await holder.adapter.loadSession(rec.sessionId);
      assert.deepEqual(clean({ ...s, rawTranscript: undefined, workspaceFiles: undefined }), rec);
      assert.equal(s.rawTranscript, TRICKY);
      assert.deepEqual(sortedFiles(s.workspaceFiles), [{ path: 'keep.txt', content: 'kept' }]);
      assert.ok((await holder.adapter.listAllSessions()).some((x) => x.sessionId === rec.sessionId));
      assert.deepEqual(await holder.adapter.loadAgentProfile(profiles[0].id), profiles[0]);
    });
  }
}
