// A PersistenceAdapter in one SQLite file, for single-machine setups, with `node-sqlite3-wasm`
// (install it yourself: `npm install node-sqlite3-wasm`; SQLite compiled to WebAssembly that
// reads and writes a real file, with no native build and no download at install time).
//
//   import { createSqliteAdapter } from './sqlite.mjs';
//   const persistence = await createSqliteAdapter({ filename: './agent-runtime.db', profiles: [myProfile] });
//   const runtime = await createAgentRuntime({ persistence, ... });
//   ...
//   await runtime.shutdown(); await persistence.close();
//
// One process should own the file (the WebAssembly build has no WAL mode). Calls are synchronous
// underneath, so every method runs to completion before the next one starts: concurrent calls
// from the runtime never interleave inside a write. They block the event loop while they run:
// about a millisecond for a record, ~0.1 s to write a 5 MB transcript.
// The PostgreSQL example's tables, but the transcript has its own: SQLite rewrites a whole row on
// UPDATE, so a record update next to a multi-MB transcript would cost ~10 ms instead of ~1 ms.
// sessionOptions, metadata and profiles are JSON text.
import sqlite from 'node-sqlite3-wasm';
import { UPDATABLE, json } from './columns.mjs';

const { Database } = sqlite;

/**
 * @param {{ filename: string, profiles?: import('../../index.d.ts').AgentProfile[] }} options
 *   `filename`: the database file (created if missing; ':memory:' for a throwaway one).
 *   `profiles` are upserted at start (see also saveAgentProfile).
 */
