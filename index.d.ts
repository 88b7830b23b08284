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
  MessageMode,
  QueuedMessage,
  PendingRequest,
  PermissionAnswer,
} from './types';

export * from './types';

/** The runtime's event bus: a Node EventEmitter carrying the reference's domain events. */
export declare class EventBus extends EventEmitter {}

/** One session (the reference's AgentSession). */
export declare class AgentSession {
  readonly sessionId: string;
  /** Runs one agent turn; resolves when the run's output has ended. `mode` says what happens
   *  while a turn runs: `"queue"` (default) after it, `"steer"` into it, `"interrupt"` instead. */
  sendMessage(message: string, options?: { mode?: MessageMode }): Promise<void>;
  /** Stop the running turn (its end block says `stopReason: "interrupted"`); resolves to
   *  whether one was running. `clearQueue` also drops the waiting messages. */
  interrupt(options?: { clearQueue?: boolean }): Promise<boolean>;
  /** Messages waiting for their turn, in order. */
  getQueue(): QueuedMessage[];
  /** Remove a waiting message (rejects with code `NOT_FOUND` if it started or is unknown). */
  removeQueuedMessage(messageId: string): Promise<void>;
  /** Tool calls and questions waiting for a person. */
  getPendingRequests(): PendingRequest[];
  /** Answer a tool call. The first answer wins; a later one rejects with `ALREADY_RESOLVED`. */
  respondToPermission(requestId: string, answer: PermissionAnswer): Promise<void>;
  /** Answer a question: each question's text → the chosen label(s) or free text. */
  answerQuestion(requestId: string, answers: Record<string, string | string[]>): Promise<void>;
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
  /** Answers every route. `GET /api/sessions/:id/events/stream` answers with a streaming body
   *  (Server-Sent Events): pipe it (`pipeline(Readable.fromWeb(response.body), res)`) rather than
   *  awaiting `response.text()`; cancelling the body, or aborting `request.signal`, ends it. */
  fetch: (request: Request) => Promise<Response>;
  /** Event streams open now. */
  openStreams(): number;
}

export interface RestServerOptions {
  apiKey: string;
  /** Bytes of events that may wait for one `GET /api/sessions/:id/events/stream` client before
   *  it is ended as too slow (an `error` event with `code: "slow_consumer"`; it reconnects with
   *  `Last-Event-ID` and loses nothing the log still holds). Default 16 MiB. */
  maxBufferedBytes?: number;
}

export interface WebSocketServer {
  /** Connected Socket.IO clients. */
  readonly clientsCount: number;
  /** Rooms with at least one client, e.g. `session:<id>`. */
  rooms(): Promise<string[]>;
  /** Disconnects every client and detaches from the HTTP server. */
  close(callback?: (err?: Error) => void): void;
}

/** What an authorization callback knows about a Socket.IO client: its first HTTP request and
 *  the `auth` payload it connected with. */
export interface SocketHandshake {
  /** Request headers, lower-case names (repeated headers joined with ", "). */
  headers: Record<string, string>;
  /** Query parameters of the first request (`EIO`, `transport`, and the client's own). */
  query: Record<string, string>;
  /** The `auth` option of socket.io-client (`io(url, { auth })`), or null. */
  auth: unknown;
  /** Remote IP address, when known. */
  address: string | null;
  /** Path and query of the first request. */
  url: string;
}

/** Access control of the Socket.IO server. Without any of these the server is open, as the
 *  reference's is: any client can watch any session and receives the list of all sessions. */
