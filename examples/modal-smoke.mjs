// Manual check against real Modal (not run in CI). Needs MODAL_TOKEN_ID, MODAL_TOKEN_SECRET and
// ANTHROPIC_API_KEY; MODAL_APP names the app (default "agent-runtime-smoke").
// Runs one real turn in a Modal sandbox and prints when each stage was reached.
import { createAgentRuntime } from '../index.mjs';

for (const k of ['MODAL_TOKEN_ID', 'MODAL_TOKEN_SECRET', 'ANTHROPIC_API_KEY']) {
  if (!process.env[k]) {
    console.error(`${k} is not set; this check talks to real Modal and the real Anthropic API.`);
    process.exit(2);
  }
}
const sessions = new Map();
const persistence = {
  listAllSessions: async () => [...sessions.values()],
  loadSession: async (id) => sessions.get(id) ?? null,
  createSessionRecord: async (s) => void sessions.set(s.sessionId, { ...s }),
  updateSessionRecord: async (id, u) => void Object.assign(sessions.get(id) ?? {}, u),
  saveTranscript: async (id, raw) => void Object.assign(sessions.get(id) ?? {}, { rawTranscript: raw }),
  saveWorkspaceFile: async () => {},
  deleteSessionFile: async () => {},
  listAgentProfiles: async () => [{ id: 'default', name: 'Smoke' }],
  loadAgentProfile: async () => ({ id: 'default', name: 'Smoke', tools: ['Write', 'Read'] }),
};
const runtime = await createAgentRuntime({
  persistence,
  modal: { tokenId: process.env.MODAL_TOKEN_ID, tokenSecret: process.env.MODAL_TOKEN_SECRET, appName: process.env.MODAL_APP ?? 'agent-runtime-smoke' },
  sandbox: { env: { ANTHROPIC_API_KEY: process.env.ANTHROPIC_API_KEY } },
});
const t0 = Date.now();
const mark = (what) => console.log(`${String(Date.now() - t0).padStart(7)} ms  ${what}`);
const seen = new Set();
const once = (what) => seen.has(what) || (seen.add(what), mark(what));
runtime.eventBus.on('session:status', (p) => {
  const msg = p.runtime.sandbox?.statusMessage;
  if (msg === 'Setting up session files...') once('image ready and sandbox created');
  if (p.runtime.sandbox?.status === 'ready') once('sandbox ready');
});
runtime.eventBus.on('session:block:delta', () => once('first token'));
runtime.eventBus.on('session:error', (p) => console.error('error:', p.error.message));
const session = await runtime.sessionManager.createSession({ agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
try {
  await session.sendMessage('Write hello.txt containing "hello from Modal", then say done.');
  mark('turn done');
  console.log('files:', session.getState().workspaceFiles.map((f) => f.path).join(', ') || '(none)');
} finally {
  await runtime.shutdown();
}
