// A PersistenceAdapter over PostgreSQL with the `pg` package (install it yourself: `npm install pg`).
//
//   import { createPostgresAdapter } from './postgres.mjs';
//   const persistence = await createPostgresAdapter({ connectionString: process.env.DATABASE_URL, profiles: [myProfile] });
//   const runtime = await createAgentRuntime({ persistence, ... });
//   ...
//   await runtime.shutdown(); await persistence.close();
//
// Tables (created on start if missing, in `schema`, default "agent_runtime"):
//   sessions        one row per session: list fields, jsonb sessionOptions/metadata, the transcript
//   workspace_files one row per (session_id, path); deleted with their session
//   agent_profiles  id, name, description and the whole profile as jsonb
// Text that PostgreSQL's `text` cannot hold (a NUL character) and Buffers are kept in a bytea
// column instead, so what was saved is what loads. jsonb keeps values, not the order of object
// keys (the runtime relies on neither: its own bookkeeping in metadata uses arrays).
// Transactions: creating the schema (under an advisory lock), seeding profiles (all or none) and
// loadSession's reads (record and files from one snapshot); every write method is one statement,
// and a write for an unknown session is rejected (the files' foreign key, or no row updated).
import pg from 'pg';
import { UPDATABLE, json } from './columns.mjs';

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/**
 * @param {{ connectionString?: string, pool?: import('pg').Pool, schema?: string,
 *           profiles?: import('../../index.d.ts').AgentProfile[], onError?: (err: Error) => void }} options
 *   Either a connection string (the adapter owns its pool and close() ends it) or your own pool
 *   (close() leaves it open, and its 'error' events are yours to handle). `profiles` are upserted
 *   at start (see also saveAgentProfile). `onError`: idle connection errors of our own pool.
 */
