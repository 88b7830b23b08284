// The example database adapters (examples/adapters/): the reusable contract against SQLite (a
// temp file) and PostgreSQL (a throwaway server), then a runtime on each that runs a turn and a
// new runtime over the same database that gets the conversation and its files back.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { adapterContract, CONTRACT_PROFILES } from '../examples/adapters/contract.mjs';
import { createSqliteAdapter } from '../examples/adapters/sqlite.mjs';
import { createPostgresAdapter } from '../examples/adapters/postgres.mjs';
import { agentRuntime, AGENT_PROFILE } from './helpers/agent.mjs';
import { client, API_KEY } from './helpers/http.mjs';
import { startPostgres, findPostgresBin } from './helpers/postgres.mjs';
import { recordingAdapter } from './helpers/adapter.mjs';

const PROMPT = 'think, then write haiku.txt';
const HAIKU = 'Old pond\nfrog jumps in\nsound of water\n';

/** Bytes the runtime never sends today, but an adapter must not mangle: NUL in text, Buffers. */
async function oddValuesRoundTrip(a) {
  const id = `odd-${Date.now()}-${Math.random()}`;
  await a.createSessionRecord({ sessionId: id, type: 'claude-agent-sdk', agentProfileReference: 'default', createdAt: 1 });
  await a.saveTranscript(id, 'before\u0000after ü');
  await a.saveWorkspaceFile(id, { path: 'nul.txt', content: 'a\u0000b' });
  await a.saveWorkspaceFile(id, { path: 'bytes.bin', content: Buffer.from([0, 1, 0xfe, 0xff, 0x80]) });
  let s = await a.loadSession(id);
  assert.equal(s.rawTranscript, 'before\u0000after ü');
  assert.deepEqual(s.workspaceFiles, [
    { path: 'bytes.bin', content: Buffer.from([0, 1, 0xfe, 0xff, 0x80]) },
    { path: 'nul.txt', content: 'a\u0000b' },
  ]);
  await a.saveTranscript(id, Buffer.from([0xc3, 0x28, 0]));
  s = await a.loadSession(id);
  assert.ok(Buffer.isBuffer(s.rawTranscript));
  assert.deepEqual([...s.rawTranscript], [0xc3, 0x28, 0]);
  await a.saveTranscript(id, 'plain again');
  assert.equal((await a.loadSession(id)).rawTranscript, 'plain again');
  await a.deleteSession(id);
  assert.equal(await a.loadSession(id), null, 'deleteSession removes the record');
}

/** A turn on a runtime over `open()`'s adapter; then shutdown, a new adapter instance and a new
 *  runtime over the same storage: the session, its blocks and its files come back, and a second
 *  message continues the same conversation. */
async function conversationSurvivesRestart(open) {
  const first = await open();
  const h1 = await agentRuntime({ persistence: first });
  let id;
  let firstState;
  try {
    const http = client(h1.rt.createRestServer({ apiKey: API_KEY }).fetch);
    const created = await http('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
    id = created.body.sessionId;
    assert.equal(typeof id, 'string', `session created: ${JSON.stringify(created.body)}`);
    const sent = await http('POST', `/api/sessions/${id}/messages`, { content: PROMPT });
    assert.equal(sent.body.success, true, JSON.stringify(sent.body));
    await h1.turnEnd(id);
    await h1.waitFor((n, p) => n === 'session:file:created' && p.sessionId === id && p.file.path === 'haiku.txt', 30_000, 'haiku.txt');
    firstState = (await http('GET', `/api/sessions/${id}`)).body;
    const types = firstState.blocks.map((b) => b.type);
    for (const t of ['user_message', 'assistant_text', 'tool_use', 'tool_result']) assert.ok(types.includes(t), `${t} in ${types}`);
  } finally {
    await h1.close(); // shutdown stores every loaded session through the adapter
    await first.close();
  }

  const second = await open();
  const h2 = await agentRuntime({ persistence: second });
  try {
    // The storage itself, through the new adapter instance.
    const stored = await second.loadSession(id);
    assert.ok(stored, 'the session is in the database');
    assert.equal(stored.agentProfileReference, 'default');
    assert.equal(stored.type, 'claude-agent-sdk');
    assert.ok(JSON.parse(stored.rawTranscript).main.includes(PROMPT), 'the transcript was stored');
    assert.deepEqual(stored.workspaceFiles, [{ path: 'haiku.txt', content: HAIKU }]);
    assert.ok((await second.listAllSessions()).some((s) => s.sessionId === id), 'listed');

    await h2.rt.start();
    const http = client(h2.rt.createRestServer({ apiKey: API_KEY }).fetch);
    const listed = await http('GET', '/api/sessions');
    assert.equal(listed.status, 200);
    const item = listed.body.sessions.find((s) => s.sessionId === id);
    assert.ok(item, 'GET /api/sessions lists it after the restart');
    assert.deepEqual(item.runtime, { isLoaded: false, sandbox: null });
    const restored = (await http('GET', `/api/sessions/${id}`)).body;
    assert.deepEqual(restored.blocks, firstState.blocks, 'the same conversation');
    assert.deepEqual(restored.workspaceFiles, firstState.workspaceFiles);
    assert.deepEqual(restored.workspaceFiles, [{ path: 'haiku.txt', content: HAIKU }]);
    // Usage lives in the record's metadata (the runtime's ledger): it came back through the JSON column.
    const tokens = ({ sandboxSeconds, ...rest }) => rest; // sandbox time grew until the shutdown
    assert.ok(firstState.runtime.usage?.calls > 0, 'the turn was counted');
    assert.deepEqual(tokens(restored.runtime.usage), tokens(firstState.runtime.usage));
    assert.ok(restored.runtime.usage.sandboxSeconds >= firstState.runtime.usage.sandboxSeconds);

    // And it goes on: the model gets the history, the file is not duplicated.
    await http('POST', `/api/sessions/${id}/messages`, { content: 'and now say hello' });
    await h2.turnEnd(id);
    const last = h2.fake.requests.filter((r) => r.path === '/v1/messages').pop();
    assert.ok(JSON.stringify(last.body.messages).includes(PROMPT), 'the history was sent to the model');
    const resumed = (await http('GET', `/api/sessions/${id}`)).body;
    assert.deepEqual(resumed.blocks.filter((b) => b.type === 'user_message').map((b) => b.content), [PROMPT, 'and now say hello']);
    assert.deepEqual(resumed.workspaceFiles.map((f) => f.path), ['haiku.txt']);
  } finally {
    await h2.close();
    await second.close();
  }
}

// The contract asks nothing of an adapter that the tests' in-memory one (the reference's
// behaviour) does not do.
describe('in-memory adapter (helpers/adapter.mjs)', () => {
  adapterContract(({ profiles }) => recordingAdapter({ profiles }).adapter, { test });
});

describe('SQLite adapter (node-sqlite3-wasm)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-sqlite-'));
  const file = path.join(dir, 'contract.db');
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  adapterContract(({ profiles }) => createSqliteAdapter({ filename: file, profiles }), {
    test,
    reopen: async (a) => {
      await a.close();
      return createSqliteAdapter({ filename: file });
    },
  });

  test('a NUL character and a Buffer are stored faithfully', async () => {
    const a = await createSqliteAdapter({ filename: path.join(dir, 'odd.db') });
    try {
      await oddValuesRoundTrip(a);
    } finally {
      await a.close();
    }
  });

  test('a runtime on SQLite keeps the conversation across a restart', { timeout: 240_000 }, async () => {
    const filename = path.join(dir, 'runtime.db');
    await conversationSurvivesRestart(() => createSqliteAdapter({ filename, profiles: [AGENT_PROFILE] }));
  });
});

