// Browser-safe types of agent-runtime-native (the reference's "./types" subpath).
// Shapes and names follow @hhopkins/agent-runtime 0.1.1.

export type AGENT_ARCHITECTURE_TYPE = 'claude-agent-sdk' | 'opencode';

export interface WorkspaceFile {
  /** Path relative to the workspace root. */
  path: string;
  content: string | undefined;
}

/** Who decides about tool calls (extra session options of this package). */
export interface PermissionSessionOptions {
  /** `"bypass"` (default: nothing asks), `"ask"` (every call the rules do not settle waits for
   *  a person), `"acceptEdits"` (file edits run, the rest asks). */
  permissionMode?: 'bypass' | 'ask' | 'acceptEdits';
  /** Tool-name patterns: `"Read"`, `"Bash(git *)"`, `"mcp__github__*"`; deny wins. */
  permissions?: { allow?: string[]; deny?: string[] };
  /** An unanswered request is denied after this long (default 600000). */
  permissionTimeoutMs?: number;
  /** This session's spending limits (over the runtime's `budget`). */
  budget?: Budget;
}
export interface ClaudeSDKSessionOptions extends PermissionSessionOptions {
  model?: string;
}
export interface OpenCodeSessionOptions extends PermissionSessionOptions {
  model?: string;
}
export type AgentArchitectureSessionOptions = ClaudeSDKSessionOptions | OpenCodeSessionOptions;

export interface PersistedSessionListData {
  sessionId: string;
  type: AGENT_ARCHITECTURE_TYPE;
  sessionOptions?: AgentArchitectureSessionOptions;
  agentProfileReference: string;
  name?: string;
  /** ms since epoch */
  lastActivity?: number;
  /** ms since epoch */
  createdAt?: number;
  metadata?: Record<string, unknown>;
}

export interface PersistedSessionData extends PersistedSessionListData {
  /** Claude: the combined JSON `{ main, subagents }`; OpenCode: its export JSON. */
  rawTranscript?: string;
  subagents?: { id: string; rawTranscript?: string }[];
  workspaceFiles: WorkspaceFile[];
}

export type SandboxStatus = 'starting' | 'ready' | 'unhealthy' | 'terminated';

export interface SessionRuntimeState {
  isLoaded: boolean;
  sandbox: null | {
    sandboxId?: string;
    status: SandboxStatus;
    statusMessage?: string;
    restartCount: number;
    lastHealthCheck: number;
  };
  /** In a session's state: messages waiting for their turn. */
  queue?: QueuedMessage[];
  /** In a session's state: tool calls and questions waiting for a person. */
  pendingRequests?: PendingRequest[];
  /** In a session's state, after its first model call: tokens and cost so far. */
  usage?: SessionUsage;
  /** With `cluster`: the node that holds the session (in its state and in the list). */
  ownerNodeId?: string;
}

export interface SessionListItem extends PersistedSessionListData {
  runtime: SessionRuntimeState;
}

export interface RuntimeSessionData extends SessionListItem {
  blocks: ConversationBlock[];
  workspaceFiles: WorkspaceFile[];
  subagents: { id: string; blocks: ConversationBlock[] }[];
  /** The newest event of the session (null before its first): read or stream from here. */
  lastEventId?: string | null;
}

/** Every session event's payload also carries its place in the session's event log. */
export interface Sequenced {
  /** Opaque; pass it back as `since`. */
  eventId: string;
  /** 1, 2, 3, … per session. */
  seq: number;
}

/** `GET /api/sessions/:id/events?since=&limit=` */
export interface SessionEventsResponse {
  events: { eventId: string; seq: number; event: string; payload: Record<string, unknown> }[];
  lastEventId: string | null;
  /** `since` is not in the log (too old, unknown, or from before a restart): refetch the state. */
  reset: boolean;
}

export interface CreateSessionArgs {
  agentProfileRef: string;
  architecture: AGENT_ARCHITECTURE_TYPE;
  command?: string;
  defaultWorkspaceFiles?: WorkspaceFile[];
  sessionOptions?: AgentArchitectureSessionOptions;
}

export interface AgentProfileListData {
  id: string;
  name: string;
  description?: string;
}

export interface ClaudeSkill {
  name: string;
  description: string;
  skillMd: string;
  supportingFiles: { relativePath: string; content: string }[];
  npmDependencies?: string[];
  pipDependencies?: string[];
}