export async function createPostgresAdapter({
  connectionString,
  pool,
  schema = 'agent_runtime',
  profiles = [],
  onError = (err) => console.error(`postgres adapter: an idle connection failed: ${err.message}`),
} = {}) {
  if (!IDENT.test(schema)) throw new TypeError(`schema must be a plain SQL identifier, got ${JSON.stringify(schema)}`);
  if (!pool && !connectionString) throw new TypeError('createPostgresAdapter needs a connectionString or a pool');
  const ownPool = !pool;
  const db = pool ?? new pg.Pool({ connectionString });
  // Connections of our own pool: counted so close() returns only once every one has ended (pg's
  // pool.end() resolves earlier), and an idle one that the server drops (a restart, a failover)
  // is logged instead of being an uncaught 'error' event that ends the process.
  let open = 0;
  const allEnded = [];
  if (ownPool) {
    db.on('connect', () => open++);
    db.on('remove', () => {
      if (--open === 0) allEnded.splice(0).forEach((resolve) => resolve());
    });
    db.on('error', onError);
  }
  const S = `"${schema}"`;

  /** Runs fn(client) in one transaction; rolls back on any error. */
  async function transaction(fn) {
    const client = await db.connect();
    try {
      await client.query('BEGIN');
      const out = await fn(client);
      await client.query('COMMIT');
      return out;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  /** Ends our own pool and waits for its last connection to close. */
  async function endOwnPool() {
    if (!ownPool || db.ending) return;
    const ended = open === 0 ? Promise.resolve() : new Promise((resolve) => allEnded.push(resolve));
    await db.end();
    await ended;
  }

  try {
    await createSchema();
    if (profiles.length) await transaction(async (c) => { for (const p of profiles) await saveAgentProfile(p, c); });
  } catch (err) {
    await endOwnPool().catch(() => {});
    throw err;
  }

  // Several processes may start at once against a fresh database: CREATE ... IF NOT EXISTS is not
  // safe against itself, so the schema is created under a transaction-scoped advisory lock.
  async function createSchema() {
    await transaction(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`agent-runtime-schema:${schema}`]);
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${S}`);
      await c.query(`CREATE TABLE IF NOT EXISTS ${S}.sessions (
        session_id text PRIMARY KEY,
        seq bigserial NOT NULL,
        type text NOT NULL,
        agent_profile_reference text NOT NULL,
        name text,
        session_options jsonb,
        metadata jsonb,
        created_at bigint,
        last_activity bigint,
        raw_transcript text,
        raw_transcript_bytes bytea,
        raw_transcript_is_buffer boolean NOT NULL DEFAULT false
      )`);
      await c.query(`CREATE TABLE IF NOT EXISTS ${S}.workspace_files (
        session_id text NOT NULL REFERENCES ${S}.sessions (session_id) ON DELETE CASCADE,
        path text NOT NULL,
        content text,
        content_bytes bytea,
        content_is_buffer boolean NOT NULL DEFAULT false,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (session_id, path)
      )`);
      await c.query(`CREATE TABLE IF NOT EXISTS ${S}.agent_profiles (
        id text PRIMARY KEY,
        name text NOT NULL,
        description text,
        profile jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      )`);
    });
  }

  async function saveAgentProfile(profile, client = db) {
    if (!profile || typeof profile.id !== 'string' || typeof profile.name !== 'string') {
      throw new TypeError('an agent profile needs a string id and name');
    }
    await client.query(
      `INSERT INTO ${S}.agent_profiles (id, name, description, profile) VALUES ($1, $2, $3, $4)
       ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
         profile = excluded.profile, updated_at = now()`,
      [profile.id, profile.name, profile.description ?? null, JSON.stringify(profile)],
    );
  }

  /** Throws unless the session exists (writes to unknown sessions never create half records). */
  function mustHaveChanged(result, sessionId, method) {
    if (result.rowCount === 0) throw new Error(`${method}: session ${sessionId} not found`);
  }

  const adapter = {
    async listAllSessions() {
      const { rows } = await db.query(
        `SELECT session_id, type, agent_profile_reference, name, session_options, metadata, created_at, last_activity
         FROM ${S}.sessions ORDER BY seq`,
      );
      return rows.map(toListData);
    },

    async loadSession(sessionId) {
      // One snapshot for the record and its files: a concurrent save cannot tear them apart.
      return transaction(async (c) => {
        await c.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY');
        const { rows } = await c.query(`SELECT * FROM ${S}.sessions WHERE session_id = $1`, [sessionId]);
        if (rows.length === 0) return null;
        const files = await c.query(
          `SELECT path, content, content_bytes, content_is_buffer FROM ${S}.workspace_files
           WHERE session_id = $1 ORDER BY path`,
          [sessionId],
        );
        const row = rows[0];
        const session = toListData(row);
        const raw = decode(row.raw_transcript, row.raw_transcript_bytes, row.raw_transcript_is_buffer);
        if (raw !== undefined) session.rawTranscript = raw;
        session.workspaceFiles = files.rows.map((f) => ({
          path: f.path,
          content: decode(f.content, f.content_bytes, f.content_is_buffer),
        }));
        return session;
      });
    },

    async createSessionRecord(session) {
      await db.query(
        `INSERT INTO ${S}.sessions (session_id, type, agent_profile_reference, name, session_options, metadata, created_at, last_activity)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [
          session.sessionId,
          session.type,
          session.agentProfileReference,
          session.name ?? null,
          json(session.sessionOptions),
          json(session.metadata),
          session.createdAt ?? null,
          session.lastActivity ?? null,
        ],
      );
    },

    /** Only the fields present in `updates` change (a field set to null is cleared; undefined is
     *  ignored, as it would be after JSON). sessionOptions and metadata are replaced, not merged. */
    async updateSessionRecord(sessionId, updates) {
      const sets = [];
      const values = [sessionId];
      for (const [key, column, encode] of UPDATABLE) {
        if (!(key in updates) || updates[key] === undefined) continue;
        values.push(encode(updates[key]));
        sets.push(`${column} = $${values.length}`);
      }
      if (sets.length === 0) {
        mustHaveChanged(await db.query(`SELECT 1 FROM ${S}.sessions WHERE session_id = $1`, [sessionId]), sessionId, 'updateSessionRecord');
        return;
      }
      const r = await db.query(`UPDATE ${S}.sessions SET ${sets.join(', ')} WHERE session_id = $1`, values);
      mustHaveChanged(r, sessionId, 'updateSessionRecord');
    },

    async saveTranscript(sessionId, rawTranscript) {
      const [text, bytes, isBuffer] = encode(rawTranscript);
      const r = await db.query(
        `UPDATE ${S}.sessions SET raw_transcript = $2, raw_transcript_bytes = $3, raw_transcript_is_buffer = $4
         WHERE session_id = $1`,
        [sessionId, text, bytes, isBuffer],
      );
      mustHaveChanged(r, sessionId, 'saveTranscript');
    },

    async saveWorkspaceFile(sessionId, file) {
      const [text, bytes, isBuffer] = encode(file.content);
      try {
        await db.query(
          `INSERT INTO ${S}.workspace_files (session_id, path, content, content_bytes, content_is_buffer)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (session_id, path) DO UPDATE SET content = excluded.content,
             content_bytes = excluded.content_bytes, content_is_buffer = excluded.content_is_buffer, updated_at = now()`,
          [sessionId, file.path, text, bytes, isBuffer],
        );
      } catch (err) {
        if (err.code === '23503') throw new Error(`saveWorkspaceFile: session ${sessionId} not found`);
        throw err;
      }
    },

    async deleteSessionFile(sessionId, path) {
      await db.query(`DELETE FROM ${S}.workspace_files WHERE session_id = $1 AND path = $2`, [sessionId, path]);
    },

    async listAgentProfiles() {
      const { rows } = await db.query(`SELECT id, name, description FROM ${S}.agent_profiles ORDER BY id`);
      return rows.map(({ id, name, description }) => (description == null ? { id, name } : { id, name, description }));
    },

    async loadAgentProfile(agentProfileId) {
      const { rows } = await db.query(`SELECT profile FROM ${S}.agent_profiles WHERE id = $1`, [agentProfileId]);
      return rows.length ? rows[0].profile : null;
    },

    // Not part of PersistenceAdapter: seeding and housekeeping for your app.
    saveAgentProfile: (profile) => saveAgentProfile(profile),
    /** Removes a session and its files (one statement: the files go by ON DELETE CASCADE). */
    async deleteSession(sessionId) {
      await db.query(`DELETE FROM ${S}.sessions WHERE session_id = $1`, [sessionId]);
    },
    pool: db,
    /** Ends the pool if the adapter made it (and waits until every connection is closed). */
    close: endOwnPool,
  };
  return adapter;
}