export async function createSqliteAdapter({ filename, profiles = [] } = {}) {
  if (typeof filename !== 'string' || filename === '') throw new TypeError('createSqliteAdapter needs a filename');
  const db = new Database(filename);

  /** Runs fn() between BEGIN IMMEDIATE and COMMIT; rolls back on any error. */
  function transaction(fn) {
    db.exec('BEGIN IMMEDIATE');
    try {
      const out = fn();
      db.exec('COMMIT');
      return out;
    } catch (err) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw err;
    }
  }

  try {
    db.exec('PRAGMA foreign_keys = ON');
    db.exec('PRAGMA busy_timeout = 5000');
    transaction(() => {
      db.exec(`CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        agent_profile_reference TEXT NOT NULL,
        name TEXT,
        session_options TEXT,
        metadata TEXT,
        created_at INTEGER,
        last_activity INTEGER
      )`);
      db.exec(`CREATE TABLE IF NOT EXISTS transcripts (
        session_id TEXT PRIMARY KEY REFERENCES sessions (session_id) ON DELETE CASCADE,
        is_buffer INTEGER NOT NULL DEFAULT 0,
        raw_transcript
      )`);
      db.exec(`CREATE TABLE IF NOT EXISTS workspace_files (
        session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        content,
        content_is_buffer INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (session_id, path)
      )`);
      db.exec(`CREATE TABLE IF NOT EXISTS agent_profiles (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT,
        profile TEXT NOT NULL,
        updated_at INTEGER NOT NULL
      )`);
      for (const p of profiles) saveAgentProfile(p);
    });
  } catch (err) {
    db.close();
    throw err;
  }

  function saveAgentProfile(profile) {
    if (!profile || typeof profile.id !== 'string' || typeof profile.name !== 'string') {
      throw new TypeError('an agent profile needs a string id and name');
    }
    db.run(
      `INSERT INTO agent_profiles (id, name, description, profile, updated_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
         profile = excluded.profile, updated_at = excluded.updated_at`,
      [profile.id, profile.name, profile.description ?? null, JSON.stringify(profile), Date.now()],
    );
  }

  function mustExist(sessionId, method) {
    if (!db.get('SELECT 1 AS x FROM sessions WHERE session_id = ?', [sessionId])) {
      throw new Error(`${method}: session ${sessionId} not found`);
    }
  }

  const adapter = {
    async listAllSessions() {
      return db
        .all(
          `SELECT session_id, type, agent_profile_reference, name, session_options, metadata, created_at, last_activity
           FROM sessions ORDER BY seq`,
        )
        .map(toListData);
    },

    async loadSession(sessionId) {
      const row = db.get(
        `SELECT s.*, t.raw_transcript, t.is_buffer FROM sessions s
         LEFT JOIN transcripts t ON t.session_id = s.session_id WHERE s.session_id = ?`,
        [sessionId],
      );
      if (!row) return null;
      const files = db.all(
        'SELECT path, content, content_is_buffer FROM workspace_files WHERE session_id = ? ORDER BY path',
        [sessionId],
      );
      const session = toListData(row);
      const raw = decode(row.raw_transcript, row.is_buffer);
      if (raw !== undefined) session.rawTranscript = raw;
      session.workspaceFiles = files.map((f) => ({ path: f.path, content: decode(f.content, f.content_is_buffer) }));
      return session;
    },

    async createSessionRecord(session) {
      transaction(() => {
        const { next } = db.get('SELECT coalesce(max(seq), 0) + 1 AS next FROM sessions');
        db.run(
          `INSERT INTO sessions (session_id, seq, type, agent_profile_reference, name, session_options, metadata, created_at, last_activity)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          [
            session.sessionId,
            next,
            session.type,
            session.agentProfileReference,
            session.name ?? null,
            json(session.sessionOptions),
            json(session.metadata),
            session.createdAt ?? null,
            session.lastActivity ?? null,
          ],
        );
      });
    },

    /** Only the fields present in `updates` change (a field set to null is cleared; undefined is
     *  ignored, as it would be after JSON). sessionOptions and metadata are replaced, not merged. */
    async updateSessionRecord(sessionId, updates) {
      const sets = [];
      const values = [];
      for (const [key, column, encodeValue] of UPDATABLE) {
        if (!(key in updates) || updates[key] === undefined) continue;
        values.push(encodeValue(updates[key]));
        sets.push(`${column} = ?`);
      }
      if (sets.length === 0) return mustExist(sessionId, 'updateSessionRecord');
      const r = db.run(`UPDATE sessions SET ${sets.join(', ')} WHERE session_id = ?`, [...values, sessionId]);
      if (r.changes === 0) throw new Error(`updateSessionRecord: session ${sessionId} not found`);
    },

    async saveTranscript(sessionId, rawTranscript) {
      const [value, isBuffer] = encode(rawTranscript);
      transaction(() => {
        mustExist(sessionId, 'saveTranscript');
        db.run(
          `INSERT INTO transcripts (session_id, is_buffer, raw_transcript) VALUES (?, ?, ?)
           ON CONFLICT (session_id) DO UPDATE SET is_buffer = excluded.is_buffer, raw_transcript = excluded.raw_transcript`,
          [sessionId, isBuffer, value],
        );
      });
    },

    async saveWorkspaceFile(sessionId, file) {
      const [value, isBuffer] = encode(file.content);
      transaction(() => {
        mustExist(sessionId, 'saveWorkspaceFile');
        db.run(
          `INSERT INTO workspace_files (session_id, path, content, content_is_buffer, updated_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (session_id, path) DO UPDATE SET content = excluded.content,
             content_is_buffer = excluded.content_is_buffer, updated_at = excluded.updated_at`,
          [sessionId, file.path, value, isBuffer, Date.now()],
        );
      });
    },

    async deleteSessionFile(sessionId, path) {
      db.run('DELETE FROM workspace_files WHERE session_id = ? AND path = ?', [sessionId, path]);
    },

    async listAgentProfiles() {
      return db
        .all('SELECT id, name, description FROM agent_profiles ORDER BY id')
        .map(({ id, name, description }) => (description == null ? { id, name } : { id, name, description }));
    },

    async loadAgentProfile(agentProfileId) {
      const row = db.get('SELECT profile FROM agent_profiles WHERE id = ?', [agentProfileId]);
      return row ? JSON.parse(row.profile) : null;
    },

    // Not part of PersistenceAdapter: seeding and housekeeping for your app.
    async saveAgentProfile(profile) {
      saveAgentProfile(profile);
    },
    /** Removes a session, its transcript and its files (ON DELETE CASCADE). */
    async deleteSession(sessionId) {
      db.run('DELETE FROM sessions WHERE session_id = ?', [sessionId]);
    },
    async close() {
      if (db.isOpen) db.close();
    },
  };
  return adapter;
}


/** [value, isBuffer]: a string as TEXT, unless it holds a NUL character (which SQLite's text
 *  binding would cut off): then its UTF-8 bytes as a BLOB; a Buffer as a BLOB. */
function encode(value) {
  if (value == null) return [null, 0];
  if (typeof value === 'string') return value.includes('\u0000') ? [Buffer.from(value, 'utf8'), 0] : [value, 0];
  if (value instanceof Uint8Array) return [value, 1];
  throw new TypeError(`expected a string or a Buffer, got ${typeof value}`);
}

function decode(value, isBuffer) {
  if (value == null) return undefined;
  if (typeof value === 'string') return value;
  const bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return isBuffer ? bytes : bytes.toString('utf8');
}

function toListData(row) {
  const out = { sessionId: row.session_id, type: row.type, agentProfileReference: row.agent_profile_reference };
  if (row.name != null) out.name = row.name;
  if (row.session_options != null) out.sessionOptions = JSON.parse(row.session_options);
  if (row.metadata != null) out.metadata = JSON.parse(row.metadata);
  if (row.created_at != null) out.createdAt = Number(row.created_at);
  if (row.last_activity != null) out.lastActivity = Number(row.last_activity);
  return out;
}
