import type { AgentProfile, PersistenceAdapter } from '../../types.js';

export interface SqliteAdapterOptions {
  /** The database file (created if missing), or ':memory:'. */
  filename: string;
  /** Upserted at start. */
  profiles?: AgentProfile[];
}

export interface SqliteAdapter extends PersistenceAdapter {
  saveAgentProfile(profile: AgentProfile): Promise<void>;
  /** Removes a session and its workspace files. */
  deleteSession(sessionId: string): Promise<void>;
  close(): Promise<void>;
}

export function createSqliteAdapter(options: SqliteAdapterOptions): Promise<SqliteAdapter>;