export interface ClaudeSubagent {
  name: string;
  description: string;
  prompt: string;
  model?: string;
  tools?: string[];
}

export interface LocalMcpServer {
  name: string;
  description: string;
  localProjectPath: string;
  startCommand: string;
  installCommand: string;
}

export type McpServerConfig = Record<string, unknown>;

export interface AgentProfile extends AgentProfileListData {
  systemPrompt?: string;
  agentMDFile?: string;
  skills?: ClaudeSkill[];
  subagents?: ClaudeSubagent[];
  commands?: { name: string; prompt: string }[];
  tools?: string[];
  bundledMCPs?: LocalMcpServer[];
  externalMCPs?: McpServerConfig[];
  npmDependencies?: string[];
  pipDependencies?: string[];
  environmentVariables?: Record<string, string>;
  defaultWorkspaceFiles?: WorkspaceFile[];
}

/** A value or a promise of it: adapter methods may be sync or async. */
export type Awaitable<T> = T | Promise<T>;

export interface PersistenceAdapter {
  listAllSessions(): Awaitable<PersistedSessionListData[]>;
  loadSession(sessionId: string): Awaitable<PersistedSessionData | null>;
  createSessionRecord(session: PersistedSessionListData): Awaitable<void>;
  updateSessionRecord(sessionId: string, updates: Partial<PersistedSessionListData>): Awaitable<void>;
  saveTranscript(sessionId: string, rawTranscript: string): Awaitable<void>;
  saveWorkspaceFile(sessionId: string, file: WorkspaceFile): Awaitable<void>;
  deleteSessionFile(sessionId: string, path: string): Awaitable<void>;
  listAgentProfiles(): Awaitable<AgentProfileListData[]>;
  loadAgentProfile(agentProfileId: string): Awaitable<AgentProfile | null>;
}

