// `npm run demo`: the main job. Builds the seed's example server (examples/seed-server.ts,
// verbatim) as a consumer app of this package, starts it on :3001, and walks the REST API once so
// you can see it answer. The server keeps running until Ctrl-C (DEMO_ONCE=1 stops after the walk).
import fs from 'node:fs';
import { makeConsumer, compileSeed, runSeed, stop, REPO } from './seed-app.mjs';

const BASE = 'http://localhost:3001';
const H = { Authorization: 'Bearer your-api-key', 'Content-Type': 'application/json' };
const say = (...a) => console.log('[demo]', ...a);

async function call(method, path, body) {
  const res = await fetch(BASE + path, { method, headers: H, body: body && JSON.stringify(body) });
  const text = await res.text();
  say(`${method} ${path} -> ${res.status} ${text.length > 300 ? text.slice(0, 300) + '…' : text}`);
  return JSON.parse(text);
}

const dir = makeConsumer(REPO);
say('compiling examples/seed-server.ts with tsc --strict (imports "@hhopkins/agent-runtime" = this package)');
const server = runSeed(compileSeed(dir), { LOG_LEVEL: process.env.LOG_LEVEL ?? 'info' });
server.child.stdout.pipe(process.stdout);
server.child.stderr.pipe(process.stderr);
const shutdown = async () => {
  await stop(server.child);
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

await server.ready;
await call('GET', '/health');
const created = await call('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' });
await call('GET', '/api/sessions');
await call('GET', `/api/sessions/${created.sessionId}`);
await call('GET', '/agent-profiles');
say(`REST API is up at ${BASE} (API key "your-api-key"). Agent runs and Socket.IO arrive with the sandbox and realtime issues.`);
if (process.env.DEMO_ONCE) await shutdown();
else say('Ctrl-C to stop.');