/** [text, bytes, isBuffer]: text when `text` can hold it, else the exact bytes. */
function encode(value) {
  if (value == null) return [null, null, false];
  if (typeof value === 'string') return value.includes('\u0000') ? [null, Buffer.from(value, 'utf8'), false] : [value, null, false];
  if (value instanceof Uint8Array) return [null, Buffer.from(value.buffer, value.byteOffset, value.byteLength), true];
  throw new TypeError(`expected a string or a Buffer, got ${typeof value}`);
}

function decode(text, bytes, isBuffer) {
  if (text != null) return text;
  if (bytes != null) return isBuffer ? bytes : bytes.toString('utf8');
  return undefined;
}

/** A row to PersistedSessionListData; absent values are left out rather than null. */
function toListData(row) {
  const out = { sessionId: row.session_id, type: row.type, agentProfileReference: row.agent_profile_reference };
  if (row.name != null) out.name = row.name;
  if (row.session_options != null) out.sessionOptions = row.session_options;
  if (row.metadata != null) out.metadata = row.metadata;
  // bigint columns come back as strings; milliseconds since the epoch fit a double exactly.
  if (row.created_at != null) out.createdAt = Number(row.created_at);
  if (row.last_activity != null) out.lastActivity = Number(row.last_activity);
  return out;
}
