import type { AgentProfile, PersistenceAdapter } from '../../types.js';

/** The part of a `pg` Pool the adapter uses (any `new pg.Pool(...)` fits). */
export interface PgPoolLike {
  connect(): Promise<{ query(text: string, values?: unknown[]): Promise<{ rows: any[]; rowCount: number | null }>; release(err?: unknown): void }>;
  query(text: string, values?: unknown[]): Promise<{ rows: any[]; rowCount: number | null }>;
  end(): Promise<void>;
  on(event: string, listener: (...args: any[]) => void): unknown;
}

export interface PostgresAdapterOptions {
  /** The adapter makes and owns a pool (close() ends it). */
  connectionString?: string;
  /** Or your pool (close() leaves it open; its 'error' events are yours to handle). */
  pool?: PgPoolLike;
  /** Where the tables live (default "agent_runtime"); a plain SQL identifier. */
  schema?: string;
  /** Upserted at start. */
  profiles?: AgentProfile[];
  /** Errors of idle connections of the adapter's own pool (default: console.error). */
  onError?: (err: Error) => void;
}

export interface PostgresAdapter extends PersistenceAdapter {
  saveAgentProfile(profile: AgentProfile): Promise<void>;
  /** Removes a session and its workspace files. */
  deleteSession(sessionId: string): Promise<void>;
  readonly pool: PgPoolLike;
  close(): Promise<void>;
}

export function createPostgresAdapter(options: PostgresAdapterOptions): Promise<PostgresAdapter>;
