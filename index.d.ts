/// <reference types="node" />
// Public API of agent-runtime-native: a drop-in for @hhopkins/agent-runtime.
import type { EventEmitter } from 'node:events';
import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type {
  AgentProfile,
  AgentProfileListData,
  ConversationBlock,
  CreateSessionArgs,
  PersistedSessionListData,
  RuntimeConfig,
  RuntimeSessionData,
  SessionListItem,
  SessionRuntimeState,
  AgentArchitectureSessionOptions,
} from './types';

export * from './types';

/** The runtime's event bus: a Node EventEmitter carrying the reference's domain events. */
export declare class EventBus extends EventEmitter {}

/** One session (the reference's AgentSession). */
export declare class AgentSession {
  readonly sessionId: string;
  /** Runs one agent turn; resolves when the run's output has ended. */
  sendMessage(message: string): Promise<void>;
  getState(): RuntimeSessionData;
  getRuntimeState(): SessionRuntimeState;
  getPersistedListData(): PersistedSessionListData;
  updateSessionOptions(options: AgentArchitectureSessionOptions): Promise<void>;
  syncSessionStateToStorage(): Promise<void>;
  destroy(): Promise<void>;
}

/** Loaded sessions; obtained from `runtime.sessionManager` (not constructed directly). */
export declare class SessionManager {
  private constructor();
  initialize(): Promise<void>;
  createSession(args: CreateSessionArgs): Promise<AgentSession>;
  loadSession(sessionId: string): Promise<AgentSession>;
  getSession(sessionId: string): AgentSession | undefined;
  isSessionLoaded(sessionId: string): boolean;
  unloadSession(sessionId: string): Promise<void>;
  getAllSessions(): Promise<SessionListItem[]>;
  getLoadedSessions(): AgentSession[];
  getLoadedSessionIds(): string[];
  getLoadedSessionCount(): number;
  isHealthy(): boolean;
  shutdown(): Promise<void>;
}

/** A fetch-style REST handler. `fetch` is bound: `serve({ fetch: app.fetch })` works. */
export interface RestServer {
  fetch: (request: Request) => Promise<Response>;
}

export interface RestServerOptions {
  apiKey: string;
}

export interface WebSocketServer {
  /** Connected Socket.IO clients. */
  readonly clientsCount: number;
  /** Rooms with at least one client, e.g. `session:<id>`. */
  rooms(): Promise<string[]>;
  /** Disconnects every client and detaches from the HTTP server. */
  close(callback?: (err?: Error) => void): void;
}

export interface WebSocketServerOptions {
  /** Default "/socket.io". */
  path?: string;
  /** Origins allowed for long-polling from browsers (default: the reference's localhost list). */
  cors?: { origin?: string | string[] | true };
  /** Recommended: require clients to connect with `auth: { token: apiKey }`. Off by default. */
  apiKey?: string;
  /** Largest long-polling body in bytes (default 1e6). */
  maxHttpBufferSize?: number;
}

export interface NativeListener {
  readonly port: number;
  readonly host: string;
  close(): void;
}

export interface AgentRuntime {
  sessionManager: SessionManager;
  eventBus: EventBus;
  start(): Promise<void>;
  shutdown(): Promise<void>;
  isHealthy(): boolean;
  createRestServer(options: RestServerOptions): RestServer;
  createWebSocketServer(httpServer: HttpServer | HttpsServer, options?: WebSocketServerOptions): WebSocketServer;
  /** REST and Socket.IO served natively by Rust on its own port (no JS in the data path). */
  listen(options: { port?: number; host?: string; apiKey: string; socketApiKey?: string }): Promise<NativeListener>;
}

export declare function createAgentRuntime(config: RuntimeConfig): Promise<AgentRuntime>;

/** Standalone form of `runtime.createRestServer`, as the reference exports it. */
export declare function createRestServer(options: {
  sessionManager: SessionManager;
  eventBus: EventBus;
  config: RestServerOptions;
}): RestServer;

export declare function errorResponse(message: string, code?: string, details?: unknown): { error: string; code?: string };

export type { AgentProfile, AgentProfileListData, ConversationBlock };