export interface RuntimeConfig {
  persistence: PersistenceAdapter;
  /** Modal credentials; sessions run on Modal when both tokens are non-empty strings. */
  modal?: { tokenId?: string; tokenSecret?: string; appName?: string };
  /** Sandbox provider and local-sandbox settings. */
  sandbox?: {
    /** Default "modal" with Modal tokens, else "local" (with NODE_ENV=production and no tokens,
     *  createAgentRuntime rejects unless this is "local"). */
    provider?: 'local' | 'modal';
    /** Local sandboxes' directory (default `$TMPDIR/agent-runtime-native`, created 0700). */
    root?: string;
    /** Extra environment for every sandbox process; reserved names (PATH, HOME, LD_*, ...) are ignored. */
    env?: Record<string, string>;
    /** Local provider: "none" = loopback only (cuts off the model API too). Default "host". */
    network?: 'host' | 'none';
    /** Local provider: allow agents without bubblewrap when NODE_ENV=production. */
    allowUnisolated?: boolean;
  };
  /** Idle time before a session's sandbox is stopped (default 15 min). */
  idleTimeoutMs?: number;
  /** Interval of background syncs to persistence (default 60 s, the reference's effective value). */
  syncIntervalMs?: number;
  /** Accepted for compatibility; the WebSocket server attaches to the HTTP server you pass. */
  websocketPort?: number;
  logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  /** Bound on each persistence adapter call (default 30 s). */
  persistenceTimeoutMs?: number;
  /** Largest accepted REST request body in bytes (default 10 MiB). */
  maxBodyBytes?: number;
  /** How often a sandbox is checked for life (default 30 s). */
  healthCheckIntervalMs?: number;
  /** Larger (or binary) workspace files are not sent to persistence (default 10 MiB). */
  maxWorkspaceFileBytes?: number;
  /** A turn running longer is stopped with an error (default 30 min). */
  turnTimeoutMs?: number;
  /** What the per-session event log keeps for clients that reconnect (defaults 10000 events,
   *  8 MiB per loaded session; the older ones are dropped first). */
  eventLog?: false | { maxEvents?: number; maxBytes?: number };
  /** Sandboxes reach the model API through a proxy on this host, with a per-session token as
   *  their key (the real `ANTHROPIC_API_KEY` never enters them); it counts usage and enforces
   *  budgets. On by default when sandboxes would get an API key; `false`: the key goes in, as the
   *  reference does. Modal sandboxes need `publicUrl` (where they reach the proxy) to use it. */
  modelProxy?: false | { publicUrl?: string; host?: string; port?: number; timeoutMs?: number };
  /** USD per million tokens by model id or id prefix, over the built-in table of Claude models. */
  pricing?: Record<string, { input: number; output: number; cacheRead: number; cacheWrite: number }>;
  /** Every session's budget unless its `sessionOptions.budget` sets a limit. */
  budget?: Budget;
  /** After an interrupt, how long the agent has to stop before its runner is killed (default 5000). */
  interruptGraceMs?: number;
  /** A session's agent process exits after this long without a turn (default 300000); the next
   *  message starts it again. */
  runnerIdleMs?: number;
  /** How long shutdown() keeps trying to store sessions before stopping them (default 30 s). */
  shutdownTimeoutMs?: number;
  /** Sessions in memory at once; the longest-idle one is unloaded to make room (default 10000). */
  maxLoadedSessions?: number;
  /** Sandboxes running at once (default 100); beyond it messages get 503. */
  maxActiveSandboxes?: number;
  /** Messages waiting per session (default 100); beyond it messages get 429. */
  maxQueuedMessages?: number;
  /** Serve Prometheus metrics at `GET /metrics` (REST handler and `listen()`): `true` behind
   *  the API key, `{ public: true }` without it. Off by default (404). */
  metrics?: boolean | { public?: boolean };
  /** Several servers, one system: every process given the same Redis shares the sessions. Each
   *  loaded session is held by one node (a lease in Redis, renewed every `leaseTtlMs / 3`);
   *  any node answers any request (forwarded to the holder), events reach clients on every node
   *  and replay from the shared log. `AGENT_RUNTIME_REDIS_URL` sets `redisUrl` too. Without it:
   *  one process, no Redis. See docs/DEPLOYMENT.md. */
  cluster?: {
    /** `redis://[user:password@]host:port[/db]` (or `rediss://`). `start()` rejects when it
     *  cannot be reached. */
    redisUrl?: string;
    /** Unique per running process (letters, digits, `-_.`); default `<HOSTNAME>-<random>`. */
    nodeId?: string;
    /** How long a silent node keeps its sessions before another may take them (default 15000,
     *  1000 to 600000). */
    leaseTtlMs?: number;
  };
  /** Sessions kept started ahead of `createSession` (sandbox, runner and agent CLI running), so
   *  the first turn is as quick as a later one. A `createSession` with the same architecture,
   *  profile and `sessionOptions` (none: none) and no `defaultWorkspaceFiles` takes one, and
   *  another starts in its place. Waiting sessions are not stored and emit nothing until taken;
   *  each holds a sandbox (and counts toward `maxActiveSandboxes`). Off by default. */
  warmPool?: Array<{ architecture: AGENT_ARCHITECTURE_TYPE; agentProfileRef: string; sessionOptions?: AgentArchitectureSessionOptions; /** default 1, at most 16 */ size?: number }>;
  /** Absolute host folders that a profile's `bundledMCPs[].localProjectPath` may name (default
   *  none: a bundled MCP with a localProjectPath fails the session's start with an error that
   *  names this option). Links are never followed while copying. */
  bundledMcpRoots?: string[];
}

// ---- Blocks ----
export interface TextContent {
  type: 'text';
  text: string;
}
export interface ImageContent {
  type: 'image';
  source: { type: 'base64' | 'url'; data: string; mediaType?: string };
}
export type ContentPart = TextContent | ImageContent;
export type MessageContent = string | ContentPart[];
export type ToolExecutionStatus = 'pending' | 'running' | 'success' | 'error';
export interface ToolIO {
  input: Record<string, unknown>;
  output?: unknown;
}
export interface BaseBlock {
  id: string;
  /** ISO-8601 */
  timestamp: string;
}
export interface UserMessageBlock extends BaseBlock {
  type: 'user_message';
  content: MessageContent;
}
export interface AssistantTextBlock extends BaseBlock {
  type: 'assistant_text';
  content: string;
  model?: string;
}
export interface ToolUseBlock extends BaseBlock {
  type: 'tool_use';
  toolName: string;
  toolUseId: string;
  input: Record<string, unknown>;
  status: ToolExecutionStatus;
  displayName?: string;
  description?: string;
}
export interface ToolResultBlock extends BaseBlock {
  type: 'tool_result';
  toolUseId: string;
  output: unknown;
  isError: boolean;
  durationMs?: number;
  renderOutputAsMarkdown?: boolean;
}
export interface ThinkingBlock extends BaseBlock {
  type: 'thinking';
  content: string;
  summary?: string;
}
export interface SystemBlock extends BaseBlock {
  type: 'system';
  subtype: 'session_start' | 'session_end' | 'error' | 'status' | 'hook_response' | 'auth_status';
  message: string;
  metadata?: Record<string, unknown>;
}
export type SubagentStatus = 'pending' | 'running' | 'success' | 'error';
export interface SubagentBlock extends BaseBlock {
  type: 'subagent';
  subagentId: string;
  name?: string;
  input: string;
  status: SubagentStatus;
  output?: string;
  durationMs?: number;
  toolUseId?: string;
}
export interface ErrorBlock extends BaseBlock {
  type: 'error';
  message: string;
  code?: string;
}
export type ConversationBlock =
  | UserMessageBlock
  | AssistantTextBlock
  | ToolUseBlock
  | ToolResultBlock
  | ThinkingBlock
  | SystemBlock
  | SubagentBlock
  | ErrorBlock;