export interface SocketAccessOptions {
  /** Run on every `session:join`, before the session is loaded. `false`, a throw, a rejection, a
   *  non-boolean or no answer within `authorizeTimeoutMs` deny: the ack is
   *  `{ success: false, error }` and the client gets none of that session's events. */
  authorize?: (handshake: SocketHandshake, sessionId: string) => boolean | Promise<boolean>;
  /** Run once per connection: may this client receive the global `sessions:list` broadcast?
   *  When `authorize` is given and this is not, nobody receives it (it lists every tenant's
   *  sessions). */
  authorizeList?: (handshake: SocketHandshake) => boolean | Promise<boolean>;
  /** Default 10000. */
  authorizeTimeoutMs?: number;
  /** Browser origins (`scheme://host[:port]`) allowed to connect, on both transports; a request
   *  from another origin gets 403 (cross-site WebSocket hijacking). Requests without an Origin
   *  header (not from a browser page) pass. Also the long-polling CORS list. */
  allowedOrigins?: string[];
  /** Bytes of events that may wait for one client before it is disconnected as too slow
   *  (default 16 MiB): it first gets an `error` event `{ message, code: "slow_consumer",
   *  reason: "slow_consumer" }`, and resumes by joining with `{ sessionId, since }`. With
   *  `listen`, also the bound of each event stream (SSE) client. */
  maxBufferedBytes?: number;
}

export interface WebSocketServerOptions extends SocketAccessOptions {
  /** Default "/socket.io". */
  path?: string;
  /** Origins whose long-polling requests get CORS headers (default: the reference's localhost
   *  list; `allowedOrigins` replaces it). `"*"`/`true` answer `*`, never with credentials. */
  cors?: { origin?: string | string[] | true };
  /** Recommended: require clients to connect with `auth: { token: apiKey }`. Off by default. */
  apiKey?: string;
  /** Largest long-polling body in bytes (default 1e6). */
  maxHttpBufferSize?: number;
}

export interface ListenOptions extends SocketAccessOptions {
  /** Default 0 (any free port). */
  port?: number;
  /** Default "127.0.0.1" (loopback only); "0.0.0.0" to listen on every interface. */
  host?: string;
  /** REST key; Socket.IO clients must present it too (`auth: { token }`) unless `socketApiKey`
   *  says otherwise. */
  apiKey: string;
  /** Another key for Socket.IO, or `false` for the reference's open Socket.IO server. */
  socketApiKey?: string | false;
  /** Serve the web console too (`true`: at `/console/`), from Rust like everything else here. */
  console?: boolean | { basePath?: string };
}

export interface NativeListener {
  readonly port: number;
  readonly host: string;
  close(): void;
}

export interface ConsoleOptions {
  /** Where the console is served (default "/console"); the page is at `<basePath>/`. */
  basePath?: string;
}

/** The web console as a fetch-style handler: `<basePath>/` (index.html), `app.js`, `style.css`
 *  and `socket.io.min.js` (socket.io-client's browser build); 404 for every other path, 308 from
 *  `<basePath>` to `<basePath>/`. The page talks to the REST API and Socket.IO of its own origin
 *  (or the API URL entered in it) with the API key entered in it. */
export interface WebConsole {
  fetch: (request: Request) => Promise<Response>;
  /** The normalised base path (no trailing slash). */
  readonly basePath: string;
}

export interface AgentRuntime {
  sessionManager: SessionManager;
  eventBus: EventBus;
  start(): Promise<void>;
  shutdown(): Promise<void>;
  isHealthy(): boolean;
  /** Prometheus metrics (OpenMetrics text), also served at `GET /metrics` with `metrics: true`. */
  metrics(): string;
  createRestServer(options: RestServerOptions): RestServer;
  createWebSocketServer(httpServer: HttpServer | HttpsServer, options?: WebSocketServerOptions): WebSocketServer;
  /** REST and Socket.IO served natively by Rust on its own port (no JS in the data path). */
  listen(options: ListenOptions): Promise<NativeListener>;
  /** The optional web console: route `basePath` (default "/console") to its `fetch`. */
  createConsole(options?: ConsoleOptions): WebConsole;
}

export declare function createAgentRuntime(config: RuntimeConfig): Promise<AgentRuntime>;

/** Standalone form of `runtime.createRestServer`, as the reference exports it. */
export declare function createRestServer(options: {
  sessionManager: SessionManager;
  eventBus: EventBus;
  config: RestServerOptions;
}): RestServer;

/** Standalone form of `runtime.createConsole` (the console needs no runtime object). */
export declare function createConsole(options?: ConsoleOptions): WebConsole;

export declare function errorResponse(message: string, code?: string, details?: unknown): { error: string; code?: string };

export type { AgentProfile, AgentProfileListData, ConversationBlock };