// Not a skip: without a server to test against, the PostgreSQL adapter is untested, and that
// must show. The error names the install command.
test('PostgreSQL server binaries are installed (initdb, postgres)', () => {
  assert.ok(findPostgresBin());
});

describe('PostgreSQL adapter (pg)', () => {
  let server;
  let contractDb;
  before(async () => {
    server = await startPostgres();
    contractDb = await server.createDatabase('contract');
  });
  after(async () => {
    await server?.stop();
  });

  adapterContract(({ profiles }) => createPostgresAdapter({ connectionString: contractDb, profiles }), {
    test,
    reopen: async (a) => {
      await a.close();
      return createPostgresAdapter({ connectionString: contractDb });
    },
  });

  test('schema creation is idempotent, also when several processes start at once', async () => {
    const url = await server.createDatabase('schema');
    const adapters = await Promise.all(
      Array.from({ length: 4 }, () => createPostgresAdapter({ connectionString: url, schema: 'app_store', profiles: CONTRACT_PROFILES })),
    );
    try {
      const again = await createPostgresAdapter({ connectionString: url, schema: 'app_store' });
      await again.close();
      const c = new pg.Client(url);
      await c.connect();
      try {
        const { rows } = await c.query(
          "SELECT table_name FROM information_schema.tables WHERE table_schema = 'app_store' ORDER BY table_name",
        );
        assert.deepEqual(rows.map((r) => r.table_name), ['agent_profiles', 'sessions', 'workspace_files']);
        const cols = await c.query(
          "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'app_store' AND table_name = 'sessions' AND column_name IN ('session_options', 'metadata', 'raw_transcript') ORDER BY column_name",
        );
        assert.deepEqual(cols.rows, [
          { column_name: 'metadata', data_type: 'jsonb' },
          { column_name: 'raw_transcript', data_type: 'text' },
          { column_name: 'session_options', data_type: 'jsonb' },
        ]);
      } finally {
        await c.end();
      }
      assert.deepEqual((await adapters[0].listAgentProfiles()).map((p) => p.id), ['contract-default', 'contract-minimal']);
    } finally {
      await Promise.all(adapters.map((a) => a.close()));
    }
    await assert.rejects(createPostgresAdapter({ connectionString: url, schema: 'x"; DROP TABLE y; --' }), TypeError);
  });

  test('a NUL character and a Buffer are stored faithfully; deleteSession removes the files too', async () => {
    const url = await server.createDatabase('odd');
    const a = await createPostgresAdapter({ connectionString: url });
    try {
      await oddValuesRoundTrip(a);
      const { rows } = await a.pool.query('SELECT count(*)::int AS n FROM agent_runtime.workspace_files');
      assert.equal(rows[0].n, 0, 'the session files went with it');
    } finally {
      await a.close();
    }
  });

  test('an app-owned pool stays open after close()', async () => {
    const pool = new pg.Pool({ connectionString: contractDb, max: 2 });
    const a = await createPostgresAdapter({ pool });
    await a.close();
    assert.equal((await pool.query('SELECT 1 AS one')).rows[0].one, 1);
    await pool.end();
  });

  test('a runtime on PostgreSQL keeps the conversation across a restart', { timeout: 240_000 }, async () => {
    const url = await server.createDatabase('runtime');
    await conversationSurvivesRestart(() => createPostgresAdapter({ connectionString: url, profiles: [AGENT_PROFILE] }));
  });
});