export declare function isUserMessageBlock(block: ConversationBlock): block is UserMessageBlock;
export declare function isAssistantTextBlock(block: ConversationBlock): block is AssistantTextBlock;
export declare function isToolUseBlock(block: ConversationBlock): block is ToolUseBlock;
export declare function isToolResultBlock(block: ConversationBlock): block is ToolResultBlock;
export declare function isThinkingBlock(block: ConversationBlock): block is ThinkingBlock;
export declare function isSystemBlock(block: ConversationBlock): block is SystemBlock;
export declare function isSubagentBlock(block: ConversationBlock): block is SubagentBlock;
export declare function isErrorBlock(block: ConversationBlock): block is ErrorBlock;

// ---- Socket.IO events ----
export interface SessionMetadata {
  usage?: {
    inputTokens: number;
    outputTokens: number;
    cacheReadTokens?: number;
    cacheWriteTokens?: number;
    thinkingTokens?: number;
    totalTokens: number;
  };
  costUSD?: number;
  model?: string;
  [key: string]: unknown;
}

export interface ServerToClientEvents {
  'sessions:list': (sessions: SessionListItem[]) => void;
  'session:status': (data: { sessionId: string; runtime: SessionRuntimeState }) => void;
  'session:block:start': (data: { sessionId: string; conversationId: string; block: ConversationBlock }) => void;
  'session:block:delta': (data: { sessionId: string; conversationId: string; blockId: string; delta: string }) => void;
  'session:block:update': (data: {
    sessionId: string;
    conversationId: string;
    blockId: string;
    updates: Partial<ConversationBlock>;
  }) => void;
  'session:block:complete': (data: {
    sessionId: string;
    conversationId: string;
    blockId: string;
    block: ConversationBlock;
  }) => void;
  'session:metadata:update': (data: { sessionId: string; conversationId: string; metadata: SessionMetadata }) => void;
  'session:options:update': (data: { sessionId: string; options: AgentArchitectureSessionOptions }) => void;
  'session:subagent:discovered': (data: { sessionId: string; subagent: { id: string; blocks: ConversationBlock[] } }) => void;
  'session:subagent:completed': (data: { sessionId: string; subagentId: string; status: 'completed' | 'failed' }) => void;
  'session:file:created': (data: { sessionId: string; file: WorkspaceFile }) => void;
  'session:file:modified': (data: { sessionId: string; file: WorkspaceFile }) => void;
  'session:file:deleted': (data: { sessionId: string; path: string }) => void;
  error: (error: { message: string; code?: string; sessionId?: string }) => void;
}

export interface ClientToServerEvents {
  'session:join': (sessionId: string, callback: (response: { success: boolean; error?: string }) => void) => void;
  'session:leave': (sessionId: string, callback: (response: { success: boolean }) => void) => void;
}

export interface InterServerEvents {}

export interface SocketData {
  sessionId?: string;
  joinedAt: number;
}

/** How a message meets a running turn. */
export type MessageMode = 'queue' | 'steer' | 'interrupt';

/** A message waiting for its turn (`runtime.queue`, `session:queue:changed`). */
export interface QueuedMessage {
  messageId: string;
  mode: MessageMode;
  /** The first 100 characters. */
  preview: string;
  enqueuedAt: string;
}

/** A tool call or question waiting for a person (`runtime.pendingRequests`). */
export interface PendingRequest {
  type: 'permission' | 'question';
  requestId: string;
  conversationId: string;
  toolName: string;
  toolUseId: string;
  input: Record<string, unknown>;
  /** Questions only: the tool's own `questions` array. */
  questions?: AskedQuestion[];
  requestedAt: string;
  expiresAt: string;
}

