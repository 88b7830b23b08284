// `npm run demo`: the main job. A seed-style server (REST on :3001 through createRestServer().fetch)
// on local sandboxes with an in-memory JavaScript PersistenceAdapter, then one visible
// conversation with the real Claude Agent SDK. Without ANTHROPIC_API_KEY the bundled fake
// Messages API answers (no network, no key); with a key the real API does.
// The server keeps running until Ctrl-C; DEMO_ONCE=1 stops after the conversation.
import { createServer } from 'node:http';
import { startFakeAnthropic } from '../fake-model/fake-anthropic.mjs';

let PORT = Number(process.env.PORT ?? 3001);
// Loopback only: the demo runs agents on this machine with a well-known key. HOST=0.0.0.0 to expose it.
const HOST = process.env.HOST ?? '127.0.0.1';
const API_KEY = process.env.DEMO_API_KEY ?? 'demo-key';
const PROMPT = process.env.DEMO_PROMPT ?? 'Think it over, then write a haiku to haiku.txt';
const dim = (s) => `\x1b[2m${s}\x1b[0m`;
const say = (s) => console.log(`\x1b[36m[demo]\x1b[0m ${s}`);

let fake;
if (!process.env.ANTHROPIC_API_KEY) {
  fake = await startFakeAnthropic();
  process.env.ANTHROPIC_BASE_URL = fake.url;
  process.env.ANTHROPIC_API_KEY = 'fake-key';
  say(`no ANTHROPIC_API_KEY: the bundled fake Messages API answers at ${fake.url}`);
} else {
  say('using the real Anthropic API (ANTHROPIC_API_KEY is set)');
}
const { createAgentRuntime } = await import('../index.mjs');

// The simplest real adapter: everything in memory.
const sessions = new Map();
const persistence = {
  listAllSessions: async () => [...sessions.values()].map(({ rawTranscript, workspaceFiles, ...rec }) => rec),
  loadSession: async (id) => sessions.get(id) ?? null,
  createSessionRecord: async (rec) => void sessions.set(rec.sessionId, { ...rec, workspaceFiles: [] }),
  updateSessionRecord: async (id, updates) => void Object.assign(sessions.get(id), updates),
  saveTranscript: async (id, raw) => void (sessions.get(id).rawTranscript = raw),
  saveWorkspaceFile: async (id, file) => {
    const s = sessions.get(id);
    s.workspaceFiles = s.workspaceFiles.filter((f) => f.path !== file.path).concat([file]);
  },
  deleteSessionFile: async (id, path) => {
    const s = sessions.get(id);
    s.workspaceFiles = s.workspaceFiles.filter((f) => f.path !== path);
  },
  listAgentProfiles: async () => [{ id: 'default', name: 'Demo Agent' }],
  loadAgentProfile: async () => ({
    id: 'default',
    name: 'Demo Agent',
    systemPrompt: 'You are a helpful assistant.',
    tools: ['Read', 'Write', 'Edit', 'Bash'],
  }),
};

const runtime = await createAgentRuntime({ persistence, sandbox: { provider: 'local' }, logLevel: process.env.LOG_LEVEL ?? 'warn' });
await runtime.start();
const restApp = runtime.createRestServer({ apiKey: API_KEY });
const httpServer = createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const response = await restApp.fetch(
    new Request(`http://${req.headers.host}${req.url}`, {
      method: req.method,
      headers: req.headers,
      body: req.method !== 'GET' && req.method !== 'HEAD' ? Buffer.concat(chunks) : undefined,
    }),
  );
  res.statusCode = response.status;
  response.headers.forEach((value, key) => res.setHeader(key, value));
  res.end(Buffer.from(await response.arrayBuffer()));
});
const wsServer = runtime.createWebSocketServer(httpServer);
await new Promise((r) => httpServer.listen(PORT, HOST, r));
PORT = httpServer.address().port;
const BASE = `http://${HOST.includes(':') ? `[${HOST}]` : HOST}:${PORT}`;
say(`server on ${BASE} (API key "${API_KEY}")${HOST === '127.0.0.1' ? ', this machine only (HOST=0.0.0.0 to expose it)' : ''}`);

// Show what the runtime streams.
const bus = runtime.eventBus;
let streaming = false;
const endLine = () => streaming && (process.stdout.write('\n'), (streaming = false));
bus.on('session:status', ({ runtime: r }) => r.sandbox && say(`sandbox: ${r.sandbox.status} — ${r.sandbox.statusMessage ?? ''}`));
bus.on('session:block:start', ({ block }) => {
  if (block.type === 'assistant_text' || block.type === 'thinking') {
    endLine();
    process.stdout.write(block.type === 'thinking' ? dim('  (thinking) ') : '  agent: ');
    streaming = true;
  }
});
bus.on('session:block:delta', ({ delta }) => process.stdout.write(delta));
bus.on('session:block:complete', ({ block }) => {
  if (block.type === 'tool_use') {
    endLine();
    say(`tool call: ${block.toolName} ${JSON.stringify(block.input).slice(0, 120)}`);
  } else if (block.type === 'tool_result') {
    say(`tool result${block.isError ? ' (error)' : ''}: ${String(typeof block.output === 'string' ? block.output : JSON.stringify(block.output)).slice(0, 100)}`);
  } else if (block.type === 'system' && block.subtype === 'session_end') {
    endLine();
    say(block.message);
  }
});
bus.on('session:file:created', ({ file }) => say(`file created: ${file.path}\n${dim(file.content ?? '')}`));
bus.on('session:error', ({ error }) => (endLine(), say(`error: ${error.message}`)));

// Drive it over REST, as a browser app would.
const api = async (method, path, body) => {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  return res.json();
};
const created = await api('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
say(`session ${created.sessionId} created; sending: "${PROMPT}"`);
const turnDone = new Promise((resolve) => {
  bus.on('session:transcript:changed', ({ sessionId }) => sessionId === created.sessionId && resolve());
  bus.on('session:error', ({ sessionId }) => sessionId === created.sessionId && resolve());
});
await api('POST', `/api/sessions/${created.sessionId}/messages`, { content: PROMPT });
await turnDone;
const state = await api('GET', `/api/sessions/${created.sessionId}`);
say(`GET /api/sessions/${created.sessionId}: ${state.blocks.length} blocks, files: ${state.workspaceFiles.map((f) => f.path).join(', ') || 'none'}`);
say(`try: curl -H 'Authorization: Bearer ${API_KEY}' ${BASE}/api/sessions/${created.sessionId}`);
say(`send more: curl -X POST -H 'Authorization: Bearer ${API_KEY}' -H 'Content-Type: application/json' -d '{"content":"hello"}' ${BASE}/api/sessions/${created.sessionId}/messages`);
say(`Socket.IO: connect socket.io-client (or the reference React client) to ${BASE} and emit session:join "${created.sessionId}" to watch the next turn live.`);

const stop = async () => {
  httpServer.close();
  wsServer.close();
  await runtime.shutdown();
  await fake?.close();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
if (process.env.DEMO_ONCE) await stop();
else say('Ctrl-C to stop.');