/** One question of Claude's AskUserQuestion tool. */
export interface AskedQuestion {
  question: string;
  header?: string;
  options: { label: string; description?: string }[];
  multiSelect?: boolean;
}

/** The answer to a tool call (REST body of `POST /api/sessions/:id/permissions/:requestId`). */
export interface PermissionAnswer {
  behavior: 'allow' | 'deny';
  /** Allow with this input instead. */
  updatedInput?: Record<string, unknown>;
  /** Told to the agent (a deny's reason). */
  message?: string;
  /** Add an allow/deny rule for this tool for the rest of the session. */
  remember?: boolean;
}

/** `session:permission:requested` */
export interface PermissionRequestedEvent extends Omit<PendingRequest, 'type' | 'questions'> {
  sessionId: string;
}
/** `session:question:requested` */
export interface QuestionRequestedEvent extends Omit<PendingRequest, 'type'> {
  sessionId: string;
  questions: AskedQuestion[];
}
/** `session:permission:resolved` / `session:question:resolved` */
export interface RequestResolvedEvent {
  sessionId: string;
  requestId: string;
  behavior: 'allow' | 'deny';
  resolvedBy: 'user' | 'timeout' | 'interrupt' | 'rule';
}
/** Limits on what a session may spend. A spent budget stops the running turn (`session:error`
 *  code `BUDGET_EXCEEDED`) and refuses new messages (402) until it is raised. */
export interface Budget {
  maxCostUsd?: number;
  maxTokens?: number;
  /** A turn running longer is stopped the interrupt way. */
  maxTurnMs?: number;
  /** Total lifetime of the session's sandboxes (`runtime.usage.sandboxSeconds`). */
  maxSandboxSeconds?: number;
}

export interface TokenCounts {
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
}

/** Tokens and cost of a group of model calls; `costUsd` is null when a call's model had no price. */
export interface UsageSum extends TokenCounts {
  costUsd: number | null;
  calls: number;
  unpriced?: true;
}

/** `runtime.usage` in `GET /api/sessions/:id`: the session's usage, kept across reloads. */
export interface SessionUsage extends UsageSum {
  /** Lifetime of the session's sandboxes so far, the running one included. */
  sandboxSeconds: number;
  byModel: Record<string, UsageSum>;
  /** `main`, or a subagent's id. */
  byConversation: Record<string, UsageSum>;
}

/** `session:usage`, after every model call. */
export interface UsageEvent {
  sessionId: string;
  call: TokenCounts & { model: string; conversationId: string; costUsd: number | null };
  turn: UsageSum;
  total: UsageSum;
  costUsd: number | null;
}

/** `session:queue:changed` */
export interface QueueChangedEvent {
  sessionId: string;
  queue: QueuedMessage[];
}
/** Response of `POST /api/sessions/:id/messages` (the reference's fields plus these). */
export interface SendMessageResponse {
  success: true;
  sessionId: string;
  messageId: string;
  /** It waits behind a running turn (or other messages). */
  queued: boolean;
  /** Turns ahead of it, the running one included; 0 when it started at once or was steered. */
  position: number;
  /** `mode: "steer"` only: handed to the running turn (false: no turn ran, or the agent cannot be steered, so it was queued). */
  steered?: boolean;
}
/** One entry of `GET /api/sessions/:id/files`. */
export interface WorkspaceFileInfo {
  /** Relative to the workspace, `/`-separated. */
  path: string;
  size: number;
  /** ISO 8601 from the running sandbox; null for stored files. */
  modifiedAt: string | null;
}
/** Response of `GET /api/sessions/:id/files`. */
export interface WorkspaceFileListResponse {
  files: WorkspaceFileInfo[];
}
/** Response of `PUT /api/sessions/:id/files/*path`. */
export interface WorkspaceFileWrittenResponse {
  success: true;
  sessionId: string;
  path: string;
  size: number;
  /** False when an existing file was replaced. */
  created: boolean;
}
/** Response of `DELETE /api/sessions/:id/files/*path`. */
export interface WorkspaceFileDeletedResponse {
  success: true;
  sessionId: string;
  path: string;
}
/** Response of `POST /api/sessions/:id/interrupt` and the `session:interrupt` ack. */
export interface InterruptResponse {
  success: true;
  interrupted: boolean;
}
